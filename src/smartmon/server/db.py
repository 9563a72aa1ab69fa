"""The SQLite database: schema migrations, one writer with group commit, a few readers.

Every write goes through `Database.write`: jobs (plain functions of a sqlite3 connection)
queue up; the writer runs as many as are waiting in one transaction, in the writer
connection's thread (each job in its own savepoint, so one failure stays its own), commits
once, and only then answers each job. Reads use separate aiosqlite connections (WAL).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

log = logging.getLogger("smartmon.server")

T = TypeVar("T")
Job = Callable[[sqlite3.Connection], Any]

BUSY_TIMEOUT_MS = 5000
CHECKPOINT_EVERY_S = 1.0
MAX_BATCH = 512

# Forward-only migrations; index + 1 is the schema version they produce.
MIGRATIONS: list[str] = [
    # 1: accounts, enrollment, devices, reports, connections, traffic, destinations
    """
    CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        username TEXT NOT NULL UNIQUE COLLATE NOCASE,
        email TEXT,
        password_hash TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('admin', 'user')),
        disabled INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL
    );
    CREATE TABLE revoked_tokens (
        jti TEXT PRIMARY KEY,
        expires_at REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE enrollment_tokens (
        id INTEGER PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        token_hash BLOB NOT NULL UNIQUE,
        created_at REAL NOT NULL,
        expires_at REAL,
        revoked_at REAL,
        last_used_at REAL
    );
    CREATE TABLE devices (
        id INTEGER PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        key_hash BLOB UNIQUE,
        registered_at REAL NOT NULL,
        last_seen REAL,
        collected_at REAL,
        interval_s REAL NOT NULL DEFAULT 10,
        agent_version TEXT,
        os TEXT,
        hostname TEXT,
        capabilities TEXT,
        last_seq INTEGER,
        iface TEXT,
        bytes_in INTEGER NOT NULL DEFAULT 0,
        bytes_out INTEGER NOT NULL DEFAULT 0,
        packets_in INTEGER NOT NULL DEFAULT 0,
        packets_out INTEGER NOT NULL DEFAULT 0,
        bytes_in_rate REAL,
        bytes_out_rate REAL,
        dropped_reports INTEGER NOT NULL DEFAULT 0,
        connection_count INTEGER NOT NULL DEFAULT 0,
        protocols TEXT NOT NULL DEFAULT '[]',
        unique_ips TEXT NOT NULL DEFAULT '[]',
        UNIQUE (user_id, name)
    );
    CREATE TABLE reports (
        report_id TEXT PRIMARY KEY,
        device_id INTEGER NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        collected_at REAL NOT NULL,
        received_at REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX reports_device ON reports (device_id, received_at);
    CREATE TABLE connections (
        id INTEGER PRIMARY KEY,
        device_id INTEGER NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
        protocol TEXT NOT NULL,
        family INTEGER NOT NULL,
        source_ip TEXT NOT NULL,
        source_port INTEGER NOT NULL,
        dest_ip TEXT NOT NULL,
        dest_port INTEGER NOT NULL,
        state TEXT NOT NULL,
        pid INTEGER,
        process TEXT,
        bytes_in INTEGER,
        bytes_out INTEGER,
        packets_in INTEGER,
        packets_out INTEGER,
        first_seen REAL NOT NULL,
        last_seen REAL NOT NULL,
        closed_at REAL
    );
    CREATE UNIQUE INDEX connections_open
        ON connections (device_id, protocol, source_ip, source_port, dest_ip, dest_port)
        WHERE closed_at IS NULL;
    CREATE INDEX connections_closed ON connections (device_id, closed_at)
        WHERE closed_at IS NOT NULL;
    CREATE TABLE traffic (
        id INTEGER PRIMARY KEY,
        device_id INTEGER NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
        t REAL NOT NULL,
        bytes_in INTEGER,
        bytes_out INTEGER,
        packets_in INTEGER,
        packets_out INTEGER,
        connections INTEGER NOT NULL
    );
    CREATE INDEX traffic_device ON traffic (device_id, t);
    CREATE TABLE destinations (
        device_id INTEGER NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
        protocol TEXT NOT NULL,
        ip TEXT NOT NULL,
        port INTEGER NOT NULL,
        first_seen REAL NOT NULL,
        last_seen REAL NOT NULL,
        bytes_in INTEGER NOT NULL DEFAULT 0,
        bytes_out INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (device_id, protocol, ip, port)
    ) WITHOUT ROWID;
    """,
    # 2: legacy agents post connections with only their login token: remember its device
    """
    CREATE TABLE legacy_sessions (
        token_hash BLOB PRIMARY KEY,
        device_id INTEGER NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
        expires_at REAL NOT NULL
    ) WITHOUT ROWID;
    """,
    # 3: open connections in their own table clustered by device (a report touches a few
    # pages, not one per connection), closed ones appended to a history table; report ids
    # (dedupe) clustered by device too, and a duplicate only counts within its own device
    """
    CREATE TABLE open_connections (
        device_id INTEGER NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
        protocol TEXT NOT NULL,
        source_ip TEXT NOT NULL,
        source_port INTEGER NOT NULL,
        dest_ip TEXT NOT NULL,
        dest_port INTEGER NOT NULL,
        family INTEGER NOT NULL,
        state TEXT NOT NULL,
        pid INTEGER,
        process TEXT,
        bytes_in INTEGER,
        bytes_out INTEGER,
        packets_in INTEGER,
        packets_out INTEGER,
        first_seen REAL NOT NULL,
        last_seen REAL NOT NULL,
        PRIMARY KEY (device_id, protocol, source_ip, source_port, dest_ip, dest_port)
    ) WITHOUT ROWID;
    CREATE TABLE closed_connections (
        id INTEGER PRIMARY KEY,
        device_id INTEGER NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
        protocol TEXT NOT NULL,
        source_ip TEXT NOT NULL,
        source_port INTEGER NOT NULL,
        dest_ip TEXT NOT NULL,
        dest_port INTEGER NOT NULL,
        family INTEGER NOT NULL,
        state TEXT NOT NULL,
        pid INTEGER,
        process TEXT,
        bytes_in INTEGER,
        bytes_out INTEGER,
        packets_in INTEGER,
        packets_out INTEGER,
        first_seen REAL NOT NULL,
        last_seen REAL NOT NULL,
        closed_at REAL NOT NULL
    );
    CREATE INDEX closed_connections_device ON closed_connections (device_id, closed_at);
    CREATE INDEX closed_connections_age ON closed_connections (closed_at);
    INSERT INTO open_connections SELECT device_id, protocol, source_ip, source_port, dest_ip,
        dest_port, family, state, pid, process, bytes_in, bytes_out, packets_in, packets_out,
        first_seen, last_seen FROM connections WHERE closed_at IS NULL;
    INSERT INTO closed_connections (device_id, protocol, source_ip, source_port, dest_ip,
        dest_port, family, state, pid, process, bytes_in, bytes_out, packets_in, packets_out,
        first_seen, last_seen, closed_at) SELECT device_id, protocol, source_ip, source_port,
        dest_ip, dest_port, family, state, pid, process, bytes_in, bytes_out, packets_in,
        packets_out, first_seen, last_seen, closed_at FROM connections
        WHERE closed_at IS NOT NULL ORDER BY closed_at;
    DROP TABLE connections;
    CREATE TABLE report_ids (
        device_id INTEGER NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
        report_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        collected_at REAL NOT NULL,
        received_at REAL NOT NULL,
        PRIMARY KEY (device_id, report_id)
    ) WITHOUT ROWID;
    CREATE INDEX report_ids_age ON report_ids (received_at);
    INSERT INTO report_ids SELECT device_id, report_id, seq, collected_at, received_at FROM reports;
    DROP TABLE reports;
    ALTER TABLE report_ids RENAME TO reports;
    CREATE INDEX traffic_age ON traffic (t);
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


async def connect(path: Path, *, readonly: bool = False) -> aiosqlite.Connection:
    """Open one connection with the pragmas every connection needs."""
    conn = await aiosqlite.connect(path, isolation_level=None)
    try:
        conn.row_factory = aiosqlite.Row
        await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        await conn.execute("PRAGMA foreign_keys = ON")
        if readonly:
            await conn.execute("PRAGMA query_only = ON")
        else:
            await conn.execute("PRAGMA journal_mode = WAL")
            await conn.execute("PRAGMA synchronous = NORMAL")
            await conn.execute("PRAGMA cache_size = -65536")  # 64 MiB: keep hot pages in memory
    except BaseException:  # e.g. "file is not a database": its thread would keep the process alive
        await conn.close()
        raise
    return conn


async def schema_version(conn: aiosqlite.Connection) -> int:
    """The database's schema version (0 for a new file)."""
    async with conn.execute("PRAGMA user_version") as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def migrate(conn: aiosqlite.Connection, target: int = SCHEMA_VERSION) -> int:
    """Apply every migration above the file's version, each in its own transaction."""
    current = await schema_version(conn)
    if current > SCHEMA_VERSION:
        raise RuntimeError(
            f"the database has schema version {current}, newer than this smartmon "
            f"({SCHEMA_VERSION}); upgrade smartmon"
        )
    for version in range(current + 1, target + 1):
        statements = [s for s in MIGRATIONS[version - 1].split(";") if s.strip()]
        await conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in statements:
                await conn.execute(statement)
            await conn.execute(f"PRAGMA user_version = {version}")
            await conn.execute("COMMIT")
        except BaseException:
            await conn.execute("ROLLBACK")
            raise
        log.info("database migrated to schema version %d", version)
    return target


@dataclass
class _Pending:
    job: Job
    group: str | None
    future: asyncio.Future[Any]


@dataclass
class Database:
    """The writer connection and its queue, plus a small pool of readers."""

    path: Path
    writer: aiosqlite.Connection
    readers: list[aiosqlite.Connection]
    grouped: dict[str, Callable[[sqlite3.Connection, list[Any]], list[Any]]] = field(
        default_factory=dict
    )
    on_rollback: list[Callable[[], None]] = field(default_factory=list)
    _queue: asyncio.Queue[_Pending | None] = field(default_factory=asyncio.Queue)
    _task: asyncio.Task[None] | None = None
    _next_reader: itertools.cycle[aiosqlite.Connection] | None = None
    _checkpointer: aiosqlite.Connection | None = None
    _checkpoints: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, path: Path, readers: int = 2) -> Database:
        """Open (creating and migrating as needed) the database file."""
        await asyncio.to_thread(_create_private, path)
        writer = await connect(path)
        try:
            await migrate(writer)
        except BaseException:
            await writer.close()
            raise
        # the writer never checkpoints: copying the WAL into the file (and its fsync) happens
        # on a connection of its own, off the path every acknowledged write waits on
        await writer.execute("PRAGMA wal_autocheckpoint = 0")
        pool = [await connect(path, readonly=True) for _ in range(readers)]
        db = cls(path=path, writer=writer, readers=pool)
        db._next_reader = itertools.cycle(pool)
        db._checkpointer = await connect(path)
        db._task = asyncio.create_task(db._write_loop(), name="smartmon-writer")
        db._checkpoints = asyncio.create_task(db._checkpoint_loop(), name="smartmon-checkpoint")
        return db

    async def _checkpoint_loop(self) -> None:
        assert self._checkpointer is not None
        while True:
            await asyncio.sleep(CHECKPOINT_EVERY_S)
            try:
                await self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error as exc:  # e.g. busy: the next round catches up
                log.warning("WAL checkpoint failed: %s", exc)

    def reader(self) -> aiosqlite.Connection:
        """A reader connection (round robin)."""
        assert self._next_reader is not None
        return next(self._next_reader)

    async def fetchall(self, sql: str, params: Any = ()) -> list[aiosqlite.Row]:
        """Run a read query on a reader."""
        async with self.reader().execute(sql, params) as cursor:
            return list(await cursor.fetchall())

    async def fetchone(self, sql: str, params: Any = ()) -> aiosqlite.Row | None:
        """Run a read query on a reader; the first row or None."""
        async with self.reader().execute(sql, params) as cursor:
            return await cursor.fetchone()

    async def write(self, job: Callable[[sqlite3.Connection], T]) -> T:
        """Run job (in the writer's thread) in the next transaction; its result once committed."""
        result: T = await self._submit(job, None)
        return result

    async def write_grouped(self, group: str, item: Any) -> Any:
        """Queue an item for a grouped job (e.g. ingest); all items of one batch run together."""
        return await self._submit(item, group)

    async def _submit(self, job: Any, group: str | None) -> Any:
        if self._task is None or self._task.done():
            raise RuntimeError("the database is closed")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(job, group, future))
        return await future

    async def _write_loop(self) -> None:
        while True:
            first = await self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < MAX_BATCH and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:
                    stop = True
                    break
                batch.append(item)
            await self._run_batch(batch)
            if stop:
                return

    async def _run_batch(self, batch: list[_Pending]) -> None:
        # The whole batch runs in the writer connection's own thread in one hop: under load,
        # every await between statements would wait behind all the ready request handlers.
        try:
            outcomes = await self._in_writer_thread(self._run_batch_sync, _runs(batch))
        except Exception as exc:  # the transaction as a whole failed (disk full, I/O error)
            log.error("write transaction failed: %s", exc)
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            return
        for pending, (result, error) in zip(batch, outcomes, strict=True):
            if pending.future.done():
                continue
            if error is not None:
                pending.future.set_exception(error)
            else:
                pending.future.set_result(result)

    async def _in_writer_thread(self, fn: Callable[..., T], *args: Any) -> T:
        # aiosqlite runs each connection's calls on that connection's own thread through
        # `_execute`; it has no public way to run a function of several statements there.
        # tests/server/test_db_writer.py fails loudly if an aiosqlite upgrade removes it.
        result: T = await self.writer._execute(fn, *args)  # type: ignore[no-untyped-call]
        return result

    def _run_batch_sync(
        self, runs: list[tuple[str | None, list[_Pending]]]
    ) -> list[tuple[Any, BaseException | None]]:
        conn = self.writer._conn
        outcomes: list[tuple[Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for group, members in runs:
                outcomes.extend(self._run_group(conn, group, members))
            conn.execute("COMMIT")
        except Exception:
            with contextlib.suppress(Exception):
                conn.execute("ROLLBACK")
            self._rolled_back()
            raise
        return outcomes

    def _run_group(
        self, conn: sqlite3.Connection, group: str | None, members: list[_Pending]
    ) -> list[tuple[Any, BaseException | None]]:
        conn.execute("SAVEPOINT job")
        try:
            if group is None:
                results = [members[0].job(conn)]
            else:
                results = self.grouped[group](conn, [m.job for m in members])
            conn.execute("RELEASE job")
        except Exception as exc:
            conn.execute("ROLLBACK TO job")
            conn.execute("RELEASE job")
            self._rolled_back()
            if len(members) > 1:  # isolate the failing item: retry each on its own
                return [o for m in members for o in self._run_group(conn, group, [m])]
            return [(None, exc)]
        return [(result, None) for result in results]

    def _rolled_back(self) -> None:
        for callback in self.on_rollback:
            callback()

    async def close(self) -> None:
        """Finish queued writes, checkpoint the WAL into the file, close every connection."""
        if self._task is not None and not self._task.done():
            self._queue.put_nowait(None)
            await self._task
        if self._checkpoints is not None:
            self._checkpoints.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checkpoints
        for conn in self.readers:
            await conn.close()
        if self._checkpointer is not None:
            await self._checkpointer.close()
        with contextlib.suppress(sqlite3.Error):
            await self.writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        await self.writer.close()


def _create_private(path: Path) -> None:
    """Create the data dir (0700) and database file (0600); SQLite gives -wal/-shm that mode."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))


def _runs(batch: list[_Pending]) -> list[tuple[str | None, list[_Pending]]]:
    """Split a batch into runs: consecutive items of one group together, other jobs alone."""
    runs: list[tuple[str | None, list[_Pending]]] = []
    for pending in batch:
        if pending.group is not None and runs and runs[-1][0] == pending.group:
            runs[-1][1].append(pending)
        else:
            runs.append((pending.group, [pending]))
    return runs
