"""The live stream, /api/stream: who may listen, what arrives, and when it closes."""

from __future__ import annotations

import base64
import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from smartmon.server import store, stream
from smartmon.settings import ServerSettings
from tests.conftest import LiveServer, free_port
from tests.server.conftest import conn, report


def open_stream(server: LiveServer, token: str | None) -> ClientConnection:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    url = server.url.replace("http://", "ws://") + "/api/stream"
    return connect(url, additional_headers=headers, open_timeout=10, max_size=None)


def next_event(
    ws: ClientConnection, kind: str, seconds: float = 10.0, **match: Any
) -> dict[str, Any]:
    """The next event of a type (and matching fields), skipping others."""
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {kind} event {match} within {seconds} s")
        try:
            event = json.loads(ws.recv(timeout=max(left, 0.001)))
        except TimeoutError:
            raise AssertionError(f"no {kind} event {match} within {seconds} s") from None
        if event["type"] == kind and all(event.get(k) == v for k, v in match.items()):
            return event


def post(server: LiveServer, key: str, body: dict[str, Any]) -> None:
    r = server.request("POST", "/api/monitor/connections", key, json=body)
    assert r.status_code == 200, r.text


@pytest.fixture
def watched(live_server: LiveServer) -> Iterator[tuple[ClientConnection, dict[str, Any]]]:
    with open_stream(live_server, live_server.admin_token) as ws:
        yield ws, json.loads(ws.recv(timeout=10))


@pytest.mark.parametrize("token", [None, "not-a-token", "smd_" + "x" * 32])
def test_handshake_without_a_valid_access_token_is_refused(
    live_server: LiveServer, token: str | None
) -> None:
    with pytest.raises(InvalidStatus) as refused, open_stream(live_server, token):
        pass
    assert refused.value.response.status_code == 403


def test_hello_then_device_events_for_enrollment_and_reports(
    live_server: LiveServer, watched: tuple[ClientConnection, dict[str, Any]]
) -> None:
    ws, hello = watched
    assert hello["type"] == "hello" and hello["user"]["username"] == "admin"
    assert hello["stats"]["totalDevices"] == 0 and hello["devices"] == []
    device_id, key = live_server.enroll("meter-1")
    enrolled = next_event(ws, "device")
    assert enrolled["device"]["id"] == device_id and enrolled["device"]["status"] == "offline"
    post(live_server, key, report([conn("198.51.100.7", 8883)]))
    event = next_event(ws, "device")
    assert event["device"]["status"] == "online"
    assert event["device"]["connectionCount"] == 1 and event["device"]["uniqueIps"] == [
        "198.51.100.7"
    ]
    stats = next_event(ws, "stats")
    assert stats["stats"]["onlineDevices"] == 1 and stats["stats"]["activeConnections"] == 1


def test_subscribed_devices_stream_their_connection_changes(
    live_server: LiveServer, watched: tuple[ClientConnection, dict[str, Any]]
) -> None:
    ws, _ = watched
    device_id, key = live_server.enroll("meter-1")
    post(live_server, key, report([conn("198.51.100.7", 8883, bytesIn=10)], seq=1))
    ws.send(json.dumps({"subscribe": [device_id]}))
    time.sleep(0.3)
    post(
        live_server,
        key,
        report([conn("198.51.100.7", 8883, bytesIn=99), conn("192.0.2.9", 443)], seq=2),
    )
    event = next_event(ws, "connections", deviceId=device_id)
    assert [c["destIp"] for c in event["opened"]] == ["192.0.2.9"]
    assert [c["bytesIn"] for c in event["changed"]] == [99]
    post(live_server, key, report([conn("192.0.2.9", 443)], seq=3))
    event = next_event(ws, "connections", deviceId=device_id)
    assert [c["destIp"] for c in event["closed"]] == ["198.51.100.7"] and event["closed"][0][
        "closedAt"
    ]


def test_unsubscribed_and_malformed_requests(
    live_server: LiveServer, watched: tuple[ClientConnection, dict[str, Any]]
) -> None:
    ws, _ = watched
    ws.send("subscribe me please")
    assert "subscribe" in next_event(ws, "error")["detail"]
    device_id, key = live_server.enroll("meter-1")
    ws.send(json.dumps({"subscribe": []}))
    post(live_server, key, report([conn()]))
    next_event(ws, "device")
    with pytest.raises(AssertionError):
        next_event(ws, "connections", seconds=1.0, deviceId=device_id)


def test_device_removed_event(
    live_server: LiveServer, watched: tuple[ClientConnection, dict[str, Any]]
) -> None:
    ws, _ = watched
    device_id, _key = live_server.enroll("meter-1")
    r = live_server.request("DELETE", f"/api/dashboard/user/{device_id}", live_server.admin_token)
    assert r.status_code == 200
    assert next_event(ws, "device_removed")["deviceId"] == device_id


def test_silent_device_goes_offline_on_the_stream(
    live_server: LiveServer,
    watched: tuple[ClientConnection, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(store, "ONLINE_MIN_S", 1.0)  # the server runs in this process
    ws, _ = watched
    device_id, key = live_server.enroll("meter-1")
    post(live_server, key, report([conn()], interval_s=0.5))
    sent = time.monotonic()
    while True:
        event = next_event(ws, "device", seconds=8)
        if event["device"]["id"] == device_id and event["device"]["status"] == "offline":
            break
    # deadline = max(3 x 0.5 s, 1 s) = 1.5 s after the report; noticed within a few seconds
    assert time.monotonic() - sent < 6


@pytest.mark.parametrize("how", ["logout", "disable"])
def test_logout_or_disabling_closes_the_socket_within_5_s(
    live_server: LiveServer, how: str
) -> None:
    token = live_server.user_token("bob")
    with open_stream(live_server, token) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "hello"
        closed = close_by(live_server, token, how, ws)
    assert closed.rcvd is not None and closed.rcvd.code == stream.CLOSE_UNAUTHORIZED


def close_by(
    live_server: LiveServer, token: str, how: str, ws: ClientConnection
) -> ConnectionClosed:
    """Log out or disable the account; the socket closes within 5 s."""
    if how == "logout":
        assert live_server.request("POST", "/api/auth/logout", token).status_code == 200
    else:
        users = live_server.request("GET", "/api/users", live_server.admin_token).json()
        bob = next(u for u in users if u["username"] == "bob")
        r = live_server.request(
            "PATCH", f"/api/users/{bob['id']}", live_server.admin_token, json={"disabled": True}
        )
        assert r.status_code == 200
    started = time.monotonic()
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            ws.recv(timeout=6)
    assert time.monotonic() - started < 5.5
    return closed.value


def raw_stream(server: LiveServer, token: str) -> socket.socket:
    """A WebSocket client that completes the handshake, then reads only when told to.

    Its tiny receive buffer makes the server's sends stall as soon as it stops reading.
    """
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.settings.port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            "GET /api/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Authorization: Bearer {token}\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def send_text(sock: socket.socket, text: str) -> None:
    """One masked text frame (clients must mask)."""
    payload, mask = text.encode(), os.urandom(4)
    assert len(payload) < 126
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + masked)


def test_a_client_that_falls_behind_gets_a_resync_and_ingest_never_waits(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stream, "CLIENT_BACKLOG", 4)
    server = LiveServer(ServerSettings(data_dir=tmp_path / "data", port=free_port()))
    server.start()
    try:
        device_id, key = server.enroll("gateway")
        sock = raw_stream(server, server.admin_token)
        send_text(sock, json.dumps({"subscribe": [device_id]}))
        time.sleep(0.3)
        # big reports, each replacing 1,500 connections, while this client reads nothing
        for n in range(30):
            body = report(
                [conn("192.0.2.1", 443, source_port=1024 + n % 40 * 1500 + i) for i in range(1500)],
                seq=n + 1,
                report_id=str(uuid.uuid4()),
            )
            started = time.monotonic()
            post(server, key, body)
            assert time.monotonic() - started < 5  # a stalled client never blocks ingest
        received = b""
        sock.settimeout(5)
        deadline = time.monotonic() + 30
        while b'"type":"resync"' not in received and time.monotonic() < deadline:
            received += sock.recv(1 << 20)
        assert b'"type":"resync"' in received
        # fewer events than reports reached the client: the backlog was dropped, not queued
        assert received.count(b'"type":"connections"') < 30
        sock.close()
    finally:
        server.stop()


def test_a_shared_backend_publishes_even_without_local_listeners() -> None:
    # listeners may be in other server processes: nothing can be skipped
    assert stream.EventHub(stream.channels_plugin(), shared=True).listening(["user:1"])
    assert not stream.EventHub(stream.channels_plugin()).listening(["user:1"])
