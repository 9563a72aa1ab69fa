"""The feed against small WebSocket servers: events, collapsing, subscriptions, reconnects, auth."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import msgspec
import pytest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from smartmon import api
from smartmon.client import AsyncClient
from smartmon.tui.stream import AuthRejected, Feed, FeedState, stream_url

USER = api.UserOut(id=1, username="admin", role="admin")
STATS = api.FleetStats(1, 1, 0, 1, 10.0, 5.0)
DEVICE = api.Device(
    id=7, device_name="meter", username="admin", status="online", connection_count=1, protocols=["TCP"],
    unique_ips=["192.0.2.1"], last_seen=datetime(2026, 12, 4, tzinfo=UTC), registered_at=datetime(2026, 12, 1, tzinfo=UTC),
    collected_at=None, interval_s=10, bytes_in=0, bytes_out=0, bytes_in_rate=None, bytes_out_rate=None,
    dropped_reports=0, key_active=True, agent=api.AgentOut(None, None, None, None),
)  # fmt: skip
HELLO = msgspec.json.encode(api.HelloEvent(user=USER, stats=STATS, devices=[DEVICE])).decode()


def event(e: api.Event) -> str:
    return msgspec.json.encode(e).decode()


Handler = Callable[[ServerConnection], Awaitable[None]]


@contextlib.asynccontextmanager
async def ws_server(handler: Handler, **kwargs: Any) -> AsyncIterator[tuple[Server, str]]:
    async with serve(handler, "127.0.0.1", 0, **kwargs) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield server, f"ws://127.0.0.1:{port}/api/stream"


class Recorder:
    """What the UI side of the feed would see."""

    def __init__(self, feed: Feed) -> None:
        self.feed = feed
        self.rings = 0
        self.states: list[FeedState] = []
        self.events: list[api.StreamEvent] = []

    def ring(self) -> None:
        self.rings += 1

    def on_state(self, state: FeedState) -> None:
        self.states.append(state)

    def drain(self) -> None:
        self.events += self.feed.drain()

    async def until(self, check: Callable[[], bool], timeout: float = 5) -> None:
        async with asyncio.timeout(timeout):
            while not check():
                await asyncio.sleep(0.01)


def make_feed(url: str, transport: httpx.AsyncBaseTransport | None = None) -> Feed:
    client = AsyncClient("http://127.0.0.1:1", transport=transport)
    return Feed(
        client, "the-token", url=url, first_retry_s=0.05, max_retry_s=0.1, poll_every_s=0.05
    )


async def run(feed: Feed, recorder: Recorder) -> asyncio.Task[None]:
    return asyncio.create_task(feed.run(recorder.ring, recorder.on_state))


async def stop(task: asyncio.Task[None], feed: Feed) -> None:
    await feed.aclose()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await feed.client.aclose()


def test_stream_url() -> None:
    assert stream_url("http://127.0.0.1:8000") == "ws://127.0.0.1:8000/api/stream"
    assert stream_url("https://fleet.example/") == "wss://fleet.example/api/stream"


async def test_events_arrive_in_order_and_a_burst_rings_once() -> None:
    seen_headers: list[str] = []
    received: list[Any] = []

    async def handler(ws: ServerConnection) -> None:
        seen_headers.append(ws.request.headers["Authorization"] if ws.request else "")
        await ws.send(HELLO)
        received.append(json.loads(await ws.recv()))  # the (empty) subscription comes first
        for i in range(50):
            await ws.send(
                event(api.DeviceEvent(device=msgspec.structs.replace(DEVICE, connection_count=i)))
            )
        await ws.send('{"type": "error", "detail": "not an event the TUI knows"}')
        await ws.send(event(api.StatsEvent(stats=STATS)))
        received.append(json.loads(await ws.recv()))
        await ws.wait_closed()

    async with ws_server(handler) as (_, url):
        feed = make_feed(url)
        recorder = Recorder(feed)
        task = await run(feed, recorder)
        await recorder.until(lambda: len(feed._events) == 52)
        assert recorder.rings == 1, "a burst rings the doorbell once"
        recorder.drain()
        assert isinstance(recorder.events[0], api.HelloEvent) and isinstance(
            recorder.events[-1], api.StatsEvent
        )
        counts = [
            e.device.connection_count for e in recorder.events if isinstance(e, api.DeviceEvent)
        ]
        assert counts == list(range(50))
        assert recorder.states[-1].status == "live" and feed.user == USER
        feed.subscribe([7, 9])
        await recorder.until(lambda: len(received) == 2)
        assert received == [{"subscribe": []}, {"subscribe": [7, 9]}]
        assert seen_headers == ["Bearer the-token"]
        await stop(task, feed)


async def test_reconnects_with_backoff_and_resubscribes() -> None:
    connections: list[Any] = []

    async def handler(ws: ServerConnection) -> None:
        connections.append(json.loads(await ws.recv()))
        await ws.send(HELLO)
        if len(connections) == 1:
            await ws.close(1011, "going away")
            return
        await ws.wait_closed()

    async with ws_server(handler) as (_, url):
        feed = make_feed(url)
        feed.subscribe([7])
        recorder = Recorder(feed)
        task = await run(feed, recorder)
        await recorder.until(lambda: len(connections) == 2 and feed.state.status == "live")
        statuses = [s.status for s in recorder.states]
        assert statuses[:4] == ["connecting", "live", "retrying", "connecting"]
        retrying = recorder.states[2]
        assert (
            retrying.trouble_since is not None and retrying.retry_at is not None and retrying.detail
        )
        assert connections == [{"subscribe": [7]}, {"subscribe": [7]}], "the subscription survives"
        recorder.drain()
        assert [type(e) for e in recorder.events] == [api.HelloEvent, api.HelloEvent]
        await stop(task, feed)


async def test_a_server_that_is_down_is_retried() -> None:
    async with ws_server(lambda ws: ws.close()) as (_, url):
        pass  # closed again: nothing listens on the port now
    feed = make_feed(url)
    recorder = Recorder(feed)
    task = await run(feed, recorder)
    await recorder.until(lambda: sum(s.status == "retrying" for s in recorder.states) >= 3)
    assert "refused" in recorder.states[-1].detail or recorder.states[-1].detail
    await stop(task, feed)


@pytest.mark.parametrize("how", ["handshake-403", "close-4401"])
async def test_a_refused_token_ends_the_feed(how: str) -> None:
    def refuse(connection: ServerConnection, request: Request) -> Response | None:
        if how == "handshake-403":
            return connection.respond(403, '{"detail": "the token was revoked"}\n')
        return None

    async def handler(ws: ServerConnection) -> None:
        await ws.close(4401, "the token was revoked")

    async with ws_server(handler, process_request=refuse) as (_, url):
        feed = make_feed(url)
        recorder = Recorder(feed)
        with pytest.raises(AuthRejected) as caught:
            await asyncio.wait_for(feed.run(recorder.ring, recorder.on_state), 5)
        assert "revoked" in caught.value.detail
        await feed.client.aclose()


async def test_a_server_without_a_stream_is_polled() -> None:
    def not_found(connection: ServerConnection, request: Request) -> Response:
        return Response(404, "Not Found", Headers(), b"")

    def rest(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/auth/me":
            return httpx.Response(200, content=msgspec.json.encode(USER))
        listing = api.DeviceList(stats=STATS, data=[DEVICE])
        return httpx.Response(200, content=msgspec.json.encode(listing))

    async with ws_server(lambda ws: ws.close(), process_request=not_found) as (_, url):
        feed = make_feed(url, httpx.MockTransport(rest))
        recorder = Recorder(feed)
        task = await run(feed, recorder)
        await recorder.until(lambda: recorder.rings >= 1 and feed.polling)
        recorder.drain()
        hello = recorder.events[0]
        assert (
            isinstance(hello, api.HelloEvent) and hello.devices == [DEVICE] and hello.user == USER
        )
        await stop(task, feed)
