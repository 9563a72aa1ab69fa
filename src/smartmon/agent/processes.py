"""Which process owns a socket: a cached socket-inode -> pid map read from /proc (Linux).

Scanning every /proc/<pid>/fd costs one readlink per open file on the machine, so the map
is kept between polls and /proc is scanned again only when a socket with an unknown inode
appears; the scan starts with processes already known to own sockets and stops as soon as
every unknown inode has been found.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Literal

Visibility = Literal["all", "own", "none"]

CAP_SYS_PTRACE = 19
_SOCKET_LINK_PREFIX = "socket:["
# /proc/<pid>/comm is cut at 15 bytes; longer names are recovered from argv[0], as psutil does.
_COMM_MAX = 15


_LINUX = sys.platform.startswith("linux")


def process_visibility() -> Visibility:
    """Whose processes this agent can attribute sockets to."""
    if _LINUX:
        return "all" if _has_capability(CAP_SYS_PTRACE) else "own"
    geteuid = getattr(os, "geteuid", None)
    if geteuid is None:
        return "all"  # Windows: psutil names the owner of every socket
    return "all" if geteuid() == 0 else "own"


def _has_capability(bit: int) -> bool:
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"CapEff:"):
                    return bool(int(line.split()[1], 16) >> bit & 1)
    except OSError:
        pass
    return os.geteuid() == 0


def process_name(pid: int, proc: str = "/proc") -> str | None:
    """The short name of a process (comm, or argv[0] when comm was cut), None if it is gone."""
    try:
        with open(f"{proc}/{pid}/comm", "rb") as comm_file:
            name = comm_file.read().rstrip(b"\n").decode("utf-8", "replace")
    except OSError:
        return None
    if len(name) >= _COMM_MAX:
        try:
            with open(f"{proc}/{pid}/cmdline", "rb") as cmdline_file:
                argv0 = cmdline_file.read().split(b"\0", 1)[0].decode("utf-8", "replace")
        except OSError:
            return name
        base = os.path.basename(argv0)
        if base.startswith(name):
            return base
    return name


class InodeOwners:
    """Socket inode -> (pid, process name), refreshed only for inodes not seen before."""

    def __init__(self, proc: str = "/proc") -> None:
        self._proc = proc
        self._pid_of: dict[int, int] = {}
        # Inodes searched for and not found (other users' processes, kernel sockets): looking
        # again every poll would rescan /proc each time for nothing.
        self._unowned: set[int] = set()
        self._names: dict[int, str | None] = {}
        self.denied = False
        self.scans = 0

    def refresh(self, inodes: Iterable[int]) -> None:
        """Learn the owners of the current sockets' inodes and forget sockets that are gone."""
        current = set(inodes)
        current.discard(0)
        self._forget_dead_processes()
        unknown = current - self._pid_of.keys() - self._unowned
        if unknown:
            self._scan(unknown)
        # Inode numbers are reused after a socket dies: keep only the live ones.
        if len(self._pid_of) > len(current):
            self._pid_of = {inode: pid for inode, pid in self._pid_of.items() if inode in current}
        self._unowned &= current
        live_pids = set(self._pid_of.values())
        if len(self._names) > len(live_pids):
            self._names = {pid: name for pid, name in self._names.items() if pid in live_pids}

    def owner(self, inode: int) -> tuple[int, str | None] | None:
        """The (pid, name) holding a socket inode, if known."""
        pid = self._pid_of.get(inode)
        if pid is None:
            return None
        if pid not in self._names:
            self._names[pid] = process_name(pid, self._proc)
        return pid, self._names[pid]

    def _forget_dead_processes(self) -> None:
        # A socket passed on to another process (fork, then exit) keeps its inode; the dead
        # pid's inodes become unknown again so the next scan finds their new owner.
        dead = {
            pid for pid in set(self._pid_of.values()) if not os.path.exists(f"{self._proc}/{pid}")
        }
        if dead:
            self._pid_of = {inode: pid for inode, pid in self._pid_of.items() if pid not in dead}
            for pid in dead:
                self._names.pop(pid, None)
            self._unowned.clear()

    def _scan(self, wanted: set[int]) -> None:
        self.scans += 1
        remaining = set(wanted)
        for pid in self._scan_order():
            found = self._read_fds(pid)
            if not found:
                continue
            if pid in self._names:
                # The pid may belong to a new process now: read its name again.
                del self._names[pid]
            for inode in found:
                self._pid_of[inode] = pid
            remaining -= found
            if not remaining:
                break
        self._unowned |= remaining

    def _scan_order(self) -> list[int]:
        try:
            pids = [int(entry) for entry in os.listdir(self._proc) if entry.isdigit()]
        except OSError:
            return []
        known = set(self._pid_of.values())
        # Processes that already own sockets are the likeliest owners of new ones.
        return sorted(pids, key=lambda pid: pid not in known)

    def _read_fds(self, pid: int) -> set[int]:
        try:
            fd_dir = os.open(f"{self._proc}/{pid}/fd", os.O_RDONLY | os.O_DIRECTORY)
        except PermissionError:
            self.denied = True
            return set()
        except OSError:
            return set()
        inodes: set[int] = set()
        try:
            for name in os.listdir(fd_dir):
                try:
                    target = os.readlink(name, dir_fd=fd_dir)
                except OSError:
                    continue
                if target.startswith(_SOCKET_LINK_PREFIX):
                    inodes.add(int(target[len(_SOCKET_LINK_PREFIX) : -1]))
        except OSError:
            pass
        finally:
            os.close(fd_dir)
        return inodes
