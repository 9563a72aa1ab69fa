"""Devices: enrollment, re-enrollment, what a device key may do, revocation and deletion."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.conftest import LiveServer
from tests.server.conftest import assert_error, conn, detail, ifaces, post, report, snapshot, sql


def register(server: LiveServer, token: str | None, body: dict[str, Any]) -> Any:
    return server.request("POST", "/api/monitor/register", token, json=body)


def device_tables(server: LiveServer) -> list[str]:
    """Every table with a device_id column (whatever the schema version calls them)."""
    tables = [
        r[0] for r in sql(server.data_dir, "SELECT name FROM sqlite_master WHERE type = 'table'")
    ]
    return [
        t for t in tables
        if any(col[1] == "device_id" for col in sql(server.data_dir, f"PRAGMA table_info({t})"))
    ]  # fmt: skip


def rows_of(server: LiveServer, device_id: int) -> dict[str, int]:
    counts = {}
    for table in device_tables(server):
        query = f"SELECT count(*) FROM {table} WHERE device_id = ?"
        counts[table] = sql(server.data_dir, query, (device_id,))[0][0]
    return counts


def test_enroll_with_enrollment_token_and_with_access_token(live_server: LiveServer) -> None:
    admin = live_server.admin_token
    by_enrollment = register(
        live_server, live_server.enrollment_token(),
        {"deviceName": "meter-1", "hostname": "pi", "os": "Linux", "agentVersion": "0.9"},
    )  # fmt: skip
    by_access = register(live_server, admin, {"deviceName": "meter-2"})
    for r in (by_enrollment, by_access):
        assert r.status_code == 200, r.text
        key = r.json()["deviceKey"]
        assert re.fullmatch(r"smd_[A-Za-z0-9_-]{22,}", key), key
    assert by_enrollment.json()["deviceId"] != by_access.json()["deviceId"]
    devices = {
        d["deviceName"]: d
        for d in live_server.request("GET", "/api/dashboard/users", admin).json()["data"]
    }
    assert devices["meter-1"]["agent"] == {
        "version": "0.9",
        "os": "Linux",
        "hostname": "pi",
        "capabilities": None,
    }
    assert devices["meter-1"]["username"] == "admin" and devices["meter-1"]["status"] == "offline"
    assert devices["meter-1"]["keyActive"] is True


def test_same_name_again_keeps_the_device_with_a_new_key(live_server: LiveServer) -> None:
    device_id, old_key = live_server.enroll("reflashed")
    assert post(live_server, old_key, report([conn()])).status_code == 200
    again = register(live_server, live_server.enrollment_token(), {"deviceName": "reflashed"})
    assert again.status_code == 200
    new_key = again.json()["deviceKey"]
    assert again.json()["deviceId"] == device_id and new_key != old_key
    assert_error(post(live_server, old_key, report([conn()])), 401)
    assert post(live_server, new_key, report([conn()])).status_code == 200
    # history is kept: the connection from the first key's report is still open
    assert [c["destIp"] for c in detail(live_server, device_id)["connections"]] == ["192.0.2.1"]
    # the same name for another user is another device
    other = live_server.user_token("other")
    mine = register(live_server, live_server.enrollment_token(other), {"deviceName": "reflashed"})
    assert mine.status_code == 200 and mine.json()["deviceId"] != device_id
    assert post(live_server, new_key, report()).status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "deviceName"),
        ({"deviceName": ""}, "deviceName"),
        ({"deviceName": "   "}, "deviceName"),
        ({"deviceName": "x" * 129}, "deviceName"),
        ({"deviceName": 7}, "deviceName"),
        ({"deviceName": "ok", "hostname": "h" * 300}, "hostname"),
    ],
)
def test_register_validation(shared_server: LiveServer, body: dict[str, Any], field: str) -> None:
    token = shared_server.enrollment_token()
    before = snapshot(shared_server.data_dir)
    assert_error(register(shared_server, token, body), 422, field)
    assert snapshot(shared_server.data_dir) == before


@pytest.mark.parametrize(
    "credential", [None, "smt_unknown-enrollment-token-000000", "smd_not-a-key", "garbage"]
)
def test_register_needs_a_real_credential(
    shared_server: LiveServer, credential: str | None
) -> None:
    shared_server.admin_token  # noqa: B018
    before = snapshot(shared_server.data_dir)
    assert_error(register(shared_server, credential, {"deviceName": "intruder"}), 401)
    assert snapshot(shared_server.data_dir) == before


def test_a_device_key_can_read_nothing(live_server: LiveServer) -> None:
    device_id, key = live_server.enroll("spy")
    assert post(live_server, key, report([conn()])).status_code == 200
    before = snapshot(live_server.data_dir)
    for method, path, body in (
        ("GET", "/api/dashboard/users", None),
        ("GET", f"/api/dashboard/user/{device_id}", None),
        ("DELETE", f"/api/dashboard/user/{device_id}", None),
        ("POST", f"/api/devices/{device_id}/revoke", None),
        ("GET", "/api/tokens", None),
        ("POST", "/api/tokens", {}),
        ("GET", "/api/users", None),
        ("GET", "/api/auth/me", None),
        ("POST", "/api/auth/logout", None),
        ("POST", "/api/monitor/register", {"deviceName": "spy-2"}),
    ):
        r = live_server.request(method, path, key, json=body)
        assert_error(r, 401)
        assert "192.0.2.1" not in r.text and "spy" not in r.text
    assert snapshot(live_server.data_dir) == before


def test_revoke_device_key(live_server: LiveServer) -> None:
    admin = live_server.admin_token
    device_id, key = live_server.enroll("stolen")
    assert post(live_server, key, report([conn()])).status_code == 200
    r = live_server.request("POST", f"/api/devices/{device_id}/revoke", admin)
    assert r.status_code == 200
    before = snapshot(live_server.data_dir)
    assert_error(post(live_server, key, report([conn("192.0.2.99")])), 401)
    assert snapshot(live_server.data_dir) == before
    data = detail(live_server, device_id)
    assert data["keyActive"] is False
    assert [c["destIp"] for c in data["connections"]] == ["192.0.2.1"]
    # enrolling again gives a working key for the same device
    again_id, again_key = live_server.enroll("stolen")
    assert again_id == device_id
    assert post(live_server, again_key, report([conn("192.0.2.99")])).status_code == 200
    assert_error(post(live_server, key, report()), 401)


def test_delete_device_removes_its_data(live_server: LiveServer) -> None:
    admin = live_server.admin_token
    keep_id, keep_key = live_server.enroll("keeper")
    device_id, key = live_server.enroll("doomed")
    for k in (keep_key, key):
        for i in range(2):
            r = post(
                live_server,
                k,
                report(
                    [conn(source_port=40000 + i)],
                    [conn("192.0.2.5", 53, protocol="UDP")],
                    seq=i,
                    interfaces=ifaces(100 * i, 50 * i),
                ),
            )
            assert r.status_code == 200
    stored = rows_of(live_server, device_id)
    assert len(stored) >= 5 and sum(n > 0 for n in stored.values()) >= 4, stored
    keeper_before = rows_of(live_server, keep_id)
    r = live_server.request("DELETE", f"/api/dashboard/user/{device_id}", admin)
    assert r.status_code == 200
    assert rows_of(live_server, device_id) == dict.fromkeys(stored, 0)
    assert sql(live_server.data_dir, "SELECT count(*) FROM devices WHERE id = ?", (device_id,)) == [
        (0,)
    ]
    assert rows_of(live_server, keep_id) == keeper_before
    assert_error(live_server.request("GET", f"/api/dashboard/user/{device_id}", admin), 404)
    assert_error(live_server.request("DELETE", f"/api/dashboard/user/{device_id}", admin), 404)
    assert_error(live_server.request("POST", f"/api/devices/{device_id}/revoke", admin), 404)
    assert_error(post(live_server, key, report([conn()])), 401)
    names = [
        d["deviceName"]
        for d in live_server.request("GET", "/api/dashboard/users", admin).json()["data"]
    ]
    assert names == ["keeper"]
    # the name is free again: a new device, with no old history (SQLite may reuse the id)
    new_id, _ = live_server.enroll("doomed")
    fresh = detail(live_server, new_id)
    assert fresh["connections"] == [] and fresh["traffic"] == [] and fresh["destinations"] == []
    assert fresh["lastSeen"] is None and fresh["bytesIn"] == 0


def test_owner_can_delete_and_revoke_their_own_device(live_server: LiveServer) -> None:
    user = live_server.user_token("owner")
    device_id, key = live_server.enroll("mine", user)
    assert live_server.request("POST", f"/api/devices/{device_id}/revoke", user).status_code == 200
    assert_error(post(live_server, key, report()), 401)
    assert (
        live_server.request("DELETE", f"/api/dashboard/user/{device_id}", user).status_code == 200
    )
    assert live_server.request("GET", "/api/dashboard/users", user).json()["data"] == []
