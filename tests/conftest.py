"""Shared fixtures: an isolated home, and a real server on a loopback port.

`live_server` runs `smartmon serve`'s app under uvicorn in a background thread of the test
process, on 127.0.0.1 and a free port, with a fresh data dir. It offers:
- `url`, `data_dir`, `settings`
- `admin_token` (the first account, "admin" / ADMIN_PASSWORD, registered on first use)
- `user_token(name)` (creates a user through the admin API and logs it in)
- `enrollment_token(access_token=None)` (a fresh `smt_...` token)
- `enroll(device_name, access_token=None)` -> (device_id, device_key)
- `stop()` / `start()` (a restart on the same port and data dir)
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from smartmon.server.app import create_app
from smartmon.settings import ServerSettings
from tests.terminal import Tmux

ADMIN_PASSWORD = "admin-password-1"
USER_PASSWORD = "user-password-1"


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own XDG dirs and none of the caller's smartmon environment."""
    home = tmp_path / "home"
    for name, sub in (
        ("XDG_CONFIG_HOME", "config"),
        ("XDG_DATA_HOME", "data"),
        ("XDG_STATE_HOME", "state"),
    ):
        (home / sub).mkdir(parents=True)
        monkeypatch.setenv(name, str(home / sub))
    monkeypatch.setenv("HOME", str(home))
    for name in (
        "SMARTMON_SERVER", "MONITOR_SERVER_URL", "SMARTMON_ACCESS_TOKEN", "SMARTMON_JWT_SECRET",
        "JWT_SECRET", "MONITOR_AUTH_TOKEN", "MONITOR_DEVICE_NAME", "MONITOR_REFRESH_INTERVAL",
        "SMARTMON_TOKEN", "SMARTMON_DEVICE_NAME", "SMARTMON_INTERVAL",
    ):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    return home


def free_port() -> int:
    """A port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    """A real server on loopback, in a thread; restartable on the same port and data."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.url = f"http://127.0.0.1:{settings.port}"
        self.data_dir = settings.data_dir
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._admin_token: str | None = None

    def start(self) -> None:
        """Start serving and wait until the app has started."""
        config = uvicorn.Config(
            create_app(self.settings), host="127.0.0.1", port=self.settings.port,
            log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=5,
        )  # fmt: skip
        self._server = uvicorn.Server(config)
        self._server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop gracefully (in-flight requests finish, the database closes)."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=15)
        self._server = self._thread = None

    def request(
        self, method: str, path: str, token: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        """One HTTP request to the server."""
        headers = dict(kwargs.pop("headers", {}) or {})
        if token:
            headers["authorization"] = f"Bearer {token}"
        return httpx.request(method, self.url + path, headers=headers, timeout=15, **kwargs)

    @property
    def admin_token(self) -> str:
        """An access token of the first account (an admin), registered on first use."""
        if self._admin_token is None:
            r = self.request(
                "POST", "/api/auth/register", json={"username": "admin", "password": ADMIN_PASSWORD}
            )
            if r.status_code == 403:  # already registered before a restart
                r = self.request(
                    "POST",
                    "/api/auth/login",
                    json={"username": "admin", "password": ADMIN_PASSWORD},
                )
            assert r.status_code in (200, 201), r.text
            self._admin_token = r.json()["accessToken"]
        return self._admin_token

    def user_token(self, username: str) -> str:
        """Create a plain user through the admin API and return its access token."""
        r = self.request(
            "POST",
            "/api/users",
            self.admin_token,
            json={"username": username, "password": USER_PASSWORD},
        )
        assert r.status_code == 201, r.text
        r = self.request(
            "POST", "/api/auth/login", json={"username": username, "password": USER_PASSWORD}
        )
        assert r.status_code == 200, r.text
        return str(r.json()["accessToken"])

    def enrollment_token(self, access_token: str | None = None) -> str:
        """A fresh enrollment token of the given user (default: admin)."""
        r = self.request(
            "POST", "/api/tokens", access_token or self.admin_token, json={"name": "test"}
        )
        assert r.status_code == 201, r.text
        return str(r.json()["token"])

    def enroll(self, device_name: str, access_token: str | None = None) -> tuple[int, str]:
        """Enroll a device; returns (device id, device key)."""
        r = self.request(
            "POST",
            "/api/monitor/register",
            self.enrollment_token(access_token),
            json={"deviceName": device_name},
        )
        assert r.status_code == 200, r.text
        return int(r.json()["deviceId"]), str(r.json()["deviceKey"])


@pytest.fixture
def server_settings(tmp_path: Path) -> ServerSettings:
    """Settings for a fresh server with its own data dir and port."""
    return ServerSettings(data_dir=tmp_path / "server-data", port=free_port())


@pytest.fixture
def live_server(server_settings: ServerSettings) -> Iterator[LiveServer]:
    """A real server on a loopback port (see the module docstring)."""
    server = LiveServer(server_settings)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    """A private tmux server (its own socket) for a test in a real terminal."""
    terminal = Tmux()
    try:
        yield terminal
    finally:
        terminal.kill()
