"""The smartmon terminal dashboard: a small App that owns the session and the live feed."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import httpx
from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from smartmon import api, credentials
from smartmon.client import ApiError, AsyncClient, ClientError, ServerUnreachable
from smartmon.tui.stream import AuthRejected, Feed, FeedState


class Session:
    """Who is logged in where, with a client for that server."""

    def __init__(
        self, login: credentials.Login, transport: httpx.AsyncBaseTransport | None
    ) -> None:
        self.server = login.server
        self.username = login.username
        self.token = login.token
        self.client = AsyncClient(login.server, transport=transport)


@runtime_checkable
class LiveView(Protocol):
    """A screen that shows live data."""

    def apply_events(self, events: list[api.StreamEvent]) -> None:
        """Apply a batch of stream events."""

    def show_feed_state(self, state: FeedState) -> None:
        """Show how the connection to the server is doing."""


@runtime_checkable
class HasCommands(Protocol):
    """A screen that offers its actions in the command palette."""

    def palette_commands(self) -> Iterable[SystemCommand]:
        """Command palette entries for this screen's actions."""


class FeedReady(Message):
    """Events are waiting in the feed (a doorbell: many in a row collapse into one)."""

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, FeedReady)


class FeedChanged(Message):
    """The feed's connection state changed (only the latest matters)."""

    def __init__(self, state: FeedState) -> None:
        super().__init__()
        self.state = state

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, FeedChanged)


class SmartmonApp(App[None]):
    """Live fleet and connection monitoring in the terminal."""

    CSS_PATH = Path(__file__).with_name("app.tcss")  # absolute: subclasses live elsewhere
    TITLE = "smartmon"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit", id="quit"),
        Binding("question_mark", "help", "Help", id="help"),
    ]

    def __init__(
        self,
        server: str,
        login: credentials.Login | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        stream_url: str | None = None,
        clock: Callable[[], float] = time.time,
        retry_s: tuple[float, float] = (0.5, 30.0),
        poll_every_s: float = 3.0,
    ) -> None:
        super().__init__()
        self.server = server
        self._saved_login = login
        self.transport = transport
        self.stream_url = stream_url
        self.clock = clock
        self.retry_s = retry_s
        self.poll_every_s = poll_every_s
        self.session: Session | None = None
        self.feed: Feed | None = None
        self.feed_state = FeedState("connecting")
        self.user: api.UserOut | None = None

    def on_mount(self) -> None:
        from smartmon.tui.screens.login import LoginScreen

        if self._saved_login is not None:
            self.start_session(self._saved_login)
        else:
            self.push_screen(LoginScreen(self.server))

    # ---- the session --------------------------------------------------------------------------

    def start_session(self, login: credentials.Login) -> None:
        """Open the dashboard for a login and start following the server."""
        from smartmon.tui.screens.dashboard import DashboardScreen

        self.server = login.server
        self.session = Session(login, self.transport)
        self.sub_title = f"{login.username} @ {login.server}"
        self.feed = Feed(
            self.session.client,
            login.token,
            url=self.stream_url,
            first_retry_s=self.retry_s[0],
            max_retry_s=self.retry_s[1],
            poll_every_s=self.poll_every_s,
        )
        self.feed_state = FeedState("connecting")
        dashboard = DashboardScreen()
        if len(self.screen_stack) > 1:
            self.switch_screen(dashboard)
        else:
            self.push_screen(dashboard)
        self.follow_feed()

    def end_session(self, message: str) -> None:
        """Back to the login screen (the token expired or was revoked)."""
        from smartmon.tui.screens.login import LoginScreen

        if self.session is None:
            return  # already ended (the stream and a REST call can both notice)
        self.workers.cancel_group(self, "feed")
        username = self.session.username
        if self.session is not None:
            self._close_session(self.session, self.feed)
        self.session = self.feed = None
        self.sub_title = ""
        while len(self.screen_stack) > 2:
            self.pop_screen()
        self.switch_screen(LoginScreen(self.server, message=message, username=username))

    @work(group="close-session", exit_on_error=False)
    async def _close_session(self, session: Session, feed: Feed | None) -> None:
        if feed is not None:
            await feed.aclose()
        await session.client.aclose()

    async def on_unmount(self) -> None:
        if self.feed is not None:
            await self.feed.aclose()
        if self.session is not None:
            await self.session.client.aclose()

    def on_login_screen_logged_in(self, message: Any) -> None:
        self.start_session(message.login)

    # ---- the live feed ------------------------------------------------------------------------

    @work(exclusive=True, group="feed", exit_on_error=False)
    async def follow_feed(self) -> None:
        """Follow the stream until the app ends or the server refuses the login."""
        assert self.feed is not None
        feed = self.feed

        def ring() -> None:
            self.post_message(FeedReady())

        def on_state(state: FeedState) -> None:
            self.post_message(FeedChanged(state))

        await feed.run(ring=ring, on_state=on_state)

    def on_feed_ready(self, _: FeedReady) -> None:
        if self.feed is None:
            return
        events = self.feed.drain()
        for event in events:
            if isinstance(event, api.HelloEvent):
                self.user = event.user
        for screen in self.screen_stack:
            if isinstance(screen, LiveView):
                try:
                    screen.apply_events(events)
                except Exception as exc:  # a bad event must not take the dashboard down
                    self.log.error("applying stream events failed", exc)
                    self.notify(
                        f"{type(exc).__name__}: {exc}",
                        title="Could not apply a live update (press r to reload)",
                        severity="error",
                    )

    def on_feed_changed(self, message: FeedChanged) -> None:
        self.feed_state = message.state
        for screen in self.screen_stack:
            if isinstance(screen, LiveView):
                screen.show_feed_state(message.state)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """The one place where worker failures become a notification or the login screen."""
        if event.state != WorkerState.ERROR:
            return
        error = event.worker.error
        if isinstance(error, AuthRejected) or (isinstance(error, ApiError) and error.status == 401):
            detail = error.detail if isinstance(error, AuthRejected | ApiError) else ""
            self.end_session(f"Please log in again: {detail}" if detail else "Please log in again.")
        elif isinstance(error, ServerUnreachable):
            self.notify(
                f"Cannot reach {error.url}: {error.reason}",
                title="Server unreachable",
                severity="warning",
            )
        elif isinstance(error, ApiError):
            self.notify(
                error.detail, title=f"The server refused ({error.status})", severity="error"
            )
        elif isinstance(error, ClientError | OSError):
            self.notify(str(error), title="Error", severity="error")
        else:
            self.notify(
                f"{type(error).__name__}: {error}",
                title="Unexpected error",
                severity="error",
                timeout=10,
            )

    # ---- actions ------------------------------------------------------------------------------

    def action_help(self) -> None:
        """Show the keys and what the screens show."""
        from smartmon.tui.screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.screen))

    def action_logout(self) -> None:
        """Forget the saved login for this server and show the login screen."""
        session = self.session
        if session is None:
            return
        self._logout_on_server(session)
        credentials.forget(session.server)
        self.end_session(f"Logged out of {session.server}.")

    @work(group="logout", exit_on_error=False)
    async def _logout_on_server(self, session: Session) -> None:
        async with AsyncClient(session.server, transport=self.transport) as client:
            with contextlib.suppress(ClientError):  # the token is forgotten here either way
                await client.send(AsyncClient.logout(session.token))

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        if isinstance(screen, HasCommands):
            yield from screen.palette_commands()
        yield SystemCommand("Help", "Show the keys of this screen (?)", self.action_help)
        if self.session is not None:
            yield SystemCommand(
                "Log out", f"Forget the saved login for {self.server}", self.action_logout
            )
        yield from super().get_system_commands(screen)
