"""The single writer: group commit, isolated failures, answers only after commit."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import aiosqlite
import pytest

from smartmon.server.db import Database


def test_aiosqlite_still_runs_functions_on_the_connection_thread() -> None:
    # the writer relies on it (Database._in_writer_thread): an upgrade that drops it must fail here
    assert callable(getattr(aiosqlite.Connection, "_execute", None))


async def test_concurrent_writes_share_transactions_and_all_commit(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "smartmon.db")
    transactions: list[int] = []
    run_batch = db._run_batch_sync

    def counting(runs):  # type: ignore[no-untyped-def]
        transactions.append(sum(len(members) for _, members in runs))
        return run_batch(runs)

    db._run_batch_sync = counting  # type: ignore[method-assign]

    def insert(n: int):  # type: ignore[no-untyped-def]
        return lambda conn: (
            conn.execute(
                "INSERT INTO users (username, password_hash, role, created_at) VALUES (?, 'x', 'user', 0)",
                (f"user{n:04d}",),
            ).lastrowid
            and n
        )

    results = await asyncio.gather(*(db.write(insert(n)) for n in range(300)))
    assert results == list(range(300))  # every caller got its own answer
    row = await db.fetchone("SELECT count(*) FROM users")
    assert row is not None and row[0] == 300
    assert sum(transactions) == 300
    assert len(transactions) < 30  # group commit: many writes per transaction
    await db.close()


async def test_a_failing_job_fails_alone_and_leaves_no_trace(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "smartmon.db")

    def good(name: str):  # type: ignore[no-untyped-def]
        return lambda conn: (
            conn.execute(
                "INSERT INTO users (username, password_hash, role, created_at) VALUES (?, 'x', 'user', 0)",
                (name,),
            ).rowcount
        )

    def bad(conn: sqlite3.Connection) -> None:
        conn.execute(
            "INSERT INTO users (username, password_hash, role, created_at) VALUES ('half', 'x', 'user', 0)"
        )
        raise ValueError("boom")

    outcomes = await asyncio.gather(
        db.write(good("a")), db.write(bad), db.write(good("b")), return_exceptions=True
    )
    assert outcomes[0] == 1 and outcomes[2] == 1
    assert isinstance(outcomes[1], ValueError)
    names = [r[0] for r in await db.fetchall("SELECT username FROM users ORDER BY username")]
    assert names == ["a", "b"]  # the failed job's own insert was rolled back
    await db.close()


async def test_writes_after_close_are_refused(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "smartmon.db")
    await db.close()
    with pytest.raises(RuntimeError, match="closed"):
        await db.write(lambda conn: None)
