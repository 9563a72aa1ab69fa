"""Real loopback sockets in known states, and `ss -tuna` parsed, for the collector tests."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from smartmon import wire

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux")
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

Key = tuple[str, str, int, str, int]

_SS_STATES = {
    "ESTAB": "ESTABLISHED",
    "SYN-SENT": "SYN_SENT",
    "SYN-RECV": "SYN_RECV",
    "FIN-WAIT-1": "FIN_WAIT1",
    "FIN-WAIT-2": "FIN_WAIT2",
    "TIME-WAIT": "TIME_WAIT",
    "CLOSE-WAIT": "CLOSE_WAIT",
    "LAST-ACK": "LAST_ACK",
    "CLOSING": "CLOSING",
    "LISTEN": "LISTEN",
    "UNCONN": "UNCONN",
    "UNKNOWN": "CLOSE",
}


class Sockets:
    """Owns every socket a test opens and closes them all at the end."""

    def __init__(self) -> None:
        self.opened: list[socket.socket] = []

    def add(self, sock: socket.socket) -> socket.socket:
        """Track a socket for closing."""
        self.opened.append(sock)
        return sock

    def listener(self, host: str = "127.0.0.1", backlog: int = 16) -> socket.socket:
        """A listening TCP socket on an ephemeral port."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = self.add(socket.socket(family, socket.SOCK_STREAM))
        sock.bind((host, 0))
        sock.listen(backlog)
        return sock

    def pair(self, host: str = "127.0.0.1") -> tuple[socket.socket, socket.socket, socket.socket]:
        """(listener, client, accepted server side) of one established connection."""
        listener = self.listener(host)
        client = self.add(socket.create_connection(listener.getsockname()[:2]))
        server, _ = listener.accept()
        self.add(server)
        return listener, client, server

    def close_all(self) -> None:
        """Close everything, newest first."""
        for sock in reversed(self.opened):
            with contextlib.suppress(OSError):
                sock.close()
        self.opened.clear()


@contextlib.contextmanager
def sockets() -> Iterator[Sockets]:
    """A Sockets owner closed on exit."""
    owner = Sockets()
    try:
        yield owner
    finally:
        owner.close_all()


def move_bytes(sender: socket.socket, receiver: socket.socket, count: int) -> None:
    """Send exactly `count` bytes one way and wait until all of them arrived."""
    # In slices, read as we go: one thread cannot sendall more than the socket buffers hold.
    remaining = count
    while remaining:
        size = min(1 << 16, remaining)
        sender.sendall(b"m" * size)
        received = 0
        while received < size:
            chunk = receiver.recv(size - received)
            assert chunk, "the connection closed early"
            received += len(chunk)
        remaining -= size


def abort(sock: socket.socket) -> None:
    """Close with a RST (SO_LINGER 0): no TIME_WAIT is left behind."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def key_of(sock: socket.socket, protocol: str = "TCP") -> Key:
    """The wire key of a connected or bound socket as the agent reports it."""
    local = sock.getsockname()
    try:
        remote = sock.getpeername()
    except OSError:
        remote = ("::" if sock.family == socket.AF_INET6 else "0.0.0.0", 0)
    return (
        protocol,
        wire.normalise_ip(local[0]),
        local[1],
        wire.normalise_ip(remote[0]),
        remote[1],
    )


def reversed_key(key: Key) -> Key:
    """The key of the other end of a loopback connection."""
    protocol, source_ip, source_port, dest_ip, dest_port = key
    return (protocol, dest_ip, dest_port, source_ip, source_port)


def ss_sockets() -> dict[Key, str]:
    """`ss -tuna` as {key: state}, states spelled the agent's way."""
    output = subprocess.run(["ss", "-tunaH"], capture_output=True, text=True, check=True).stdout
    found: dict[Key, str] = {}
    for line in output.splitlines():
        fields = line.split()
        if len(fields) < 6:
            continue
        netid, state, local, peer = fields[0], fields[1], fields[4], fields[5]
        protocol = "TCP" if netid == "tcp" else "UDP"
        state_name = _SS_STATES.get(state, state)
        if protocol == "UDP" and state_name != "UNCONN":
            state_name = "ESTABLISHED"
        local_ip, local_port = _ss_address(local)
        peer_ip, peer_port = _ss_address(peer)
        if peer_ip == "0.0.0.0" and ":" in local_ip:
            peer_ip = "::"
        found[(protocol, local_ip, local_port, peer_ip, peer_port)] = state_name
    return found


def _ss_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return wire.normalise_ip(host), 0 if port == "*" else int(port)


def by_key(connections: list[wire.Connection]) -> dict[Key, wire.Connection]:
    """Connections indexed by their key."""
    return {connection.key: connection for connection in connections}


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll a condition until it holds or the timeout passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()
