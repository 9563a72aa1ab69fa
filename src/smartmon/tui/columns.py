"""What the tables show: columns, keys, filters and export rows for devices and connections."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from msgspec.structs import replace
from rich.text import Text

from smartmon import api
from smartmon.tui.units import endpoint, human_bytes, human_duration, human_rate, relative
from smartmon.tui.widgets.live_table import Column

ConnKey = tuple[str, str, int, str, int]
DestKey = tuple[str, str, int]


def _stamp(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def status_text(status: str) -> Text:
    """'● online' in green, '○ offline' in red."""
    if status == "online":
        return Text("● online", style="bold green")
    return Text("○ offline", style="red")


# ---- devices -------------------------------------------------------------------------------


def device_key(device: api.Device) -> int:
    """Devices are keyed by id."""
    return device.id


DEVICE_COLUMNS: list[Column[api.Device]] = [
    Column("name", "Device", lambda d, now: d.device_name, lambda d: d.device_name.lower(), 16, flex=2),
    Column("owner", "Owner", lambda d, now: d.username, lambda d: d.username.lower(), 10, flex=1),
    Column("status", "Status", lambda d, now: status_text(d.status), lambda d: d.status != "online", 9),
    Column("connections", "Conns", lambda d, now: str(d.connection_count), lambda d: d.connection_count, 6, align="right"),
    Column("protocols", "Protocols", lambda d, now: ",".join(d.protocols) or "-", lambda d: ",".join(d.protocols), 9),
    Column("ips", "Top IPs", lambda d, now: ", ".join(d.unique_ips[:3]) or "-", lambda d: d.unique_ips[:1], 16, flex=3),
    Column("in", "In", lambda d, now: human_rate(d.bytes_in_rate), lambda d: d.bytes_in_rate, 11, align="right"),
    Column("out", "Out", lambda d, now: human_rate(d.bytes_out_rate), lambda d: d.bytes_out_rate, 11, align="right"),
    Column("last_seen", "Last seen", lambda d, now: relative(d.last_seen, now), lambda d: _stamp(d.last_seen), 10, align="right"),
]  # fmt: skip


def device_matches(device: api.Device, query: str) -> bool:
    """Every word of the query is in the name, owner, status or one of the IPs."""
    fields = [
        device.device_name.lower(),
        device.username.lower(),
        device.status,
        *device.unique_ips,
    ]
    return all(any(word in f for f in fields) for word in query.lower().split())


DEVICE_FIELDS = (
    "id", "name", "owner", "status", "connections", "protocols", "uniqueIps", "bytesInRate",
    "bytesOutRate", "bytesIn", "bytesOut", "lastSeen", "registeredAt", "os", "hostname", "agentVersion",
)  # fmt: skip


def device_export(device: api.Device) -> dict[str, Any]:
    """One device as an export row (raw values, not the screen's formatting)."""
    return {
        "id": device.id,
        "name": device.device_name,
        "owner": device.username,
        "status": device.status,
        "connections": device.connection_count,
        "protocols": device.protocols,
        "uniqueIps": device.unique_ips,
        "bytesInRate": device.bytes_in_rate,
        "bytesOutRate": device.bytes_out_rate,
        "bytesIn": device.bytes_in,
        "bytesOut": device.bytes_out,
        "lastSeen": device.last_seen,
        "registeredAt": device.registered_at,
        "os": device.agent.os,
        "hostname": device.agent.hostname,
        "agentVersion": device.agent.version,
    }


# ---- connections ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConnRow:
    """A connection with the rates measured between its last two samples."""

    conn: api.ConnectionOut
    rate_in: float | None = None
    rate_out: float | None = None

    @property
    def rate(self) -> float | None:
        """Bytes per second, both directions."""
        if self.rate_in is None and self.rate_out is None:
            return None
        return (self.rate_in or 0.0) + (self.rate_out or 0.0)


def conn_key(conn: api.ConnectionOut) -> ConnKey:
    """The identity of a connection on its device (as the server keys it)."""
    return (conn.protocol, conn.source_ip, conn.source_port, conn.dest_ip, conn.dest_port)


def row_key(row: ConnRow) -> ConnKey:
    """The key of a connection row."""
    return conn_key(row.conn)


def _rate(new: int | None, old: int | None, seconds: float) -> float | None:
    if new is None or old is None or seconds <= 0 or new < old:
        return None
    return (new - old) / seconds


def merge(old: ConnRow | None, conn: api.ConnectionOut) -> ConnRow:
    """A new sample of a connection: rates from the previous one; it keeps its first seen."""
    if old is None:
        return ConnRow(conn)
    seconds = conn.last_seen.timestamp() - old.conn.last_seen.timestamp()
    first_seen = min(old.conn.first_seen, conn.first_seen)
    if seconds <= 0:  # the same sample again (a reload): keep the rates we had
        return ConnRow(replace(conn, first_seen=first_seen), old.rate_in, old.rate_out)
    return ConnRow(
        replace(conn, first_seen=first_seen),
        _rate(conn.bytes_in, old.conn.bytes_in, seconds),
        _rate(conn.bytes_out, old.conn.bytes_out, seconds),
    )


def _process(conn: api.ConnectionOut) -> str:
    if conn.process and conn.pid is not None:
        return f"{conn.process}/{conn.pid}"
    if conn.process:
        return conn.process
    return str(conn.pid) if conn.pid is not None else "-"


def _state_text(state: str) -> Text:
    style = {"ESTABLISHED": "green", "LISTEN": "cyan", "UNCONN": "cyan", "TIME_WAIT": "dim"}.get(
        state, "yellow"
    )
    return Text(state, style=style)


CONNECTION_COLUMNS: list[Column[ConnRow]] = [
    Column("protocol", "Proto", lambda r, now: r.conn.protocol, lambda r: r.conn.protocol, 5),
    Column("local", "Local", lambda r, now: endpoint(r.conn.source_ip, r.conn.source_port), lambda r: (r.conn.source_ip, r.conn.source_port), 21, flex=1),
    Column("remote", "Remote", lambda r, now: endpoint(r.conn.dest_ip, r.conn.dest_port), lambda r: (r.conn.dest_ip, r.conn.dest_port), 21, flex=1),
    Column("state", "State", lambda r, now: _state_text(r.conn.state), lambda r: r.conn.state, 11),
    Column("process", "Process/PID", lambda r, now: _process(r.conn), lambda r: (r.conn.process or "", r.conn.pid or 0), 16, flex=1),
    Column("bytes_in", "In", lambda r, now: human_bytes(r.conn.bytes_in), lambda r: r.conn.bytes_in, 9, align="right"),
    Column("bytes_out", "Out", lambda r, now: human_bytes(r.conn.bytes_out), lambda r: r.conn.bytes_out, 9, align="right"),
    Column("rate", "Rate", lambda r, now: human_rate(r.rate), lambda r: r.rate, 11, align="right"),
    Column("age", "Age", lambda r, now: human_duration(now - r.conn.first_seen.timestamp()), lambda r: -r.conn.first_seen.timestamp(), 7, align="right"),
]  # fmt: skip

HISTORY_COLUMNS: list[Column[ConnRow]] = [
    *CONNECTION_COLUMNS[:7],
    Column("closed", "Closed", lambda r, now: relative(r.conn.closed_at, now), lambda r: _stamp(r.conn.closed_at), 10, align="right"),
    Column("lasted", "Lasted", lambda r, now: human_duration(_lasted(r.conn)), lambda r: _lasted(r.conn), 7, align="right"),
]  # fmt: skip


def _lasted(conn: api.ConnectionOut) -> float:
    end = conn.closed_at or conn.last_seen
    return end.timestamp() - conn.first_seen.timestamp()


@dataclass(frozen=True)
class ConnFilter:
    """The device screen's filters: protocol, state and free text (IP, port, process)."""

    protocol: str | None = None
    state: str | None = None
    text: str = ""

    @property
    def active(self) -> bool:
        """Whether anything is filtered out."""
        return bool(self.protocol or self.state or self.text.strip())

    def __call__(self, row: ConnRow) -> bool:
        conn = row.conn
        if self.protocol and conn.protocol != self.protocol:
            return False
        if self.state and conn.state != self.state:
            return False
        words = self.text.lower().split()
        if not words:
            return True
        fields = [
            conn.source_ip, conn.dest_ip, str(conn.source_port), str(conn.dest_port),
            endpoint(conn.source_ip, conn.source_port), endpoint(conn.dest_ip, conn.dest_port),
            (conn.process or "").lower(), str(conn.pid or ""),
        ]  # fmt: skip
        return all(any(word in f for f in fields) for word in words)


CONNECTION_FIELDS = (
    "protocol", "family", "localIp", "localPort", "remoteIp", "remotePort", "state", "pid",
    "process", "bytesIn", "bytesOut", "packetsIn", "packetsOut", "bytesInRate", "bytesOutRate",
    "firstSeen", "lastSeen", "closedAt",
)  # fmt: skip


def connection_export(row: ConnRow) -> dict[str, Any]:
    """One connection as an export row."""
    c = row.conn
    return {
        "protocol": c.protocol,
        "family": c.family,
        "localIp": c.source_ip,
        "localPort": c.source_port,
        "remoteIp": c.dest_ip,
        "remotePort": c.dest_port,
        "state": c.state,
        "pid": c.pid,
        "process": c.process,
        "bytesIn": c.bytes_in,
        "bytesOut": c.bytes_out,
        "packetsIn": c.packets_in,
        "packetsOut": c.packets_out,
        "bytesInRate": row.rate_in,
        "bytesOutRate": row.rate_out,
        "firstSeen": c.first_seen,
        "lastSeen": c.last_seen,
        "closedAt": c.closed_at,
    }


# ---- destinations ----------------------------------------------------------------------------


def dest_key(dest: api.Destination) -> DestKey:
    """Destinations are keyed by protocol, IP and port."""
    return (dest.protocol, dest.ip, dest.port)


DESTINATION_COLUMNS: list[Column[api.Destination]] = [
    Column("protocol", "Proto", lambda d, now: d.protocol, lambda d: d.protocol, 5),
    Column("remote", "Remote", lambda d, now: endpoint(d.ip, d.port), lambda d: (d.ip, d.port), 24, flex=1),
    Column("open", "Open", lambda d, now: str(d.open_connections), lambda d: d.open_connections, 5, align="right"),
    Column("bytes_in", "In", lambda d, now: human_bytes(d.bytes_in), lambda d: d.bytes_in, 10, align="right"),
    Column("bytes_out", "Out", lambda d, now: human_bytes(d.bytes_out), lambda d: d.bytes_out, 10, align="right"),
    Column("first_seen", "First seen", lambda d, now: relative(d.first_seen, now), lambda d: d.first_seen.timestamp(), 11, align="right"),
    Column("last_seen", "Last seen", lambda d, now: relative(d.last_seen, now), lambda d: d.last_seen.timestamp(), 11, align="right"),
]  # fmt: skip


def destination_matches(dest: api.Destination, flt: ConnFilter) -> bool:
    """The connection filters, applied to a destination."""
    if flt.protocol and dest.protocol != flt.protocol:
        return False
    words = flt.text.lower().split()
    fields = [dest.ip, str(dest.port), endpoint(dest.ip, dest.port)]
    return all(any(word in f for f in fields) for word in words)


DESTINATION_FIELDS = (
    "protocol", "ip", "port", "openConnections", "bytesIn", "bytesOut", "firstSeen", "lastSeen",
)  # fmt: skip


def destination_export(dest: api.Destination) -> dict[str, Any]:
    """One destination as an export row."""
    return {
        "protocol": dest.protocol,
        "ip": dest.ip,
        "port": dest.port,
        "openConnections": dest.open_connections,
        "bytesIn": dest.bytes_in,
        "bytesOut": dest.bytes_out,
        "firstSeen": dest.first_seen,
        "lastSeen": dest.last_seen,
    }
