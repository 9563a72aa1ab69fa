"""The prototype's agents keep working: login token in the body, one connection per post."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import LiveServer
from tests.server.conftest import assert_error, detail, snapshot


def legacy_register(server: LiveServer, token: str, name: str) -> Any:
    return server.request(
        "POST", "/api/monitor/register", json={"token": token, "deviceName": name}
    )


def legacy_post(server: LiveServer, token: str, **fields: Any) -> Any:
    body = {
        "token": token, "sourceIp": "192.168.1.20", "sourcePort": 51000,
        "destIp": "93.184.216.34", "destPort": 443, "protocol": "TCP", **fields,
    }  # fmt: skip
    return server.request("POST", "/api/monitor/connections", json=body)


def make_legacy(server: LiveServer) -> tuple[str, int]:
    """A prototype agent's login token and the device it registered."""
    token = server.user_token("proto")
    r = legacy_register(server, token, "Smart Meter 1")
    assert r.status_code == 200, r.text  # the prototype treats anything but 200 as failure
    return token, int(r.json()["deviceId"])


@pytest.fixture
def legacy(live_server: LiveServer) -> tuple[str, int]:
    return make_legacy(live_server)


_shared: dict[str, tuple[str, int]] = {}


@pytest.fixture
def shared_legacy(shared_server: LiveServer) -> tuple[str, int]:
    """make_legacy on the module's shared server (for tests that change nothing)."""
    if shared_server.url not in _shared:
        _shared[shared_server.url] = make_legacy(shared_server)
    return _shared[shared_server.url]


def test_register_and_post_connections(live_server: LiveServer, legacy: tuple[str, int]) -> None:
    token, device_id = legacy
    r = legacy_post(live_server, token)
    assert r.status_code == 200, r.text
    assert r.json()["success"] is True
    r = legacy_post(
        live_server, token, sourceIp="*", sourcePort="*", destIp="*", destPort="*", protocol="udp"
    )
    assert r.status_code == 200, r.text
    r = legacy_post(
        live_server,
        token,
        sourceIp="[::]",
        sourcePort=22,
        destIp="[::]",
        destPort="*",
        protocol="tcp6",
    )
    assert r.status_code == 200, r.text
    r = legacy_post(
        live_server, token, sourceIp="127.0.0.53%lo", sourcePort="53", destIp="0.0.0.0", destPort="*",
        protocol="UDP", timestamp="2024-01-01T00:00:00Z", deviceName="Smart Meter 1",
    )  # fmt: skip
    assert r.status_code == 200, r.text
    r = legacy_post(
        live_server,
        token,
        sourceIp="[fe80::1%eth0]",
        sourcePort=546,
        destIp="[ff02::1:2]",
        destPort=547,
        protocol="UDP",
    )
    assert r.status_code == 200, r.text
    data = detail(live_server, device_id, token)
    seen = {
        (c["protocol"], c["sourceIp"], c["sourcePort"], c["destIp"], c["destPort"]): c
        for c in data["connections"]
    }
    assert set(seen) == {
        ("TCP", "192.168.1.20", 51000, "93.184.216.34", 443),
        ("UDP", "0.0.0.0", 0, "0.0.0.0", 0),
        ("TCP", "::", 22, "::", 0),
        ("UDP", "127.0.0.53", 53, "0.0.0.0", 0),
        ("UDP", "fe80::1", 546, "ff02::1:2", 547),
    }
    assert seen[("TCP", "192.168.1.20", 51000, "93.184.216.34", 443)]["state"] == "ESTABLISHED"
    assert seen[("TCP", "::", 22, "::", 0)]["state"] == "LISTEN"
    assert seen[("TCP", "::", 22, "::", 0)]["family"] == 6
    assert seen[("UDP", "127.0.0.53", 53, "0.0.0.0", 0)]["state"] == "UNCONN"
    # counters the prototype never knew are unknown, not 0
    assert seen[("TCP", "192.168.1.20", 51000, "93.184.216.34", 443)]["bytesIn"] is None
    assert data["status"] == "online"
    dests = {(d["ip"], d["port"]) for d in data["destinations"]}
    assert ("93.184.216.34", 443) in dests


def test_each_post_adds_or_refreshes_one_and_closes_none(
    live_server: LiveServer, legacy: tuple[str, int]
) -> None:
    token, device_id = legacy
    for port in (1001, 1002, 1003):
        assert legacy_post(live_server, token, sourcePort=port).status_code == 200
    first = {c["sourcePort"]: c for c in detail(live_server, device_id, token)["connections"]}
    assert set(first) == {1001, 1002, 1003}
    assert legacy_post(live_server, token, sourcePort=1001).status_code == 200
    again = {c["sourcePort"]: c for c in detail(live_server, device_id, token)["connections"]}
    assert set(again) == {1001, 1002, 1003}
    assert again[1001]["firstSeen"] == first[1001]["firstSeen"]
    assert detail(live_server, device_id, token, closed="true")["connections"] == []


def test_same_user_and_name_is_the_same_device_as_the_new_agent(live_server: LiveServer) -> None:
    token = live_server.user_token("mixed")
    device_id, _key = live_server.enroll("gateway", token)
    r = legacy_register(live_server, token, "gateway")
    assert r.status_code == 200 and r.json()["deviceId"] == device_id
    assert legacy_post(live_server, token, sourcePort=7000).status_code == 200
    assert [c["sourcePort"] for c in detail(live_server, device_id, token)["connections"]] == [7000]
    devices = live_server.request("GET", "/api/dashboard/users", token).json()["data"]
    assert [d["deviceName"] for d in devices] == ["gateway"]


@pytest.mark.parametrize(
    "forged",
    [
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiIxIn0.",
        "not-a-token",
        "smt_enrollment-token-is-not-a-login",
        "smd_device-keys-are-not-logins",
        "",
    ],
)
def test_forged_token_is_401(
    shared_server: LiveServer, shared_legacy: tuple[str, int], forged: str
) -> None:
    token, _device_id = shared_legacy
    assert legacy_post(shared_server, token).status_code == 200
    before = snapshot(shared_server.data_dir)
    assert_error(legacy_post(shared_server, forged, sourcePort=6666), 401)
    assert_error(legacy_register(shared_server, forged, "Smart Meter 2"), 401)
    assert snapshot(shared_server.data_dir) == before


def test_logged_out_or_disabled_token_stops_working(
    live_server: LiveServer, legacy: tuple[str, int]
) -> None:
    token, _device_id = legacy
    user_id = live_server.request("GET", "/api/auth/me", token).json()["id"]
    live_server.request(
        "PATCH", f"/api/users/{user_id}", live_server.admin_token, json={"disabled": True}
    )
    assert_error(legacy_post(live_server, token), 401)
    live_server.request(
        "PATCH", f"/api/users/{user_id}", live_server.admin_token, json={"disabled": False}
    )
    assert legacy_post(live_server, token).status_code == 200
    assert live_server.request("POST", "/api/auth/logout", token).status_code == 200
    assert_error(legacy_post(live_server, token, sourcePort=9), 401)
    assert_error(legacy_register(live_server, token, "Smart Meter 1"), 401)


def test_post_before_register_is_refused(live_server: LiveServer) -> None:
    token = live_server.user_token("eager")
    before = snapshot(live_server.data_dir)
    r = legacy_post(live_server, token)
    assert r.status_code in (401, 404, 409), r.text
    assert_error(r, r.status_code)
    assert snapshot(live_server.data_dir) == before


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"sourceIp": "999.0.0.1"}, "sourceIp"),
        ({"destIp": "not an ip"}, "destIp"),
        ({"sourcePort": 70000}, "sourcePort"),
        ({"destPort": "http"}, "destPort"),
        ({"destPort": -1}, "destPort"),
        ({"protocol": "ICMP"}, "protocol"),
        ({"sourcePort": [1]}, "sourcePort"),
        ({"sourceIp": None}, "sourceIp"),
    ],
)
def test_bad_legacy_connection_is_422(
    shared_server: LiveServer, shared_legacy: tuple[str, int], change: dict[str, Any], field: str
) -> None:
    token, _device_id = shared_legacy
    assert legacy_post(shared_server, token).status_code == 200
    before = snapshot(shared_server.data_dir)
    assert_error(legacy_post(shared_server, token, **change), 422, field)
    assert snapshot(shared_server.data_dir) == before


def test_login_token_is_not_stored(live_server: LiveServer, legacy: tuple[str, int]) -> None:
    token, _ = legacy
    assert legacy_post(live_server, token).status_code == 200
    for path in live_server.data_dir.iterdir():
        if path.name.startswith("smartmon.db"):
            assert token.encode() not in path.read_bytes()
