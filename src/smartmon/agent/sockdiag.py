"""Linux collector: netlink sock_diag (inet_diag) dumps and socket-destroy events.

Written with socket + struct only. One SOCK_DIAG_BY_FAMILY dump request per family and
protocol returns every socket with, for TCP, its `tcp_info` (byte and segment counters).
A second netlink socket joins the SKNLGRP_INET*_DESTROY multicast groups, so a connection
that opens and closes between two polls is still reported, with its final counters.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import sys
import threading
from collections import deque
from collections.abc import Iterator

from smartmon import wire
from smartmon.agent.processes import InodeOwners, process_visibility

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
INET_DIAG_INFO = 2
INET_DIAG_PROTOCOL = 10
ALL_STATES = 0xFFFFFFFF
# Multicast groups from linux/sock_diag.h, by (family, protocol).
DESTROY_GROUPS = {
    (socket.AF_INET, socket.IPPROTO_TCP): 1,
    (socket.AF_INET, socket.IPPROTO_UDP): 2,
    (socket.AF_INET6, socket.IPPROTO_TCP): 3,
    (socket.AF_INET6, socket.IPPROTO_UDP): 4,
}
DUMPS = (
    (socket.AF_INET, socket.IPPROTO_TCP),
    (socket.AF_INET6, socket.IPPROTO_TCP),
    (socket.AF_INET, socket.IPPROTO_UDP),
    (socket.AF_INET6, socket.IPPROTO_UDP),
)
TCP_STATE_NAMES = {
    1: "ESTABLISHED",
    2: "SYN_SENT",
    3: "SYN_RECV",
    4: "FIN_WAIT1",
    5: "FIN_WAIT2",
    6: "TIME_WAIT",
    7: "CLOSE",
    8: "CLOSE_WAIT",
    9: "LAST_ACK",
    10: "LISTEN",
    11: "CLOSING",
    12: "NEW_SYN_RECV",
}
TCP_ESTABLISHED = 1

_NLMSGHDR = struct.Struct("=IHHII")
_ERRNO = struct.Struct("=i")
_RTATTR = struct.Struct("=HH")
# inet_diag_msg: family, state, timer, retrans, sport, dport (both big-endian), src[16],
# dst[16], interface, cookie[2], expires, rqueue, wqueue, uid, inode.
_DIAG_MSG = struct.Struct("=BB2x2s2s16s16s28xI")
_DIAG_MSG_SIZE = 72
# tcp_info from linux/tcp.h: bytes_acked and bytes_received (u64) at 120, then segs_out and
# segs_in (u32); bytes_sent (u64, since Linux 4.19) at 200.
_TCPI_COUNTERS = struct.Struct("=QQII")
_TCPI_COUNTERS_AT = 120
_TCPI_BYTES_SENT = struct.Struct("=Q")
_TCPI_BYTES_SENT_AT = 200
_RECV_BUFFER = 1 << 18
_OWNER_MEMORY_POLLS = 3
_Key = tuple[str, str, int, str, int]
_Owner = tuple[int, str | None]
_DESTROY_RCVBUF = 8 << 20


class NetlinkUnavailable(OSError):
    """sock_diag cannot be used here (not Linux, or the kernel refused the request)."""


def _dump_request(family: int, protocol: int, sequence: int) -> bytes:
    extensions = 1 << (INET_DIAG_INFO - 1) if protocol == socket.IPPROTO_TCP else 0
    # inet_diag_req_v2, with a zeroed inet_diag_sockid: match every socket.
    body = struct.pack("=BBBxI", family, protocol, extensions, ALL_STATES) + bytes(48)
    header = _NLMSGHDR.pack(
        _NLMSGHDR.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, sequence, 0
    )
    return header + body


class _AddressText:
    """Raw address bytes -> canonical text, cached: a machine has few distinct addresses."""

    _LIMIT = 65_536

    def __init__(self) -> None:
        self._text: dict[bytes, str] = {}

    def __call__(self, family: int, raw: bytes) -> str:
        key = raw[:4] if family == socket.AF_INET else raw
        text = self._text.get(key)
        if text is None:
            if len(self._text) >= self._LIMIT:
                self._text.clear()
            text = wire.normalise_ip(socket.inet_ntop(family, key))
            self._text[key] = text
        return text


def parse_diag_message(
    data: bytes, offset: int, end: int, protocol: int, address_text: _AddressText
) -> tuple[int, wire.Connection] | None:
    """One inet_diag_msg (and its attributes) as (inode, Connection); None if not reportable."""
    family, state, sport, dport, src, dst, inode = _DIAG_MSG.unpack_from(data, offset)
    if family not in (socket.AF_INET, socket.AF_INET6):
        return None
    counters: tuple[int, int, int, int] | None = None
    attr = offset + _DIAG_MSG_SIZE
    while attr + 4 <= end:
        length, kind = _RTATTR.unpack_from(data, attr)
        if length < 4:
            break
        if kind == INET_DIAG_PROTOCOL:
            protocol = data[attr + 4]
        elif kind == INET_DIAG_INFO and length - 4 >= _TCPI_COUNTERS_AT + _TCPI_COUNTERS.size:
            info = attr + 4
            acked, received, segs_out, segs_in = _TCPI_COUNTERS.unpack_from(
                data, info + _TCPI_COUNTERS_AT
            )
            sent = acked
            if length - 4 >= _TCPI_BYTES_SENT_AT + 8:
                (sent,) = _TCPI_BYTES_SENT.unpack_from(data, info + _TCPI_BYTES_SENT_AT)
            counters = (received, sent, segs_in, segs_out)
        attr += (length + 3) & ~3
    if protocol == socket.IPPROTO_TCP:
        proto: wire.Protocol = "TCP"
        state_name = TCP_STATE_NAMES.get(state, "CLOSE")
    else:
        proto = "UDP"
        # UDP sockets use TCP_ESTABLISHED when connected and TCP_CLOSE when only bound.
        state_name = "ESTABLISHED" if state == TCP_ESTABLISHED else "UNCONN"
    connection = wire.Connection(
        proto,
        address_text(family, src),
        int.from_bytes(sport, "big"),
        address_text(family, dst),
        int.from_bytes(dport, "big"),
        state_name,
    )
    if counters is not None:
        (
            connection.bytes_in,
            connection.bytes_out,
            connection.packets_in,
            connection.packets_out,
        ) = counters
    return inode, connection


def iter_messages(data: bytes) -> Iterator[tuple[int, int, int]]:
    """(type, payload offset, payload end) of each netlink message in one datagram."""
    offset = 0
    size = len(data)
    while offset + _NLMSGHDR.size <= size:
        length, kind, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size:
            return
        yield kind, offset + _NLMSGHDR.size, min(offset + length, size)
        offset += (length + 3) & ~3


class SockDiag:
    """A netlink sock_diag socket that dumps every TCP and UDP socket on demand."""

    def __init__(self) -> None:
        if not sys.platform.startswith("linux"):
            raise NetlinkUnavailable("netlink sock_diag needs Linux")
        try:
            self._socket = socket.socket(
                socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_SOCK_DIAG
            )
        except OSError as exc:
            raise NetlinkUnavailable(f"cannot open a sock_diag socket: {exc.strerror}") from exc
        self._sequence = 0
        self._address_text = _AddressText()

    def dump(self, family: int, protocol: int) -> list[tuple[int, wire.Connection]]:
        """Every socket of one family and protocol, as (inode, Connection)."""
        self._sequence += 1
        self._socket.send(_dump_request(family, protocol, self._sequence))
        found: list[tuple[int, wire.Connection]] = []
        parse = parse_diag_message
        address_text = self._address_text
        while True:
            data = self._socket.recv(_RECV_BUFFER)
            for kind, start, end in iter_messages(data):
                if kind == NLMSG_DONE:
                    return found
                if kind == NLMSG_ERROR:
                    (errno,) = _ERRNO.unpack_from(data, start)
                    if errno == 0:
                        continue
                    raise NetlinkUnavailable(-errno, os.strerror(-errno))
                if kind == SOCK_DIAG_BY_FAMILY:
                    parsed = parse(data, start, end, protocol, address_text)
                    if parsed is not None:
                        found.append(parsed)

    def close(self) -> None:
        """Close the netlink socket."""
        self._socket.close()


class DestroyListener:
    """Collects sockets the kernel destroys (final counters included) on a background thread."""

    def __init__(self, limit: int = wire.MAX_CONNECTIONS_PER_REPORT) -> None:
        try:
            self._socket = socket.socket(
                socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_SOCK_DIAG
            )
        except OSError as exc:
            raise NetlinkUnavailable(f"cannot open a sock_diag socket: {exc.strerror}") from exc
        try:
            self._socket.bind((0, 0))
            self._grow_receive_buffer()
            for group in DESTROY_GROUPS.values():
                self._socket.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, group)
        except OSError as exc:
            self._socket.close()
            raise NetlinkUnavailable(f"cannot subscribe to socket-destroy events: {exc}") from exc
        self._limit = limit
        self._lock = threading.Lock()
        self._closed: list[wire.Connection] = []
        # At least this many events were lost: an ENOBUFS (kernel buffer overflow) counts one.
        self.lost = 0
        self._address_text = _AddressText()
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._thread = threading.Thread(target=self._read, name="sock-destroy", daemon=True)
        self._thread.start()

    def _grow_receive_buffer(self) -> None:
        # Bursts of closes must fit while the reader thread waits for the GIL; FORCE needs
        # CAP_NET_ADMIN, the plain option is capped by net.core.rmem_max.
        for option in (33, socket.SO_RCVBUF):  # 33 = SO_RCVBUFFORCE
            try:
                self._socket.setsockopt(socket.SOL_SOCKET, option, _DESTROY_RCVBUF)
                return
            except OSError:
                continue

    def drain(self) -> list[wire.Connection]:
        """The sockets destroyed since the last drain."""
        with self._lock:
            closed, self._closed = self._closed, []
        return closed

    def _read(self) -> None:
        waiting = [self._socket, self._wake_reader]
        while True:
            ready, _, _ = select.select(waiting, [], [])
            if self._wake_reader in ready:
                return
            try:
                data = self._socket.recv(_RECV_BUFFER)
            except OSError:
                # ENOBUFS: the kernel dropped events because the buffer overflowed.
                with self._lock:
                    self.lost += 1
                continue
            self._record(data)

    def _record(self, data: bytes) -> None:
        batch: list[wire.Connection] = []
        for kind, start, end in iter_messages(data):
            if kind != SOCK_DIAG_BY_FAMILY:
                continue
            try:
                parsed = parse_diag_message(
                    data, start, end, socket.IPPROTO_TCP, self._address_text
                )
            except (ValueError, struct.error):
                continue
            if parsed is None:
                continue
            connection = parsed[1]
            if _never_a_connection(connection):
                continue
            batch.append(connection)
        if not batch:
            return
        with self._lock:
            room = self._limit - len(self._closed)
            if room < len(batch):
                self.lost += len(batch) - max(room, 0)
                batch = batch[: max(room, 0)]
            self._closed.extend(batch)

    def close(self) -> None:
        """Stop the reader thread and close the sockets."""
        self._wake_writer.send(b"x")
        self._thread.join(timeout=5)
        for sock in (self._socket, self._wake_reader, self._wake_writer):
            sock.close()


def _never_a_connection(connection: wire.Connection) -> bool:
    # Closed before it was bound or connected; or a TCP socket closed with SO_LINGER 0, which
    # the kernel disconnects first, clearing its local address, peer port and counters.
    if connection.source_port == 0 and connection.dest_port == 0:
        return True
    unspecified = connection.dest_ip in ("0.0.0.0", "::")
    return connection.protocol == "TCP" and connection.dest_port == 0 and not unspecified


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
        self._owner_by_key: dict[_Key, _Owner] = {}
        # Owners of sockets gone in the last few polls: a destroy event can arrive a poll late.
        self._owner_gone: deque[dict[_Key, _Owner]] = deque(maxlen=_OWNER_MEMORY_POLLS)
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
        """Destroy events the kernel or the buffer bound dropped so far."""
        return self._destroyed.lost if self._destroyed is not None else 0

    def poll(self) -> tuple[list[wire.Connection], list[wire.Connection]]:
        """(current connections, connections destroyed since the previous poll)."""
        # Drain first: a socket destroyed after the dump would otherwise be reported as
        # closed in the same report that still lists it as open.
        closed = self._destroyed.drain() if self._destroyed is not None else []
        sockets: list[tuple[int, wire.Connection]] = []
        for family, protocol in DUMPS:
            sockets.extend(self._diag.dump(family, protocol))
        owners = self._owners
        owners.refresh(inode for inode, _ in sockets)
        owner_by_key: dict[_Key, _Owner] = {}
        connections: list[wire.Connection] = []
        for inode, connection in sockets:
            if inode:
                owner = owners.owner(inode)
                if owner is not None:
                    connection.pid, connection.process = owner
                    owner_by_key[connection.key] = owner
            connections.append(connection)
        self._name_closed_owners(closed)
        previous = self._owner_by_key
        self._owner_gone.append({k: v for k, v in previous.items() if k not in owner_by_key})
        self._owner_by_key = owner_by_key
        return connections, closed

    def _name_closed_owners(self, closed: list[wire.Connection]) -> None:
        # The kernel sends destroy events after the file is gone: the owner is whoever held
        # the socket when it was last seen.
        for connection in closed:
            key = connection.key
            owner = self._owner_by_key.get(key)
            for gone in reversed(self._owner_gone):
                if owner is not None:
                    break
                owner = gone.get(key)
            if owner is not None:
                connection.pid, connection.process = owner

    def close(self) -> None:
        """Release the netlink sockets and stop the destroy-event thread."""
        if self._destroyed is not None:
            self._destroyed.close()
        self._diag.close()
