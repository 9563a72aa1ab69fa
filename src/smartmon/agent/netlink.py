"""The Linux collector: sockets, TCP counters and owners from sock_diag, closed sockets from
destroy events.

A poll costs about what the kernel's dumps cost: most sockets were there at the last poll,
so each one is kept (keyed by its kernel cookie, unique per socket) as a ready Connection
with its owner, and a poll only copies it and reads four counters. New sockets are parsed
in full, and only their inodes are looked up in /proc.
"""

from __future__ import annotations

import gc
import os
import socket
from collections.abc import Callable

from smartmon import wire
from smartmon.agent.processes import InodeOwners, process_visibility
from smartmon.agent.sockdiag import (
    DUMPS,
    INET_DIAG_INFO,
    MESSAGE_HEAD,
    MESSAGE_LENGTH_TYPE,
    NLMSG_DONE,
    NLMSG_ERROR,
    NLMSGHDR_SIZE,
    SOCK_DIAG_BY_FAMILY,
    TCP_INFO_WITH_SENT,
    DestroyListener,
    NetlinkUnavailable,
    SockDiag,
    connection_from,
    error_of,
    find_attribute,
    read_counters,
)

# cookie -> (kernel state, inode, the socket as last reported, the socket as it was when a
# process last held it). State and inode are part of the match because a socket changes
# state, gets an inode when accepted and loses it when closed; the last holder names the
# owner of a closed socket.
_Known = dict[int, tuple[int, int, wire.Connection, wire.Connection | None]]
_ATTRIBUTES_AT = NLMSGHDR_SIZE + 72
# TIME_WAIT and request sockets are not full sockets: the kernel has no tcp_info for them.
_WITHOUT_TCP_INFO = frozenset({6, 12})
# msgspec's C-level shallow copy, without __post_init__ (the typing stubs do not list it).
_copy: Callable[[wire.Connection], wire.Connection] = wire.Connection.__copy__  # type: ignore[attr-defined]


class NetlinkCollector:
    """Sockets, TCP counters and owners from sock_diag; closed sockets from destroy events."""

    def __init__(self, close_events: bool = True) -> None:
        self._diag = SockDiag()
        try:
            self._diag.dump(socket.AF_INET, socket.IPPROTO_TCP)
        except OSError as exc:
            self._diag.close()
            raise NetlinkUnavailable(f"the kernel refused a sock_diag dump: {exc}") from exc
        self._owners = InodeOwners()
        self._known: _Known = {}
        self._known_before: _Known = {}
        self._owner_pids: set[int] = set()
        # Where INET_DIAG_INFO sits in a TCP message: the same for every full socket, so
        # after the first one the counters take one unpack instead of an attribute walk.
        self._info_at = 0
        self._destroyed: DestroyListener | None = None
        self._close_events_error: str | None = None
        if close_events:
            try:
                self._destroyed = DestroyListener()
            except NetlinkUnavailable as exc:
                self._close_events_error = str(exc)
        self.capabilities = self._capabilities(close_events)

    def _capabilities(self, close_events: bool) -> wire.Capabilities:
        visibility = process_visibility()
        missing = [
            "UDP sockets carry no byte or packet counters (the kernel keeps none per socket)"
        ]
        if visibility != "all":
            missing.append(
                "process attribution needs root or CAP_SYS_PTRACE: "
                "only this user's processes are named"
            )
        if self._close_events_error is not None:
            missing.append(
                "connections that open and close between two polls are missed: "
                + self._close_events_error
            )
        elif not close_events:
            missing.append("socket-destroy events are off: short-lived connections are missed")
        return wire.Capabilities(
            collector="netlink",
            counters=True,
            processes=visibility,
            close_events=self._destroyed is not None,
            missing=missing,
        )

    @property
    def close_events(self) -> bool:
        """Whether closed connections come from kernel destroy events."""
        return self._destroyed is not None

    @property
    def lost_close_events(self) -> int:
        """At least this many destroy events were lost (kernel buffer or the bound)."""
        return self._destroyed.lost if self._destroyed is not None else 0

    @property
    def proc_scans(self) -> int:
        """How many times /proc was read to find the owners of new sockets."""
        return self._owners.scans

    def poll(self) -> tuple[list[wire.Connection], list[wire.Connection]]:
        """(current connections, connections destroyed since the previous poll)."""
        # Drain first: a socket destroyed after the dump would otherwise be reported as
        # closed in the same report that still lists it as open.
        destroyed = self._destroyed.drain() if self._destroyed is not None else []
        # Tens of thousands of short-lived objects would trigger collections of the whole
        # heap mid-poll; none of them can form a cycle.
        collecting = gc.isenabled()
        gc.disable()
        try:
            self._forget_dead_owners()
            known: _Known = {}
            fresh: list[tuple[int, wire.Connection]] = []
            connections: list[wire.Connection] = []
            for family, protocol in DUMPS:
                self._dump(family, protocol, known, fresh, connections)
            self._name_owners(fresh)
            closed = [self._with_owner(cookie, c) for cookie, c in destroyed]
            self._known_before, self._known = self._known, known
        finally:
            if collecting:
                gc.enable()
        return connections, closed

    def _dump(
        self,
        family: int,
        protocol: int,
        known: _Known,
        fresh: list[tuple[int, wire.Connection]],
        connections: list[wire.Connection],
    ) -> None:
        """One dump: reuse what was known, parse what is new, read TCP counters."""
        diag = self._diag
        diag.request(family, protocol)
        head = MESSAGE_HEAD.unpack_from
        header = MESSAGE_LENGTH_TYPE.unpack_from
        with_sent = TCP_INFO_WITH_SENT.unpack_from
        previous = self._known
        append = connections.append
        tcp = protocol == socket.IPPROTO_TCP
        info_at = self._info_at
        while True:
            data, size = diag.receive()
            offset = 0
            while offset + NLMSGHDR_SIZE <= size:
                if offset + MESSAGE_HEAD.size <= size:
                    length, kind, state, cookie, inode = head(data, offset)
                else:  # a short message: NLMSG_DONE or an error
                    length, kind = header(data, offset)
                    state = cookie = inode = 0
                if length < NLMSGHDR_SIZE:
                    raise NetlinkUnavailable("a malformed netlink message")
                end = offset + length
                if kind != SOCK_DIAG_BY_FAMILY:
                    if kind == NLMSG_DONE:
                        self._info_at = info_at
                        return
                    if kind == NLMSG_ERROR and (errno := error_of(data, offset + NLMSGHDR_SIZE)):
                        raise NetlinkUnavailable(errno, os.strerror(errno))
                    offset += (length + 3) & ~3
                    continue
                counted = tcp and state not in _WITHOUT_TCP_INFO
                counters = None  # (len, type, ..., received, segs_out, segs_in, sent)
                if counted and info_at and offset + info_at + TCP_INFO_WITH_SENT.size <= end:
                    counters = with_sent(data, offset + info_at)
                    if counters[1] != INET_DIAG_INFO or counters[0] < TCP_INFO_WITH_SENT.size:
                        counters = None
                entry = previous.get(cookie)
                if entry is not None and entry[0] == state and entry[1] == inode:
                    # a socket seen before: shared as it is while its counters stay put
                    # (nothing mutates a reported connection), copied when they moved
                    connection = entry[2]
                    stale = counted and (
                        counters is None
                        or connection.bytes_in != counters[3]
                        or connection.bytes_out != counters[6]
                        or connection.packets_in != counters[5]
                        or connection.packets_out != counters[4]
                    )
                    if stale:
                        connection = _copy(connection)
                        entry = (state, inode, connection, entry[3])
                else:
                    parsed = connection_from(
                        data, offset + NLMSGHDR_SIZE, protocol, diag.address_text
                    )
                    if parsed is None:
                        offset += (length + 3) & ~3
                        continue
                    connection = parsed[2]
                    held = connection if inode else (entry[3] if entry is not None else None)
                    entry = (state, inode, connection, held)
                    if inode:
                        fresh.append((inode, connection))
                    stale = counted
                known[cookie] = entry
                if stale:
                    if counters is not None:
                        connection.bytes_in = counters[3]
                        connection.bytes_out = counters[6]
                        connection.packets_in = counters[5]
                        connection.packets_out = counters[4]
                    else:
                        info_at = self._read_counters_slowly(data, offset, end, connection, info_at)
                append(connection)
                offset += (length + 3) & ~3

    @staticmethod
    def _read_counters_slowly(
        data: bytearray, offset: int, end: int, connection: wire.Connection, info_at: int
    ) -> int:
        """Walk the attributes for INET_DIAG_INFO; returns where it was, for the next one.

        Kernels before 4.19 have no bytes_sent: their sockets all come this way (slower).
        """
        info = find_attribute(data, offset + _ATTRIBUTES_AT, end, INET_DIAG_INFO)
        counters = read_counters(data, info, end) if info is not None else None
        if counters is None:
            # No tcp_info (TIME_WAIT and request sockets): unknown, not zero.
            connection.bytes_in = connection.bytes_out = None
            connection.packets_in = connection.packets_out = None
            return info_at
        (
            connection.bytes_in,
            connection.bytes_out,
            connection.packets_in,
            connection.packets_out,
        ) = counters
        assert info is not None
        fits_fast_path = info + TCP_INFO_WITH_SENT.size <= end
        return info - offset if fits_fast_path else info_at

    def _name_owners(self, fresh: list[tuple[int, wire.Connection]]) -> None:
        if not fresh:
            return
        owners = self._owners.resolve((inode for inode, _ in fresh), self._owner_pids)
        for inode, connection in fresh:
            owner = owners.get(inode)
            if owner is not None:
                connection.pid, connection.process = owner
                self._owner_pids.add(owner[0])

    def _forget_dead_owners(self) -> None:
        # A socket handed to another process (fork, then exit) keeps its cookie: forget what
        # is known about the dead process's sockets so they are looked up afresh.
        dead = {pid for pid in self._owner_pids if not os.path.exists(f"/proc/{pid}")}
        if dead:
            self._owner_pids -= dead
            self._known = {
                cookie: entry for cookie, entry in self._known.items() if entry[2].pid not in dead
            }

    def _with_owner(self, cookie: int, connection: wire.Connection) -> wire.Connection:
        # Destroy events come after the file is gone: the owner is whoever held the socket
        # when it was last seen.
        entry = self._known.get(cookie) or self._known_before.get(cookie)
        held = entry[3] if entry is not None else None
        if held is not None:
            connection.pid, connection.process = held.pid, held.process
        return connection

    def close(self) -> None:
        """Release the netlink sockets and stop the destroy-event thread."""
        if self._destroyed is not None:
            self._destroyed.close()
        self._diag.close()
