"""The one wire format shared by agent, server, TUI and simulator (contract: DESIGN.md).

Only msgspec and the standard library are imported here, so every part can use it.
JSON field names are camelCase; Python attributes are snake_case.
"""

from __future__ import annotations

import functools
import ipaddress
import uuid
from datetime import datetime
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

MAX_CONNECTIONS_PER_REPORT = 100_000
UUID_PATTERN = r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}\Z"

Port = Annotated[int, Meta(ge=0, le=65535)]
Counter = Annotated[int, Meta(ge=0, le=2**63 - 1)]
ShortText = Annotated[str, Meta(max_length=256)]
Protocol = Literal["TCP", "UDP"]
Family = Literal[4, 6]

TCP_STATES = frozenset(
    {
        "ESTABLISHED",
        "SYN_SENT",
        "SYN_RECV",
        "FIN_WAIT1",
        "FIN_WAIT2",
        "TIME_WAIT",
        "CLOSE",
        "CLOSE_WAIT",
        "LAST_ACK",
        "LISTEN",
        "CLOSING",
        "NEW_SYN_RECV",
    }
)
UDP_STATES = frozenset({"ESTABLISHED", "UNCONN"})


class Struct(msgspec.Struct, rename="camel", omit_defaults=False, forbid_unknown_fields=False):
    """Base of every wire struct: camelCase on the wire."""


@functools.lru_cache(maxsize=65536)
def normalise_ip(value: str) -> str:
    """Return the canonical text of an IP address, accepting what `ss` prints.

    `*` means any address, `[::]` is bracketed IPv6, `%lo` is a scope suffix; IPv4-mapped
    IPv6 addresses become plain IPv4. Raises ValueError for anything else.
    """
    text = value.strip()
    if text in ("*", ""):
        return "0.0.0.0"
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if "%" in text:
        text = text.split("%", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"not an IP address: {value[:64]!r}") from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def ip_family(address: str) -> Family:
    """4 or 6 for a canonical IP address."""
    return 6 if ":" in address else 4


class Connection(Struct):
    """One socket as seen on a device: local address = source, remote = dest."""

    protocol: Protocol
    source_ip: Annotated[str, Meta(max_length=64)]
    source_port: Port
    dest_ip: Annotated[str, Meta(max_length=64)]
    dest_port: Port
    state: Annotated[str, Meta(max_length=16)]
    family: Family | None = None
    pid: Annotated[int, Meta(ge=0, le=2**31 - 1)] | None = None
    process: ShortText | None = None
    bytes_in: Counter | None = None
    bytes_out: Counter | None = None
    packets_in: Counter | None = None
    packets_out: Counter | None = None

    def __post_init__(self) -> None:
        self.source_ip = normalise_ip(self.source_ip)
        any_dest = self.dest_ip.strip() == "*"
        self.dest_ip = normalise_ip(self.dest_ip)
        if any_dest and ":" in self.source_ip:
            self.dest_ip = "::"
        self.state = self.state.upper()
        allowed = TCP_STATES if self.protocol == "TCP" else UDP_STATES
        if self.state not in allowed:
            raise ValueError(f"unknown {self.protocol} state {self.state!r}")
        if self.family is None:
            self.family = ip_family(self.source_ip)

    @property
    def key(self) -> tuple[str, str, int, str, int]:
        """The identity of a connection on its device."""
        return (self.protocol, self.source_ip, self.source_port, self.dest_ip, self.dest_port)


class Capabilities(Struct):
    """What the agent could collect on this device, and what it could not and why."""

    collector: Literal["netlink", "psutil"] = "psutil"
    counters: bool = False
    processes: Literal["all", "own", "none"] = "none"
    close_events: bool = False
    missing: list[Annotated[str, Meta(max_length=512)]] = msgspec.field(default_factory=list)


class AgentInfo(Struct):
    """Who sent a report."""

    version: ShortText = "unknown"
    os: ShortText = "unknown"
    hostname: ShortText = ""
    capabilities: Capabilities = msgspec.field(default_factory=Capabilities)


class InterfaceTotals(Struct):
    """Cumulative counters summed over the device's non-loopback interfaces."""

    bytes_in: Counter = 0
    bytes_out: Counter = 0
    packets_in: Counter = 0
    packets_out: Counter = 0


class Report(Struct):
    """One batched report from an agent (POST /api/monitor/connections)."""

    # a UUID, hyphens optional; \Z because $ would also accept a trailing newline
    report_id: Annotated[str, Meta(pattern=UUID_PATTERN)]
    seq: Annotated[int, Meta(ge=0, le=2**63 - 1)]
    collected_at: Annotated[datetime, Meta(tz=True)]  # the device's clock, with its offset
    interval_s: Annotated[float, Meta(gt=0, le=86_400)]
    agent: AgentInfo = msgspec.field(default_factory=AgentInfo)
    interfaces: InterfaceTotals | None = None
    connections: Annotated[list[Connection], Meta(max_length=MAX_CONNECTIONS_PER_REPORT)] = (
        msgspec.field(default_factory=list)
    )
    closed: Annotated[list[Connection], Meta(max_length=MAX_CONNECTIONS_PER_REPORT)] = (
        msgspec.field(default_factory=list)
    )
    dropped_reports: Counter = 0

    def __post_init__(self) -> None:
        # one spelling per UUID, so a retry in another spelling is still a duplicate
        self.report_id = str(uuid.UUID(self.report_id))


class DeviceRegistration(Struct):
    """POST /api/monitor/register body (the legacy form carries `token` in the body)."""

    device_name: Annotated[str, Meta(min_length=1, max_length=128)]
    hostname: ShortText | None = None
    os: ShortText | None = None
    agent_version: ShortText | None = None
    token: Annotated[str, Meta(max_length=4096)] | None = None


class DeviceCredentials(Struct):
    """The answer to a device registration: the device key is shown only here."""

    device_id: int
    device_key: str
    success: bool = True


class IngestResult(Struct):
    """The answer to a report."""

    report_id: str
    duplicate: bool
    success: bool = True


def encode(value: object) -> bytes:
    """JSON bytes of a wire value."""
    return msgspec.json.encode(value)


def decode_report(data: bytes) -> Report:
    """Decode and validate a Report; raises msgspec.ValidationError or DecodeError."""
    return msgspec.json.decode(data, type=Report)
