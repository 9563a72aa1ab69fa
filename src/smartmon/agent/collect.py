"""Collection: the portable psutil collector, the choice of collector, interface totals.

A collector's `poll()` returns (connections now, connections closed since the last poll).
The netlink collector (netlink.py) is preferred on Linux; psutil works everywhere but has
no per-connection counters (they stay null) and sees only what is open at poll time.
"""

from __future__ import annotations

import socket
import sys
from typing import Any, Literal, Protocol

import msgspec
import psutil

from smartmon import wire
from smartmon.agent.processes import process_visibility

CollectorKind = Literal["auto", "netlink", "psutil"]
ConnectionKey = tuple[str, str, int, str, int]

# psutil spells a few states differently on other systems; map them onto the kernel's names.
_PSUTIL_TCP_STATES = {
    "DELETE_TCB": "CLOSE",
    "IDLE": "CLOSE",
    "BOUND": "CLOSE",
    "NONE": "CLOSE",
}
_LOOPBACK_NAMES = ("lo", "lo0")
# psutil.net_connections() and Process.net_connections() entries share these fields.
_PsutilEntry = Any


class CollectorError(Exception):
    """The requested collector cannot run on this machine."""


class Collector(Protocol):
    """What the agent needs from a collector."""

    capabilities: wire.Capabilities

    def poll(self) -> tuple[list[wire.Connection], list[wire.Connection]]:
        """(current connections, connections closed since the previous poll)."""
        ...

    def close(self) -> None:
        """Release what the collector holds."""
        ...


class ClosedByDifference:
    """Closed connections for collectors without destroy events: gone since the last poll."""

    def __init__(self) -> None:
        self._live: dict[ConnectionKey, wire.Connection] = {}

    def update(self, connections: list[wire.Connection]) -> list[wire.Connection]:
        """Remember this poll; return the live connections of the last poll now gone."""
        now: dict[ConnectionKey, wire.Connection] = {}
        for connection in connections:
            # TIME_WAIT is what remains of a closed connection, not a live one.
            if connection.state != "TIME_WAIT":
                now[connection.key] = connection
        closed: list[wire.Connection] = []
        for key, last in self._live.items():
            if key not in now:
                closed.append(_as_closed(last))
        self._live = now
        return closed


def _as_closed(last: wire.Connection) -> wire.Connection:
    # A TCP socket that is gone is closed; UDP has only its two states.
    return msgspec.structs.replace(last, state="CLOSE") if last.protocol == "TCP" else last


class PsutilCollector:
    """psutil.net_connections: every platform, no counters, closed sockets by difference."""

    def __init__(self) -> None:
        self._closed = ClosedByDifference()
        self._names: dict[int, str | None] = {}
        visibility = process_visibility()
        missing = [
            "per-connection byte and packet counters need the netlink collector (Linux)",
            "connections that open and close between two polls are missed: "
            "socket-destroy events need the netlink collector (Linux)",
        ]
        if visibility != "all":
            missing.append(
                "process attribution needs root or CAP_SYS_PTRACE: "
                "only this user's processes are named"
            )
        self.capabilities = wire.Capabilities(
            collector="psutil",
            counters=False,
            processes=visibility,
            close_events=False,
            missing=missing,
        )

    def poll(self) -> tuple[list[wire.Connection], list[wire.Connection]]:
        """(current connections, connections gone since the previous poll)."""
        connections: list[wire.Connection] = []
        names: dict[int, str | None] = {}
        for entry, pid in _psutil_connections():
            connection = self._convert(entry)
            if connection is None:
                continue
            if pid is not None:
                if pid not in names:
                    names[pid] = self._names.get(pid) or _psutil_name(pid)
                connection.pid = pid
                connection.process = names[pid]
            connections.append(connection)
        self._names = names
        return connections, self._closed.update(connections)

    @staticmethod
    def _convert(entry: _PsutilEntry) -> wire.Connection | None:
        if entry.type == socket.SOCK_STREAM:
            protocol: wire.Protocol = "TCP"
            state = _PSUTIL_TCP_STATES.get(entry.status, entry.status)
        elif entry.type == socket.SOCK_DGRAM:
            protocol = "UDP"
            state = "ESTABLISHED" if entry.raddr else "UNCONN"
        else:
            return None
        any_address = "::" if entry.family == socket.AF_INET6 else "0.0.0.0"
        local_ip, local_port = entry.laddr if entry.laddr else (any_address, 0)
        remote_ip, remote_port = entry.raddr if entry.raddr else (any_address, 0)
        try:
            return wire.Connection(protocol, local_ip, local_port, remote_ip, remote_port, state)
        except ValueError:
            return None

    def close(self) -> None:
        """Nothing to release."""


def _psutil_connections() -> list[tuple[_PsutilEntry, int | None]]:
    try:
        return [(entry, entry.pid) for entry in psutil.net_connections(kind="inet")]
    except psutil.AccessDenied:
        pass
    # macOS without root: only the processes this user may inspect.
    entries: list[tuple[_PsutilEntry, int | None]] = []
    for process in psutil.process_iter():
        try:
            entries.extend((entry, process.pid) for entry in process.net_connections(kind="inet"))
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return entries


def _psutil_name(pid: int) -> str | None:
    try:
        name: str = psutil.Process(pid).name()
    except (psutil.Error, OSError):
        return None
    return name


def open_collector(kind: CollectorKind = "auto", *, close_events: bool = True) -> Collector:
    """The collector to use: netlink on Linux when the kernel allows it, else psutil."""
    if kind == "psutil":
        return PsutilCollector()
    from smartmon.agent.netlink import NetlinkCollector
    from smartmon.agent.sockdiag import NetlinkUnavailable

    try:
        return NetlinkCollector(close_events=close_events)
    except NetlinkUnavailable as exc:
        if kind == "netlink":
            raise CollectorError(f"the netlink collector cannot run here: {exc}") from exc
        return PsutilCollector()


def interface_totals() -> wire.InterfaceTotals:
    """Cumulative bytes and packets in and out summed over the non-loopback interfaces."""
    try:
        counters = psutil.net_io_counters(pernic=True)
    except (OSError, RuntimeError):
        return wire.InterfaceTotals()
    loopback = _loopback_interfaces()
    totals = wire.InterfaceTotals()
    for name, nic in counters.items():
        if name in loopback:
            continue
        totals.bytes_in += nic.bytes_recv
        totals.bytes_out += nic.bytes_sent
        totals.packets_in += nic.packets_recv
        totals.packets_out += nic.packets_sent
    return totals


def _loopback_interfaces() -> set[str]:
    names = set(_LOOPBACK_NAMES)
    try:
        stats = psutil.net_if_stats()
    except (OSError, RuntimeError):
        return names
    for name, nic in stats.items():
        flags = getattr(nic, "flags", "")
        if "loopback" in flags.split(",") or (sys.platform == "win32" and "Loopback" in name):
            names.add(name)
    return names


_default_collectors: dict[CollectorKind, Collector] = {}


def collect(collector: CollectorKind = "auto") -> list[wire.Connection]:
    """Every TCP and UDP socket on this machine now, as the agent would report it.

    The collector is opened once and kept, so repeated calls reuse its process cache.
    """
    chosen = _default_collectors.get(collector)
    if chosen is None:
        chosen = open_collector(collector, close_events=False)
        _default_collectors[collector] = chosen
    connections, _closed = chosen.poll()
    return connections
