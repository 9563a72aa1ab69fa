"""All SQL outside ingest: users, tokens, devices and the dashboard's reads.

Reads take the Database (reader connections); writes are jobs run by the writer and take
its connection. Rows come back as plain dicts or schema Structs.
"""

from __future__ import annotations

import functools
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

import aiosqlite
import msgspec

from smartmon import api
from smartmon.server.db import Database
from smartmon.server.errors import ApiError
from smartmon.wire import Capabilities

ONLINE_MIN_S = 30.0
TRAFFIC_WINDOW_S = 3600.0
MAX_SQL_INT = 2**63 - 1


@dataclass(frozen=True)
class User:
    """An account as the server needs it for access checks."""

    id: int
    username: str
    role: str
    disabled: bool
    password_hash: str
    email: str | None
    created_at: float

    @property
    def is_admin(self) -> bool:
        """Admins see and manage every device."""
        return self.role == "admin"

    def out(self) -> api.UserOut:
        """The user as the API shows it."""
        return api.UserOut(
            id=self.id,
            username=self.username,
            role=self.role,  # type: ignore[arg-type]
            email=self.email,
            disabled=self.disabled,
            created_at=api.timestamp(self.created_at),
        )


_USER_COLUMNS = "id, username, role, disabled, password_hash, email, created_at"


def _user(row: aiosqlite.Row | None) -> User | None:
    if row is None:
        return None
    return User(row[0], row[1], row[2], bool(row[3]), row[4], row[5], row[6])


def valid_id(value: int) -> bool:
    """Ids fit SQLite's integers; anything else cannot exist."""
    return 0 < value <= MAX_SQL_INT


# ---- users -------------------------------------------------------------------------------


async def user_by_id(db: Database, user_id: int) -> User | None:
    """The user with this id."""
    if not valid_id(user_id):
        return None
    return _user(await db.fetchone(f"SELECT {_USER_COLUMNS} FROM users WHERE id = ?", (user_id,)))


async def user_by_name(db: Database, username: str) -> User | None:
    """The user with this name (case-insensitive)."""
    return _user(
        await db.fetchone(f"SELECT {_USER_COLUMNS} FROM users WHERE username = ?", (username,))
    )


async def list_users(db: Database) -> list[User]:
    """Every account, oldest first."""
    rows = await db.fetchall(f"SELECT {_USER_COLUMNS} FROM users ORDER BY id")
    return [u for u in map(_user, rows) if u is not None]


def insert_user(
    conn: sqlite3.Connection,
    username: str,
    password_hash: str,
    role: str | None,
    email: str | None,
) -> User:
    """Create an account; role None means admin for the first account, else user."""
    if conn.execute("SELECT 1 FROM users WHERE username = ?", (username,)).fetchone() is not None:
        raise ApiError(409, f"the username {username!r} is taken", field="username")
    if role is None:
        role = "admin" if count_users(conn) == 0 else "user"
    now = time.time()
    cursor = conn.execute(
        "INSERT INTO users (username, email, password_hash, role, created_at) VALUES (?, ?, ?, ?, ?)",
        (username, email, password_hash, role, now),
    )
    assert cursor.lastrowid is not None
    return User(cursor.lastrowid, username, role, False, password_hash, email, now)


def count_users(conn: sqlite3.Connection) -> int:
    """How many accounts exist."""
    row = conn.execute("SELECT count(*) FROM users").fetchone()
    return int(row[0]) if row else 0


def update_user(
    conn: sqlite3.Connection, user_id: int, role: str | None, disabled: bool | None
) -> None:
    """Change an account's role or disabled flag."""
    if role is not None:
        conn.execute("UPDATE users SET role = ? WHERE id = ?", (role, user_id))
    if disabled is not None:
        conn.execute("UPDATE users SET disabled = ? WHERE id = ?", (int(disabled), user_id))


def set_password_hash(conn: sqlite3.Connection, user_id: int, password_hash: str) -> None:
    """Store a rehashed password."""
    conn.execute("UPDATE users SET password_hash = ? WHERE id = ?", (password_hash, user_id))


# ---- access-token revocation ---------------------------------------------------------------


async def revoked_jtis(db: Database) -> set[str]:
    """Revoked access tokens that have not expired yet."""
    rows = await db.fetchall("SELECT jti FROM revoked_tokens WHERE expires_at > ?", (time.time(),))
    return {row[0] for row in rows}


def revoke_jti(conn: sqlite3.Connection, jti: str, expires_at: float) -> None:
    """Remember a revoked access token until it would have expired."""
    conn.execute(
        "INSERT OR IGNORE INTO revoked_tokens (jti, expires_at) VALUES (?, ?)", (jti, expires_at)
    )


# ---- enrollment tokens ----------------------------------------------------------------------


def _token_status(row: aiosqlite.Row, now: float) -> str:
    if row["revoked_at"] is not None:
        return "revoked"
    if row["expires_at"] is not None and row["expires_at"] <= now:
        return "expired"
    return "active"


def insert_enrollment_token(
    conn: sqlite3.Connection, user_id: int, name: str, token_hash: bytes, expires_at: float | None
) -> int:
    """Store a new enrollment token's hash; returns its id."""
    cursor = conn.execute(
        "INSERT INTO enrollment_tokens (user_id, name, token_hash, created_at, expires_at)"
        " VALUES (?, ?, ?, ?, ?)",
        (user_id, name, token_hash, time.time(), expires_at),
    )
    assert cursor.lastrowid is not None
    return cursor.lastrowid


async def list_enrollment_tokens(db: Database, user_id: int) -> list[api.TokenInfo]:
    """A user's enrollment tokens, newest first, without secrets."""
    rows = await db.fetchall(
        "SELECT * FROM enrollment_tokens WHERE user_id = ? ORDER BY id DESC", (user_id,)
    )
    now = time.time()
    return [
        api.TokenInfo(
            id=row["id"],
            name=row["name"],
            created_at=api.timestamp(row["created_at"]),
            expires_at=api.timestamp(row["expires_at"]),
            revoked_at=api.timestamp(row["revoked_at"]),
            last_used_at=api.timestamp(row["last_used_at"]),
            status=_token_status(row, now),  # type: ignore[arg-type]
        )
        for row in rows
    ]


def revoke_enrollment_token(conn: sqlite3.Connection, user_id: int, token_id: int) -> bool:
    """Revoke one of the user's tokens; False when it is not theirs or does not exist."""
    if not valid_id(token_id):
        return False
    cursor = conn.execute(
        "UPDATE enrollment_tokens SET revoked_at = coalesce(revoked_at, ?) WHERE id = ? AND user_id = ?",
        (time.time(), token_id, user_id),
    )
    return cursor.rowcount > 0


def enrollment_token_owner(conn: sqlite3.Connection, token_hash: bytes) -> int | None:
    """The (enabled) user of an active enrollment token (and mark it used), else None."""
    now = time.time()
    row = conn.execute(
        "SELECT t.id, t.user_id FROM enrollment_tokens t JOIN users u ON u.id = t.user_id"
        " WHERE t.token_hash = ? AND t.revoked_at IS NULL"
        " AND (t.expires_at IS NULL OR t.expires_at > ?) AND NOT u.disabled",
        (token_hash, now),
    ).fetchone()
    if row is None:
        return None
    conn.execute("UPDATE enrollment_tokens SET last_used_at = ? WHERE id = ?", (now, row[0]))
    return int(row[1])


# ---- devices ---------------------------------------------------------------------------------


def enroll_device(
    conn: sqlite3.Connection,
    user_id: int,
    name: str,
    key_hash: bytes,
    hostname: str | None,
    os_name: str | None,
    agent_version: str | None,
) -> tuple[int, bytes | None]:
    """Create the device or give an existing one (same user and name) a new key.

    Returns the device id and the hash of the key it replaces, if any.
    """
    row = conn.execute(
        "SELECT id, key_hash FROM devices WHERE user_id = ? AND name = ?", (user_id, name)
    ).fetchone()
    if row is not None:
        conn.execute(
            "UPDATE devices SET key_hash = ?, hostname = coalesce(?, hostname), os = coalesce(?, os),"
            " agent_version = coalesce(?, agent_version) WHERE id = ?",
            (key_hash, hostname, os_name, agent_version, row[0]),
        )
        return int(row[0]), row[1]
    cursor = conn.execute(
        "INSERT INTO devices (user_id, name, key_hash, registered_at, hostname, os, agent_version)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (user_id, name, key_hash, time.time(), hostname, os_name, agent_version),
    )
    assert cursor.lastrowid is not None
    return cursor.lastrowid, None


async def device_for_key(db: Database, key_hash: bytes) -> int | None:
    """The device a key belongs to, if the key is current and its owner not disabled."""
    row = await db.fetchone(
        "SELECT d.id FROM devices d JOIN users u ON u.id = d.user_id"
        " WHERE d.key_hash = ? AND u.disabled = 0",
        (key_hash,),
    )
    return int(row[0]) if row else None


async def device_owner(db: Database, device_id: int) -> tuple[int, bytes | None] | None:
    """(owner user id, key hash) of a device, or None."""
    if not valid_id(device_id):
        return None
    row = await db.fetchone("SELECT user_id, key_hash FROM devices WHERE id = ?", (device_id,))
    return (int(row[0]), row[1]) if row else None


def delete_device(conn: sqlite3.Connection, device_id: int) -> None:
    """Delete a device and, by cascade, all its data."""
    conn.execute("DELETE FROM devices WHERE id = ?", (device_id,))


def revoke_device_key(conn: sqlite3.Connection, device_id: int) -> None:
    """Invalidate a device's key; its data stays."""
    conn.execute("UPDATE devices SET key_hash = NULL WHERE id = ?", (device_id,))


def save_legacy_session(
    conn: sqlite3.Connection, token_hash: bytes, device_id: int, expires_at: float
) -> None:
    """Remember which device a prototype agent registered with this login token."""
    conn.execute(
        "INSERT INTO legacy_sessions (token_hash, device_id, expires_at) VALUES (?, ?, ?)"
        " ON CONFLICT DO UPDATE SET device_id = excluded.device_id, expires_at = excluded.expires_at",
        (token_hash, device_id, expires_at),
    )


async def legacy_device(db: Database, token_hash: bytes) -> int | None:
    """The device a prototype agent registered with this login token."""
    row = await db.fetchone(
        "SELECT device_id FROM legacy_sessions WHERE token_hash = ?", (token_hash,)
    )
    return int(row[0]) if row else None


PRUNE_CHUNK = 5000


def prune(conn: sqlite3.Connection, samples_before: float, history_before: float) -> int:
    """Delete one chunk of expired rows per table; how many went (0: nothing left).

    Small chunks, each its own write job, so ingest never waits behind a big delete.
    Report ids (dedupe) and traffic samples go first; closed-connection history lasts longer.
    """
    deleted = 0
    for sql, param in (
        (
            "DELETE FROM reports WHERE (device_id, report_id) IN (SELECT device_id, report_id"
            " FROM reports WHERE received_at < ? LIMIT ?)",
            samples_before,
        ),
        (
            "DELETE FROM traffic WHERE id IN (SELECT id FROM traffic WHERE t < ? LIMIT ?)",
            samples_before,
        ),
        (
            "DELETE FROM closed_connections WHERE id IN (SELECT id FROM closed_connections"
            " WHERE closed_at < ? LIMIT ?)",
            history_before,
        ),
    ):
        deleted += conn.execute(sql, (param, PRUNE_CHUNK)).rowcount
    now = time.time()
    deleted += conn.execute("DELETE FROM revoked_tokens WHERE expires_at < ?", (now,)).rowcount
    deleted += conn.execute("DELETE FROM legacy_sessions WHERE expires_at < ?", (now,)).rowcount
    return deleted


# ---- dashboard reads -------------------------------------------------------------------------

_DEVICE_SELECT = (
    "SELECT d.*, u.username AS username FROM devices d JOIN users u ON u.id = d.user_id"
)


def online(last_seen: float | None, interval_s: float, now: float) -> bool:
    """Online while the last report is within max(3 intervals, 30 s) of now."""
    return last_seen is not None and now - last_seen <= max(3 * interval_s, ONLINE_MIN_S)


_decode_names = msgspec.json.Decoder(list[str]).decode


@functools.lru_cache(maxsize=256)
def _capabilities(text: str) -> Capabilities:
    # most devices of a fleet share an agent build, so the same few texts repeat
    return msgspec.json.decode(text, type=Capabilities)


def device_out(row: aiosqlite.Row | dict[str, Any], now: float) -> api.Device:
    """A devices row (joined with its owner's name) as the API shows it."""
    capabilities = _capabilities(row["capabilities"]) if row["capabilities"] else None
    is_online = online(row["last_seen"], row["interval_s"], now)
    return api.Device(
        id=row["id"],
        device_name=row["name"],
        username=row["username"],
        status="online" if is_online else "offline",
        connection_count=row["connection_count"],
        protocols=_decode_names(row["protocols"]),
        unique_ips=_decode_names(row["unique_ips"]),
        last_seen=api.timestamp(row["last_seen"]),
        registered_at=api.timestamp(row["registered_at"]),
        collected_at=api.timestamp(row["collected_at"]),
        interval_s=row["interval_s"],
        bytes_in=row["bytes_in"],
        bytes_out=row["bytes_out"],
        bytes_in_rate=row["bytes_in_rate"] if is_online else 0.0,
        bytes_out_rate=row["bytes_out_rate"] if is_online else 0.0,
        dropped_reports=row["dropped_reports"],
        key_active=row["key_hash"] is not None,
        agent=api.AgentOut(row["agent_version"], row["os"], row["hostname"], capabilities),
    )


def fleet_stats(devices: list[api.Device]) -> api.FleetStats:
    """Totals over a list of devices."""
    online_count = sum(1 for d in devices if d.status == "online")
    return api.FleetStats(
        total_devices=len(devices),
        online_devices=online_count,
        offline_devices=len(devices) - online_count,
        active_connections=sum(d.connection_count for d in devices if d.status == "online"),
        bytes_in_rate=sum(d.bytes_in_rate or 0.0 for d in devices),
        bytes_out_rate=sum(d.bytes_out_rate or 0.0 for d in devices),
    )


async def list_devices(db: Database, owner: int | None) -> list[api.Device]:
    """Devices of one owner, or of everyone (owner None), by name."""
    now = time.time()
    if owner is None:
        rows = await db.fetchall(f"{_DEVICE_SELECT} ORDER BY d.name, d.id")
    else:
        rows = await db.fetchall(
            f"{_DEVICE_SELECT} WHERE d.user_id = ? ORDER BY d.name, d.id", (owner,)
        )
    return [device_out(row, now) for row in rows]


async def device_deadlines(db: Database) -> list[tuple[int, float | None, float, int]]:
    """(id, last seen, interval, owner) of every device, for the offline watcher."""
    rows = await db.fetchall("SELECT id, last_seen, interval_s, user_id FROM devices")
    return [(r[0], r[1], r[2], r[3]) for r in rows]


async def device_row(db: Database, device_id: int) -> aiosqlite.Row | None:
    """One device row joined with its owner's name."""
    if not valid_id(device_id):
        return None
    return await db.fetchone(f"{_DEVICE_SELECT} WHERE d.id = ?", (device_id,))


@dataclass(frozen=True)
class ConnectionFilter:
    """Query parameters of the device detail."""

    protocol: str | None = None
    state: str | None = None
    q: str | None = None
    closed: bool = False
    limit: int = 1000
    offset: int = 0

    def where(self, device_id: int) -> tuple[str, list[Any]]:
        """SQL WHERE clause and parameters."""
        clauses = ["device_id = ?"]
        params: list[Any] = [device_id]
        if self.protocol:
            clauses.append("protocol = ?")
            params.append(self.protocol.upper())
        if self.state:
            clauses.append("state = ?")
            params.append(self.state.upper())
        if self.q:
            text = self.q.strip()
            like = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            alternatives = [
                "source_ip LIKE ? ESCAPE '\\'",
                "dest_ip LIKE ? ESCAPE '\\'",
                "process LIKE ? ESCAPE '\\'",
            ]
            params.extend([like, like, like])
            if text.isdigit() and len(text) <= 5:
                alternatives += ["source_port = ?", "dest_port = ?", "pid = ?"]
                params.extend([int(text)] * 3)
            clauses.append("(" + " OR ".join(alternatives) + ")")
        return " AND ".join(clauses), params


async def device_connections(
    db: Database, device: aiosqlite.Row, flt: ConnectionFilter
) -> tuple[list[api.ConnectionOut], int]:
    """The filtered connections of a device (one page) and how many matched in all."""
    where, params = flt.where(device["id"])
    if flt.closed:
        table, order = "closed_connections", "closed_at DESC, id DESC"
    else:
        table, order = "open_connections", "protocol, source_port, dest_ip, dest_port"
    rows = await db.fetchall(
        f"SELECT * FROM {table} WHERE {where} ORDER BY {order} LIMIT ? OFFSET ?",
        [*params, flt.limit, flt.offset],
    )
    count_row = await db.fetchone(f"SELECT count(*) FROM {table} WHERE {where}", params)
    device_last_seen = device["last_seen"]
    out = [
        api.ConnectionOut(
            protocol=row["protocol"],
            family=row["family"],
            source_ip=row["source_ip"],
            source_port=row["source_port"],
            dest_ip=row["dest_ip"],
            dest_port=row["dest_port"],
            state=row["state"],
            pid=row["pid"],
            process=row["process"],
            bytes_in=row["bytes_in"],
            bytes_out=row["bytes_out"],
            packets_in=row["packets_in"],
            packets_out=row["packets_out"],
            first_seen=api.timestamp(row["first_seen"]),
            # an open connection was in the device's latest report
            last_seen=api.timestamp(
                row["last_seen"] if flt.closed else max(row["last_seen"], device_last_seen or 0)
            ),
            closed_at=api.timestamp(row["closed_at"]) if flt.closed else None,
        )
        for row in rows
    ]
    return out, int(count_row[0]) if count_row else 0


async def connection_summary(db: Database, device_id: int) -> api.ConnectionSummary:
    """Totals over a device's open connections."""
    row = await db.fetchone(
        "SELECT count(*), count(DISTINCT source_ip), count(DISTINCT dest_ip), sum(bytes_in),"
        " sum(bytes_out), sum(packets_in), sum(packets_out) FROM open_connections"
        " WHERE device_id = ?",
        (device_id,),
    )
    protocols = await db.fetchall(
        "SELECT protocol, count(*) FROM open_connections WHERE device_id = ?"
        " GROUP BY protocol ORDER BY protocol",
        (device_id,),
    )
    assert row is not None
    return api.ConnectionSummary(
        total_connections=row[0],
        protocols={p[0]: p[1] for p in protocols},
        unique_source_ips=row[1],
        unique_dest_ips=row[2],
        total_bytes_in=row[3] or 0,
        total_bytes_out=row[4] or 0,
        total_packets_in=row[5] or 0,
        total_packets_out=row[6] or 0,
    )


async def traffic(db: Database, device_id: int, since: float) -> list[api.TrafficSample]:
    """One sample per report since a time, oldest first."""
    rows = await db.fetchall(
        "SELECT t, bytes_in, bytes_out, packets_in, packets_out, connections FROM traffic"
        " WHERE device_id = ? AND t >= ? ORDER BY t",
        (device_id, since),
    )
    return [api.TrafficSample(api.timestamp(r[0]), r[1], r[2], r[3], r[4], r[5]) for r in rows]


async def destinations(
    db: Database, device: aiosqlite.Row, limit: int = 500
) -> list[api.Destination]:
    """Remote endpoints: history plus what the open connections to each have moved so far."""
    rows = await db.fetchall(
        "SELECT d.protocol, d.ip, d.port, d.first_seen, d.last_seen,"
        " d.bytes_in + coalesce(o.bytes_in, 0) AS total_in,"
        " d.bytes_out + coalesce(o.bytes_out, 0) AS total_out, coalesce(o.n, 0) AS n"
        " FROM destinations d LEFT JOIN ("
        "   SELECT protocol, dest_ip, dest_port, sum(coalesce(bytes_in, 0)) AS bytes_in,"
        "   sum(coalesce(bytes_out, 0)) AS bytes_out, count(*) AS n FROM open_connections"
        "   WHERE device_id = ? GROUP BY protocol, dest_ip, dest_port"
        " ) o ON o.protocol = d.protocol AND o.dest_ip = d.ip AND o.dest_port = d.port"
        " WHERE d.device_id = ? ORDER BY total_in + total_out DESC, d.last_seen DESC LIMIT ?",
        (device["id"], device["id"], limit),
    )
    device_last_seen = device["last_seen"] or 0
    return [
        api.Destination(
            protocol=r[0],
            ip=r[1],
            port=r[2],
            first_seen=api.timestamp(r[3]),
            last_seen=api.timestamp(max(r[4], device_last_seen) if r[7] else r[4]),
            bytes_in=r[5],
            bytes_out=r[6],
            open_connections=r[7],
        )
        for r in rows
    ]
