"""The live feed: the /api/stream WebSocket with reconnects, or REST polling without it.

`Feed.run()` never touches widgets: events go into a queue, and a doorbell callback rings
when the queue goes from empty to non-empty, so any burst of events costs the UI one
message (collapsing); the UI drains the queue and applies the whole batch at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from smartmon import api
from smartmon.client import ApiError, AsyncClient, ClientError, ServerUnreachable

log = logging.getLogger("smartmon.tui")

CLOSE_UNAUTHORIZED = 4401
MAX_QUEUED_EVENTS = 50_000  # beyond this the UI is hopelessly behind: resync instead
POLL_EVERY_S = 3.0  # servers without /api/stream are polled this often
MAX_MESSAGE_BYTES = 256 * 2**20  # a hello with a large fleet is big

Status = Literal["connecting", "live", "retrying", "polling"]


class AuthRejected(Exception):
    """The server refused the access token (expired, revoked, account disabled)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


@dataclass(frozen=True)
class FeedState:
    """How the feed is doing, for the banner."""

    status: Status
    detail: str = ""
    retry_at: float | None = None  # time.time() of the next attempt
    trouble_since: float | None = None  # time.time() when the connection was lost


def stream_url(server: str) -> str:
    """http://host:port -> ws://host:port/api/stream (https -> wss)."""
    base = server.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base.removeprefix("https://") + "/api/stream"
    return "ws://" + base.removeprefix("http://") + "/api/stream"


def backoff_delay(attempt: int, first: float = 0.5, most: float = 30.0) -> float:
    """Exponential backoff with jitter: 0.5 s, 1 s, 2 s ... up to `most`."""
    delay: float = min(most, first * 2 ** max(0, attempt))
    return delay * random.uniform(0.8, 1.2)


class Feed:
    """Live events for one login, reconnecting with backoff; drained by the UI."""

    def __init__(
        self,
        client: AsyncClient,
        token: str,
        *,
        url: str | None = None,
        first_retry_s: float = 0.5,
        max_retry_s: float = 30.0,
        poll_every_s: float = POLL_EVERY_S,
    ) -> None:
        self.client = client
        self.token = token
        self.url = url or stream_url(client.base_url)
        self.first_retry_s = first_retry_s
        self.max_retry_s = max_retry_s
        self.poll_every_s = poll_every_s
        self.state = FeedState("connecting")
        self._events: deque[api.StreamEvent] = deque()
        self._subscription: list[int] = []
        self._subscription_changed = asyncio.Event()
        self._ring: Callable[[], None] = lambda: None
        self._on_state: Callable[[FeedState], None] = lambda state: None
        self.user: api.UserOut | None = None
        self._ws: ClientConnection | None = None

    # ---- the UI side ------------------------------------------------------------------------

    def drain(self) -> list[api.StreamEvent]:
        """Every queued event, oldest first."""
        events = list(self._events)
        self._events.clear()
        return events

    def subscribe(self, device_ids: list[int]) -> None:
        """Stream the connections of these devices (replaces the previous subscription)."""
        self._subscription = list(device_ids)
        self._subscription_changed.set()

    async def aclose(self) -> None:
        """Close the stream now (the worker running `run()` is cancelled separately)."""
        ws, self._ws = self._ws, None
        if ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 2)
            ws.transport.abort()  # never leave the socket to the garbage collector

    @property
    def polling(self) -> bool:
        """True when the server has no stream and the feed polls REST instead."""
        return self.state.status == "polling"

    # ---- the worker side --------------------------------------------------------------------

    def _push(self, event: api.StreamEvent) -> None:
        was_empty = not self._events
        if len(self._events) >= MAX_QUEUED_EVENTS:
            self._events.clear()
            event = api.ResyncEvent(reason="the screen fell behind the stream")
        self._events.append(event)
        if was_empty:
            self._ring()

    def _set_state(self, state: FeedState) -> None:
        self.state = state
        self._on_state(state)

    async def run(self, ring: Callable[[], None], on_state: Callable[[FeedState], None]) -> None:
        """Follow the stream forever; raises AuthRejected when the token is refused."""
        self._ring, self._on_state = ring, on_state
        attempt = 0
        trouble_since: float | None = None
        while True:
            self._set_state(FeedState("connecting", trouble_since=trouble_since))
            try:
                await self._follow()
                reason = "the server closed the stream"
            except InvalidStatus as exc:
                status = exc.response.status_code
                if status in (401, 403):
                    raise AuthRejected(_body_detail(exc) or "the server refused the login") from exc
                if status == 404:
                    await self._poll()  # returns when polling should retry the stream
                    attempt = 0
                    continue
                reason = f"the server refused the stream (HTTP {status})"
            except ConnectionClosed as exc:
                if exc.rcvd is not None and exc.rcvd.code == CLOSE_UNAUTHORIZED:
                    raise AuthRejected(exc.rcvd.reason or "the session ended") from exc
                reason = "the connection was lost"
            except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
                reason = _reason(exc)
            if self.state.status in ("live", "polling"):
                attempt, trouble_since = 0, time.time()
            elif trouble_since is None:
                trouble_since = time.time()
            delay = backoff_delay(attempt, self.first_retry_s, self.max_retry_s)
            attempt += 1
            self._set_state(FeedState("retrying", reason, time.time() + delay, trouble_since))
            await asyncio.sleep(delay)

    async def _follow(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        ws = await connect(
            self.url,
            additional_headers=headers,
            open_timeout=5,
            max_size=MAX_MESSAGE_BYTES,
            user_agent_header="smartmon-tui",
        )
        self._ws = ws
        sender = asyncio.create_task(self._send_subscriptions(ws))
        try:
            async for message in ws:
                event = _decode(message)
                if event is None:
                    continue
                if isinstance(event, api.HelloEvent):
                    self.user = event.user
                    self._set_state(FeedState("live"))
                self._push(event)
        finally:
            self._ws = None
            sender.cancel()
            # when cancelled (the app is closing) a closing handshake could be cancelled too
            # and leave the socket open: drop the connection outright
            ws.transport.abort()

    async def _send_subscriptions(self, ws: ClientConnection) -> None:
        while True:
            body = msgspec.json.encode(api.Subscribe(subscribe=self._subscription))
            self._subscription_changed.clear()
            with contextlib.suppress(ConnectionClosed):
                await ws.send(body.decode())
            await self._subscription_changed.wait()

    async def _poll(self) -> None:
        """A server without /api/stream: load the fleet over REST every few seconds."""
        polls_before_retrying_stream = max(1, int(60 / self.poll_every_s))
        for _ in range(polls_before_retrying_stream):
            try:
                if self.user is None:
                    self.user = msgspec.convert(
                        await self.client.send(AsyncClient.me(self.token)), api.UserOut
                    )
                listing = msgspec.convert(
                    await self.client.send(AsyncClient.devices(self.token)), api.DeviceList
                )
            except ApiError as exc:
                if exc.status == 401:
                    raise AuthRejected(exc.detail) from exc
                await asyncio.sleep(self.poll_every_s)
                return  # back to the reconnect loop and its banner
            except ServerUnreachable:
                return
            self._set_state(FeedState("polling", "this server has no live stream; polling"))
            self._push(api.HelloEvent(user=self.user, stats=listing.stats, devices=listing.data))
            await asyncio.sleep(self.poll_every_s)


def _decode(message: str | bytes) -> api.StreamEvent | None:
    try:
        return api.decode_event(message)
    except (msgspec.DecodeError, msgspec.ValidationError):
        # unknown event types (e.g. a server's {"type": "error"}) are not ours to show
        log.debug("ignored a stream message: %.200r", message)
        return None


def _body_detail(exc: InvalidStatus) -> str:
    try:
        body = msgspec.json.decode(exc.response.body or b"{}")
    except msgspec.DecodeError:
        return ""
    return str(body.get("detail", "")) if isinstance(body, dict) else ""


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


__all__ = [
    "AuthRejected",
    "ClientError",
    "Feed",
    "FeedState",
    "backoff_delay",
    "stream_url",
]
