"""Documented exit codes of every smartmon command (README: Troubleshooting), and how
commands leave with one: one readable line on stderr, never a traceback."""

from __future__ import annotations

import sys
from enum import IntEnum
from typing import NoReturn


class ExitCode(IntEnum):
    """What a non-zero exit means."""

    OK = 0
    ERROR = 1  # an unexpected failure, described on stderr
    USAGE = 2  # bad flags or arguments (Typer's own code)
    UNREACHABLE = 3  # no answer from the server
    AUTH = 4  # not logged in, bad credentials, revoked token or device key
    REJECTED = 5  # the server refused the request (validation, not found, conflict)
    CONFIG = 6  # a setting or local file is unusable (secret too short, port taken, ...)


class CommandError(Exception):
    """A command cannot go on: a documented exit code and one line saying why."""

    def __init__(self, code: ExitCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def fail(message: str, code: ExitCode = ExitCode.ERROR, prog: str = "smartmon") -> NoReturn:
    """Print `prog: message` on stderr and exit with code (through Typer)."""
    import typer

    print(f"{prog}: {message}", file=sys.stderr, flush=True)
    raise typer.Exit(int(code))
