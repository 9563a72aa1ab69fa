"""Old samples, report ids and closed connections are pruned in chunks; recent data stays."""

import sqlite3
from pathlib import Path

from smartmon.server import db as dbm
from smartmon.server import store


async def test_prune_deletes_only_expired_rows_in_chunks(tmp_path: Path) -> None:
    database = await dbm.Database.open(tmp_path / "smartmon.db")

    def fill(conn: sqlite3.Connection) -> None:
        conn.execute(
            "INSERT INTO users (username, password_hash, role, created_at) VALUES ('u', 'x', 'admin', 0)"
        )
        conn.execute("INSERT INTO devices (user_id, name, registered_at) VALUES (1, 'd', 0)")
        conn.executemany(
            "INSERT INTO traffic (device_id, t, connections) VALUES (1, ?, 0)",
            [(t,) for t in range(12_000)],
        )
        conn.executemany(
            "INSERT INTO reports VALUES (1, ?, ?, 0, ?)", [(f"r{t}", t, t) for t in range(12_000)]
        )
        conn.executemany(
            "INSERT INTO closed_connections (device_id, protocol, source_ip, source_port, dest_ip,"
            " dest_port, family, state, first_seen, last_seen, closed_at)"
            " VALUES (1, 'TCP', '10.0.0.1', ?, '192.0.2.1', 443, 4, 'CLOSE', 0, 0, ?)",
            [(p, p) for p in range(1, 3001)],
        )

    await database.write(fill)
    chunks = []
    while deleted := await database.write(
        lambda conn: store.prune(conn, samples_before=11_000, history_before=2_001)
    ):
        chunks.append(deleted)
    assert sum(chunks) == 11_000 + 11_000 + 2_000
    assert len(chunks) >= 3  # chunked, never one huge delete
    assert max(chunks) <= 3 * store.PRUNE_CHUNK
    remaining = [
        (await database.fetchone(f"SELECT count(*), min({column}) FROM {table}"))
        for table, column in (
            ("traffic", "t"),
            ("reports", "received_at"),
            ("closed_connections", "closed_at"),
        )
    ]
    assert [tuple(r) for r in remaining if r] == [(1000, 11_000), (1000, 11_000), (1000, 2_001)]
    await database.close()
