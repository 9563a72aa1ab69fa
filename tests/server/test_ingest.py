"""Ingest: committed before 200, duplicates, gzip and size limits, validation, history, traffic."""

from __future__ import annotations

import gzip
import json
import threading
import time
import uuid
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer
from tests.server.conftest import (
    assert_error,
    conn,
    detail,
    ifaces,
    iso,
    post,
    report,
    snapshot,
    sql,
)


@pytest.fixture
def device(live_server: LiveServer) -> tuple[int, str]:
    return live_server.enroll("meter")


def by_dest(connections: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    return {(c["destIp"], c["destPort"]): c for c in connections}


def test_answered_only_after_commit(live_server: LiveServer, device: tuple[int, str]) -> None:
    device_id, key = device
    for i in range(5):
        body = report([conn(source_port=50000 + i)], seq=i)
        r = post(live_server, key, body)
        assert r.status_code == 200
        assert r.json() == {"reportId": body["reportId"], "duplicate": False, "success": True}
        # another connection to the file sees it at once: it was committed before the answer
        assert sql(
            live_server.data_dir, "SELECT seq FROM reports WHERE report_id = ?", (body["reportId"],)
        ) == [(i,)]
        ports = [c["sourcePort"] for c in detail(live_server, device_id)["connections"]]
        assert 50000 + i in ports


def test_duplicate_report_changes_nothing(live_server: LiveServer, device: tuple[int, str]) -> None:
    device_id, key = device
    assert post(live_server, key, report([conn()], interfaces=ifaces(1000, 500))).status_code == 200
    body = report(
        [conn(bytesIn=300, bytesOut=30)], [conn("192.0.2.50", 80, bytesIn=7, bytesOut=8)],
        seq=2, interfaces=ifaces(2000, 900), collected_at=time.time() + 1,
    )  # fmt: skip
    first = post(live_server, key, body)
    assert first.status_code == 200 and first.json()["duplicate"] is False
    before = snapshot(live_server.data_dir)
    listing_before = live_server.request(
        "GET", "/api/dashboard/users", live_server.admin_token
    ).json()
    for again in (
        body,
        body | {"reportId": body["reportId"].upper()},
        # a retry whose content differs is still the same report
        body | {"connections": [conn("203.0.113.1", 22)], "interfaces": ifaces(9999, 9999)},
    ):
        r = post(live_server, key, again)
        assert r.status_code == 200
        assert r.json()["duplicate"] is True and r.json()["reportId"].lower() == body["reportId"]
    assert snapshot(live_server.data_dir) == before
    listing = live_server.request("GET", "/api/dashboard/users", live_server.admin_token).json()
    assert listing["data"][0]["bytesIn"] == listing_before["data"][0]["bytesIn"] == 1000
    data = detail(live_server, device_id)
    assert len(data["traffic"]) == 2
    dest = {(d["ip"], d["port"]): d for d in data["destinations"]}
    assert dest[("192.0.2.50", 80)]["bytesIn"] == 7


def test_concurrent_retries_are_counted_once(
    live_server: LiveServer, device: tuple[int, str]
) -> None:
    device_id, key = device
    body = report([conn(bytesIn=10)], interfaces=ifaces(10, 10))
    results: list[Any] = []

    # each thread its own connection (the fixture's keep-alive client is not for threads)
    def send_fresh() -> None:
        r = httpx.post(
            live_server.url + "/api/monitor/connections", json=body,
            headers={"authorization": f"Bearer {key}"}, timeout=15,
        )  # fmt: skip
        results.append(r.json())

    threads = [threading.Thread(target=send_fresh) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(r["duplicate"] for r in results) == [False] + [True] * 5
    assert sql(
        live_server.data_dir, "SELECT count(*) FROM traffic WHERE device_id = ?", (device_id,)
    ) == [(1,)]
    assert sql(
        live_server.data_dir, "SELECT count(*) FROM reports WHERE device_id = ?", (device_id,)
    ) == [(1,)]


def test_gzip_body(live_server: LiveServer, device: tuple[int, str]) -> None:
    device_id, key = device
    body = report([conn(source_port=p) for p in range(1000, 1100)])
    r = live_server.request(
        "POST", "/api/monitor/connections", key, content=gzip.compress(json.dumps(body).encode()),
        headers={"content-encoding": "gzip", "content-type": "application/json"},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    assert detail(live_server, device_id)["connectionCount"] == 100


def test_bad_encodings(live_server: LiveServer, device: tuple[int, str]) -> None:
    _device_id, key = device
    assert post(live_server, key, report([conn()])).status_code == 200
    before = snapshot(live_server.data_dir)
    raw = json.dumps(report([conn("192.0.2.77")])).encode()
    for content, encoding, status in (
        (b"definitely not gzip", "gzip", 400),
        (gzip.compress(raw)[:-12], "gzip", 400),  # truncated
        (gzip.compress(b"{not json"), "gzip", 400),
        (raw, "br", 415),
    ):
        r = live_server.request(
            "POST", "/api/monitor/connections", key, content=content,
            headers={"content-encoding": encoding, "content-type": "application/json"},
        )  # fmt: skip
        assert_error(r, status)
    assert snapshot(live_server.data_dir) == before


def test_gzip_bomb_is_413(live_server: LiveServer, device: tuple[int, str]) -> None:
    _device_id, key = device
    assert post(live_server, key, report([conn()])).status_code == 200
    before = snapshot(live_server.data_dir)
    # 64 MB of JSON whitespace inside a valid report, ~64 KB on the wire
    inner = b'{"reportId": "' + str(uuid.uuid4()).encode() + b'", "seq": 1,' + b" " * (64 << 20)
    inner += b'"collectedAt": "2026-01-01T00:00:00Z", "intervalS": 10}'
    bomb = gzip.compress(inner, compresslevel=9)
    assert len(bomb) < 200_000
    r = live_server.request(
        "POST", "/api/monitor/connections", key, content=bomb,
        headers={"content-encoding": "gzip", "content-type": "application/json"},
    )  # fmt: skip
    assert_error(r, 413)
    for header in ("x-content-type-options", "x-frame-options"):
        assert header in r.headers, "security headers on the 413 too"
    assert snapshot(live_server.data_dir) == before


def test_body_over_10_mb_is_413(live_server: LiveServer, device: tuple[int, str]) -> None:
    _device_id, key = device
    before = snapshot(live_server.data_dir)
    body = report([conn(process="p" * 200, source_port=i % 65535) for i in range(40_000)])
    raw = json.dumps(body).encode()
    assert len(raw) > 10 * 1024 * 1024
    r = live_server.request(
        "POST",
        "/api/monitor/connections",
        key,
        content=raw,
        headers={"content-type": "application/json"},
    )
    assert_error(r, 413)
    assert snapshot(live_server.data_dir) == before


def test_more_than_100000_connections_is_422(
    live_server: LiveServer, device: tuple[int, str]
) -> None:
    _device_id, key = device
    assert post(live_server, key, report([conn()])).status_code == 200
    before = snapshot(live_server.data_dir)
    one = b'{"protocol":"UDP","sourceIp":"::","sourcePort":1,"destIp":"::","destPort":0,"state":"UNCONN"}'
    raw = (
        b'{"reportId":"' + str(uuid.uuid4()).encode() + b'","seq":2,"collectedAt":"' + iso().encode()
        + b'","intervalS":10,"connections":[' + b",".join([one] * 100_001) + b"]}"
    )  # fmt: skip
    assert len(raw) < 10 * 1024 * 1024
    r = live_server.request(
        "POST",
        "/api/monitor/connections",
        key,
        content=raw,
        headers={"content-type": "application/json"},
    )
    assert_error(r, 422, "connections")
    assert snapshot(live_server.data_dir) == before


BAD_CONNECTIONS = [
    ({"sourceIp": "999.1.1.1"}, "connections"),
    ({"destIp": "fe80::zz"}, "connections"),
    ({"destIp": "example.com"}, "connections"),
    ({"destIp": ""}, None),  # either refused or read as "any"; never a 500
    ({"sourcePort": 70000}, "connections[0].sourcePort"),
    ({"destPort": -1}, "connections[0].destPort"),
    ({"sourcePort": "443"}, "connections[0].sourcePort"),
    ({"sourcePort": 44.5}, "connections[0].sourcePort"),
    ({"bytesIn": -5}, "connections[0].bytesIn"),
    ({"packetsOut": 2**64}, "connections[0].packetsOut"),
    ({"bytesOut": "12"}, "connections[0].bytesOut"),
    ({"state": "OPEN"}, "connections"),
    ({"protocol": "UDP", "state": "LISTEN"}, "connections"),
    ({"protocol": "ICMP"}, "connections[0].protocol"),
    ({"family": 5}, "connections[0].family"),
    ({"pid": -1}, "connections[0].pid"),
    ({"process": "x" * 1000}, "connections[0].process"),
    ({"protocol": None}, "connections[0].protocol"),
]


@pytest.mark.parametrize(("change", "field"), BAD_CONNECTIONS, ids=lambda v: json.dumps(v)[:40])
def test_bad_connection_is_422_and_nothing_changes(
    shared_server: LiveServer, change: dict[str, Any], field: str | None
) -> None:
    key = shared_device(shared_server)
    before = snapshot(shared_server.data_dir)
    # one good connection next to the bad one: the report is refused as a whole
    body = report([conn("198.51.100.200", 1234), conn() | change])
    body["connections"] = [body["connections"][1], body["connections"][0]]
    r = post(shared_server, key, body)
    if field is None:
        assert r.status_code in (200, 422), r.text
        return
    assert_error(r, 422, field)
    assert snapshot(shared_server.data_dir) == before


_shared: dict[str, str] = {}


def shared_device(server: LiveServer) -> str:
    if server.url not in _shared:
        _, key = server.enroll("shared-meter")
        assert post(server, key, report([conn()], interfaces=ifaces(5, 5))).status_code == 200
        _shared[server.url] = key
    return _shared[server.url]


BAD_REPORTS = [
    ({"reportId": "not-a-uuid"}, "reportId"),
    ({"reportId": None}, "reportId"),
    ({"seq": -1}, "seq"),
    ({"seq": "1"}, "seq"),
    ({"collectedAt": "yesterday"}, "collectedAt"),
    ({"intervalS": 0}, "intervalS"),
    ({"intervalS": -10}, "intervalS"),
    ({"connections": {}}, "connections"),
    ({"connections": [1, 2]}, "connections"),
    ({"closed": "none"}, "closed"),
    ({"interfaces": {"bytesIn": -1}}, "interfaces.bytesIn"),
    ({"droppedReports": -3}, "droppedReports"),
    ({"agent": {"capabilities": {"collector": "magic"}}}, "agent.capabilities.collector"),
]


@pytest.mark.parametrize(("change", "field"), BAD_REPORTS, ids=lambda v: json.dumps(v)[:40])
def test_bad_report_is_422_and_nothing_changes(
    shared_server: LiveServer, change: dict[str, Any], field: str
) -> None:
    key = shared_device(shared_server)
    before = snapshot(shared_server.data_dir)
    r = post(shared_server, key, report([conn("198.51.100.200", 1234)]) | change)
    assert_error(r, 422, field)
    assert snapshot(shared_server.data_dir) == before


@pytest.mark.parametrize("missing", ["reportId", "seq", "collectedAt", "intervalS"])
def test_missing_report_field_is_422(shared_server: LiveServer, missing: str) -> None:
    key = shared_device(shared_server)
    body = report([conn()])
    del body[missing]
    assert_error(post(shared_server, key, body), 422, missing)


@pytest.mark.parametrize("raw", [b"{", b"[]", b"null", b"", b'{"reportId": 1'])
def test_malformed_report_is_400_or_422(shared_server: LiveServer, raw: bytes) -> None:
    key = shared_device(shared_server)
    before = snapshot(shared_server.data_dir)
    r = shared_server.request(
        "POST",
        "/api/monitor/connections",
        key,
        content=raw,
        headers={"content-type": "application/json"},
    )
    assert r.status_code in (400, 422), r.text
    assert_error(r, r.status_code)
    assert snapshot(shared_server.data_dir) == before


@pytest.mark.parametrize("credential", [None, "smd_forged", "smt_forged", "Basic abc"])
def test_report_needs_a_device_key(shared_server: LiveServer, credential: str | None) -> None:
    shared_device(shared_server)
    before = snapshot(shared_server.data_dir)
    headers = {"authorization": credential} if credential and " " in credential else {}
    r = shared_server.request(
        "POST",
        "/api/monitor/connections",
        None if headers else credential,
        json=report([conn()]),
        headers=headers,
    )
    assert_error(r, 401)
    # an access token is not a device key either
    r = post(shared_server, shared_server.admin_token, report([conn()]))
    assert_error(r, 401)
    assert snapshot(shared_server.data_dir) == before


def test_vanished_connections_become_history(
    live_server: LiveServer, device: tuple[int, str]
) -> None:
    device_id, key = device
    t0 = time.time()
    keep = conn("192.0.2.1", 443, 40001, bytesIn=10, bytesOut=20)
    gone = conn("192.0.2.2", 22, 40002, bytesIn=111, bytesOut=222, pid=42, process="ssh")
    assert post(live_server, key, report([keep, gone], collected_at=t0)).status_code == 200
    assert post(live_server, key, report([keep], seq=2, collected_at=t0 + 10)).status_code == 200
    data = detail(live_server, device_id)
    assert [c["destIp"] for c in data["connections"]] == ["192.0.2.1"]
    assert data["connectionCount"] == 1 and data["summary"]["totalConnections"] == 1
    history = detail(live_server, device_id, closed="true")["connections"]
    (closed,) = history
    assert closed["destIp"] == "192.0.2.2" and closed["closedAt"] is not None
    assert (closed["bytesIn"], closed["bytesOut"], closed["pid"], closed["process"]) == (
        111,
        222,
        42,
        "ssh",
    )
    assert closed["firstSeen"] <= closed["closedAt"]
    # the same connection opening again is a new open row, its history stays
    assert (
        post(live_server, key, report([keep, gone], seq=3, collected_at=t0 + 20)).status_code == 200
    )
    assert len(detail(live_server, device_id)["connections"]) == 2
    assert len(detail(live_server, device_id, closed="true")["connections"]) == 1
    # an empty report closes everything
    assert post(live_server, key, report([], seq=4, collected_at=t0 + 30)).status_code == 200
    assert detail(live_server, device_id)["connections"] == []
    assert len(detail(live_server, device_id, closed="true")["connections"]) == 3


def test_closed_list_lands_in_history_with_final_counters(
    live_server: LiveServer, device: tuple[int, str]
) -> None:
    device_id, key = device
    t0 = time.time()
    lived = conn("192.0.2.3", 443, 40003, bytesIn=5, bytesOut=5)
    assert post(live_server, key, report([lived], collected_at=t0)).status_code == 200
    short = conn(
        "192.0.2.9", 53, 5353, protocol="UDP", bytesIn=64, bytesOut=32, packetsIn=1, packetsOut=1
    )
    final = lived | {"bytesIn": 5000, "bytesOut": 700, "state": "TIME_WAIT"}
    r = post(live_server, key, report([], [short, final], seq=2, collected_at=t0 + 10))
    assert r.status_code == 200
    history = by_dest(detail(live_server, device_id, closed="true")["connections"])
    assert (
        history[("192.0.2.9", 53)]["bytesIn"] == 64
        and history[("192.0.2.9", 53)]["packetsOut"] == 1
    )
    assert history[("192.0.2.9", 53)]["closedAt"]
    assert (history[("192.0.2.3", 443)]["bytesIn"], history[("192.0.2.3", 443)]["bytesOut"]) == (
        5000,
        700,
    )
    assert history[("192.0.2.3", 443)]["state"] == "TIME_WAIT"
    assert detail(live_server, device_id)["connections"] == []
    destinations = {(d["ip"], d["port"]): d for d in detail(live_server, device_id)["destinations"]}
    assert destinations[("192.0.2.9", 53)]["bytesIn"] == 64
    assert destinations[("192.0.2.3", 443)]["bytesIn"] == 5000


def test_traffic_samples_are_deltas_and_survive_a_reset(
    live_server: LiveServer, device: tuple[int, str]
) -> None:
    device_id, key = device
    t0 = time.time()
    steps = [
        ifaces(1000, 500, 10, 5),
        ifaces(1600, 900, 16, 9),
        ifaces(100, 50, 1, 1),
        ifaces(400, 150, 4, 2),
    ]
    for i, counters in enumerate(steps):
        r = post(
            live_server,
            key,
            report(
                [conn(source_port=p) for p in range(i % 2 + 1)],
                seq=i,
                collected_at=t0 + 10 * i,
                interfaces=counters,
            ),
        )
        assert r.status_code == 200
    traffic = detail(live_server, device_id)["traffic"]
    assert [(s["bytesIn"], s["bytesOut"], s["packetsIn"], s["packetsOut"]) for s in traffic] == [
        (None, None, None, None),  # nothing to compare the first report with: unknown, not 0
        (600, 400, 6, 4),
        (100, 50, 1, 1),  # the counters went down: the agent rebooted, count from zero
        (300, 100, 3, 1),
    ]
    assert all(s["bytesIn"] is None or s["bytesIn"] >= 0 for s in traffic)
    device = detail(live_server, device_id)
    assert (device["bytesIn"], device["bytesOut"]) == (1000, 550)
    assert device["bytesInRate"] == pytest.approx(30.0)  # 300 bytes over 10 s of device time
    assert [s["connections"] for s in traffic] == [1, 2, 1, 2]


def test_counters_absent_stay_null(live_server: LiveServer, device: tuple[int, str]) -> None:
    device_id, key = device
    assert post(live_server, key, report([conn()])).status_code == 200
    (c,) = detail(live_server, device_id)["connections"]
    assert c["bytesIn"] is None and c["packetsOut"] is None and c["pid"] is None
    (sample,) = detail(live_server, device_id)["traffic"]
    assert sample["bytesIn"] is None


def test_destinations_survive_their_connections(
    live_server: LiveServer, device: tuple[int, str]
) -> None:
    device_id, key = device
    t0 = time.time()
    a = conn("198.51.100.1", 443, 41000, bytesIn=1000, bytesOut=200)
    b = conn("198.51.100.1", 443, 41001, bytesIn=10, bytesOut=20)
    listener = conn("0.0.0.0", 0, 22, state="LISTEN", source_ip="0.0.0.0")
    assert post(live_server, key, report([a, b, listener], collected_at=t0)).status_code == 200
    dest = {(d["ip"], d["port"]): d for d in detail(live_server, device_id)["destinations"]}
    assert set(dest) == {("198.51.100.1", 443)}, "a listening socket is no destination"
    assert dest[("198.51.100.1", 443)]["openConnections"] == 2
    assert (
        post(
            live_server, key, report([b | {"bytesIn": 50}], seq=2, collected_at=t0 + 10)
        ).status_code
        == 200
    )
    assert post(live_server, key, report([], seq=3, collected_at=t0 + 20)).status_code == 200
    (d,) = detail(live_server, device_id)["destinations"]
    assert (d["ip"], d["port"], d["protocol"]) == ("198.51.100.1", 443, "TCP")
    assert (d["bytesIn"], d["bytesOut"], d["openConnections"]) == (1050, 220, 0)
    assert d["firstSeen"] <= d["lastSeen"]


def test_late_report_does_not_regress_state(
    live_server: LiveServer, device: tuple[int, str]
) -> None:
    device_id, key = device
    t0 = time.time()
    current = report(
        [conn("192.0.2.1", 443, bytesIn=500)], seq=10, collected_at=t0, interfaces=ifaces(5000, 5000),
        agent={"version": "2.0", "os": "Linux", "hostname": "new"},
    )  # fmt: skip
    assert post(live_server, key, current).status_code == 200
    before = detail(live_server, device_id)
    late = report(
        [conn("192.0.2.66", 8080, bytesIn=1)], [conn("192.0.2.77", 25, bytesIn=9)],
        seq=3, collected_at=t0 - 300, interfaces=ifaces(10, 10),
        agent={"version": "1.0", "os": "Linux", "hostname": "old"},
    )  # fmt: skip
    r = post(live_server, key, late)
    assert r.status_code == 200 and r.json()["duplicate"] is False
    after = detail(live_server, device_id)
    assert [c["destIp"] for c in after["connections"]] == ["192.0.2.1"]
    assert after["connections"][0]["bytesIn"] == 500
    assert after["agent"]["version"] == "2.0" and after["agent"]["hostname"] == "new"
    assert after["collectedAt"] == before["collectedAt"]
    assert (after["bytesIn"], after["bytesOut"]) == (before["bytesIn"], before["bytesOut"])
    # its closed connections are still history worth keeping, and it is deduplicated
    assert [c["destIp"] for c in detail(live_server, device_id, closed="true")["connections"]] == [
        "192.0.2.77"
    ]
    assert post(live_server, key, late).json()["duplicate"] is True
    # the next current report goes on from the current counters
    nxt = report(
        [conn("192.0.2.1", 443)], seq=11, collected_at=t0 + 10, interfaces=ifaces(5100, 5050)
    )
    assert post(live_server, key, nxt).status_code == 200
    assert detail(live_server, device_id)["traffic"][-1]["bytesIn"] == 100


def test_device_clock_going_back_does_not_freeze_the_device(
    live_server: LiveServer, device: tuple[int, str]
) -> None:
    """A Pi that booted with a wrong clock and then corrected it keeps being updated."""
    device_id, key = device
    t0 = time.time()
    wrong = report([conn("192.0.2.1", 443)], seq=1, collected_at=t0 + 365 * 86400)
    assert post(live_server, key, wrong).status_code == 200
    fixed = report([conn("192.0.2.2", 443)], seq=2, collected_at=t0, interfaces=ifaces(10, 10))
    assert post(live_server, key, fixed).status_code == 200
    after = detail(live_server, device_id)
    assert [c["destIp"] for c in after["connections"]] == ["192.0.2.2"]
    assert after["collectedAt"].startswith(iso(t0)[:16])
    # an agent restarted with its seq back at 0 and a later clock is current too
    restarted = report([conn("192.0.2.3", 443)], seq=0, collected_at=t0 + 10)
    assert post(live_server, key, restarted).status_code == 200
    assert [c["destIp"] for c in detail(live_server, device_id)["connections"]] == ["192.0.2.3"]


def test_report_updates_device_summary(live_server: LiveServer, device: tuple[int, str]) -> None:
    device_id, key = device
    body = report(
        [conn("198.51.100.9", 443, bytesIn=10**6), conn("192.0.2.1", 443, 40001, bytesIn=5),
         conn("::", 0, 53, protocol="UDP", source_ip="::", state="UNCONN")],
        agent={"version": "3.1", "os": "Linux 6.1", "hostname": "pi-7",
               "capabilities": {"collector": "netlink", "counters": True, "processes": "all", "closeEvents": True}},
        droppedReports=4,
    )  # fmt: skip
    assert post(live_server, key, body).status_code == 200
    d = detail(live_server, device_id)
    assert d["status"] == "online" and d["lastSeen"]
    assert d["connectionCount"] == 3 and d["protocols"] == ["TCP", "UDP"]
    assert d["uniqueIps"] == ["198.51.100.9", "192.0.2.1"], "most active first, no wildcard"
    assert d["agent"]["version"] == "3.1" and d["agent"]["capabilities"]["collector"] == "netlink"
    assert d["droppedReports"] == 4
    (udp,) = [c for c in d["connections"] if c["protocol"] == "UDP"]
    assert udp["family"] == 6 and udp["state"] == "UNCONN"
