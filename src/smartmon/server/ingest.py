"""Applying reports to the store, many at once, writing only what changed.

The writer keeps each recently active device's open connections in memory, so a report
costs one diff in Python and a handful of `executemany` calls for the whole batch: new
connections are inserted, changed ones updated, vanished ones closed and kept as history.
Unchanged connections are not written at all (their last-seen is the device's).
"""

from __future__ import annotations

import heapq
import json
import sqlite3
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import msgspec

from smartmon import wire

Key = tuple[str, str, int, str, int]
UNSPECIFIED = frozenset({"0.0.0.0", "::"})
TOP_IPS = 10


@dataclass(frozen=True)
class Incoming:
    """A validated report, ready for the writer."""

    device_id: int
    report: wire.Report
    received_at: float


@dataclass(frozen=True)
class LegacyIncoming:
    """One connection posted by a prototype agent: added or refreshed, nothing closed."""

    device_id: int
    connection: wire.Connection
    received_at: float


@dataclass
class Applied:
    """What one item changed; the live stream publishes it."""

    device_id: int
    report_id: str | None
    duplicate: bool = False
    device: dict[str, Any] | None = None  # the device row after this item, for the stream
    opened: list[wire.Connection] = field(default_factory=list)
    changed: list[wire.Connection] = field(default_factory=list)
    closed: list[wire.Connection] = field(default_factory=list)


def _is_destination(c: wire.Connection) -> bool:
    return c.dest_port != 0 and c.dest_ip not in UNSPECIFIED


@dataclass
class _Writes:
    inserts: list[tuple[Any, ...]] = field(default_factory=list)
    updates: list[tuple[Any, ...]] = field(default_factory=list)
    closes: list[tuple[Any, ...]] = field(default_factory=list)
    deletes: list[tuple[Any, ...]] = field(default_factory=list)
    closed_inserts: list[tuple[Any, ...]] = field(default_factory=list)
    new_destinations: list[tuple[Any, ...]] = field(default_factory=list)
    closed_destinations: list[tuple[Any, ...]] = field(default_factory=list)
    traffic: list[tuple[Any, ...]] = field(default_factory=list)
    reports: list[tuple[Any, ...]] = field(default_factory=list)
    devices: dict[int, dict[str, Any]] = field(default_factory=dict)


_COLUMNS = (
    "device_id, protocol, source_ip, source_port, dest_ip, dest_port, family, state, pid, process,"
    " bytes_in, bytes_out, packets_in, packets_out, first_seen, last_seen"
)
_KEY_WHERE = (
    "device_id = ? AND protocol = ? AND source_ip = ? AND source_port = ? AND dest_ip = ?"
    " AND dest_port = ?"
)
SQL_INSERT = f"INSERT INTO open_connections ({_COLUMNS}) VALUES ({', '.join('?' * 16)})"
SQL_INSERT_CLOSED = (
    f"INSERT INTO closed_connections ({_COLUMNS}, closed_at) VALUES ({', '.join('?' * 17)})"
)
SQL_UPDATE = (
    "UPDATE open_connections SET state = ?, pid = ?, process = ?, bytes_in = ?, bytes_out = ?,"
    f" packets_in = ?, packets_out = ?, last_seen = ? WHERE {_KEY_WHERE}"
)
# closing moves the row to the history, with the final counters when the agent sent them
SQL_CLOSE = (
    f"INSERT INTO closed_connections ({_COLUMNS}, closed_at) SELECT device_id, protocol,"
    " source_ip, source_port, dest_ip, dest_port, family, ?, coalesce(?, pid),"
    " coalesce(?, process), coalesce(?, bytes_in), coalesce(?, bytes_out),"
    " coalesce(?, packets_in), coalesce(?, packets_out), first_seen, ?, ?"
    f" FROM open_connections WHERE {_KEY_WHERE}"
)
SQL_DELETE_OPEN = f"DELETE FROM open_connections WHERE {_KEY_WHERE}"
SQL_NEW_DESTINATION = (
    "INSERT INTO destinations (device_id, protocol, ip, port, first_seen, last_seen)"
    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET last_seen = excluded.last_seen"
)
SQL_CLOSED_DESTINATION = (
    "INSERT INTO destinations (device_id, protocol, ip, port, first_seen, last_seen, bytes_in,"
    " bytes_out) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET"
    " last_seen = excluded.last_seen, bytes_in = bytes_in + excluded.bytes_in,"
    " bytes_out = bytes_out + excluded.bytes_out"
)
SQL_TRAFFIC = (
    "INSERT INTO traffic (device_id, t, bytes_in, bytes_out, packets_in, packets_out, connections)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
SQL_REPORT = "INSERT INTO reports (report_id, device_id, seq, collected_at, received_at) VALUES (?, ?, ?, ?, ?)"


class Ingest:
    """Applies batches of reports; owns the cache of open connections (writer only)."""

    def __init__(self, cached_devices: int = 4096) -> None:
        self._open: OrderedDict[int, dict[Key, wire.Connection]] = OrderedDict()
        # (protocol, ip, port) of each cached device's known destinations: skip their upserts
        self._destinations: dict[int, set[tuple[str, str, int]]] = {}
        self._cached_devices = cached_devices

    def forget(self, device_id: int | None = None) -> None:
        """Drop cached state (after a rollback, a deletion or a revocation)."""
        if device_id is None:
            self._open.clear()
            self._destinations.clear()
        else:
            self._open.pop(device_id, None)
            self._destinations.pop(device_id, None)

    def _open_connections(
        self, conn: sqlite3.Connection, device_id: int
    ) -> dict[Key, wire.Connection]:
        cached = self._open.get(device_id)
        if cached is not None:
            self._open.move_to_end(device_id)
            return cached
        loaded: dict[Key, wire.Connection] = {}
        for row in conn.execute(
            "SELECT protocol, family, source_ip, source_port, dest_ip, dest_port, state, pid,"
            " process, bytes_in, bytes_out, packets_in, packets_out FROM open_connections"
            " WHERE device_id = ?",
            (device_id,),
        ):
            c = wire.Connection(
                    protocol=row[0], family=row[1], source_ip=row[2], source_port=row[3],
                    dest_ip=row[4], dest_port=row[5], state=row[6], pid=row[7], process=row[8],
                    bytes_in=row[9], bytes_out=row[10], packets_in=row[11], packets_out=row[12],
                )  # fmt: skip
            loaded[c.key] = c
        self._open[device_id] = loaded
        self._destinations[device_id] = {
            (row[0], row[1], row[2])
            for row in conn.execute(
                "SELECT protocol, ip, port FROM destinations WHERE device_id = ?", (device_id,)
            )
        }
        while len(self._open) > self._cached_devices:
            evicted, _ = self._open.popitem(last=False)
            self._destinations.pop(evicted, None)
        return loaded

    def apply(
        self, conn: sqlite3.Connection, items: list[Incoming | LegacyIncoming]
    ) -> list[Applied]:
        """Apply items in order inside the caller's transaction; one Applied per item."""
        reports = [i for i in items if isinstance(i, Incoming)]
        stored = _stored_report_ids(conn, reports)
        devices = _device_rows(conn, {i.device_id for i in items})
        writes = _Writes()
        results: list[Applied] = []
        for item in items:
            if item.device_id in writes.devices:
                # a second report of one device in this batch must see the first one's rows
                _flush(conn, writes)
                writes = _Writes()
            device = devices.get(item.device_id)
            if device is None:  # deleted while the report was queued
                results.append(Applied(item.device_id, None, duplicate=True))
                continue
            open_now = self._open_connections(conn, item.device_id)
            known = self._destinations[item.device_id]
            if isinstance(item, LegacyIncoming):
                results.append(self._legacy(item, device, open_now, known, writes))
                continue
            report_id = item.report.report_id.lower()
            if (item.device_id, report_id) in stored:
                results.append(Applied(item.device_id, report_id, duplicate=True))
                continue
            stored.add((item.device_id, report_id))
            results.append(self._report(item, device, open_now, known, writes))
        _flush(conn, writes)
        return results

    def _legacy(
        self,
        item: LegacyIncoming,
        device: dict[str, Any],
        open_now: dict[Key, wire.Connection],
        known: set[tuple[str, str, int]],
        writes: _Writes,
    ) -> Applied:
        applied = Applied(item.device_id, None)
        now = item.received_at
        _upsert_all(item.device_id, [item.connection], now, open_now, known, writes, applied)
        device.update(last_seen=now)
        _summarise(device, open_now)
        writes.devices[item.device_id] = device
        applied.device = dict(device)
        return applied

    def _report(
        self,
        item: Incoming,
        device: dict[str, Any],
        open_now: dict[Key, wire.Connection],
        known: set[tuple[str, str, int]],
        writes: _Writes,
    ) -> Applied:
        report, now, device_id = item.report, item.received_at, item.device_id
        applied = Applied(device_id, report.report_id.lower())
        collected = report.collected_at.timestamp()
        writes.reports.append((applied.report_id, device_id, report.seq, collected, now))
        # late: drained from a spool after newer reports. Older by the device's clock *and* by
        # seq, so a clock corrected backwards (a Pi without RTC) or a seq reset cannot freeze it
        late = (
            device["collected_at"] is not None
            and collected < device["collected_at"]
            and (device["last_seq"] is None or report.seq < device["last_seq"])
        )
        if not late:
            seen = _upsert_all(device_id, report.connections, now, open_now, known, writes, applied)
            finals = {c.key: c for c in report.closed}
            for key in [k for k in open_now if k not in seen]:
                _close(
                    device_id,
                    open_now.pop(key),
                    finals.pop(key, None),
                    device,
                    now,
                    writes,
                    applied,
                )
            closed_unseen = list(finals.values())
        else:  # an old report drained from a spool: keep only its history
            closed_unseen = [c for c in report.closed if c.key not in open_now]
        for c in closed_unseen:
            if c.key in open_now:
                continue
            writes.closed_inserts.append((*_row(device_id, c, now, now), now))
            if _is_destination(c):
                writes.closed_destinations.append(_destination_close(device_id, c, now))
            applied.closed.append(c)
        if not late:
            _traffic(device, report, collected, len(report.connections), now, writes)
            agent = report.agent
            device.update(
                last_seen=now,
                collected_at=collected,
                interval_s=report.interval_s,
                last_seq=report.seq,
                agent_version=agent.version,
                os=agent.os,
                hostname=agent.hostname,
                capabilities=msgspec.json.encode(agent.capabilities).decode(),
                dropped_reports=report.dropped_reports,
            )
            _summarise(device, open_now)
        else:
            device.update(last_seen=max(device["last_seen"] or 0.0, now))
        writes.devices[device_id] = device
        applied.device = dict(device)
        return applied


def _row(
    device_id: int, c: wire.Connection, first_seen: float, last_seen: float
) -> tuple[Any, ...]:
    return (
        device_id, c.protocol, c.source_ip, c.source_port, c.dest_ip, c.dest_port, c.family,
        c.state, c.pid, c.process, c.bytes_in, c.bytes_out, c.packets_in, c.packets_out,
        first_seen, last_seen,
    )  # fmt: skip


def _upsert_all(
    device_id: int,
    connections: list[wire.Connection],
    now: float,
    open_now: dict[Key, wire.Connection],
    destinations: set[tuple[str, str, int]],
    writes: _Writes,
    applied: Applied,
) -> set[Key]:
    """Insert new connections, update changed ones; the keys seen. (The hot loop of ingest.)"""
    seen: set[Key] = set()
    for c in connections:
        key = (c.protocol, c.source_ip, c.source_port, c.dest_ip, c.dest_port)
        seen.add(key)
        previous = open_now.get(key)
        if previous is None:
            open_now[key] = c
            writes.inserts.append(_row(device_id, c, now, now))
            destination = (c.protocol, c.dest_ip, c.dest_port)
            if destination not in destinations and _is_destination(c):
                destinations.add(destination)
                writes.new_destinations.append((device_id, *destination, now, now))
            applied.opened.append(c)
        elif previous != c:  # struct equality: state, process or a counter moved
            open_now[key] = c
            writes.updates.append(
                (
                    c.state,
                    c.pid,
                    c.process,
                    c.bytes_in,
                    c.bytes_out,
                    c.packets_in,
                    c.packets_out,
                    now,
                    device_id,
                    *key,
                )
            )
            applied.changed.append(c)
    return seen


def _close(
    device_id: int,
    known: wire.Connection,
    final: wire.Connection | None,
    device: dict[str, Any],
    now: float,
    writes: _Writes,
    applied: Applied,
) -> None:
    c = final or known
    last_seen = now if final is not None else (device["last_seen"] or now)
    writes.closes.append(
        (
            c.state,
            c.pid,
            c.process,
            c.bytes_in,
            c.bytes_out,
            c.packets_in,
            c.packets_out,
            last_seen,
            now,
            device_id,
            *c.key,
        )
    )
    writes.deletes.append((device_id, *c.key))
    if _is_destination(c):
        writes.closed_destinations.append(_destination_close(device_id, c, last_seen))
    applied.closed.append(c)


def _destination_close(device_id: int, c: wire.Connection, t: float) -> tuple[Any, ...]:
    return (device_id, c.protocol, c.dest_ip, c.dest_port, t, t, c.bytes_in or 0, c.bytes_out or 0)


def _traffic(
    device: dict[str, Any],
    report: wire.Report,
    collected: float,
    connections: int,
    now: float,
    writes: _Writes,
) -> None:
    """Append one sample: deltas of the cumulative interface counters, resets survived."""
    totals = report.interfaces
    current = (
        None
        if totals is None
        else (totals.bytes_in, totals.bytes_out, totals.packets_in, totals.packets_out)
    )
    previous = tuple(json.loads(device["iface"])) if device["iface"] else None
    deltas: tuple[int | None, ...] = (None, None, None, None)
    if current is not None and previous is not None:
        # a counter below its previous value was reset (reboot, wrap): count from zero
        deltas = tuple(
            new - old if new >= old else new for new, old in zip(current, previous, strict=True)
        )
    writes.traffic.append((device["id"], now, *deltas, connections))
    if current is not None:
        device["iface"] = json.dumps(current)
    if deltas[0] is not None and deltas[1] is not None:
        elapsed = (
            collected - device["collected_at"] if device["collected_at"] else report.interval_s
        )
        elapsed = elapsed if elapsed > 0 else report.interval_s
        device["bytes_in"] += deltas[0]
        device["bytes_out"] += deltas[1]
        device["packets_in"] += deltas[2] or 0
        device["packets_out"] += deltas[3] or 0
        device["bytes_in_rate"] = deltas[0] / elapsed
        device["bytes_out_rate"] = deltas[1] / elapsed
    elif current is None:
        device["bytes_in_rate"] = device["bytes_out_rate"] = None


def _summarise(device: dict[str, Any], open_now: dict[Key, wire.Connection]) -> None:
    """The device row's summary of its open connections, read by the dashboard list."""
    protocols: set[str] = set()
    activity: dict[str, int] = {}  # remote IP -> bytes moved plus one per connection
    for c in open_now.values():
        protocols.add(c.protocol)
        ip = c.dest_ip
        if ip not in UNSPECIFIED:
            activity[ip] = activity.get(ip, 0) + (c.bytes_in or 0) + (c.bytes_out or 0) + 1
    device["connection_count"] = len(open_now)
    device["protocols"] = msgspec.json.encode(sorted(protocols)).decode()
    device["unique_ips"] = msgspec.json.encode(
        heapq.nlargest(TOP_IPS, activity, key=activity.__getitem__)
    ).decode()


def _stored_report_ids(conn: sqlite3.Connection, items: list[Incoming]) -> set[tuple[int, str]]:
    """Which (device, report id) pairs of these items are already stored."""
    found: set[tuple[int, str]] = set()
    pairs = [(i.device_id, i.report.report_id.lower()) for i in items]
    for start in range(0, len(pairs), 400):
        chunk = pairs[start : start + 400]
        sql = (
            "SELECT device_id, report_id FROM reports WHERE (device_id, report_id) IN"
            f" (VALUES {', '.join('(?, ?)' * 1 for _ in chunk)})"
        )
        found.update(
            (row[0], row[1]) for row in conn.execute(sql, [v for pair in chunk for v in pair])
        )
    return found


_DEVICE_STATE = (
    "last_seen, collected_at, interval_s, last_seq, iface, bytes_in, bytes_out, packets_in,"
    " packets_out, bytes_in_rate, bytes_out_rate, agent_version, os, hostname, capabilities,"
    " dropped_reports, connection_count, protocols, unique_ips"
)
_DEVICE_FIELDS = [name.strip() for name in _DEVICE_STATE.split(",")]
# read along with the state, never written here: what the live stream needs to show a device
_DEVICE_IDENTITY = ["id", "name", "user_id", "registered_at", "key_hash", "username"]
SQL_DEVICE_UPDATE = (
    "UPDATE devices SET "
    + ", ".join(f"{name} = :{name}" for name in _DEVICE_FIELDS)
    + " WHERE id = :id"
)


def _device_rows(conn: sqlite3.Connection, device_ids: set[int]) -> dict[int, dict[str, Any]]:
    rows: dict[int, dict[str, Any]] = {}
    ids = sorted(device_ids)
    columns = ["d.id", "d.name", "d.user_id", "d.registered_at", "d.key_hash", "u.username"]
    columns += [f"d.{name}" for name in _DEVICE_FIELDS]
    names = _DEVICE_IDENTITY + _DEVICE_FIELDS
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        sql = (
            f"SELECT {', '.join(columns)} FROM devices d JOIN users u ON u.id = d.user_id"
            f" WHERE d.id IN ({', '.join('?' * len(chunk))})"
        )
        for row in conn.execute(sql, chunk):
            rows[row[0]] = dict(zip(names, row, strict=True))
    return rows


def _flush(conn: sqlite3.Connection, writes: _Writes) -> None:
    # closes before inserts: a key closed and reopened in one batch must not collide
    for sql, rows in (
        (SQL_CLOSE, writes.closes),
        (SQL_DELETE_OPEN, writes.deletes),
        (SQL_UPDATE, writes.updates),
        (SQL_INSERT, writes.inserts),
        (SQL_INSERT_CLOSED, writes.closed_inserts),
        (SQL_NEW_DESTINATION, writes.new_destinations),
        (SQL_CLOSED_DESTINATION, writes.closed_destinations),
        (SQL_TRAFFIC, writes.traffic),
        (SQL_REPORT, writes.reports),
    ):
        if rows:
            conn.executemany(sql, rows)
    if writes.devices:
        fields = ["id", *_DEVICE_FIELDS]
        conn.executemany(
            SQL_DEVICE_UPDATE,
            [{f: device[f] for f in fields} for device in writes.devices.values()],
        )
