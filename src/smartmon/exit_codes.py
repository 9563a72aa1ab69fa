"""Documented exit codes of every smartmon command (README: Troubleshooting)."""

from enum import IntEnum


class ExitCode(IntEnum):
    """What a non-zero exit means."""

    OK = 0
    ERROR = 1  # an unexpected failure, described on stderr
    USAGE = 2  # bad flags or arguments (Typer's own code)
    UNREACHABLE = 3  # no answer from the server
    AUTH = 4  # not logged in, bad credentials, revoked token or device key
    REJECTED = 5  # the server refused the request (validation, not found, conflict)
    CONFIG = 6  # a setting or local file is unusable (secret too short, port taken, ...)
