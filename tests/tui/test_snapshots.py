"""Snapshots of the login screen, the empty state, the dashboard and the device screen.

Deterministic: fixed data served by an httpx MockTransport (REST) and a small WebSocket
server (the stream's hello), a fixed clock, UTC, and a fixed terminal size.
Update with `pytest tests/tui/test_snapshots.py --snapshot-update` and look at the SVGs.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import msgspec
import pytest
from textual.pilot import Pilot
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection, serve

from smartmon import api, credentials
from smartmon.tui.app import SmartmonApp
from smartmon.wire import Capabilities

SERVER = "http://fleet.example:8000"
NOW = datetime(2026, 12, 4, 20, 0, 0, tzinfo=UTC)
SIZE = (140, 40)
TOKEN = "smt_SNAPSHOTxTOKENxFIXEDxxxxxxxxxxxx"
USER = api.UserOut(id=1, username="admin", role="admin")


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def device(
    i: int, name: str, owner: str, online: bool, conns: int, ips: list[str], rate: float | None
) -> api.Device:
    caps = Capabilities(collector="netlink", counters=True, processes="all", close_events=True)
    return api.Device(
        id=i, device_name=name, username=owner, status="online" if online else "offline",
        connection_count=conns, protocols=["TCP", "UDP"] if conns > 2 else ["TCP"] if conns else [],
        unique_ips=ips, last_seen=ago(3 if online else 7200), registered_at=ago(86400 * 30),
        collected_at=ago(3), interval_s=10, bytes_in=123_456_789 * i, bytes_out=9_876_543 * i,
        bytes_in_rate=rate, bytes_out_rate=(rate / 4 if rate is not None else None), dropped_reports=0,
        key_active=True, agent=api.AgentOut("0.1.0", "Linux 6.1.0-rpi7", f"{name}.lan", caps),
    )  # fmt: skip


FLEET = [
    device(
        1,
        "gateway-berlin",
        "admin",
        True,
        14,
        ["192.0.2.10", "198.51.100.4", "203.0.113.9"],
        48_200.0,
    ),
    device(2, "meter-0001", "alice", True, 3, ["192.0.2.10"], 1_250.0),
    device(3, "meter-0002", "alice", False, 0, [], None),
    device(4, "pi-lab", "bob", True, 27, ["10.1.0.5", "2001:db8::7"], 2_400_000.0),
    device(5, "sensor-hall-3", "bob", True, 1, ["192.0.2.77"], 80.0),
    device(6, "edge-cam", "alice", False, 0, [], 0.0),
]


def connection(proto: str, lport: int, rip: str, rport: int, state: str, proc: str | None, pid: int | None,
               b_in: int | None, b_out: int | None, age: float) -> api.ConnectionOut:  # fmt: skip
    return api.ConnectionOut(
        protocol=proto, family=6 if ":" in rip else 4, source_ip="192.168.1.20", source_port=lport,
        dest_ip=rip, dest_port=rport, state=state, pid=pid, process=proc, bytes_in=b_in, bytes_out=b_out,
        packets_in=None, packets_out=None, first_seen=ago(age), last_seen=ago(3),
    )  # fmt: skip


CONNECTIONS = [
    connection(
        "TCP", 51514, "192.0.2.10", 443, "ESTABLISHED", "mosquitto", 812, 4_812_331, 120_551, 5400
    ),
    connection(
        "TCP", 51600, "198.51.100.4", 8883, "ESTABLISHED", "mosquitto", 812, 88_120, 9_004, 600
    ),
    connection("TCP", 22, "203.0.113.9", 60122, "ESTABLISHED", "sshd", 1201, 31_002, 1_204_998, 95),
    connection("TCP", 0, "0.0.0.0", 0, "LISTEN", "sshd", 640, None, None, 86400),
    connection("UDP", 5353, "0.0.0.0", 0, "UNCONN", "avahi-daemon", 455, None, None, 86400),
    connection("TCP", 51700, "192.0.2.10", 80, "TIME_WAIT", None, None, 1_024, 512, 30),
]
DESTINATIONS = [
    api.Destination("TCP", "192.0.2.10", 443, ago(86400), ago(3), 98_000_000, 2_100_000, 1),
    api.Destination("TCP", "198.51.100.4", 8883, ago(3600), ago(3), 88_120, 9_004, 1),
    api.Destination("TCP", "203.0.113.9", 60122, ago(95), ago(3), 31_002, 1_204_998, 1),
]
TRAFFIC = [
    api.TrafficSample(
        ago(3600 - 60 * i),
        20_000 + (i * 7919) % 50_000,
        3_000 + (i * 104729) % 9_000,
        None,
        None,
        14,
    )
    for i in range(60)
]


def detail(device_id: int) -> api.DeviceDetailResponse:
    d = FLEET[device_id - 1]
    fields = {f: getattr(d, f) for f in api.Device.__struct_fields__}
    return api.DeviceDetailResponse(api.DeviceDetail(
        **fields, connections=CONNECTIONS, matched_connections=len(CONNECTIONS), traffic=TRAFFIC, destinations=DESTINATIONS,
    ))  # fmt: skip


def rest(request: httpx.Request) -> httpx.Response:
    path = request.url.path
    if path == "/api/tokens":
        body: Any = api.TokenCreated(
            id=1, name="tui", token=TOKEN, expires_at=NOW + timedelta(days=7)
        )
    elif path.startswith("/api/dashboard/user/"):
        body = detail(int(path.rsplit("/", 1)[1]))
        if request.url.params.get("closed") == "true":
            body.data.connections = []
    elif path == "/api/dashboard/users":
        body = api.DeviceList(stats=STATS, data=FLEET)
    else:
        return httpx.Response(404, json={"error": "not_found", "detail": "no such thing"})
    return httpx.Response(
        200, content=msgspec.json.encode(body), headers={"content-type": "application/json"}
    )


STATS = api.FleetStats(
    total_devices=6, online_devices=4, offline_devices=2, active_connections=45,
    bytes_in_rate=2_449_530.0, bytes_out_rate=612_382.5,
)  # fmt: skip


class HelloServer:
    """A stream that says hello with a fixed fleet, then stays quiet."""

    def __init__(self, devices: list[api.Device]) -> None:
        stats = STATS if devices else api.FleetStats(0, 0, 0, 0, 0.0, 0.0)
        self.hello = msgspec.json.encode(
            api.HelloEvent(user=USER, stats=stats, devices=devices)
        ).decode()
        self.server = serve(self.handle, "127.0.0.1", 0)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"ws://127.0.0.1:{self.server.socket.getsockname()[1]}/api/stream"

    def handle(self, ws: ServerConnection) -> None:
        ws.send(self.hello)
        with contextlib.suppress(ConnectionClosed):
            for _ in ws:  # subscriptions: nothing to send for them
                pass

    def close(self) -> None:
        self.server.shutdown()
        self.thread.join(5)


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def fleet_stream() -> Iterator[HelloServer]:
    server = HelloServer(FLEET)
    yield server
    server.close()


@pytest.fixture
def empty_stream() -> Iterator[HelloServer]:
    server = HelloServer([])
    yield server
    server.close()


def make_app(stream: HelloServer | None, logged_in: bool = True) -> SmartmonApp:
    login = credentials.Login(SERVER, "admin", "access-token") if logged_in else None
    return SmartmonApp(
        SERVER, login, transport=httpx.MockTransport(rest), stream_url=stream.url if stream else None,
        clock=NOW.timestamp,
    )  # fmt: skip


async def wait(pilot: Pilot[Any], check: Any) -> None:
    deadline = time.monotonic() + 10
    while not check():
        assert time.monotonic() < deadline, "the snapshot's data never arrived"
        await pilot.pause(0.05)
    await pilot.pause(0.1)


def test_login_screen(snap_compare: Any) -> None:
    assert snap_compare(make_app(None, logged_in=False), terminal_size=SIZE)


def test_empty_state(snap_compare: Any, empty_stream: HelloServer) -> None:
    async def ready(pilot: Pilot[Any]) -> None:
        await wait(pilot, lambda: TOKEN in str(pilot.app.screen.query_one("#empty").render()))

    assert snap_compare(make_app(empty_stream), terminal_size=SIZE, run_before=ready)


def test_dashboard(snap_compare: Any, fleet_stream: HelloServer) -> None:
    async def ready(pilot: Pilot[Any]) -> None:
        await wait(pilot, lambda: len(pilot.app.screen.query_one("#devices")) == len(FLEET))

    assert snap_compare(make_app(fleet_stream), terminal_size=SIZE, run_before=ready)


def test_device_screen(snap_compare: Any, fleet_stream: HelloServer) -> None:
    async def ready(pilot: Pilot[Any]) -> None:
        await wait(pilot, lambda: len(pilot.app.screen.query_one("#devices")) == len(FLEET))
        await pilot.press("down", "enter")  # gateway-berlin
        await wait(pilot, lambda: getattr(pilot.app.screen, "loaded", False))

    assert snap_compare(make_app(fleet_stream), terminal_size=SIZE, run_before=ready)
