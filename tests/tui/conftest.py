"""TUI test helpers: reports for the live server, an app logged in to it, and waiting."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from textual.pilot import Pilot

from smartmon import credentials
from smartmon.tui.app import SmartmonApp
from tests.conftest import LiveServer

SIZE = (140, 42)


def conn(
    dest_ip: str,
    dest_port: int,
    *,
    source_port: int = 40000,
    protocol: str = "TCP",
    state: str = "ESTABLISHED",
    process: str | None = "curl",
    pid: int | None = 4242,
    bytes_in: int | None = 1000,
    bytes_out: int | None = 200,
) -> dict[str, Any]:
    """One connection of a report."""
    return {
        "protocol": protocol, "sourceIp": "10.0.0.2", "sourcePort": source_port,
        "destIp": dest_ip, "destPort": dest_port, "state": state, "process": process, "pid": pid,
        "bytesIn": bytes_in, "bytesOut": bytes_out, "packetsIn": 10, "packetsOut": 5,
    }  # fmt: skip


class Reporter:
    """Posts reports for one enrolled device, like an agent would."""

    def __init__(self, server: LiveServer, name: str, access_token: str | None = None) -> None:
        self.server = server
        self.device_id, self.key = server.enroll(name, access_token)
        self.seq = 0
        self.bytes_in = 0
        self.bytes_out = 0

    def send(
        self,
        connections: list[dict[str, Any]],
        closed: list[dict[str, Any]] | None = None,
        *,
        traffic: tuple[int, int] = (5000, 1000),
    ) -> None:
        """POST one report (interface counters grow by `traffic`)."""
        self.seq += 1
        self.bytes_in += traffic[0]
        self.bytes_out += traffic[1]
        report = {
            "reportId": str(uuid.uuid4()), "seq": self.seq,
            "collectedAt": datetime.now(UTC).isoformat(), "intervalS": 5,
            "agent": {"version": "9.9.9", "os": "Linux 6.1 test", "hostname": "host-under-test",
                      "capabilities": {"collector": "netlink", "counters": True, "processes": "own",
                                       "closeEvents": True, "missing": ["processes of other users (not root)"]}},
            "interfaces": {"bytesIn": self.bytes_in, "bytesOut": self.bytes_out, "packetsIn": 1, "packetsOut": 1},
            "connections": connections, "closed": closed or [],
        }  # fmt: skip
        r = self.server.request("POST", "/api/monitor/connections", self.key, json=report)
        assert r.status_code == 200, r.text


def logged_in_app(
    server: LiveServer, token: str | None = None, username: str = "admin", **kwargs: Any
) -> SmartmonApp:
    """An app with a saved login for the live server (saved as `smartmon login` would)."""
    login = credentials.Login(server.url, username, token or server.admin_token)
    credentials.save(login)
    kwargs.setdefault("retry_s", (0.2, 1.0))
    return SmartmonApp(server.url, credentials.load(server.url), **kwargs)


async def until(
    pilot: Pilot[Any], check: Callable[[], Any], what: str, timeout: float = 10.0
) -> None:
    """Let the app run until `check()` is true."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


def screen_text(app: SmartmonApp) -> str:
    """Everything the screen shows, as plain text (what a user reads)."""
    strips = app.screen._compositor.render_strips()
    return "\n".join(strip.text for strip in strips)
