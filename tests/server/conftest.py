"""Helpers for the server tests: reports, direct looks into the SQLite file, error checks."""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from smartmon.settings import ServerSettings
from tests.conftest import USER_PASSWORD, LiveServer, free_port

SECURITY_HEADERS = (
    "x-content-type-options",
    "x-frame-options",
    "referrer-policy",
    "content-security-policy",
    "cache-control",
)


def iso(t: float | None = None) -> str:
    """An RFC 3339 UTC timestamp (now by default)."""
    return datetime.fromtimestamp(time.time() if t is None else t, UTC).isoformat()


def conn(
    dest_ip: str = "192.0.2.1",
    dest_port: int = 443,
    source_port: int = 40000,
    *,
    protocol: str = "TCP",
    source_ip: str = "10.0.0.2",
    state: str = "ESTABLISHED",
    **extra: Any,
) -> dict[str, Any]:
    """One connection in wire form."""
    return {
        "protocol": protocol, "sourceIp": source_ip, "sourcePort": source_port,
        "destIp": dest_ip, "destPort": dest_port, "state": state, **extra,
    }  # fmt: skip


def report(
    connections: list[dict[str, Any]] | tuple[()] = (),
    closed: list[dict[str, Any]] | tuple[()] = (),
    *,
    report_id: str | None = None,
    seq: int = 1,
    collected_at: float | None = None,
    interval_s: float = 10,
    interfaces: dict[str, int] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A Report in wire form."""
    body: dict[str, Any] = {
        "reportId": report_id or str(uuid.uuid4()),
        "seq": seq,
        "collectedAt": iso(collected_at),
        "intervalS": interval_s,
        "agent": {"version": "1.0", "os": "Linux", "hostname": "meter"},
        "connections": list(connections),
        "closed": list(closed),
        **extra,
    }
    if interfaces is not None:
        body["interfaces"] = interfaces
    return body


def ifaces(
    bytes_in: int, bytes_out: int, packets_in: int = 0, packets_out: int = 0
) -> dict[str, int]:
    """Cumulative interface counters in wire form."""
    return {"bytesIn": bytes_in, "bytesOut": bytes_out, "packetsIn": packets_in, "packetsOut": packets_out}  # fmt: skip


def post(server: LiveServer, key: str, body: Any, **kwargs: Any) -> httpx.Response:
    """POST a report with a device key."""
    return server.request("POST", "/api/monitor/connections", key, json=body, **kwargs)


def detail(
    server: LiveServer, device_id: int, token: str | None = None, **params: Any
) -> dict[str, Any]:
    """The device detail's data (asserting 200)."""
    r = server.request(
        "GET", f"/api/dashboard/user/{device_id}", token or server.admin_token, params=params
    )
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()["data"]
    return data


def assert_error(r: httpx.Response, status: int, field: str | None = None) -> dict[str, Any]:
    """A JSON error with this status (and field, when given): {error, detail, field}."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body: dict[str, Any] = r.json()
    assert isinstance(body.get("error"), str) and body["error"], body
    assert isinstance(body.get("detail"), str) and body["detail"], body
    assert "Traceback" not in r.text
    if field is not None:
        assert body.get("field") is not None, body
        assert str(body["field"]).startswith(field), body
    return body


def database(data_dir: Path) -> Path:
    """The server's SQLite file."""
    return data_dir / "smartmon.db"


@contextmanager
def sqlite(data_dir: Path) -> Iterator[sqlite3.Connection]:
    """A connection to the server's database file (autocommit)."""
    with closing(sqlite3.connect(database(data_dir), timeout=10, isolation_level=None)) as db:
        yield db


def sql(data_dir: Path, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one statement on the database file; its rows."""
    with sqlite(data_dir) as db:
        return list(db.execute(statement, params).fetchall())


def snapshot(data_dir: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, to show that a bad request changed nothing."""
    with sqlite(data_dir) as db:
        tables = [
            row[0]
            for row in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        return {
            table: sorted(db.execute(f"SELECT * FROM {table}").fetchall(), key=repr)
            for table in tables
        }


def login(
    server: LiveServer, username: str, password: str = USER_PASSWORD, **kwargs: Any
) -> httpx.Response:
    """POST /api/auth/login."""
    return server.request(
        "POST", "/api/auth/login", json={"username": username, "password": password}, **kwargs
    )


@pytest.fixture
def fleet(live_server: LiveServer) -> dict[str, Any]:
    """Two users, A (alice) and B (bob), each with a device that has reported once."""
    a_token = live_server.user_token("alice")
    b_token = live_server.user_token("bob")
    a_device, a_key = live_server.enroll("alice-meter", a_token)
    b_device, b_key = live_server.enroll("bob-meter", b_token)
    for key, ip, process in (
        (a_key, "198.51.100.7", "alice-proc"),
        (b_key, "203.0.113.9", "bob-proc"),
    ):
        r = post(
            live_server, key, report([conn(ip, 8443, process=process)], interfaces=ifaces(10, 20))
        )
        assert r.status_code == 200, r.text
    return {
        "a_token": a_token, "b_token": b_token, "a_device": a_device, "a_key": a_key,
        "b_device": b_device, "b_key": b_key,
    }  # fmt: skip


@pytest.fixture(autouse=True)
def cheap_argon2(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cheap argon2id parameters (same code path) unless the module sets REAL_ARGON2 = True.

    argon2-cffi's defaults cost ~0.1 s per hash here; the account tests keep them.
    """
    if getattr(request.module, "REAL_ARGON2", False):
        return
    from argon2 import PasswordHasher

    from smartmon.server import auth

    cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    monkeypatch.setattr(auth, "_hasher", cheap)
    monkeypatch.setattr(auth, "_DUMMY_HASH", cheap.hash("dummy-password"))


class KeepAliveServer(LiveServer):
    """LiveServer whose requests share one keep-alive client (a new httpx client per request
    costs ~25 ms here, mostly its TLS context); the client is renewed on restart."""

    _http: httpx.Client | None = None

    def request(
        self, method: str, path: str, token: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}) or {})
        if token:
            headers["authorization"] = f"Bearer {token}"
        if self._http is None:
            self._http = httpx.Client(base_url=self.url, timeout=15)
        return self._http.request(method, path, headers=headers, **kwargs)

    def stop(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None
        super().stop()


@pytest.fixture
def live_server(server_settings: ServerSettings) -> Iterator[LiveServer]:
    """The shared live server fixture, with keep-alive requests."""
    server = KeepAliveServer(server_settings)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One live server for a whole module of tests that only read or send bad input."""
    settings = ServerSettings(data_dir=tmp_path_factory.mktemp("shared") / "data", port=free_port())
    server = KeepAliveServer(settings)
    server.start()
    try:
        yield server
    finally:
        server.stop()
