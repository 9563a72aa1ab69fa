"""The on-disk spool: order, restarts, the size bound and the drop count."""

from __future__ import annotations

import os
from pathlib import Path

from smartmon.agent.spool import Spool


def _fill(spool: Spool, count: int, size: int = 100) -> list[int]:
    seqs = []
    for _ in range(count):
        seq = spool.next_seq()
        spool.put(seq, bytes([seq % 256]) * size)
        seqs.append(seq)
    return seqs


def test_reports_come_back_oldest_first(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=10_000)
    seqs = _fill(spool, 5)

    sent = []
    while (entry := spool.oldest()) is not None:
        assert entry.read() == bytes([entry.seq % 256]) * 100
        sent.append(entry.seq)
        spool.remove(entry)

    assert sent == seqs == sorted(seqs)
    assert len(spool) == 0 and spool.bytes == 0
    assert not list(tmp_path.glob("*.json.gz"))


def test_a_new_spool_on_the_same_directory_finds_everything(tmp_path: Path) -> None:
    first = Spool(tmp_path, max_bytes=10_000)
    seqs = _fill(first, 3)
    (tmp_path / f"{99:020d}.json.gz.tmp").write_bytes(b"half a report")

    again = Spool(tmp_path, max_bytes=10_000)

    assert [entry.seq for entry in again.reports()] == seqs
    assert again.bytes == 300
    # A write cut short by a crash is not a report: it is cleaned away.
    assert not list(tmp_path.glob("*.tmp"))
    # Sequence numbers keep growing across restarts.
    assert again.next_seq() > seqs[-1]


def test_seq_keeps_growing_after_the_spool_was_emptied(tmp_path: Path) -> None:
    first = Spool(tmp_path, max_bytes=10_000)
    assert first.oldest() is None
    seqs = _fill(first, 2)
    while (entry := first.oldest()) is not None:
        first.remove(entry)

    assert Spool(tmp_path, max_bytes=10_000).next_seq() > seqs[-1]


def test_full_spool_drops_oldest_and_counts_the_drops(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1_000)

    seqs = _fill(spool, 15)

    assert [entry.seq for entry in spool.reports()] == seqs[5:]
    assert spool.bytes <= 1_000
    assert spool.dropped == spool.dropped_since_start == 5


def test_drop_count_survives_a_restart(tmp_path: Path) -> None:
    _fill(Spool(tmp_path, max_bytes=300), 5)

    again = Spool(tmp_path, max_bytes=300)
    _fill(again, 1)

    assert again.dropped == 3 and again.dropped_since_start == 1


def test_a_report_larger_than_the_bound_is_still_kept(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=50)
    _fill(spool, 2, size=100)

    # The newest report is never dropped for itself: the spool always holds the latest.
    assert [entry.seq for entry in spool.reports()] == [1]
    assert spool.dropped == 1


def test_a_refused_report_counts_as_dropped(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=10_000)
    _fill(spool, 2)
    entry = spool.oldest()
    assert entry is not None

    spool.reject(entry)

    assert len(spool) == 1
    assert spool.dropped == spool.dropped_since_start == 1


def test_files_are_private(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", max_bytes=10_000)
    _fill(spool, 1)

    entry = spool.oldest()
    assert entry is not None
    assert os.stat(entry.path).st_mode & 0o777 == 0o600
    assert os.stat(tmp_path / "spool").st_mode & 0o777 == 0o700
