"""Short-lived connections: captured by socket-destroy events between two polls."""

from __future__ import annotations

import os
import socket

from agent_sockets import Key, Sockets, abort, by_key, key_of, linux_only, move_bytes, wait_for

from smartmon import wire
from smartmon.agent.collect import Collector
from smartmon.agent.netlink import NetlinkCollector

pytestmark = linux_only


def _churn(owned: Sockets, count: int, payload: int) -> list[Key]:
    """Open, use and close `count` connections; half end with FINs, half with the server's RST.

    (A socket closed with SO_LINGER 0 itself is reset by the kernel before it is destroyed:
    its addresses and counters are gone, so the agent can report only the peer's end.)
    """
    listener = owned.listener(backlog=count)
    keys: list[Key] = []
    for number in range(count):
        with socket.create_connection(listener.getsockname()) as client:
            server, _ = listener.accept()
            with server:
                move_bytes(client, server, payload)
                keys.append(key_of(client))
                if number % 2:
                    abort(server)
                    assert wait_for(lambda: _reset(client))
                else:
                    client.shutdown(socket.SHUT_RDWR)
    return keys


def _reset(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_connections_between_two_polls_arrive_closed_with_final_counters(
    owned: Sockets, netlink: Collector
) -> None:
    assert netlink.capabilities.close_events
    netlink.poll()

    keys = _churn(owned, 300, payload=1_000)
    closed: dict[Key, wire.Connection] = {}

    def all_closed() -> bool:
        closed.update((c.key, c) for c in netlink.poll()[1])
        return set(keys) <= closed.keys()

    assert wait_for(all_closed), f"{len(set(keys) - closed.keys())} of {len(keys)} missed"
    for key in keys:
        assert closed[key].state == "CLOSE"
        assert closed[key].bytes_out == 1_000
        assert closed[key].packets_out and closed[key].packets_out >= 2
    # Both ends of the connections closed with FINs, with the bytes they received.
    server_ends = [closed.get(("TCP", k[3], k[4], k[1], k[2])) for k in keys[::2]]
    assert all(end is not None and end.bytes_in is not None for end in server_ends)
    assert all(end.bytes_in >= 1_000 for end in server_ends if end is not None)


def test_a_closed_connection_is_reported_once_and_keeps_its_owner(
    owned: Sockets, netlink: Collector
) -> None:
    _, client, server = owned.pair()
    move_bytes(client, server, 5_000)
    key = key_of(client)
    current, _ = netlink.poll()
    owner = next(c.pid for c in current if c.key == key)

    client.close()
    server.close()
    first: list[wire.Connection] = []
    assert wait_for(
        lambda: bool(first.extend(c for c in netlink.poll()[1] if c.key == key) or first)
    )
    second = [c for c in netlink.poll()[1] if c.key == key]

    assert len(first) == 1 and second == []
    assert first[0].pid == owner and first[0].bytes_out == 5_000


def test_sockets_never_bound_are_not_reported(netlink: Collector) -> None:
    netlink.poll()
    for _ in range(20):
        socket.socket().close()
    lone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    lone.bind(("127.0.0.1", 0))
    bound_key = key_of(lone, "UDP")
    lone.close()

    closed: list[wire.Connection] = []
    assert wait_for(
        lambda: bool(closed.extend(netlink.poll()[1]) or bound_key in {c.key for c in closed})
    )

    assert all(c.source_port or c.dest_port for c in closed)
    assert next(c for c in closed if c.key == bound_key).state == "UNCONN"


def test_destroy_events_work_with_descriptors_above_1024(owned: Sockets) -> None:
    # select() cannot wait on descriptors above 1024; busy processes have them.
    filler = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        collector = NetlinkCollector()
    finally:
        for fd in filler:
            os.close(fd)
    try:
        collector.poll()
        _, client, server = owned.pair()
        key = key_of(client)
        client.close()
        server.close()
        closed: list[wire.Connection] = []
        assert wait_for(lambda: bool(closed.extend(collector.poll()[1])) or key in by_key(closed))
    finally:
        collector.close()
