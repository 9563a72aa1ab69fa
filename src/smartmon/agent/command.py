"""`smartmon agent`: the Typer command. Imports the agent itself only when it runs."""

from __future__ import annotations

import enum
import socket
from pathlib import Path
from typing import Annotated

import typer

from smartmon.exit_codes import ExitCode, fail
from smartmon.settings import resolve_server, server_url_problem, state_dir

MIN_INTERVAL_S = 0.2
MAX_INTERVAL_S = 86_400.0


class CollectorChoice(enum.StrEnum):
    """Which collector gathers the sockets."""

    auto = "auto"
    netlink = "netlink"
    psutil = "psutil"


def agent(
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar=["SMARTMON_TOKEN", "MONITOR_AUTH_TOKEN"],
            help="Enrollment token (smt_...) or access token; needed only to enroll.",
            show_default=False,
        ),
    ] = None,
    device: Annotated[
        str | None,
        typer.Option(
            "--device",
            envvar=["SMARTMON_DEVICE_NAME", "MONITOR_DEVICE_NAME"],
            help="Device name shown on the dashboard (default: the hostname).",
            show_default=False,
        ),
    ] = None,
    server: Annotated[
        str | None,
        typer.Option(
            "--server",
            help="Server URL (env SMARTMON_SERVER or MONITOR_SERVER_URL; default: the saved "
            "login's, else http://127.0.0.1:8000).",
            show_default=False,
        ),
    ] = None,
    interval: Annotated[
        float,
        typer.Option(
            "--interval",
            envvar=["SMARTMON_INTERVAL", "MONITOR_REFRESH_INTERVAL"],
            min=MIN_INTERVAL_S,
            max=MAX_INTERVAL_S,
            help="Seconds between reports.",
        ),
    ] = 10.0,
    once: Annotated[
        bool, typer.Option("--once", help="Deliver one report (after the spool), then exit.")
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Print one report as JSON on stdout; enroll and send nothing."
        ),
    ] = False,
    state_dir_option: Annotated[
        Path | None,
        typer.Option(
            "--state-dir",
            help="Where device keys and the spool live.  [default: $XDG_STATE_HOME/smartmon/agent]",
            show_default=False,
            file_okay=False,
        ),
    ] = None,
    spool_max_mb: Annotated[
        float,
        typer.Option(
            "--spool-max-mb",
            min=0.001,
            help="Disk space for reports waiting for the server; the oldest go first.",
        ),
    ] = 64.0,
    collector: Annotated[
        CollectorChoice,
        typer.Option(
            "--collector",
            help="netlink (Linux, with counters), psutil (anywhere), or auto.",
            case_sensitive=False,
        ),
    ] = CollectorChoice.auto,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Also log retries and enrollment.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Log only errors.")] = False,
) -> None:
    """Collect every TCP/UDP connection of this device and report it to the server.

    The first run enrolls with --token; later runs use the saved device key.

    Reports wait in an on-disk spool (state dir) while the server is away.

    Exit codes: 2 usage, 3 unreachable (--once), 4 key revoked or token refused, 6 config.
    """
    if verbose and quiet:
        fail("choose one of --verbose and --quiet", ExitCode.USAGE)
    from smartmon import credentials

    server_url = resolve_server(server, credentials.last_server())
    if (problem := server_url_problem(server_url)) is not None:
        fail(problem, ExitCode.USAGE)
    device_name = (device or socket.gethostname() or "device").strip()[:128]
    if not device_name:
        fail("the device name is empty", ExitCode.USAGE)

    from smartmon.agent.run import NORMAL, QUIET, VERBOSE, Agent, AgentExit, AgentSettings

    settings = AgentSettings(
        server=server_url,
        device_name=device_name,
        state_dir=state_dir_option or state_dir() / "agent",
        token=token or None,
        interval_s=interval,
        once=once,
        dry_run=dry_run,
        spool_max_bytes=max(1, int(spool_max_mb * 1024 * 1024)),
        collector=collector.value,
        verbosity=VERBOSE if verbose else QUIET if quiet else NORMAL,
    )
    try:
        Agent(settings).run()
    except AgentExit as exc:
        fail(exc.message, exc.code)
    except OSError as exc:
        fail(f"{exc.strerror or exc} ({exc.filename or 'system'})", ExitCode.ERROR)
