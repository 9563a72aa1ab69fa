"""The dashboard API: the device list with fleet stats, one device in detail, odd input."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.conftest import LiveServer
from tests.server.conftest import assert_error, conn, detail, ifaces, post, report, sql

DEVICE_FIELDS = {
    "id", "deviceName", "username", "status", "connectionCount", "protocols", "uniqueIps",
    "lastSeen", "registeredAt", "bytesIn", "bytesOut", "bytesInRate", "bytesOutRate", "agent",
}  # fmt: skip
STATS_FIELDS = {
    "totalDevices",
    "onlineDevices",
    "offlineDevices",
    "activeConnections",
    "bytesInRate",
    "bytesOutRate",
}
CONNECTION_FIELDS = {
    "protocol", "family", "sourceIp", "sourcePort", "destIp", "destPort", "state", "pid", "process",
    "bytesIn", "bytesOut", "packetsIn", "packetsOut", "firstSeen", "lastSeen",
}  # fmt: skip


def listing(server: LiveServer, token: str) -> dict[str, Any]:
    r = server.request("GET", "/api/dashboard/users", token)
    assert r.status_code == 200, r.text
    return dict(r.json())


def age(server: LiveServer, device_id: int, seconds: float) -> None:
    """Pretend the device's last report arrived `seconds` ago."""
    sql(
        server.data_dir,
        "UPDATE devices SET last_seen = ? WHERE id = ?",
        (time.time() - seconds, device_id),
    )


def test_list_shape_and_stats(live_server: LiveServer) -> None:
    admin = live_server.admin_token
    t0 = time.time()
    fast, fast_key = live_server.enroll("fast")
    slow, slow_key = live_server.enroll("slow")
    idle, _ = live_server.enroll("idle")
    for i, (key, interval) in enumerate(((fast_key, 5), (slow_key, 60))):
        for step in range(2):
            body = report(
                [conn(source_port=p) for p in range(i + 2)], seq=step, interval_s=interval,
                collected_at=t0 + 10 * step, interfaces=ifaces(1000 * step, 500 * step),
            )  # fmt: skip
            assert post(live_server, key, body).status_code == 200
    body = listing(live_server, admin)
    assert body["success"] is True
    assert set(body["stats"]) >= STATS_FIELDS
    devices = {d["deviceName"]: d for d in body["data"]}
    assert set(devices) == {"fast", "slow", "idle"}
    for d in devices.values():
        assert set(d) >= DEVICE_FIELDS
        assert set(d["agent"]) >= {"version", "os", "hostname", "capabilities"}
    assert devices["idle"]["status"] == "offline" and devices["idle"]["lastSeen"] is None
    assert devices["fast"]["connectionCount"] == 2 and devices["slow"]["connectionCount"] == 3
    assert devices["fast"]["bytesIn"] == 1000 and devices["fast"]["bytesInRate"] == pytest.approx(
        100.0
    )
    assert body["stats"] == body["stats"] | {
        "totalDevices": 3, "onlineDevices": 2, "offlineDevices": 1, "activeConnections": 5,
    }  # fmt: skip
    assert body["stats"]["bytesInRate"] == pytest.approx(200.0)
    # online while within max(3 x interval, 30 s) of the last report (server receive time)
    age(live_server, fast, 29)
    age(live_server, slow, 170)
    devices = {d["deviceName"]: d for d in listing(live_server, admin)["data"]}
    assert devices["fast"]["status"] == "online"  # 3 x 5 s < 30 s: the 30 s floor applies
    assert devices["slow"]["status"] == "online"  # 3 x 60 s = 180 s
    age(live_server, fast, 31)
    age(live_server, slow, 181)
    body = listing(live_server, admin)
    devices = {d["deviceName"]: d for d in body["data"]}
    assert devices["fast"]["status"] == devices["slow"]["status"] == "offline"
    assert body["stats"]["onlineDevices"] == 0 and body["stats"]["offlineDevices"] == 3
    assert body["stats"]["activeConnections"] == 0
    assert devices["fast"]["bytesInRate"] in (0, 0.0, None), "an offline device moves nothing now"
    assert devices["fast"]["bytesIn"] == 1000, "totals stay"
    del slow, idle


def test_admins_see_all_users_their_own(live_server: LiveServer, fleet: dict[str, Any]) -> None:
    admin_view = listing(live_server, live_server.admin_token)
    assert {(d["deviceName"], d["username"]) for d in admin_view["data"]} == {
        ("alice-meter", "alice"), ("bob-meter", "bob"),
    }  # fmt: skip
    assert admin_view["stats"]["totalDevices"] == 2
    alice_view = listing(live_server, fleet["a_token"])
    assert [d["deviceName"] for d in alice_view["data"]] == ["alice-meter"]
    assert (
        alice_view["stats"]["totalDevices"] == 1 and alice_view["stats"]["activeConnections"] == 1
    )
    # the admin may open any device
    assert detail(live_server, fleet["b_device"])["deviceName"] == "bob-meter"


def make_busy(live_server: LiveServer) -> tuple[int, str]:
    """A device with TCP and UDP, listening and connected sockets, one closed connection."""
    device_id, key = live_server.enroll("busy")
    t0 = time.time()
    first = [
        conn("198.51.100.10", 443, 40000, bytesIn=5000, bytesOut=100, pid=10, process="curl"),
        conn("198.51.100.11", 443, 40001, bytesIn=10, bytesOut=10, pid=11, process="python3"),
        conn("0.0.0.0", 0, 22, source_ip="0.0.0.0", state="LISTEN", pid=1, process="sshd"),
        conn(
            "0.0.0.0", 0, 5353, protocol="UDP", source_ip="0.0.0.0", state="UNCONN", process="avahi"
        ),
        conn("192.0.2.53", 53, 41000, protocol="UDP", state="ESTABLISHED", process="resolved_x"),
        conn("198.51.100.12", 8080, 40002, state="TIME_WAIT"),
        conn("198.51.100.99", 9999, 40003, process="gone"),
    ]
    assert (
        post(live_server, key, report(first, collected_at=t0, interfaces=ifaces(0, 0))).status_code
        == 200
    )
    assert (
        post(
            live_server,
            key,
            report(first[:-1], seq=2, collected_at=t0 + 10, interfaces=ifaces(700, 300)),
        ).status_code
        == 200
    )
    return device_id, key


@pytest.fixture
def busy(live_server: LiveServer) -> tuple[int, str]:
    return make_busy(live_server)


_busy: dict[str, tuple[int, str]] = {}


@pytest.fixture
def shared_busy(shared_server: LiveServer) -> tuple[int, str]:
    if shared_server.url not in _busy:
        _busy[shared_server.url] = make_busy(shared_server)
    return _busy[shared_server.url]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, {40000, 40001, 22, 5353, 41000, 40002}),
        ({"protocol": "UDP"}, {5353, 41000}),
        ({"protocol": "tcp"}, {40000, 40001, 22, 40002}),
        ({"state": "LISTEN"}, {22}),
        ({"state": "time_wait"}, {40002}),
        ({"q": "198.51.100.1"}, {40000, 40001, 40002}),
        ({"q": "198.51.100.10"}, {40000}),
        ({"q": "443"}, {40000, 40001}),
        ({"q": "22"}, {22}),
        ({"q": "curl"}, {40000}),
        ({"q": "%"}, set()),
        ({"q": "_"}, {41000}),
        ({"q": "' OR 1=1 --"}, set()),
        ({"protocol": "TCP", "state": "ESTABLISHED", "q": "python"}, {40001}),
        ({"closed": "true"}, {40003}),
        ({"closed": "true", "q": "gone"}, {40003}),
        ({"closed": "false"}, {40000, 40001, 22, 5353, 41000, 40002}),
    ],
)
def test_detail_filters(
    shared_server: LiveServer,
    shared_busy: tuple[int, str],
    params: dict[str, str],
    expected: set[int],
) -> None:
    device_id, _ = shared_busy
    data = detail(shared_server, device_id, **params)
    assert {c["sourcePort"] for c in data["connections"]} == expected
    assert data["matchedConnections"] == len(expected)
    for c in data["connections"]:
        assert set(c) >= CONNECTION_FIELDS
        assert (c.get("closedAt") is not None) == (params.get("closed") == "true")


def test_detail_paging_summary_traffic_destinations(
    live_server: LiveServer, busy: tuple[int, str]
) -> None:
    device_id, _ = busy
    everything = detail(live_server, device_id)["connections"]
    pages = [detail(live_server, device_id, limit=2, offset=o) for o in (0, 2, 4, 6)]
    assert [len(p["connections"]) for p in pages] == [2, 2, 2, 0]
    assert [c for p in pages for c in p["connections"]] == everything
    assert all(p["matchedConnections"] == 6 for p in pages)
    data = detail(live_server, device_id)
    assert data.get("success", True)
    summary = data["summary"]
    assert summary["totalConnections"] == 6
    assert summary["protocols"] == {"TCP": 4, "UDP": 2}
    assert summary["uniqueSourceIps"] == 2 and summary["uniqueDestIps"] == 5
    assert summary["totalBytesIn"] == 5010 and summary["totalBytesOut"] == 110
    assert {"totalPacketsIn", "totalPacketsOut"} <= set(summary)
    assert [(s["bytesIn"], s["connections"]) for s in data["traffic"]] == [(None, 7), (700, 6)]
    # samples older than an hour are not shown
    sql(live_server.data_dir, "UPDATE traffic SET t = t - 7200 WHERE bytes_in IS NULL")
    assert [s["bytesIn"] for s in detail(live_server, device_id)["traffic"]] == [700]
    dests = [(d["ip"], d["port"]) for d in data["destinations"]]
    assert dests[0] == ("198.51.100.10", 443), "most traffic first"
    assert ("198.51.100.99", 9999) in dests, "closed connections' destinations stay"
    assert ("0.0.0.0", 0) not in dests


@pytest.mark.parametrize(
    "path",
    [
        "/api/dashboard/user/999999",
        "/api/dashboard/user/0",
        "/api/dashboard/user/-1",
        "/api/dashboard/user/99999999999999999999999999999",
        "/api/dashboard/user/9223372036854775808",
        "/api/dashboard/user/abc",
        "/api/dashboard/user/1e3",
        "/api/dashboard/user/%00",
        "/api/dashboard/user/",
    ],
)
def test_odd_device_ids_never_500(shared_server: LiveServer, path: str) -> None:
    admin = shared_server.admin_token
    for method in ("GET", "DELETE"):
        r = shared_server.request(method, path, admin)
        assert r.status_code in (400, 404, 405), (method, path, r.status_code, r.text)
        assert_error(r, r.status_code)
    r = shared_server.request(
        "POST", path.replace("/api/dashboard/user/", "/api/devices/") + "/revoke", admin
    )
    assert r.status_code in (400, 404, 405), r.text


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "0"}, {"limit": "-1"}, {"limit": "abc"}, {"limit": "99999999999999999999"},
        {"offset": "-1"}, {"offset": "x"}, {"protocol": "ICMP"}, {"closed": "maybe"},
        {"q": "x" * 5000}, {"state": "S" * 100},
    ],
)  # fmt: skip
def test_bad_query_parameters_are_400(shared_server: LiveServer, params: dict[str, str]) -> None:
    admin = shared_server.admin_token
    device_id = shared_server.request(
        "POST", "/api/monitor/register", admin, json={"deviceName": "q"}
    ).json()["deviceId"]
    r = shared_server.request("GET", f"/api/dashboard/user/{device_id}", admin, params=params)
    body = assert_error(r, 400)
    assert body["field"] is not None or next(iter(params)) in body["detail"]


def test_unauthenticated_dashboard_is_401(shared_server: LiveServer) -> None:
    for path in ("/api/dashboard/users", "/api/dashboard/user/1"):
        assert_error(shared_server.request("GET", path), 401)
