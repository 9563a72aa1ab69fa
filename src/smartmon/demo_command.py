"""`smartmon demo`: the Typer command. The demo itself is imported only when it runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from smartmon.exit_codes import ExitCode, fail
from smartmon.settings import data_dir as default_data_dir


def demo(
    devices: Annotated[
        int,
        typer.Option("--devices", "-n", min=0, max=10_000, help="How many simulated devices."),
    ] = 25,
    port: Annotated[
        int,
        typer.Option(
            "--port", min=0, max=65535, help="Port of the demo server (if taken: a free one)."
        ),
    ] = 8000,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="Where the demo keeps its data (default: $XDG_DATA_HOME/smartmon/demo).",
            show_default=False,
            file_okay=False,
        ),
    ] = None,
    no_tui: Annotated[
        bool,
        typer.Option("--no-tui", help="Run headless until Ctrl+C, printing the URL and login."),
    ] = False,
) -> None:
    """Start a server, this machine's agent, a simulated fleet and the dashboard, all at once."""
    directory = (data_dir or default_data_dir() / "demo").expanduser().resolve()
    from smartmon.demo import DemoError, DemoSettings, run

    settings = DemoSettings(data_dir=directory, port=port, devices=devices, tui=not no_tui)
    try:
        code = run(settings)
    except DemoError as exc:
        fail(exc.message, exc.code, prog="smartmon demo")
    except KeyboardInterrupt:  # Ctrl+C while starting: everything started was stopped
        raise typer.Exit(int(ExitCode.OK)) from None
    except OSError as exc:
        fail(
            f"{exc.strerror or exc} ({exc.filename or directory})",
            ExitCode.CONFIG,
            prog="smartmon demo",
        )
    if code:
        raise typer.Exit(code)
