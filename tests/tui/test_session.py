"""Logging in, registering, a token that stops working, and a server that goes away."""

from __future__ import annotations

from typing import Any

from textual.widgets import Input

from smartmon import credentials
from smartmon.tui.app import SmartmonApp
from smartmon.tui.screens.dashboard import DashboardScreen
from smartmon.tui.screens.login import LoginScreen
from tests.conftest import ADMIN_PASSWORD, LiveServer, free_port
from tests.tui.conftest import SIZE, Reporter, conn, logged_in_app, screen_text, until


def error_text(app: Any) -> str:
    return str(app.screen.query_one("#login-error").render())


async def test_login_screen_logs_in_and_saves_the_login(live_server: LiveServer) -> None:
    assert live_server.admin_token  # the account exists
    app = SmartmonApp(live_server.url, None)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: isinstance(app.screen, LoginScreen), "the login screen")
        assert app.focused is not None and app.focused.id == "username"
        assert app.screen.query_one("#server", Input).value == live_server.url
        await pilot.press(*"admin", "tab")
        assert app.focused is not None and app.focused.id == "password"
        await pilot.press(*"wrong-password", "enter")
        await until(pilot, lambda: "password" in error_text(app).lower(), "an inline error")
        assert isinstance(app.screen, LoginScreen) and credentials.load(live_server.url) is None
        app.screen.query_one("#password", Input).value = ADMIN_PASSWORD
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, DashboardScreen), "the dashboard")
        saved = credentials.load(live_server.url)
        assert saved is not None and saved.username == "admin"
        r = live_server.request("GET", "/api/auth/me", saved.token)
        assert r.status_code == 200 and r.json()["username"] == "admin"
        assert f"admin @ {live_server.url}" in screen_text(app)


async def test_register_toggle_creates_the_first_account(live_server: LiveServer) -> None:
    app = SmartmonApp(live_server.url, None)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: isinstance(app.screen, LoginScreen), "the login screen")
        await pilot.press("ctrl+r")
        assert "Create a smartmon account" in screen_text(app)
        await pilot.press(*"ops", "tab", *"long-enough-pw", "tab", *"different-pw", "enter")
        assert "do not match" in error_text(app)
        app.screen.query_one("#repeat", Input).value = "long-enough-pw"
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, DashboardScreen), "the dashboard")
        saved = credentials.load(live_server.url)
        assert saved is not None and saved.username == "ops"
        me = live_server.request("GET", "/api/auth/me", saved.token).json()
        assert me["role"] == "admin", "the first account is the admin"


async def test_unreachable_server_is_an_inline_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    app = SmartmonApp(url, None)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: isinstance(app.screen, LoginScreen), "the login screen")
        await pilot.press(*"admin", "tab", *"whatever-pw", "enter")
        await until(pilot, lambda: "Cannot reach" in error_text(app), "the error")
        assert url in error_text(app) and isinstance(app.screen, LoginScreen)


async def test_a_revoked_token_leads_to_the_login_screen(live_server: LiveServer) -> None:
    token = live_server.admin_token
    Reporter(live_server, "meter").send([conn("192.0.2.1", 443)])
    app = logged_in_app(live_server, token)
    async with app.run_test(size=SIZE) as pilot:
        await until(
            pilot,
            lambda: isinstance(app.screen, DashboardScreen) and len(app.screen.table) == 1,
            "devices",
        )
        assert live_server.request("POST", "/api/auth/logout", token).status_code in (200, 204)
        await until(
            pilot,
            lambda: "log in again" in screen_text(app).lower(),
            "the login screen",
            timeout=15,
        )
        assert isinstance(app.screen, LoginScreen)
        assert app.screen.query_one("#username", Input).value == "admin"


async def test_an_invalid_saved_token_opens_the_login_screen(live_server: LiveServer) -> None:
    app = logged_in_app(live_server, "not-a-valid-token")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: "log in again" in screen_text(app).lower(), "the login screen")
        assert isinstance(app.screen, LoginScreen)


async def test_the_server_going_away_and_coming_back(live_server: LiveServer) -> None:
    meter = Reporter(live_server, "meter")
    meter.send([conn("192.0.2.1", 443)])
    app = logged_in_app(live_server)
    async with app.run_test(size=SIZE) as pilot:
        await until(
            pilot,
            lambda: isinstance(app.screen, DashboardScreen) and len(app.screen.table) == 1,
            "devices",
        )
        table = app.screen.table
        live_server.stop()
        await until(pilot, lambda: "Cannot reach the server" in screen_text(app), "the banner")
        text = screen_text(app)
        assert "meter" in text and "Showing data from" in text, "the last data stays on screen"
        assert len(table) == 1
        live_server.start()
        await until(
            pilot, lambda: "Cannot reach" not in screen_text(app), "the banner to go", timeout=15
        )
        meter.send([conn("192.0.2.1", 443), conn("192.0.2.2", 443, source_port=2)])
        await until(pilot, lambda: table.cell_text(0, "connections") == "2", "live updates again")


async def test_a_failing_request_is_a_notification_not_a_crash(live_server: LiveServer) -> None:
    Reporter(live_server, "meter").send([conn("192.0.2.1", 443)])
    app = logged_in_app(live_server)
    async with app.run_test(size=SIZE) as pilot:
        await until(
            pilot,
            lambda: isinstance(app.screen, DashboardScreen) and len(app.screen.table) == 1,
            "devices",
        )
        live_server.stop()
        await pilot.press("r")  # reload over REST while the server is down
        await until(
            pilot,
            lambda: any("Cannot reach" in str(n.message) for n in app._notifications),
            "a notification",
        )
        assert app.is_running and len(app.screen.table) == 1
        await pilot.press("enter")  # the device screen's REST load fails the same way
        await until(
            pilot,
            lambda: sum("Cannot reach" in str(n.message) for n in app._notifications) >= 2,
            "another",
        )
        assert app.is_running


async def test_help_screen_and_command_palette(live_server: LiveServer) -> None:
    Reporter(live_server, "meter").send([conn("192.0.2.1", 443)])
    app = logged_in_app(live_server)
    async with app.run_test(size=SIZE) as pilot:
        await until(
            pilot,
            lambda: isinstance(app.screen, DashboardScreen) and len(app.screen.table) == 1,
            "devices",
        )
        await pilot.press("question_mark")
        await until(
            pilot, lambda: "filter by name, owner, IP or status" in screen_text(app), "the help"
        )
        await pilot.press("escape")
        assert isinstance(app.screen, DashboardScreen)
        titles = [c.title for c in app.get_system_commands(app.screen)]
        for expected in ("Open device", "Filter devices", "Sort by Conns", "Export devices", "Add device", "Reload", "Help", "Log out"):  # fmt: skip
            assert expected in titles, expected
        await pilot.press("ctrl+p")
        await pilot.press(*"sort by owner")
        await until(pilot, lambda: "Sort by Owner" in screen_text(app), "the palette entry")
        await pilot.press("enter")
        await until(
            pilot,
            lambda: (
                isinstance(app.screen, DashboardScreen) and app.screen.table.sort_column == "owner"
            ),
            "sorted",
        )
        await pilot.press("q")
        await until(pilot, lambda: not app.is_running, "quit")
