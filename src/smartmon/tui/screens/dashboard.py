"""The fleet: stat cards, the live device table, filtering, sorting, export, empty state."""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, ClassVar, cast

import msgspec
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, Static
from textual.worker import Worker

from smartmon import api
from smartmon.client import AsyncClient
from smartmon.tui.columns import (
    DEVICE_COLUMNS,
    DEVICE_FIELDS,
    device_export,
    device_key,
    device_matches,
)
from smartmon.tui.export import ExportError, write_rows
from smartmon.tui.screens.export import ExportChoice, ExportScreen
from smartmon.tui.stream import FeedState
from smartmon.tui.widgets.live_table import LiveTable
from smartmon.tui.widgets.status import Banner, StatCards

if TYPE_CHECKING:
    from smartmon.tui.app import SmartmonApp

DeviceTable = LiveTable[int, api.Device]


def agent_command(token: str, server: str) -> str:
    """The exact command that connects a device."""
    return f"smartmon agent --token {token} --server {server}"


class DashboardScreen(Screen[None]):
    """Every device the user can see, live."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "open", "Open", id="dashboard.open", show=True, priority=False),
        Binding("slash", "filter", "Filter", id="dashboard.filter"),
        Binding("escape", "clear_filter", "Clear filter", id="dashboard.clear_filter", show=False),
        Binding("s", "sort_next", "Sort", id="dashboard.sort"),
        Binding("S", "sort_reverse", "Reverse", id="dashboard.reverse", show=False),
        *(
            Binding(str(i + 1), f"sort('{c.key}')", f"Sort by {c.label}", show=False)
            for i, c in enumerate(DEVICE_COLUMNS)
        ),
        Binding("a", "connect_device", "Add device", id="dashboard.add_device"),
        Binding("e", "export", "Export", id="dashboard.export"),
        Binding("r", "reload", "Reload", id="dashboard.reload"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.loaded = False
        self.stats: api.FleetStats | None = None
        self.enrollment_token: str | None = None

    @property
    def smartmon(self) -> SmartmonApp:
        return cast("SmartmonApp", self.app)

    @property
    def table(self) -> DeviceTable:
        """The device table."""
        return cast(DeviceTable, self.query_one("#devices", LiveTable))

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="◉")
        yield Banner(self.smartmon.server)
        yield StatCards(id="stats")
        yield Input(
            id="filter",
            placeholder="filter: name, owner, IP or status (esc clears)",
            classes="hidden",
        )
        yield Static("", id="filter-status", classes="hidden")
        yield LiveTable(DEVICE_COLUMNS, device_key, clock=self.smartmon.clock, id="devices")
        yield Static(f"Loading devices from {self.smartmon.server}…", id="empty")
        yield Footer()

    def on_mount(self) -> None:
        self.table.focus()
        self.show_feed_state(self.smartmon.feed_state)
        self.set_interval(1.0, self.table.refresh_visible)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """Worker messages do not bubble: failures go to the app's one handler."""
        self.smartmon.on_worker_state_changed(event)

    # ---- live data ----------------------------------------------------------------------------

    def apply_events(self, events: list[api.StreamEvent]) -> None:
        """Apply a batch of stream events to the table and the cards."""
        table = self.table
        for event in events:
            if isinstance(event, api.DeviceEvent):
                table.upsert(event.device)
            elif isinstance(event, api.StatsEvent):
                self._show_stats(event.stats)
            elif isinstance(event, api.HelloEvent):
                table.replace_all(event.devices)
                self._show_stats(event.stats)
                self.loaded = True
            elif isinstance(event, api.DeviceRemovedEvent):
                table.discard(event.device_id)
            elif isinstance(event, api.ResyncEvent):
                self.reload()
        self.query_one(Banner).last_data = time.time()
        self._show_counts()

    def show_feed_state(self, state: FeedState) -> None:
        """Show trouble with the server in the banner."""
        self.query_one(Banner).show_state(state)

    def _show_stats(self, stats: api.FleetStats) -> None:
        self.stats = stats
        self.query_one(StatCards).show(stats)

    def _show_counts(self) -> None:
        table = self.table
        empty = self.query_one("#empty", Static)
        if self.loaded and table.total == 0:
            empty.display = True
            table.display = False
            self._show_first_device_help()
        elif table.total and not len(table):
            empty.display = True
            table.display = True
            query = self.query_one("#filter", Input).value
            empty.update(f"No device matches “{query}”. Press esc to clear the filter.")
        else:
            empty.display = not self.loaded
            table.display = True
        self._show_filter_status()

    def _show_first_device_help(self) -> None:
        empty = self.query_one("#empty", Static)
        server = self.smartmon.server
        if self.enrollment_token is None:
            empty.update("No devices yet. Creating an enrollment token for your first device…")
            self.create_enrollment_token()
            return
        command = agent_command(self.enrollment_token, server)
        empty.update(
            Text.assemble(
                ("No devices yet.\n\n", "bold"),
                "To connect your first device, install smartmon on it (pip install smartmon) and run:\n\n",
                ("  " + command + "\n\n", "bold green"),
                "The enrollment token above was created just now for you; it is valid for 7 days "
                "and can enroll several devices. Each device shows up here with its first report.\n",
                ("Press a for another token, ctrl+p for all commands.", "dim"),
            )
        )

    @work(exclusive=True, group="enrollment-token", exit_on_error=False)
    async def create_enrollment_token(self) -> None:
        """A fresh enrollment token for the empty state."""
        session = self.smartmon.session
        if session is None:
            return
        body = await session.client.send(
            AsyncClient.create_token(session.token, "tui: first device", 7)
        )
        self.enrollment_token = msgspec.convert(body, api.TokenCreated).token
        if self.loaded and self.table.total == 0:
            self._show_first_device_help()

    # ---- actions ------------------------------------------------------------------------------

    @on(LiveTable.Selected, "#devices")
    def _selected(self, event: LiveTable.Selected) -> None:
        self._open(cast(int, event.key))

    def action_open(self) -> None:
        """Open the device under the cursor."""
        key = self.table.cursor_key
        if key is not None:
            self._open(key)

    def _open(self, device_id: int) -> None:
        from smartmon.tui.screens.device import DeviceScreen

        device = self.table.get(device_id)
        if device is not None:
            self.app.push_screen(DeviceScreen(device))

    def action_filter(self) -> None:
        """Show the filter and type into it."""
        box = self.query_one("#filter", Input)
        box.remove_class("hidden")
        box.focus()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        query = event.value.strip()
        self.table.set_filter(partial(_matches, query=query) if query else None)
        self._show_counts()

    @on(Input.Submitted, "#filter")
    def _filter_done(self) -> None:
        box = self.query_one("#filter", Input)
        if not box.value.strip():
            box.add_class("hidden")
        self.table.focus()

    def action_clear_filter(self) -> None:
        """Clear the filter and go back to the table."""
        box = self.query_one("#filter", Input)
        box.value = ""
        box.add_class("hidden")
        self.table.set_filter(None)
        self.table.focus()
        self._show_counts()

    def _show_filter_status(self) -> None:
        status = self.query_one("#filter-status", Static)
        query = self.query_one("#filter", Input).value.strip()
        table = self.table
        status.set_class(not query, "hidden")
        if query:
            status.update(
                f"Showing {len(table)} of {table.total} devices matching “{query}” (esc clears)"
            )

    def action_sort(self, column: str) -> None:
        """Sort by a column (again: reverse)."""
        self.table.sort_by(column)

    def action_sort_next(self) -> None:
        """Sort by the next column."""
        keys = [c.key for c in DEVICE_COLUMNS]
        self.table.sort_by(
            keys[(keys.index(self.table.sort_column) + 1) % len(keys)], reverse=False
        )

    def action_sort_reverse(self) -> None:
        """Reverse the order."""
        self.table.sort_by(self.table.sort_column, reverse=not self.table.sort_reverse)

    @on(LiveTable.Sorted, "#devices")
    def _sorted(self, event: LiveTable.Sorted) -> None:
        label = next(c.label for c in DEVICE_COLUMNS if c.key == event.column)
        self.notify(
            f"Sorted by {label}, {'descending' if event.reverse else 'ascending'}", timeout=2
        )

    def action_reload(self) -> None:
        """Reload the fleet over REST."""
        self.reload()

    @work(exclusive=True, group="reload-fleet", exit_on_error=False)
    async def reload(self) -> None:
        """Load every device and the stats over REST (after a resync event, or on `r`)."""
        session = self.smartmon.session
        if session is None:
            return
        listing = msgspec.convert(
            await session.client.send(AsyncClient.devices(session.token)), api.DeviceList
        )
        self.table.replace_all(listing.data)
        self._show_stats(listing.stats)
        self.loaded = True
        self._show_counts()

    def action_export(self) -> None:
        """Export the devices shown (filtered, in order) to a file."""
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        screen = ExportScreen("devices", len(self.table), f"smartmon-devices-{stamp}.csv")
        self.app.push_screen(screen, self._export)

    def _export(self, choice: ExportChoice | None) -> None:
        if choice is None:
            return
        rows = [device_export(d) for d in self.table.shown()]
        try:
            path = write_rows(choice.path, choice.format, rows, DEVICE_FIELDS)
        except ExportError as exc:
            self.notify(str(exc), title="Export failed", severity="error")
            return
        self.notify(f"{len(rows)} devices written to {path}", title="Exported")

    def action_connect_device(self) -> None:
        """Show the agent command with a fresh enrollment token."""
        self.connect_device()

    @work(exclusive=True, group="enrollment-token", exit_on_error=False)
    async def connect_device(self) -> None:
        """Create a token and show the command that enrolls a device with it."""
        from smartmon.tui.screens.connect import ConnectDeviceScreen

        session = self.smartmon.session
        if session is None:
            return
        body = await session.client.send(AsyncClient.create_token(session.token, "tui", 7))
        token = msgspec.convert(body, api.TokenCreated).token
        self.app.push_screen(ConnectDeviceScreen(agent_command(token, session.server)))

    def palette_commands(self) -> Iterable[SystemCommand]:
        """Every dashboard action by name."""
        yield SystemCommand(
            "Open device", "Open the device under the cursor (enter)", self.action_open
        )
        yield SystemCommand(
            "Filter devices", "By name, owner, IP or status (/)", self.action_filter
        )
        yield SystemCommand("Clear filter", "Show every device (esc)", self.action_clear_filter)
        for column in DEVICE_COLUMNS:
            yield SystemCommand(
                f"Sort by {column.label}", "Again to reverse", partial(self.action_sort, column.key)
            )
        yield SystemCommand("Reverse sort order", "(S)", self.action_sort_reverse)
        yield SystemCommand(
            "Add device",
            "Show the agent command with a fresh token (a)",
            self.action_connect_device,
        )
        yield SystemCommand(
            "Export devices", "The devices shown, to CSV or JSON (e)", self.action_export
        )
        yield SystemCommand(
            "Reload", "Load everything from the server again (r)", self.action_reload
        )


def _matches(device: api.Device, query: str) -> bool:
    return device_matches(device, query)
