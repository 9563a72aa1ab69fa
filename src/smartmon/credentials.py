"""Saved logins: $XDG_CONFIG_HOME/smartmon/credentials.json (0600), one entry per server."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from smartmon.settings import config_dir, normalise_server_url


@dataclass(frozen=True)
class Login:
    """A saved login for one server."""

    server: str
    username: str
    token: str


def credentials_path() -> Path:
    """Where logins are saved."""
    return config_dir() / "credentials.json"


def _read() -> dict[str, dict[str, str]]:
    path = credentials_path()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return {}  # an unreadable file is treated as no saved login; saving replaces it
    servers = data.get("servers") if isinstance(data, dict) else None
    return servers if isinstance(servers, dict) else {}


def _write(servers: dict[str, dict[str, str]]) -> None:
    path = credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".credentials-")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump({"servers": servers}, handle, indent=2)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(server: str) -> Login | None:
    """The saved login for a server, if any."""
    url = normalise_server_url(server)
    entry = _read().get(url)
    if not isinstance(entry, dict) or not entry.get("token"):
        return None
    return Login(url, str(entry.get("username", "")), str(entry["token"]))


def last_server() -> str | None:
    """The server of the most recently saved login."""
    servers = _read()
    return next(reversed(servers)) if servers else None


def save(login: Login) -> None:
    """Save (or replace) the login for its server; it becomes the most recent one."""
    servers = _read()
    servers.pop(login.server, None)
    servers[login.server] = {k: v for k, v in asdict(login).items() if k != "server"}
    _write(servers)


def forget(server: str) -> bool:
    """Remove the saved login for a server; False when there was none."""
    servers = _read()
    if servers.pop(normalise_server_url(server), None) is None:
        return False
    _write(servers)
    return True
