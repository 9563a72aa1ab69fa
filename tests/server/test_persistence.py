"""A restart loses nothing; the schema upgrades from its first version with the data intact."""

from __future__ import annotations

import asyncio
import hashlib
import stat
import time
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from argon2 import PasswordHasher

from smartmon.server import db as schema
from smartmon.settings import ServerSettings
from tests.conftest import USER_PASSWORD, LiveServer, free_port
from tests.server.conftest import (
    KeepAliveServer,
    assert_error,
    conn,
    detail,
    ifaces,
    login,
    post,
    report,
    snapshot,
    sql,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def stable(view: dict[str, Any]) -> dict[str, Any]:
    """A device detail without what depends on the clock (status, rates)."""
    return {k: v for k, v in view.items() if k not in ("status", "bytesInRate", "bytesOutRate")}


def test_restart_keeps_everything(live_server: LiveServer) -> None:
    admin = live_server.admin_token
    user = live_server.user_token("keeper")
    gone = login(live_server, "keeper").json()["accessToken"]
    assert live_server.request("POST", "/api/auth/logout", gone).status_code == 200
    enrollment = live_server.enrollment_token(user)
    device_id, key = live_server.enroll("persistent", user)
    t0 = time.time()
    first = report(
        [conn("192.0.2.1", 443, 40001, bytesIn=10), conn("192.0.2.2", 22, 40002, bytesIn=20)],
        collected_at=t0,
        interfaces=ifaces(100, 100),
    )
    last = report(
        [conn("192.0.2.1", 443, 40001, bytesIn=30)],
        seq=2,
        collected_at=t0 + 10,
        interfaces=ifaces(400, 200),
    )
    assert post(live_server, key, first).status_code == 200
    assert post(live_server, key, last).status_code == 200
    view = stable(detail(live_server, device_id, user))
    history = detail(live_server, device_id, user, closed="true")["connections"]
    secret = (live_server.data_dir / "jwt-secret").read_bytes()
    stored = snapshot(live_server.data_dir)

    live_server.stop()
    live_server.start()

    assert snapshot(live_server.data_dir) == stored
    assert (live_server.data_dir / "jwt-secret").read_bytes() == secret
    assert mode(live_server.data_dir / "jwt-secret") == 0o600
    assert mode(live_server.data_dir / "smartmon.db") == 0o600
    assert mode(live_server.data_dir) == 0o700
    # old access tokens still work; the logged-out one stays revoked
    assert live_server.request("GET", "/api/auth/me", user).json()["username"] == "keeper"
    assert live_server.request("GET", "/api/users", admin).status_code == 200
    assert_error(live_server.request("GET", "/api/auth/me", gone), 401)
    assert stable(detail(live_server, device_id, user)) == view
    assert detail(live_server, device_id, user, closed="true")["connections"] == history
    # dedupe survives: the last report again is a duplicate
    assert post(live_server, key, last).json()["duplicate"] is True
    # the device key and the enrollment token still work, and ingest carries on correctly
    nxt = report([], seq=3, collected_at=t0 + 20, interfaces=ifaces(500, 250))
    assert post(live_server, key, nxt).json()["duplicate"] is False
    after = detail(live_server, device_id, user)
    assert after["connections"] == [] and after["traffic"][-1]["bytesIn"] == 100
    assert len(detail(live_server, device_id, user, closed="true")["connections"]) == 2
    r = live_server.request(
        "POST", "/api/monitor/register", enrollment, json={"deviceName": "second"}
    )
    assert r.status_code == 200


def test_another_secret_invalidates_old_tokens(tmp_path: Path) -> None:
    data = tmp_path / "d"
    first = KeepAliveServer(ServerSettings(data_dir=data, port=free_port(), jwt_secret=b"a" * 32))
    first.start()
    try:
        token = first.admin_token
        assert first.request("GET", "/api/auth/me", token).status_code == 200
    finally:
        first.stop()
    second = KeepAliveServer(ServerSettings(data_dir=data, port=free_port(), jwt_secret=b"b" * 32))
    second.start()
    try:
        assert_error(second.request("GET", "/api/auth/me", token), 401)
        assert login(second, "admin", "admin-password-1").status_code == 200
    finally:
        second.stop()


def _version_1_database(path: Path) -> dict[str, Any]:
    """A database at schema version 1 with a user, a token, a device and its data."""
    key = "smd_" + "k" * 32
    enrollment = "smt_" + "e" * 32
    now = time.time()

    async def build() -> None:
        conn = await aiosqlite.connect(path, isolation_level=None)
        try:
            assert await schema.migrate(conn, target=1) == 1
            statements: list[tuple[str, tuple[Any, ...]]] = [
                ("INSERT INTO users (id, username, password_hash, role, created_at) VALUES (1, 'old', ?, 'admin', ?)",
                 (PasswordHasher().hash(USER_PASSWORD), now - 86400)),
                ("INSERT INTO enrollment_tokens (id, user_id, name, token_hash, created_at) VALUES (1, 1, 'old token', ?, ?)",
                 (hashlib.sha256(enrollment.encode()).digest(), now - 86400)),
                ("INSERT INTO devices (id, user_id, name, key_hash, registered_at, last_seen, collected_at, interval_s,"
                 " iface, bytes_in, bytes_out, connection_count, protocols, unique_ips)"
                 " VALUES (7, 1, 'veteran', ?, ?, ?, ?, 10, '[1000, 500, 10, 5]', 4000, 2000, 1, '[\"TCP\"]', '[\"192.0.2.10\"]')",
                 (hashlib.sha256(key.encode()).digest(), now - 86400, now - 5, now - 5)),
                ("INSERT INTO reports (report_id, device_id, seq, collected_at, received_at) VALUES (?, 7, 41, ?, ?)",
                 ("0b9b8c1e-1111-4222-8333-444455556666", now - 5, now - 5)),
                ("INSERT INTO connections (device_id, protocol, family, source_ip, source_port, dest_ip, dest_port,"
                 " state, pid, process, bytes_in, bytes_out, first_seen, last_seen)"
                 " VALUES (7, 'TCP', 4, '10.0.0.5', 40000, '192.0.2.10', 443, 'ESTABLISHED', 99, 'agent', 300, 200, ?, ?)",
                 (now - 600, now - 5)),
                ("INSERT INTO connections (device_id, protocol, family, source_ip, source_port, dest_ip, dest_port,"
                 " state, bytes_in, bytes_out, first_seen, last_seen, closed_at)"
                 " VALUES (7, 'UDP', 4, '10.0.0.5', 5000, '192.0.2.53', 53, 'ESTABLISHED', 64, 32, ?, ?, ?)",
                 (now - 900, now - 800, now - 800)),
                ("INSERT INTO traffic (device_id, t, bytes_in, bytes_out, packets_in, packets_out, connections)"
                 " VALUES (7, ?, 100, 50, 1, 1, 1)", (now - 5,)),
                ("INSERT INTO destinations (device_id, protocol, ip, port, first_seen, last_seen, bytes_in, bytes_out)"
                 " VALUES (7, 'UDP', '192.0.2.53', 53, ?, ?, 64, 32)", (now - 900, now - 800)),
            ]  # fmt: skip
            for statement, params in statements:
                await conn.execute(statement, params)
        finally:
            await conn.close()

    asyncio.run(build())
    return {
        "key": key,
        "enrollment": enrollment,
        "report_id": "0b9b8c1e-1111-4222-8333-444455556666",
    }


def test_upgrade_from_schema_version_1(tmp_path: Path) -> None:
    data = tmp_path / "old-data"
    data.mkdir(mode=0o700)
    old = _version_1_database(data / "smartmon.db")
    assert sql(data, "PRAGMA user_version") == [(1,)]
    server = KeepAliveServer(ServerSettings(data_dir=data, port=free_port()))
    server.start()
    try:
        assert sql(data, "PRAGMA user_version") == [(schema.SCHEMA_VERSION,)]
        r = login(server, "old")
        assert r.status_code == 200 and r.json()["user"]["role"] == "admin"
        token = r.json()["accessToken"]
        view = detail(server, 7, token)
        assert view["deviceName"] == "veteran" and view["status"] == "online"
        assert (view["bytesIn"], view["bytesOut"]) == (4000, 2000)
        (c,) = view["connections"]
        assert (c["destIp"], c["destPort"], c["pid"], c["process"], c["bytesIn"]) == (
            "192.0.2.10",
            443,
            99,
            "agent",
            300,
        )
        (h,) = detail(server, 7, token, closed="true")["connections"]
        assert (h["destIp"], h["bytesIn"], h["closedAt"] is not None) == ("192.0.2.53", 64, True)
        assert [s["bytesIn"] for s in view["traffic"]] == [100]
        assert {(d["ip"], d["port"]) for d in view["destinations"]} >= {("192.0.2.53", 53)}
        tokens = server.request("GET", "/api/tokens", token).json()
        assert [t["name"] for t in tokens] == ["old token"]
        # the old device key works, its old report id is still known, and ingest goes on from
        # the stored interface counters
        dup = report([], report_id=old["report_id"])
        assert post(server, old["key"], dup).json()["duplicate"] is True
        fresh = report(
            [conn("10.0.0.5", 443, 40000, source_ip="10.0.0.5")],
            seq=42,
            interfaces=ifaces(1500, 700, 15, 7),
        )
        assert post(server, old["key"], fresh).json()["duplicate"] is False
        after = detail(server, 7, token)
        assert after["traffic"][-1]["bytesIn"] == 500
        assert [c["destIp"] for c in after["connections"]] == ["10.0.0.5"]
        assert len(detail(server, 7, token, closed="true")["connections"]) == 2
        r = server.request(
            "POST", "/api/monitor/register", old["enrollment"], json={"deviceName": "veteran"}
        )
        assert r.status_code == 200 and r.json()["deviceId"] == 7
    finally:
        server.stop()


@pytest.mark.parametrize("target", range(1, schema.SCHEMA_VERSION + 1))
def test_every_version_migrates_to_the_latest(tmp_path: Path, target: int) -> None:
    path = tmp_path / "smartmon.db"

    async def run() -> tuple[int, int]:
        conn = await aiosqlite.connect(path, isolation_level=None)
        try:
            await schema.migrate(conn, target=target)
            at = await schema.schema_version(conn)
            await schema.migrate(conn)
            return at, await schema.schema_version(conn)
        finally:
            await conn.close()

    assert asyncio.run(run()) == (target, schema.SCHEMA_VERSION)


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "smartmon.db"

    async def run() -> None:
        conn = await aiosqlite.connect(path, isolation_level=None)
        try:
            await conn.execute(f"PRAGMA user_version = {schema.SCHEMA_VERSION + 1}")
            with pytest.raises(RuntimeError, match="newer"):
                await schema.migrate(conn)
        finally:
            await conn.close()

    asyncio.run(run())
