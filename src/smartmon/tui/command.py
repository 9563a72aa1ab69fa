"""`smartmon tui`: the command function (Textual is imported only when it runs)."""

from __future__ import annotations

from typing import Annotated

import typer

from smartmon.exit_codes import ExitCode


def tui(
    server: Annotated[
        str | None,
        typer.Option(
            "--server",
            "-s",
            help="Server URL (env SMARTMON_SERVER or MONITOR_SERVER_URL; default: the saved login's).",
        ),
    ] = None,
) -> None:
    """Open the live terminal dashboard (logs in first when there is no saved login)."""
    from smartmon import credentials
    from smartmon.settings import resolve_server

    url = resolve_server(server, credentials.last_server())
    try:
        from smartmon.tui.app import SmartmonApp
    except ImportError as exc:  # textual missing from a trimmed install
        typer.echo(f"smartmon: the terminal dashboard needs textual: {exc}", err=True)
        raise typer.Exit(int(ExitCode.CONFIG)) from None
    app = SmartmonApp(url, credentials.load(url))
    app.run()
    if app.return_code:
        raise typer.Exit(app.return_code)
