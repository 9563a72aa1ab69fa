"""Log in (or register) to a server; the login is saved as `smartmon login` saves it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, cast

import msgspec
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Center, Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Button, Checkbox, Footer, Input, Label, Static

from smartmon import api, credentials
from smartmon.client import ApiError, AsyncClient, ServerUnreachable
from smartmon.settings import normalise_server_url

if TYPE_CHECKING:
    from smartmon.tui.app import SmartmonApp


class LoginScreen(Screen[None]):
    """Username has focus, Tab goes to the password, Enter submits; errors show inline."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+r", "toggle_register", "Register/Log in", id="login.toggle_register"),
        Binding("escape", "app.quit", "Quit", show=False),
    ]

    class LoggedIn(Message):
        """A login succeeded and was saved."""

        def __init__(self, login: credentials.Login) -> None:
            super().__init__()
            self.login = login

    def __init__(
        self, server: str, *, message: str | None = None, username: str | None = None
    ) -> None:
        super().__init__()
        self.server = server
        self.message = message
        self.username = username

    @property
    def smartmon(self) -> SmartmonApp:
        return cast("SmartmonApp", self.app)

    def compose(self) -> ComposeResult:
        with Center(), Vertical(id="login-box"):
            yield Static("Log in to smartmon", id="login-title")
            yield Static(
                self.message or "", id="login-message", classes="" if self.message else "hidden"
            )
            with Horizontal(classes="field"):
                yield Label("Server", classes="field-label")
                yield Input(self.server, id="server", placeholder="http://host:8000")
            with Horizontal(classes="field"):
                yield Label("Username", classes="field-label")
                yield Input(self.username or "", id="username", placeholder="your account name")
            with Horizontal(classes="field"):
                yield Label("Password", classes="field-label")
                yield Input(id="password", password=True, placeholder="password")
            with Horizontal(classes="field register-only"):
                yield Label("Repeat", classes="field-label")
                yield Input(id="repeat", password=True, placeholder="password again")
            with Horizontal(classes="field register-only"):
                yield Label("E-mail", classes="field-label")
                yield Input(id="email", placeholder="optional")
            yield Checkbox("Create a new account (register)", id="register")
            yield Static("", id="login-error")
            yield Button("Log in", id="submit", variant="primary")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#username", Input).focus()
        self._show_mode()

    # ---- mode -------------------------------------------------------------------------------

    @property
    def registering(self) -> bool:
        """Whether the form creates an account instead of logging in."""
        return self.query_one("#register", Checkbox).value

    def action_toggle_register(self) -> None:
        """Switch between logging in and registering."""
        box = self.query_one("#register", Checkbox)
        box.value = not box.value

    @on(Checkbox.Changed, "#register")
    def _show_mode(self) -> None:
        registering = self.registering
        self.query_one("#login-title", Static).update(
            "Create a smartmon account" if registering else "Log in to smartmon"
        )
        self.query_one("#submit", Button).label = "Register" if registering else "Log in"
        for field in self.query(".register-only"):
            field.display = registering
        self._error("")

    # ---- submitting -------------------------------------------------------------------------

    def _error(self, text: str) -> None:
        self.query_one("#login-error", Static).update(text)

    @on(Input.Submitted)
    @on(Button.Pressed, "#submit")
    def submit(self, _: Any = None) -> None:
        """Check the form, then log in or register in a worker."""
        server = self.query_one("#server", Input).value.strip()
        username = self.query_one("#username", Input).value.strip()
        password = self.query_one("#password", Input).value
        if not server:
            self._error("Enter the server's URL, e.g. http://127.0.0.1:8000")
            self.query_one("#server", Input).focus()
            return
        if not username:
            self._error("Enter your username.")
            self.query_one("#username", Input).focus()
            return
        if not password:
            self._error("Enter your password.")
            self.query_one("#password", Input).focus()
            return
        email = None
        if self.registering:
            if password != self.query_one("#repeat", Input).value:
                self._error("The passwords do not match.")
                self.query_one("#repeat", Input).focus()
                return
            email = self.query_one("#email", Input).value.strip() or None
        self._error("Registering…" if self.registering else "Logging in…")
        self.query_one("#submit", Button).disabled = True
        self._send(normalise_server_url(server), username, password, email, self.registering)

    @work(exclusive=True, group="login", exit_on_error=False)
    async def _send(
        self, server: str, username: str, password: str, email: str | None, register: bool
    ) -> None:
        try:
            async with AsyncClient(server, transport=self.smartmon.transport) as client:
                call = (
                    AsyncClient.register(username, password, email)
                    if register
                    else AsyncClient.login(username, password)
                )
                result = msgspec.convert(await client.send(call), api.LoginResult)
        except ServerUnreachable as exc:
            self._failed(f"Cannot reach {server}: {exc.reason}. Is `smartmon serve` running there?")
            return
        except ApiError as exc:
            where = f" ({exc.field})" if exc.field else ""
            self._failed(f"{exc.detail}{where}")
            return
        except (msgspec.ValidationError, ValueError) as exc:
            self._failed(f"The server's answer was not understood: {exc}")
            return
        login = credentials.Login(server, result.user.username, result.access_token)
        try:
            credentials.save(login)
        except OSError as exc:
            self.notify(f"Logged in, but the login could not be saved: {exc}", severity="warning")
        self.post_message(self.LoggedIn(login))

    def _failed(self, text: str) -> None:
        self._error(text)
        self.query_one("#submit", Button).disabled = False
        self.query_one("#password", Input).focus()
