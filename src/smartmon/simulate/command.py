"""`smartmon simulate`: the Typer command. The simulator itself is imported only when it runs."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from smartmon.exit_codes import ExitCode, fail

MIN_INTERVAL_S = 0.05


def simulate(
    devices: Annotated[
        int, typer.Option("--devices", "-n", min=1, max=100_000, help="How many devices.")
    ] = 10,
    interval: Annotated[
        float,
        typer.Option(
            "--interval", min=MIN_INTERVAL_S, max=86_400.0, help="Seconds between reports."
        ),
    ] = 10.0,
    server: Annotated[
        str | None,
        typer.Option(
            "--server",
            "-s",
            help="Server URL (env: SMARTMON_SERVER, MONITOR_SERVER_URL; default: the saved login's).",
            show_default=False,
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            help="Enrollment token (smt_...) or access token "
            "(default: a new enrollment token made with the saved login).",
            show_default=False,
        ),
    ] = None,
    duration: Annotated[
        float | None,
        typer.Option(
            "--duration", min=0.1, help="Stop after this many seconds (default: run until Ctrl+C)."
        ),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            "--seed",
            min=0,
            help="Same seed, same devices, connections and counters (default: random).",
        ),
    ] = None,
) -> None:
    """Run a virtual fleet of smart meters and gateways that report like real agents."""
    from smartmon import credentials
    from smartmon.settings import resolve_server, server_url_problem

    url = resolve_server(server, credentials.last_server())
    if (problem := server_url_problem(url)) is not None:
        fail(problem, ExitCode.USAGE, prog="smartmon simulate")
    access_token: str | None = None
    if not token:
        access_token = os.environ.get("SMARTMON_ACCESS_TOKEN") or None
        if access_token is None:
            login = credentials.load(url)
            if login is None:
                fail(
                    f"not logged in to {url}: pass --token, or run `smartmon login --server {url}`",
                    ExitCode.AUTH,
                    prog="smartmon simulate",
                )
            access_token = login.token
    if seed is None:
        import secrets

        seed = secrets.randbelow(1_000_000)

    import asyncio
    import signal

    from smartmon.simulate.fleet import Fleet, FleetError, FleetStatus

    def show(status: FleetStatus) -> None:
        print(f"simulate: {status.line()}", file=sys.stderr, flush=True)

    fleet = Fleet(
        url,
        devices,
        token=token or None,
        access_token=access_token,
        interval_s=interval,
        seed=seed,
        on_status=show,
    )

    async def main() -> FleetStatus:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, fleet.stop)
        return await fleet.run(duration)

    print(
        f"simulate: {devices} devices reporting to {url} every {interval:g} s (seed {seed}); "
        "Ctrl+C stops",
        file=sys.stderr,
        flush=True,
    )
    try:
        final = asyncio.run(main())
    except FleetError as exc:
        fail(exc.message, exc.code, prog="smartmon simulate")
    except KeyboardInterrupt:  # a second Ctrl+C while stopping
        raise typer.Exit(int(ExitCode.OK)) from None
    print(f"simulate: stopped: {final.line()}", file=sys.stderr, flush=True)
    if not final.reached_server:
        fail(f"never reached the server at {url}", ExitCode.UNREACHABLE, prog="smartmon simulate")
