"""Which process owns a socket: socket inode -> pid from the /proc/<pid>/fd links (Linux).

Reading every /proc/<pid>/fd costs one readlink per open file on the machine, so callers
keep what they learn (netlink.py keeps each socket's owner for the socket's lifetime) and
ask only about sockets they have not seen; a scan starts with the processes already known
to own sockets and stops as soon as every inode asked about has been found.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Collection, Iterable
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
    """Finds the processes holding socket inodes by reading /proc/<pid>/fd links."""

    def __init__(self, proc: str = "/proc") -> None:
        self._proc = proc
        self.denied = False
        self.scans = 0

    def resolve(
        self, inodes: Iterable[int], likely: Collection[int] = ()
    ) -> dict[int, tuple[int, str | None]]:
        """{inode: (pid, name)} for the inodes some readable process holds.

        Processes in `likely` (those already known to own sockets) are read first, and the
        scan stops as soon as every inode is found.
        """
        wanted = set(inodes)
        wanted.discard(0)
        found: dict[int, tuple[int, str | None]] = {}
        if not wanted:
            return found
        self.scans += 1
        for pid in self._scan_order(likely):
            held = self._read_fds(pid) & wanted
            if not held:
                continue
            # Read the name now, not from a cache: the pid may belong to a new process.
            owner = (pid, process_name(pid, self._proc))
            for inode in held:
                found[inode] = owner
            wanted -= held
            if not wanted:
                break
        return found

    def _scan_order(self, likely: Collection[int]) -> list[int]:
        try:
            pids = [int(entry) for entry in os.listdir(self._proc) if entry.isdigit()]
        except OSError:
            return []
        return sorted(pids, key=lambda pid: pid not in likely)

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
