"""Settings and paths: flags > environment > saved files > defaults, XDG everywhere."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_SERVER = "http://127.0.0.1:8000"
MIN_JWT_SECRET_BYTES = 32


def _xdg(variable: str, fallback: str) -> Path:
    value = os.environ.get(variable)
    if value and os.path.isabs(value):
        return Path(value) / "smartmon"
    return Path.home() / fallback / "smartmon"


def config_dir() -> Path:
    """$XDG_CONFIG_HOME/smartmon: saved logins."""
    return _xdg("XDG_CONFIG_HOME", ".config")


def data_dir() -> Path:
    """$XDG_DATA_HOME/smartmon: the server's database and secret."""
    return _xdg("XDG_DATA_HOME", ".local/share")


def state_dir() -> Path:
    """$XDG_STATE_HOME/smartmon: the agent's device keys and spool."""
    return _xdg("XDG_STATE_HOME", ".local/state")


def env_first(*names: str) -> str | None:
    """The first non-empty environment variable among names."""
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


def normalise_server_url(url: str) -> str:
    """`host:port` or a URL with a trailing slash becomes `http://host:port`."""
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    return url


def server_url_problem(url: str) -> str | None:
    """Why a server URL cannot work, or None when it looks usable."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        return f"{url!r} is not a valid server URL: {exc}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{url!r} is not a valid server URL (want http://host:port)"
    return None


def resolve_server(flag: str | None, saved: str | None = None) -> str:
    """--server > SMARTMON_SERVER > MONITOR_SERVER_URL > the saved login's > the default."""
    chosen = flag or env_first("SMARTMON_SERVER", "MONITOR_SERVER_URL") or saved or DEFAULT_SERVER
    return normalise_server_url(chosen)


class SettingsError(ValueError):
    """A setting has a value the program cannot run with."""


@dataclass(frozen=True)
class ServerSettings:
    """Everything `smartmon serve` needs; built once, never mutated."""

    data_dir: Path = field(default_factory=data_dir)
    host: str = "127.0.0.1"
    port: int = 8000
    open_registration: bool = False
    cors_origins: tuple[str, ...] = ()
    jwt_secret: bytes | None = None
    access_token_hours: float = 12.0
    max_body_bytes: int = 10 * 1024 * 1024
    login_attempts: int = 10
    login_window_s: float = 15 * 60
    samples_hours: float = 48.0  # traffic samples and report ids (dedupe window)
    history_days: float = 7.0  # closed connections

    @property
    def database_path(self) -> Path:
        """<data-dir>/smartmon.db"""
        return self.data_dir / "smartmon.db"

    @property
    def secret_path(self) -> Path:
        """<data-dir>/jwt-secret"""
        return self.data_dir / "jwt-secret"

    def load_jwt_secret(self) -> bytes:
        """The configured secret, else the one kept in the data dir (created 0600 once)."""
        if self.jwt_secret is not None:
            if len(self.jwt_secret) < MIN_JWT_SECRET_BYTES:
                raise SettingsError(
                    f"the JWT secret is {len(self.jwt_secret)} bytes; "
                    f"it must be at least {MIN_JWT_SECRET_BYTES} bytes"
                )
            return self.jwt_secret
        path = self.secret_path
        if path.exists():
            secret = path.read_bytes().strip()
            if len(secret) >= MIN_JWT_SECRET_BYTES:
                return secret
            raise SettingsError(f"{path} holds fewer than {MIN_JWT_SECRET_BYTES} bytes")
        import secrets

        secret = secrets.token_urlsafe(48).encode()
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(secret)
        return secret


def jwt_secret_from_env() -> bytes | None:
    """SMARTMON_JWT_SECRET, else the prototype's JWT_SECRET."""
    value = env_first("SMARTMON_JWT_SECRET", "JWT_SECRET")
    return value.encode() if value is not None else None
