"""Linux netlink sock_diag (inet_diag), written with socket + struct only.

One SOCK_DIAG_BY_FAMILY dump request per family and protocol returns every socket with,
for TCP, its `tcp_info` (byte and segment counters); netlink.py turns dumps into
connections. A second netlink socket joins the SKNLGRP_INET*_DESTROY multicast groups, so
a connection that opens and closes between two polls is still reported, with its final
counters.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import sys
import threading
from collections.abc import Iterator

from smartmon import wire

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
NLMSGHDR_SIZE = _NLMSGHDR.size
_ERRNO = struct.Struct("=i")
_RTATTR = struct.Struct("=HH")
# inet_diag_msg: family, state, timer, retrans, sport, dport (both big-endian), src[16],
# dst[16], interface, cookie (u64, unique per socket), expires, rqueue, wqueue, uid, inode.
_DIAG_MSG = struct.Struct("=BB2x2s2s16s16s4xQ16xI")
DIAG_MSG_SIZE = 72
# What a poll needs from a message it has seen before, straight from the nlmsghdr:
# length, type, state, cookie, inode.
MESSAGE_HEAD = struct.Struct("=IH11xB42xQ16xI")
MESSAGE_LENGTH_TYPE = struct.Struct("=IH")
# The INET_DIAG_INFO attribute (rtattr length and type, then tcp_info from linux/tcp.h):
# bytes_acked and bytes_received (u64) at tcp_info+120, segs_out and segs_in (u32), and
# bytes_sent (u64, Linux 4.19 and later) at tcp_info+200.
TCP_INFO_COUNTERS = struct.Struct("=HH120xQQII")
TCP_INFO_WITH_SENT = struct.Struct("=HH120xQQII56xQ")
_RECV_BUFFER = 1 << 18
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


def connection_from(
    data: bytes | bytearray, offset: int, protocol: int, address_text: _AddressText
) -> tuple[int, int, wire.Connection] | None:
    """(cookie, inode, Connection) from the inet_diag_msg at `offset`; no counters yet."""
    family, state, sport, dport, src, dst, cookie, inode = _DIAG_MSG.unpack_from(data, offset)
    if family not in (socket.AF_INET, socket.AF_INET6):
        return None
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
    return cookie, inode, connection


def find_attribute(data: bytes | bytearray, start: int, end: int, wanted: int) -> int | None:
    """Offset of the first rtattr of type `wanted` between start and end."""
    while start + 4 <= end:
        length, kind = _RTATTR.unpack_from(data, start)
        if length < 4:
            return None
        if kind == wanted:
            return start
        start += (length + 3) & ~3
    return None


def read_counters(data: bytes | bytearray, info: int, end: int) -> tuple[int, int, int, int] | None:
    """(bytes in, bytes out, packets in, packets out) from the INET_DIAG_INFO rtattr at `info`."""
    if info + TCP_INFO_COUNTERS.size > end:
        return None
    if info + TCP_INFO_WITH_SENT.size <= end:
        length, _, acked, received, segs_out, segs_in, sent = TCP_INFO_WITH_SENT.unpack_from(
            data, info
        )
        if length >= TCP_INFO_WITH_SENT.size:
            return received, sent, segs_in, segs_out
    _, _, acked, received, segs_out, segs_in = TCP_INFO_COUNTERS.unpack_from(data, info)
    return received, acked, segs_in, segs_out


def parse_diag_message(
    data: bytes | bytearray, offset: int, end: int, protocol: int, address_text: _AddressText
) -> tuple[int, int, wire.Connection] | None:
    """(cookie, inode, Connection with counters) from one message payload; None if not a socket."""
    attributes = offset + DIAG_MSG_SIZE
    where = find_attribute(data, attributes, end, INET_DIAG_PROTOCOL)
    if where is not None:
        protocol = data[where + 4]
    parsed = connection_from(data, offset, protocol, address_text)
    if parsed is None:
        return None
    connection = parsed[2]
    info = find_attribute(data, attributes, end, INET_DIAG_INFO)
    counters = read_counters(data, info, end) if info is not None else None
    if counters is not None:
        (
            connection.bytes_in,
            connection.bytes_out,
            connection.packets_in,
            connection.packets_out,
        ) = counters
    return parsed


def iter_messages(data: bytes | bytearray, size: int) -> Iterator[tuple[int, int, int]]:
    """(type, payload offset, payload end) of each netlink message in data[:size]."""
    offset = 0
    while offset + _NLMSGHDR.size <= size:
        length, kind, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size:
            return
        yield kind, offset + _NLMSGHDR.size, min(offset + length, size)
        offset += (length + 3) & ~3


def error_of(data: bytes | bytearray, payload: int) -> int:
    """The errno of an NLMSG_ERROR message (0 is an acknowledgement)."""
    (negative_errno,) = _ERRNO.unpack_from(data, payload)
    return int(-negative_errno)


class SockDiag:
    """A netlink sock_diag socket: send a dump request, then receive its datagrams."""

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
        self._buffer = bytearray(_RECV_BUFFER)
        self.address_text = _AddressText()

    def request(self, family: int, protocol: int) -> None:
        """Ask for every socket of one family and protocol (TCP with tcp_info)."""
        self._sequence += 1
        self._socket.send(_dump_request(family, protocol, self._sequence))

    def receive(self) -> tuple[bytearray, int]:
        """The next datagram of the dump (many messages, the last one NLMSG_DONE), read
        into a buffer reused by every call, and its length.

        Reusing one buffer matters: a fresh 256 KiB bytes object per datagram fragments
        the heap and makes the resident size creep up poll after poll.
        """
        return self._buffer, self._socket.recv_into(self._buffer)

    def dump(self, family: int, protocol: int) -> list[tuple[int, int, wire.Connection]]:
        """Every socket of one family and protocol as (cookie, inode, Connection): the plain
        (uncached) reading, used to probe the kernel and by tests."""
        self.request(family, protocol)
        found: list[tuple[int, int, wire.Connection]] = []
        while True:
            data, size = self.receive()
            for kind, start, end in iter_messages(data, size):
                if kind == NLMSG_DONE:
                    return found
                if kind == NLMSG_ERROR:
                    errno = error_of(data, start)
                    if errno:
                        raise NetlinkUnavailable(errno, os.strerror(errno))
                    continue
                if kind == SOCK_DIAG_BY_FAMILY:
                    parsed = parse_diag_message(data, start, end, protocol, self.address_text)
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
        self._closed: list[tuple[int, wire.Connection]] = []
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

    def drain(self) -> list[tuple[int, wire.Connection]]:
        """(cookie, final state) of the sockets destroyed since the last drain."""
        with self._lock:
            closed, self._closed = self._closed, []
        return closed

    def _read(self) -> None:
        # poll, not select: select fails on descriptors above 1024, common in busy processes.
        waiting = select.poll()
        waiting.register(self._socket, select.POLLIN)
        waiting.register(self._wake_reader, select.POLLIN)
        wake = self._wake_reader.fileno()
        buffer = bytearray(_RECV_BUFFER)  # reused: see SockDiag.receive
        while True:
            ready = waiting.poll()
            if any(fd == wake for fd, _ in ready):
                return
            try:
                size = self._socket.recv_into(buffer)
            except OSError:
                # ENOBUFS: the kernel dropped events because the buffer overflowed.
                with self._lock:
                    self.lost += 1
                continue
            self._record(buffer, size)

    def _record(self, data: bytearray, size: int) -> None:
        batch: list[tuple[int, wire.Connection]] = []
        for kind, start, end in iter_messages(data, size):
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
            cookie, _inode, connection = parsed
            if _never_a_connection(connection):
                continue
            batch.append((cookie, connection))
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
