"""Both collectors against real loopback sockets, each other, and `ss -tuna`."""

from __future__ import annotations

import os
import socket

import psutil
import pytest
from agent_sockets import (
    Key,
    Sockets,
    by_key,
    key_of,
    linux_only,
    move_bytes,
    reversed_key,
    root_only,
    ss_sockets,
    wait_for,
)

from smartmon import wire
from smartmon.agent import collect
from smartmon.agent.collect import Collector, PsutilCollector, interface_totals

pytestmark = linux_only


def _poll(collector: Collector) -> dict[Key, wire.Connection]:
    connections, _closed = collector.poll()
    return by_key(connections)


def _states_of(collector: Collector, keys: set[Key]) -> dict[Key, str]:
    seen = _poll(collector)
    return {key: seen[key].state for key in keys if key in seen}


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_tcp_counters_match_the_bytes_moved(owned: Sockets, netlink: Collector, host: str) -> None:
    listener, client, server = owned.pair(host)
    move_bytes(client, server, 123_457)
    move_bytes(server, client, 4_321)
    client_key = key_of(client)

    seen = _poll(netlink)

    sent = seen[client_key]
    received = seen[reversed_key(client_key)]
    assert (sent.bytes_out, sent.bytes_in) == (123_457, 4_321)
    assert (received.bytes_in, received.bytes_out) == (123_457, 4_321)
    assert sent.packets_out and sent.packets_out >= 3
    assert received.packets_in and received.packets_in >= 3
    assert sent.family == (6 if host == "::1" else 4)
    assert sent.source_ip == host and sent.dest_port == listener.getsockname()[1]


def test_counters_follow_traffic_across_polls_and_reports_stay_as_they_were(
    owned: Sockets, netlink: Collector
) -> None:
    _listener, client, server = owned.pair()
    key = key_of(client)
    move_bytes(client, server, 1_000)
    first = _poll(netlink)[key]
    quiet = _poll(netlink)[key]
    move_bytes(client, server, 2_500)
    moved = _poll(netlink)[key]

    assert first.bytes_out == quiet.bytes_out == 1_000  # nothing moved: same figures
    assert moved.bytes_out == 3_500 and moved.packets_out and quiet.packets_out
    assert moved.packets_out > quiet.packets_out
    # what an earlier poll returned is never changed afterwards
    assert (first.bytes_out, quiet.bytes_out) == (1_000, 1_000)


def test_ipv6_listener_is_reported_with_family_6(owned: Sockets, netlink: Collector) -> None:
    listener = owned.listener("::1")
    key = key_of(listener)

    found = _poll(netlink)[key]

    assert (found.state, found.family, found.dest_ip, found.dest_port) == ("LISTEN", 6, "::", 0)


def test_udp_bound_and_connected_sockets(owned: Sockets, netlink: Collector) -> None:
    bound = owned.add(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    bound.bind(("127.0.0.1", 0))
    connected = owned.add(socket.socket(socket.AF_INET6, socket.SOCK_DGRAM))
    connected.connect(("::1", 9))
    bound_key, connected_key = key_of(bound, "UDP"), key_of(connected, "UDP")

    seen = _poll(netlink)

    assert seen[bound_key].state == "UNCONN"
    assert seen[connected_key].state == "ESTABLISHED"
    assert seen[connected_key].family == 6
    # The kernel keeps no per-socket UDP counters: null, not a made-up zero.
    assert seen[bound_key].bytes_in is None and seen[connected_key].bytes_out is None


def _sockets_in_many_states(owned: Sockets) -> dict[Key, str]:
    """Open sockets in LISTEN, ESTABLISHED, CLOSE_WAIT, FIN_WAIT2, TIME_WAIT and SYN_SENT."""
    expected: dict[Key, str] = {}
    listener, client, server = owned.pair()
    expected[key_of(listener)] = "LISTEN"
    expected[key_of(client)] = expected[key_of(server)] = "ESTABLISHED"

    _, half_closer, half_closed = owned.pair()
    half_closer.shutdown(socket.SHUT_WR)
    expected[key_of(half_closer)] = "FIN_WAIT2"
    expected[key_of(half_closed)] = "CLOSE_WAIT"

    _, closer, other = owned.pair()
    time_wait_key = key_of(closer)
    closer.close()
    assert other.recv(1) == b""
    other.close()
    expected[time_wait_key] = "TIME_WAIT"

    # A listener whose accept queue is full drops new SYNs: the client stays in SYN_SENT.
    full = owned.listener(backlog=0)
    queued = owned.add(socket.create_connection(full.getsockname()))
    expected[reversed_key(key_of(queued))] = "ESTABLISHED"  # waiting in the accept queue
    expected[key_of(queued)] = "ESTABLISHED"
    expected[key_of(full)] = "LISTEN"
    waiting = owned.add(socket.socket())
    waiting.setblocking(False)
    assert waiting.connect_ex(full.getsockname()) == 115  # EINPROGRESS
    local_ip, local_port = waiting.getsockname()
    expected[("TCP", local_ip, local_port, *full.getsockname())] = "SYN_SENT"
    return expected


def test_every_tcp_state_is_reported(owned: Sockets, netlink: Collector) -> None:
    expected = _sockets_in_many_states(owned)
    keys = set(expected)

    assert wait_for(lambda: _states_of(netlink, keys) == expected), _states_of(netlink, keys)


def test_collectors_and_ss_agree_on_sockets_states_and_owners(
    owned: Sockets, netlink: Collector, psutil_collector: Collector
) -> None:
    expected = _sockets_in_many_states(owned)
    udp = owned.add(socket.socket(socket.AF_INET6, socket.SOCK_DGRAM))
    udp.bind(("::1", 0))
    expected[key_of(udp, "UDP")] = "UNCONN"
    keys = set(expected)
    assert wait_for(lambda: _states_of(netlink, keys) == expected)

    from_netlink = {key: c for key, c in _poll(netlink).items() if key in keys}
    from_psutil = {key: c for key, c in _poll(psutil_collector).items() if key in keys}
    from_ss = {key: state for key, state in ss_sockets().items() if key in keys}

    assert {key: c.state for key, c in from_netlink.items()} == expected
    assert {key: c.state for key, c in from_psutil.items()} == expected
    assert from_ss == expected
    owners = {key: (c.pid, c.process) for key, c in from_netlink.items()}
    assert owners == {key: (c.pid, c.process) for key, c in from_psutil.items()}
    assert owners[key_of(udp, "UDP")] == (os.getpid(), psutil.Process().name())


def test_sockets_without_a_file_have_no_owner(owned: Sockets, netlink: Collector) -> None:
    full = owned.listener(backlog=0)
    queued = owned.add(socket.create_connection(full.getsockname()))

    in_queue = _poll(netlink)[reversed_key(key_of(queued))]

    # Not accepted yet: no process holds it, so the owner stays unknown rather than guessed.
    assert (in_queue.pid, in_queue.process) == (None, None)


def test_psutil_collector_reports_null_counters(
    owned: Sockets, psutil_collector: Collector
) -> None:
    _, client, server = owned.pair()
    move_bytes(client, server, 1000)

    found = _poll(psutil_collector)[key_of(client)]

    assert found.state == "ESTABLISHED"
    assert (found.bytes_in, found.bytes_out, found.packets_in, found.packets_out) == (
        None,
        None,
        None,
        None,
    )
    assert psutil_collector.capabilities.counters is False
    assert psutil_collector.capabilities.collector == "psutil"


def test_psutil_collector_reports_connections_gone_since_last_poll(owned: Sockets) -> None:
    collector = PsutilCollector()
    _, client, server = owned.pair()
    client_key = key_of(client)
    collector.poll()

    client.close()
    server.close()
    _connections, closed = collector.poll()

    closed_keys = {c.key: c.state for c in closed}
    assert closed_keys[client_key] == "CLOSE"
    assert closed_keys[reversed_key(client_key)] == "CLOSE"
    # Reported once: the next poll does not list them again.
    assert client_key not in {c.key for c in collector.poll()[1]}


@root_only
def test_capabilities_as_root(netlink: Collector) -> None:
    capabilities = netlink.capabilities

    assert capabilities.collector == "netlink"
    assert capabilities.counters is True
    assert capabilities.processes == "all"
    assert capabilities.close_events is True
    assert not any("CAP_SYS_PTRACE" in sentence for sentence in capabilities.missing)


def test_collect_api_returns_wire_connections(owned: Sockets) -> None:
    listener = owned.listener()

    found = by_key(collect())

    assert isinstance(found[key_of(listener)], wire.Connection)
    assert found[key_of(listener)].pid == os.getpid()


def test_interface_totals_leave_loopback_out(owned: Sockets) -> None:
    loopback_before = psutil.net_io_counters(pernic=True)["lo"].bytes_sent
    before = interface_totals()
    _, client, server = owned.pair()
    move_bytes(client, server, 4 << 20)

    after = interface_totals()

    assert psutil.net_io_counters(pernic=True)["lo"].bytes_sent - loopback_before >= 4 << 20
    assert after.bytes_out - before.bytes_out < 1 << 20
    assert after.bytes_in >= before.bytes_in and after.packets_out >= before.packets_out
