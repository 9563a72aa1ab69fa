"""The live event stream: publishing after commits, and the /api/stream WebSocket.

`EventHub` is the one small interface between the app and its pub/sub: today Litestar's
channels plugin with the memory backend (one process); a Redis or PostgreSQL channels
backend can replace it when several server processes share the work.

Channels: `user:<id>` carries device events of that owner's devices, `admin` carries every
device event, `device:<id>` carries the connection changes of one device.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from typing import Any

import msgspec
from litestar import WebSocket, websocket
from litestar.channels import ChannelsBackend, ChannelsPlugin, Subscriber
from litestar.channels.backends.memory import MemoryChannelsBackend
from litestar.exceptions import WebSocketDisconnect

from smartmon import api, wire
from smartmon.server import store
from smartmon.server.errors import ApiError
from smartmon.server.ingest import Applied
from smartmon.server.state import Caller, ServerState, server_state, user_from_token

log = logging.getLogger("smartmon.server")

CLIENT_BACKLOG = 2000  # events queued for one client before it gets a resync instead
AUTH_RECHECK_S = 2.0  # logout, revocation or a disabled account closes the socket this fast
STATS_EVERY_S = 1.0
OFFLINE_TICK_S = 1.0
MAX_SUBSCRIPTIONS = 100
CLOSE_UNAUTHORIZED = 4401
DEVICE_EVENT_PREFIX = b'{"type":"device'  # device and device_removed


class FlaggingSubscriber(Subscriber):
    """A bounded subscriber that remembers it dropped events, so the client can resync."""

    overflowed = False

    def put_nowait(self, item: bytes | None) -> bool:
        """Queue an event; on a full queue, drop it and raise the flag."""
        if super().put_nowait(item):
            return True
        self.overflowed = True
        return False

    def drain(self) -> None:
        """Throw away the backlog (the client will reload everything)."""
        queue: Any = self._queue
        while not queue.empty():
            queue.get_nowait()
            queue.task_done()
        self.overflowed = False


def channels_plugin(backend: ChannelsBackend | None = None) -> ChannelsPlugin:
    """The pub/sub behind EventHub: in memory (one process), or a shared backend."""
    return ChannelsPlugin(
        backend=backend or MemoryChannelsBackend(),
        arbitrary_channels_allowed=True,
        subscriber_max_backlog=CLIENT_BACKLOG,
        subscriber_backlog_strategy="backoff",
        subscriber_class=FlaggingSubscriber,
    )


class EventHub:
    """Publish events to channels; subscribe clients to channels."""

    def __init__(self, plugin: ChannelsPlugin, *, shared: bool = False) -> None:
        self._plugin = plugin
        # with a shared backend (Redis, PostgreSQL) listeners may sit in other processes,
        # so every event is published; in memory, events nobody listens to are skipped
        self._shared = shared
        self._listeners: dict[str, int] = {}
        # device id -> (offline deadline, owner id) for devices currently online
        self._deadlines: dict[int, tuple[float, int]] = {}

    def listening(self, channels: Iterable[str]) -> bool:
        """Whether anyone may receive an event on any of these channels."""
        return self._shared or any(self._listeners.get(c) for c in channels)

    def publish(self, event: api.Event, channels: list[str]) -> None:
        """Send an event to every subscriber of the channels (never blocks)."""
        if self.listening(channels):
            self._plugin.publish(msgspec.json.encode(event), channels)

    async def subscribe(self, channels: list[str]) -> FlaggingSubscriber:
        """A new subscriber on these channels."""
        subscriber = await self._plugin.subscribe(channels)
        for channel in channels:
            self._listeners[channel] = self._listeners.get(channel, 0) + 1
        assert isinstance(subscriber, FlaggingSubscriber)
        return subscriber

    async def unsubscribe(self, subscriber: Subscriber, channels: list[str]) -> None:
        """Remove a subscriber from channels."""
        for channel in channels:
            left = self._listeners.get(channel, 0) - 1
            if left > 0:
                self._listeners[channel] = left
            else:
                self._listeners.pop(channel, None)
        await self._plugin.unsubscribe(subscriber, channels)

    # ---- what the server publishes ----------------------------------------------------------

    def device_changed(self, device: api.Device, owner_id: int) -> None:
        """A device summary changed; also track when it would go offline."""
        if device.status == "online" and device.last_seen is not None:
            deadline = device.last_seen.timestamp() + max(3 * device.interval_s, store.ONLINE_MIN_S)
            self._deadlines[device.id] = (deadline, owner_id)
        self.publish(api.DeviceEvent(device=device), [f"user:{owner_id}", "admin"])

    def device_removed(self, device_id: int, owner_id: int) -> None:
        """A device was deleted."""
        self._deadlines.pop(device_id, None)
        self.publish(api.DeviceRemovedEvent(device_id=device_id), [f"user:{owner_id}", "admin"])

    def applied(self, applied: Applied) -> None:
        """Publish what a committed report changed (building events only for listeners)."""
        row = applied.device
        if applied.duplicate or row is None:
            return
        owner_id = row["user_id"]
        deadline = (row["last_seen"] or 0.0) + max(3 * row["interval_s"], store.ONLINE_MIN_S)
        self._deadlines[applied.device_id] = (deadline, owner_id)
        if self.listening([f"user:{owner_id}", "admin"]):
            self.device_changed(store.device_out(row, time.time()), owner_id)
        channel = f"device:{applied.device_id}"
        if self.listening([channel]) and (applied.opened or applied.changed or applied.closed):
            now = row["last_seen"] or time.time()
            event = api.ConnectionsEvent(
                device_id=applied.device_id,
                opened=[_connection_out(c, now) for c in applied.opened],
                changed=[_connection_out(c, now) for c in applied.changed],
                closed=[_connection_out(c, now, closed=True) for c in applied.closed],
            )
            self.publish(event, [channel])

    def track(self, devices: Iterable[tuple[int, float | None, float, int]]) -> None:
        """Start watching deadlines of (id, last seen, interval, owner) after a restart."""
        for device_id, last_seen, interval_s, owner_id in devices:
            if last_seen is not None:
                self._deadlines[device_id] = (
                    last_seen + max(3 * interval_s, store.ONLINE_MIN_S),
                    owner_id,
                )

    async def watch_offline(self, server: ServerState) -> None:
        """Notice devices that fell silent, within a second of their deadline."""
        while True:
            await asyncio.sleep(OFFLINE_TICK_S)
            now = time.time()
            due = [(d, owner) for d, (deadline, owner) in self._deadlines.items() if deadline < now]
            for device_id, owner_id in due:
                self._deadlines.pop(device_id, None)
                try:
                    row = await store.device_row(server.db, device_id)
                except Exception as exc:  # keep watching; the next tick retries others
                    log.warning("offline check failed: %s", exc)
                    continue
                if row is not None:
                    device = store.device_out(row, now)
                    if device.status == "offline":
                        self.publish(api.DeviceEvent(device=device), [f"user:{owner_id}", "admin"])
                    else:  # a report arrived meanwhile: keep tracking it
                        self.device_changed(device, owner_id)


def _connection_out(c: wire.Connection, now: float, *, closed: bool = False) -> api.ConnectionOut:
    stamp = api.timestamp(now)
    assert stamp is not None and c.family is not None
    return api.ConnectionOut(
        protocol=c.protocol, family=c.family, source_ip=c.source_ip, source_port=c.source_port,
        dest_ip=c.dest_ip, dest_port=c.dest_port, state=c.state, pid=c.pid, process=c.process,
        bytes_in=c.bytes_in, bytes_out=c.bytes_out, packets_in=c.packets_in, packets_out=c.packets_out,
        first_seen=stamp, last_seen=stamp, closed_at=stamp if closed else None,
    )  # fmt: skip


# ---- the WebSocket -------------------------------------------------------------------------------


class _Client:
    """One connected stream client: its fleet view (for stats) and its subscriptions."""

    def __init__(
        self, server: ServerState, hub: EventHub, socket: WebSocket[Any, Any, Any], who: Caller
    ) -> None:
        self.server = server
        self.hub = hub
        self.socket = socket
        self.who = who
        self.devices: dict[int, api.Device] = {}
        self.base_channels = ["admin"] if who.user.is_admin else [f"user:{who.user.id}"]
        self.device_channels: list[str] = []
        self.device_subscriber: FlaggingSubscriber | None = None
        self.device_pump: asyncio.Task[None] | None = None
        self.stats_dirty = False

    async def load(self) -> None:
        devices = await store.list_devices(
            self.server.db, None if self.who.user.is_admin else self.who.user.id
        )
        self.devices = {d.id: d for d in devices}

    def stats(self) -> api.FleetStats:
        return store.fleet_stats(list(self.devices.values()))

    async def send(self, event: api.Event | bytes) -> None:
        data = event if isinstance(event, bytes) else msgspec.json.encode(event)
        await self.socket.send_text(data.decode())

    async def pump(self, subscriber: FlaggingSubscriber) -> None:
        """Forward events from the hub; after an overflow, a resync instead of the backlog."""
        async for payload in subscriber.iter_events():
            if not subscriber.overflowed:
                # only device events change this client's fleet view; msgspec writes the tag
                # first, so large connection events are forwarded without being decoded
                event = (
                    api.decode_event(payload) if payload.startswith(DEVICE_EVENT_PREFIX) else None
                )
                if isinstance(event, api.DeviceEvent):
                    self.devices[event.device.id] = event.device
                    self.stats_dirty = True
                elif isinstance(event, api.DeviceRemovedEvent):
                    self.devices.pop(event.device_id, None)
                    self.stats_dirty = True
                await self.send(payload)
            # events were dropped while this client was slow (checked after every send,
            # since nothing more may arrive to wake this loop)
            if subscriber.overflowed:
                subscriber.drain()
                await self.load()
                await self.send(api.ResyncEvent(reason="the client fell behind; reload everything"))
                self.stats_dirty = True

    async def listen(self) -> None:
        """Take subscription requests; only the caller's devices can be subscribed to."""
        try:
            while True:
                text = await self.socket.receive_text()
                try:
                    request = msgspec.json.decode(text, type=api.Subscribe)
                except msgspec.MsgspecError:
                    await self.send_error('send {"subscribe": [deviceId, ...]}')
                    continue
                wanted: list[str] = []
                for device_id in request.subscribe[:MAX_SUBSCRIPTIONS]:
                    owner = await store.device_owner(self.server.db, device_id)
                    if owner is not None and (
                        self.who.user.is_admin or owner[0] == self.who.user.id
                    ):
                        wanted.append(f"device:{device_id}")
                await self.resubscribe(wanted)
        finally:
            await self.resubscribe([])

    async def send_error(self, detail: str) -> None:
        await self.socket.send_text(
            msgspec.json.encode({"type": "error", "detail": detail}).decode()
        )

    async def resubscribe(self, device_channels: list[str]) -> None:
        """Replace the device subscription (one subscriber and pump for all of them)."""
        if self.device_pump is not None:
            self.device_pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.device_pump
            self.device_pump = None
        if self.device_subscriber is not None:
            await self.hub.unsubscribe(self.device_subscriber, self.device_channels)
            self.device_subscriber = None
        self.device_channels = device_channels
        if device_channels:
            self.device_subscriber = await self.hub.subscribe(device_channels)
            self.device_pump = asyncio.create_task(self.pump(self.device_subscriber))

    async def keep_authorized(self) -> None:
        """Close the socket soon after logout, revocation or the account being disabled."""
        while True:
            await asyncio.sleep(AUTH_RECHECK_S)
            try:
                await user_from_token(self.server, self.who.token)
            except ApiError as exc:
                await self.socket.close(code=CLOSE_UNAUTHORIZED, reason=exc.detail[:120])
                return

    async def send_stats(self) -> None:
        last: api.FleetStats | None = None
        while True:
            await asyncio.sleep(STATS_EVERY_S)
            if self.stats_dirty:
                self.stats_dirty = False
                stats = self.stats()
                if stats != last:
                    last = stats
                    await self.send(api.StatsEvent(stats=stats))


@websocket("/api/stream")
async def stream(socket: WebSocket[Any, Any, Any]) -> None:
    """Live events for the caller's devices (Authorization: Bearer <access token>)."""
    server = server_state(socket.app.state)
    header = socket.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    try:
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "the stream needs 'Authorization: Bearer <access token>'")
        who = await user_from_token(server, token.strip())
    except ApiError as exc:
        await socket.close(code=CLOSE_UNAUTHORIZED, reason=exc.detail[:120])
        return
    await socket.accept()
    hub: EventHub = server.hub
    client = _Client(server, hub, socket, who)
    subscriber = await hub.subscribe(client.base_channels)
    try:
        await client.load()
        await client.send(
            api.HelloEvent(
                user=who.user.out(), stats=client.stats(), devices=list(client.devices.values())
            )
        )
        tasks = [
            asyncio.create_task(coro)
            for coro in (
                client.pump(subscriber),
                client.listen(),
                client.keep_authorized(),
                client.send_stats(),
            )
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, Exception):
                    await task
    except WebSocketDisconnect:
        pass
    finally:
        await hub.unsubscribe(subscriber, client.base_channels)
