"""Bodies of the HTTP API and the live stream (camelCase JSON), shared by server, CLI and TUI."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal, overload

import msgspec
from msgspec import Meta

from smartmon.wire import Capabilities, Struct

# `$(?!\n)`: Python's `$` also matches before a final newline ("admin\n"); JS-compatible.
Username = Annotated[str, Meta(min_length=3, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$(?!\n)")]
Password = Annotated[str, Meta(min_length=8, max_length=128)]
Email = Annotated[str, Meta(max_length=254, pattern=r"^[^@\s]+@[^@\s]+$(?!\n)")]
Role = Literal["admin", "user"]


@overload
def timestamp(value: float) -> datetime: ...
@overload
def timestamp(value: None) -> None: ...
@overload
def timestamp(value: float | None) -> datetime | None: ...
def timestamp(value: float | None) -> datetime | None:
    """Epoch seconds as an aware UTC datetime (None stays None)."""
    return None if value is None else datetime.fromtimestamp(value, UTC)


class RegisterBody(Struct, forbid_unknown_fields=False):
    """POST /api/auth/register"""

    username: Username
    password: Password
    email: Email | None = None


class LoginBody(Struct):
    """POST /api/auth/login"""

    username: Annotated[str, Meta(max_length=256)]
    password: Annotated[str, Meta(max_length=1024)]


class UserOut(Struct):
    """A user as the API shows it."""

    id: int
    username: str
    role: Role
    email: str | None = None
    disabled: bool = False
    created_at: datetime | None = None


class LoginResult(Struct):
    """A fresh access token."""

    access_token: str
    expires_at: datetime
    user: UserOut
    token_type: str = "bearer"  # noqa: S105 - the OAuth token type, not a secret
    success: bool = True


class CreateUserBody(Struct):
    """POST /api/users (admin)"""

    username: Username
    password: Password
    role: Role = "user"
    email: Email | None = None


class UpdateUserBody(Struct):
    """PATCH /api/users/{id} (admin)"""

    role: Role | None = None
    disabled: bool | None = None


class TokenCreateBody(Struct):
    """POST /api/tokens"""

    name: Annotated[str, Meta(min_length=1, max_length=128)] | None = None
    expires_days: Annotated[float, Meta(gt=0, le=3650)] | None = None


class TokenCreated(Struct):
    """A new enrollment token: the secret is shown only here."""

    id: int
    name: str
    token: str
    expires_at: datetime | None


class TokenInfo(Struct):
    """An enrollment token without its secret."""

    id: int
    name: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    status: Literal["active", "expired", "revoked"]


class AgentOut(Struct):
    """The agent a device last reported with."""

    version: str | None
    os: str | None
    hostname: str | None
    capabilities: Capabilities | None


class Device(Struct):
    """A device in the dashboard list."""

    id: int
    device_name: str
    username: str
    status: Literal["online", "offline"]
    connection_count: int
    protocols: list[str]
    unique_ips: list[str]
    last_seen: datetime | None
    registered_at: datetime
    collected_at: datetime | None
    interval_s: float
    bytes_in: int
    bytes_out: int
    bytes_in_rate: float | None
    bytes_out_rate: float | None
    dropped_reports: int
    key_active: bool
    agent: AgentOut


class FleetStats(Struct):
    """Totals over the devices the caller can see."""

    total_devices: int
    online_devices: int
    offline_devices: int
    active_connections: int
    bytes_in_rate: float
    bytes_out_rate: float


class DeviceList(Struct):
    """GET /api/dashboard/users"""

    stats: FleetStats
    data: list[Device]
    success: bool = True


class ConnectionOut(Struct):
    """One connection of a device, open or (with closedAt) closed."""

    protocol: str
    family: int
    source_ip: str
    source_port: int
    dest_ip: str
    dest_port: int
    state: str
    pid: int | None
    process: str | None
    bytes_in: int | None
    bytes_out: int | None
    packets_in: int | None
    packets_out: int | None
    first_seen: datetime
    last_seen: datetime
    closed_at: datetime | None = None


class ConnectionSummary(Struct):
    """Totals over a device's open connections."""

    total_connections: int
    protocols: dict[str, int]
    unique_source_ips: int
    unique_dest_ips: int
    total_bytes_in: int
    total_bytes_out: int
    total_packets_in: int
    total_packets_out: int


class TrafficSample(Struct):
    """One report's worth of interface traffic (deltas; null when unknown)."""

    t: datetime
    bytes_in: int | None
    bytes_out: int | None
    packets_in: int | None
    packets_out: int | None
    connections: int


class Destination(Struct):
    """A remote endpoint the device has talked to."""

    protocol: str
    ip: str
    port: int
    first_seen: datetime
    last_seen: datetime
    bytes_in: int
    bytes_out: int
    open_connections: int


class DeviceDetail(Device):
    """GET /api/dashboard/user/{deviceId} data."""

    connections: list[ConnectionOut] = msgspec.field(default_factory=list)
    matched_connections: int = 0
    summary: ConnectionSummary | None = None
    traffic: list[TrafficSample] = msgspec.field(default_factory=list)
    destinations: list[Destination] = msgspec.field(default_factory=list)


class DeviceDetailResponse(Struct):
    """GET /api/dashboard/user/{deviceId}"""

    data: DeviceDetail
    success: bool = True


class Done(Struct):
    """A plain acknowledgement."""

    success: bool = True
    detail: str | None = None


# ---- live stream (GET /api/stream, WebSocket) ------------------------------------------------
# The client may send {"subscribe": [deviceId, ...]} at any time (replacing its subscription)
# to receive `connections` events for those devices. Every event has a "type" field.


class Event(Struct, tag_field="type"):
    """Base of stream events."""


class HelloEvent(Event, tag="hello"):
    """First event on a new stream: who is connected, and the current fleet."""

    user: UserOut
    stats: FleetStats
    devices: list[Device]


class DeviceEvent(Event, tag="device"):
    """A device's summary changed (a report was committed, or it went offline)."""

    device: Device


class StatsEvent(Event, tag="stats"):
    """The fleet stats changed."""

    stats: FleetStats


class ConnectionsEvent(Event, tag="connections"):
    """What one report of a subscribed device opened, changed and closed."""

    device_id: int
    opened: list[ConnectionOut]
    changed: list[ConnectionOut]
    closed: list[ConnectionOut]


class DeviceRemovedEvent(Event, tag="device_removed"):
    """A device was deleted."""

    device_id: int


class ResyncEvent(Event, tag="resync"):
    """The client fell behind and events were dropped: reload everything over REST."""

    reason: str


StreamEvent = (
    HelloEvent | DeviceEvent | StatsEvent | ConnectionsEvent | DeviceRemovedEvent | ResyncEvent
)


class Subscribe(Struct):
    """Client -> server: the devices whose connections to stream."""

    subscribe: list[int]


def decode_event(data: bytes | str) -> StreamEvent:
    """Decode one stream event."""
    return msgspec.json.decode(data, type=StreamEvent)
