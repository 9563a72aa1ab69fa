"""CLI test fixtures: cheap argon2 for the in-process server, and a CliRunner helper."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from typer.testing import CliRunner

from smartmon.cli import app
from tests.server.conftest import cheap_argon2  # noqa: F401 - the same autouse fixture here


def smartmon(*args: str, input: str | None = None) -> Result:
    """Run `smartmon ARGS` in-process."""
    return CliRunner().invoke(app, list(args), input=input, catch_exceptions=False)


def credentials_file(home: Path) -> Path:
    return home / "config" / "smartmon" / "credentials.json"


def saved(home: Path) -> dict[str, Any]:
    """The saved logins, by server; also checks the file is private."""
    path = credentials_file(home)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data: dict[str, Any] = json.loads(path.read_text())["servers"]
    return data


def one_line_error(result: Result, code: int) -> str:
    """A failure: the exit code, one line on stderr, nothing on stdout, no traceback."""
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    assert result.stdout == ""
    return lines[0]


@pytest.fixture
def no_server() -> str:
    """A URL where nothing listens."""
    from tests.conftest import free_port

    return f"http://127.0.0.1:{free_port()}"
