"""The on-disk spool: reports waiting for the server, oldest first, bounded in bytes.

Every report is written here before it is sent and removed once the server has it, so a
crash, kill -9 or power cut loses nothing that was collected. One file per report, named
`<seq>.json.gz`: files are written under a temporary name, flushed and renamed, so a file
with a final name is always complete. When the spool is full the oldest reports are
dropped and counted; every new report carries the running total in `droppedReports`, so
the newest report a server has tells it how many it will never get.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections import deque
from dataclasses import dataclass
from pathlib import Path

_REPORT_NAME = re.compile(r"^(\d{20})\.json\.gz$")
_TEMPORARY_SUFFIX = ".tmp"
_DROPPED_FILE = "dropped"
_SEQ_FILE = "seq"
_LOCK_FILE = "lock"


class SpoolBusy(OSError):
    """Another agent is using this spool."""


@dataclass(frozen=True, slots=True)
class SpooledReport:
    """One report waiting in the spool."""

    seq: int
    size: int
    path: Path

    def read(self) -> bytes:
        """The gzip-compressed report JSON."""
        return self.path.read_bytes()


def _write_atomically(path: Path, data: bytes, *, sync: bool) -> None:
    temporary = path.with_name(path.name + _TEMPORARY_SUFFIX)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)


def _read_int(path: Path) -> int:
    try:
        return max(0, int(path.read_bytes().strip() or b"0"))
    except (OSError, ValueError):
        return 0


class Spool:
    """Reports on disk, oldest first, bounded by max_bytes; drops the oldest when full."""

    def __init__(
        self, directory: Path, max_bytes: int, *, sync: bool = True, exclusive: bool = False
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._sync = sync
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock_fd = self._lock() if exclusive else None
        self._entries: deque[SpooledReport] = deque()
        self.bytes = 0
        self._load()
        self.dropped = _read_int(directory / _DROPPED_FILE)
        self.dropped_since_start = 0
        newest = self._entries[-1].seq + 1 if self._entries else 0
        self._next_seq = max(_read_int(directory / _SEQ_FILE), newest)

    def _lock(self) -> int | None:
        # Two agents on one spool would send each other's reports and reuse seq numbers.
        # flock is released by the kernel however the holder dies, kill -9 included.
        try:
            import fcntl
        except ImportError:  # Windows
            return None
        fd = os.open(self.directory / _LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SpoolBusy(f"another agent is using {self.directory}") from None
        return fd

    def close(self) -> None:
        """Let another agent use the spool."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _load(self) -> None:
        found: list[SpooledReport] = []
        with os.scandir(self.directory) as entries:
            for entry in entries:
                if entry.name.endswith(_TEMPORARY_SUFFIX):
                    # Left by a crash in the middle of a write: never a complete report.
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
                    continue
                match = _REPORT_NAME.match(entry.name)
                if match is not None:
                    size = entry.stat().st_size
                    found.append(SpooledReport(int(match[1]), size, Path(entry.path)))
        found.sort(key=lambda report: report.seq)
        self._entries.extend(found)
        self.bytes = sum(report.size for report in found)

    def __len__(self) -> int:
        return len(self._entries)

    def next_seq(self) -> int:
        """A sequence number larger than every earlier one, across restarts."""
        seq = self._next_seq
        self._next_seq += 1
        # Kept on disk so seq has no gaps across restarts, which would look like lost reports.
        _write_atomically(self.directory / _SEQ_FILE, str(self._next_seq).encode(), sync=False)
        return seq

    def put(self, seq: int, body: bytes) -> int:
        """Store one compressed report; returns how many old ones were dropped for room."""
        dropped = self._make_room(len(body))
        path = self.directory / f"{seq:020d}.json.gz"
        _write_atomically(path, body, sync=self._sync)
        self._entries.append(SpooledReport(seq, len(body), path))
        self.bytes += len(body)
        return dropped

    def _make_room(self, incoming: int) -> int:
        dropped = 0
        while self._entries and self.bytes + incoming > self.max_bytes:
            oldest = self._entries.popleft()
            self.bytes -= oldest.size
            self._count_drop()
            with contextlib.suppress(FileNotFoundError):
                oldest.path.unlink()
            dropped += 1
        return dropped

    def _count_drop(self) -> None:
        # Counted before the file goes: a crash in between counts a drop that did not happen
        # rather than hiding one that did.
        self.dropped += 1
        self.dropped_since_start += 1
        _write_atomically(
            self.directory / _DROPPED_FILE, str(self.dropped).encode(), sync=self._sync
        )

    def oldest(self) -> SpooledReport | None:
        """The report to send next."""
        return self._entries[0] if self._entries else None

    def remove(self, report: SpooledReport) -> None:
        """Forget a report the server has (or refused for good)."""
        with contextlib.suppress(ValueError):
            self._entries.remove(report)
            self.bytes -= report.size
        with contextlib.suppress(FileNotFoundError):
            report.path.unlink()

    def reject(self, report: SpooledReport) -> None:
        """Drop a report the server refused for good; it counts as dropped."""
        self._count_drop()
        self.remove(report)

    def reports(self) -> list[SpooledReport]:
        """Every waiting report, oldest first."""
        return list(self._entries)
