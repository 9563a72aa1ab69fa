"""Runs `smartmon agent` as its own program, registered the way the main CLI registers it.

Used by the tests that need a real process (signals, kill -9, sys.modules); the main CLI
is someone else's part, so the tests do not depend on it being there.
"""

import typer

from smartmon.agent.command import agent

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
app.command("agent")(agent)

if __name__ == "__main__":
    app()
