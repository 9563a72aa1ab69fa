"""One device: header, traffic over the last hour, live connections, destinations, history."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar, cast

import msgspec
from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, Select, Sparkline, Static, TabbedContent, TabPane
from textual.worker import Worker

from smartmon import api, wire
from smartmon.client import AsyncClient
from smartmon.tui.columns import (
    CONNECTION_COLUMNS,
    CONNECTION_FIELDS,
    DESTINATION_COLUMNS,
    DESTINATION_FIELDS,
    HISTORY_COLUMNS,
    ConnFilter,
    ConnKey,
    ConnRow,
    DestKey,
    conn_key,
    connection_export,
    dest_key,
    destination_export,
    destination_matches,
    merge,
    row_key,
    status_text,
)
from smartmon.tui.export import ExportError, write_rows
from smartmon.tui.screens.export import ExportChoice, ExportScreen
from smartmon.tui.stream import FeedState
from smartmon.tui.units import human_bytes, human_rate, local_datetime, relative
from smartmon.tui.widgets.live_table import LiveTable
from smartmon.tui.widgets.status import Banner

if TYPE_CHECKING:
    from smartmon.tui.app import SmartmonApp

ConnTable = LiveTable[ConnKey, ConnRow]
DestTable = LiveTable[DestKey, api.Destination]

TRAFFIC_WINDOW_S = 3600.0
DESTINATIONS_REFRESH_S = 5.0  # while the Destinations tab shows and connections change
CONNECTION_LIMIT = 10_000
HISTORY_LIMIT = 1000
PROTOCOLS = ("TCP", "UDP")
STATES = tuple(sorted(wire.TCP_STATES | wire.UDP_STATES))
TABS = {"c": "tab-connections", "d": "tab-destinations", "h": "tab-history"}


class DeviceScreen(Screen[None]):
    """Everything about one device, live."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", id="device.back"),
        Binding("c", "tab('c')", "Connections", id="device.connections", show=False),
        Binding("d", "tab('d')", "Destinations", id="device.destinations", show=False),
        Binding("h", "tab('h')", "History", id="device.history", show=False),
        Binding("slash", "filter", "Filter", id="device.filter"),
        Binding("p", "cycle_protocol", "Protocol", id="device.protocol"),
        Binding("t", "cycle_state", "State", id="device.state"),
        Binding("x", "clear_filters", "Clear filters", id="device.clear", show=False),
        Binding("s", "sort_next", "Sort", id="device.sort"),
        Binding("S", "sort_reverse", "Reverse", id="device.reverse", show=False),
        Binding("e", "export", "Export", id="device.export"),
        Binding("r", "reload", "Reload", id="device.reload"),
    ]

    def __init__(self, device: api.Device) -> None:
        super().__init__()
        self.device = device
        self.filters = ConnFilter()
        self.loaded = False
        self.history_loaded = False
        self.destinations_stale = False
        self.destinations_loaded_at = 0.0
        # (time, bytes in, bytes out) per report over the last hour
        self.traffic: deque[tuple[float, int | None, int | None]] = deque()

    @property
    def smartmon(self) -> SmartmonApp:
        return cast("SmartmonApp", self.app)

    @property
    def connections(self) -> ConnTable:
        """The live connections table."""
        return cast(ConnTable, self.query_one("#connections", LiveTable))

    @property
    def destinations(self) -> DestTable:
        """The destinations table."""
        return cast(DestTable, self.query_one("#destinations", LiveTable))

    @property
    def history(self) -> ConnTable:
        """The closed connections table."""
        return cast(ConnTable, self.query_one("#history", LiveTable))

    def compose(self) -> ComposeResult:
        clock = self.smartmon.clock
        yield Header(show_clock=False, icon="◉")
        yield Banner(self.smartmon.server)
        yield Static(id="device-header")
        with Vertical(id="traffic"):
            with Horizontal(classes="spark-row"):
                yield Static("In ", classes="spark-label")
                yield Sparkline([], id="spark-in", summary_function=max)
                yield Static("", id="spark-in-total", classes="spark-total")
            with Horizontal(classes="spark-row"):
                yield Static("Out", classes="spark-label")
                yield Sparkline([], id="spark-out", summary_function=max)
                yield Static("", id="spark-out-total", classes="spark-total")
        with Horizontal(id="conn-filters"):
            yield Select(
                [(p, p) for p in PROTOCOLS], prompt="Protocol: all", id="protocol", compact=True
            )
            yield Select([(s, s) for s in STATES], prompt="State: all", id="state", compact=True)
            yield Input(id="conn-text", placeholder="/ filter: IP, port or process")
            yield Static("", id="conn-count")
        with TabbedContent(initial="tab-connections", id="tabs"):
            with TabPane("Connections", id="tab-connections"):
                yield LiveTable(
                    CONNECTION_COLUMNS, row_key, clock=clock, sort="remote", id="connections"
                )
            with TabPane("Destinations", id="tab-destinations"):
                yield LiveTable(
                    DESTINATION_COLUMNS,
                    dest_key,
                    clock=clock,
                    sort="bytes_in",
                    reverse=True,
                    id="destinations",
                )
            with TabPane("History", id="tab-history"):
                yield LiveTable(
                    HISTORY_COLUMNS, row_key, clock=clock, sort="closed", reverse=True, id="history"
                )
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = self.device.device_name
        self._show_header()
        self._show_traffic()
        self.connections.focus()
        self.show_feed_state(self.smartmon.feed_state)
        if self.smartmon.feed is not None:
            self.smartmon.feed.subscribe([self.device.id])
        self.load()
        self.set_interval(1.0, self._tick)
        self.set_interval(self.smartmon.poll_every_s, self._poll)

    def on_unmount(self) -> None:
        if self.smartmon.feed is not None:
            self.smartmon.feed.subscribe([])

    def _tick(self) -> None:
        if (
            self.destinations_stale
            and self._active_tab() == "tab-destinations"
            and time.monotonic() - self.destinations_loaded_at > DESTINATIONS_REFRESH_S
        ):
            self.load_destinations()
        self._show_header()
        self._visible_table().refresh_visible()

    def _poll(self) -> None:
        feed = self.smartmon.feed
        if feed is not None and feed.polling:
            self.load()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """Worker messages do not bubble: failures go to the app's one handler."""
        self.smartmon.on_worker_state_changed(event)

    # ---- loading ------------------------------------------------------------------------------

    @work(exclusive=True, group="device-load", exit_on_error=False)
    async def load(self) -> None:
        """Load the device (connections, traffic, destinations) over REST."""
        session = self.smartmon.session
        if session is None:
            return
        call = AsyncClient.device(session.token, self.device.id, {"limit": CONNECTION_LIMIT})
        detail = msgspec.convert(await session.client.send(call), api.DeviceDetailResponse).data
        self.device = api.Device(**{f: getattr(detail, f) for f in api.Device.__struct_fields__})
        self._apply_snapshot(detail.connections)
        self._show_destinations(detail.destinations)
        self.traffic = deque((s.t.timestamp(), s.bytes_in, s.bytes_out) for s in detail.traffic)
        self.loaded = True
        self._show_header()
        self._show_traffic()
        self._show_count()
        if self.history_loaded or self._active_tab() == "tab-history":
            self.load_history()

    def _show_destinations(self, destinations: list[api.Destination]) -> None:
        self.destinations.replace_all(destinations)
        self.destinations_stale = False
        self.destinations_loaded_at = time.monotonic()

    @work(exclusive=True, group="device-destinations", exit_on_error=False)
    async def load_destinations(self) -> None:
        """Reload the destinations (they change with every connection event)."""
        session = self.smartmon.session
        if session is None:
            return
        self.destinations_loaded_at = time.monotonic()
        call = AsyncClient.device(session.token, self.device.id, {"limit": 1})
        detail = msgspec.convert(await session.client.send(call), api.DeviceDetailResponse).data
        self._show_destinations(detail.destinations)
        self._show_count()

    @work(exclusive=True, group="device-history", exit_on_error=False)
    async def load_history(self) -> None:
        """Load closed connections (newest first)."""
        session = self.smartmon.session
        if session is None:
            return
        call = AsyncClient.device(
            session.token, self.device.id, {"closed": "true", "limit": HISTORY_LIMIT}
        )
        detail = msgspec.convert(await session.client.send(call), api.DeviceDetailResponse).data
        self.history.replace_all(ConnRow(c) for c in detail.connections)
        self.history_loaded = True
        self._show_count()

    def _apply_snapshot(self, connections: list[api.ConnectionOut]) -> None:
        """A full list of open connections: new ones light up, missing ones fade out."""
        table = self.connections
        fresh = {conn_key(c): c for c in connections}
        if not self.loaded:
            table.replace_all(ConnRow(c) for c in connections)
            return
        for key in [k for k in table.records if k not in fresh and table.marked(k) != "closed"]:
            table.mark(key, "closed", remove=True)
        for key, conn in fresh.items():
            old = table.get(key)
            table.upsert(merge(old, conn), mark=None if old is not None else "new")

    # ---- live data ----------------------------------------------------------------------------

    def apply_events(self, events: list[api.StreamEvent]) -> None:
        """Apply stream events that concern this device."""
        my_id = self.device.id
        for event in events:
            if isinstance(event, api.ConnectionsEvent) and event.device_id == my_id:
                self._apply_connections(event)
            elif isinstance(event, api.DeviceEvent) and event.device.id == my_id:
                self._device_changed(event.device)
            elif isinstance(event, api.HelloEvent):
                mine = next((d for d in event.devices if d.id == my_id), None)
                if mine is None and self.smartmon.feed_state.status != "polling":
                    self._removed()
                    return
                if mine is not None:
                    self._device_changed(mine)
                if not (self.smartmon.feed is not None and self.smartmon.feed.polling):
                    self.load()  # the stream was down: connection events were missed
            elif isinstance(event, api.DeviceRemovedEvent) and event.device_id == my_id:
                self._removed()
                return
            elif isinstance(event, api.ResyncEvent):
                self.load()
        self.query_one(Banner).last_data = time.time()
        self._show_count()

    def _apply_connections(self, event: api.ConnectionsEvent) -> None:
        table = self.connections
        self.destinations_stale = True
        for conn in event.opened:
            table.upsert(merge(table.get(conn_key(conn)), conn), mark="new")
        for conn in event.changed:
            key = conn_key(conn)
            table.upsert(
                merge(table.get(key), conn), mark="new" if table.marked(key) == "new" else None
            )
        for conn in event.closed:
            key = conn_key(conn)
            old = table.get(key)
            row = merge(old, conn)
            if old is not None:
                table.upsert(row)
                table.mark(key, "closed", remove=True)
            if self.history_loaded:
                self.history.upsert(row, mark="new")

    def _device_changed(self, device: api.Device) -> None:
        old = self.device
        self.device = device
        if device.last_seen is not None and (
            old.last_seen is None or device.last_seen > old.last_seen
        ):
            delta_in = device.bytes_in - old.bytes_in if device.bytes_in >= old.bytes_in else None
            delta_out = (
                device.bytes_out - old.bytes_out if device.bytes_out >= old.bytes_out else None
            )
            self.traffic.append((device.last_seen.timestamp(), delta_in, delta_out))
            self._show_traffic()
        self._show_header()

    def _removed(self) -> None:
        self.notify(f"{self.device.device_name} was deleted on the server.", severity="warning")
        self.dismiss()

    def show_feed_state(self, state: FeedState) -> None:
        """Show trouble with the server in the banner."""
        self.query_one(Banner).show_state(state)

    # ---- showing ------------------------------------------------------------------------------

    def _show_header(self) -> None:
        d = self.device
        now = self.smartmon.clock()
        agent = d.agent
        caps = agent.capabilities
        grid = Table.grid(padding=(0, 3))
        for _ in range(3):
            grid.add_column()
        title = Text.assemble(
            status_text(d.status), "  ", (d.device_name, "bold"), f"  ({d.username})"
        )
        grid.add_row(title, f"OS: {agent.os or '-'}", f"Hostname: {agent.hostname or '-'}")
        grid.add_row(
            f"Agent: {agent.version or '-'}",
            f"Registered: {local_datetime(d.registered_at)}",
            f"Last seen: {relative(d.last_seen, now)} (every {d.interval_s:g}s)",
        )
        grid.add_row(
            f"Connections: {d.connection_count}",
            f"Traffic: in {human_rate(d.bytes_in_rate)}, out {human_rate(d.bytes_out_rate)}",
            f"Dropped reports: {d.dropped_reports}"
            + ("" if d.key_active else "  (device key revoked)"),
        )
        parts: list[str | tuple[str, str]] = ["Capabilities: "]
        if caps is None:
            parts.append(("unknown (no report yet)", "dim"))
        else:
            parts += [
                f"{caps.collector} collector · ",
                ("byte counters ✓", "green") if caps.counters else ("no byte counters ✗", "yellow"),
                " · ",
                (f"processes: {caps.processes}", "green" if caps.processes == "all" else "yellow"),
                " · ",
                ("close events ✓", "green")
                if caps.close_events
                else ("no close events ✗", "yellow"),
            ]
        lines: list[Any] = [grid, Text.assemble(*parts)]
        if caps is not None and caps.missing:
            lines.append(Text("Missing: " + "; ".join(caps.missing), style="yellow"))
        from rich.console import Group

        self.query_one("#device-header", Static).update(Group(*lines))

    def _show_traffic(self) -> None:
        now = self.smartmon.clock()
        while self.traffic and self.traffic[0][0] < now - TRAFFIC_WINDOW_S:
            self.traffic.popleft()
        ins = [float(s[1] or 0) for s in self.traffic]
        outs = [float(s[2] or 0) for s in self.traffic]
        unknown = bool(self.traffic) and all(s[1] is None for s in self.traffic)
        self.query_one("#spark-in", Sparkline).data = [] if unknown else ins or [0.0]
        self.query_one("#spark-out", Sparkline).data = [] if unknown else outs or [0.0]
        for which, values in (("in", ins), ("out", outs)):
            total = (
                "no counters"
                if unknown
                else f"{human_bytes(sum(values))} in 1 h · peak {human_bytes(max(values, default=0))}/report"
            )
            self.query_one(f"#spark-{which}-total", Static).update(total)

    def _show_count(self) -> None:
        table = self._visible_table()
        what = {
            "tab-connections": "connections",
            "tab-destinations": "destinations",
            "tab-history": "closed",
        }[self._active_tab()]
        text = (
            f"{len(table)} {what}"
            if not self.filters.active
            else f"{len(table)} of {table.total} {what}"
        )
        self.query_one("#conn-count", Static).update(text)

    def _active_tab(self) -> str:
        return self.query_one("#tabs", TabbedContent).active or "tab-connections"

    def _visible_table(self) -> LiveTable[Any, Any]:
        tables: dict[str, LiveTable[Any, Any]] = {
            "tab-connections": self.connections,
            "tab-destinations": self.destinations,
            "tab-history": self.history,
        }
        return tables[self._active_tab()]

    @on(TabbedContent.TabActivated, "#tabs")
    def _tab_changed(self) -> None:
        if self._active_tab() == "tab-history" and not self.history_loaded:
            self.load_history()
        if self._active_tab() == "tab-destinations" and self.destinations_stale:
            self.load_destinations()
        self._visible_table().focus()
        self._show_count()

    # ---- filters ------------------------------------------------------------------------------

    def _apply_filters(self) -> None:
        flt = self.filters
        self.connections.set_filter(flt if flt.active else None)
        self.history.set_filter(flt if flt.active else None)
        self.destinations.set_filter(partial(destination_matches, flt=flt) if flt.active else None)
        self._show_count()

    @on(Select.Changed, "#protocol")
    def _protocol_changed(self, event: Select.Changed) -> None:
        value = event.value if isinstance(event.value, str) else None
        self.filters = ConnFilter(value, self.filters.state, self.filters.text)
        self._apply_filters()

    @on(Select.Changed, "#state")
    def _state_changed(self, event: Select.Changed) -> None:
        value = event.value if isinstance(event.value, str) else None
        self.filters = ConnFilter(self.filters.protocol, value, self.filters.text)
        self._apply_filters()

    @on(Input.Changed, "#conn-text")
    def _text_changed(self, event: Input.Changed) -> None:
        self.filters = ConnFilter(self.filters.protocol, self.filters.state, event.value)
        self._apply_filters()

    @on(Input.Submitted, "#conn-text")
    def _text_done(self) -> None:
        self._visible_table().focus()

    def action_filter(self) -> None:
        """Type a filter: IP, port or process."""
        self.query_one("#conn-text", Input).focus()

    def action_cycle_protocol(self) -> None:
        """Protocol filter: all, TCP, UDP."""
        options: list[str | None] = [None, *PROTOCOLS]
        nxt = options[(options.index(self.filters.protocol) + 1) % len(options)]
        select = cast(Select[str], self.query_one("#protocol", Select))
        if nxt is None:
            select.clear()
        else:
            select.value = nxt

    def action_cycle_state(self) -> None:
        """State filter: all, then each state present among the connections."""
        present = sorted({r.conn.state for r in self.connections.records.values()})
        options: list[str | None] = [None, *present]
        current = self.filters.state
        nxt = options[(options.index(current) + 1) % len(options)] if current in options else None
        select = cast(Select[str], self.query_one("#state", Select))
        if nxt is None:
            select.clear()
        else:
            select.value = nxt

    def action_clear_filters(self) -> None:
        """Show everything."""
        cast(Select[str], self.query_one("#protocol", Select)).clear()
        cast(Select[str], self.query_one("#state", Select)).clear()
        self.query_one("#conn-text", Input).value = ""
        self.filters = ConnFilter()
        self._apply_filters()

    # ---- actions ------------------------------------------------------------------------------

    def action_back(self) -> None:
        """Back to the fleet (from a filter field: back to the table first)."""
        if isinstance(self.focused, Input):
            self._visible_table().focus()
            return
        self.dismiss()

    def action_tab(self, which: str) -> None:
        """Switch tabs."""
        self.query_one("#tabs", TabbedContent).active = TABS[which]

    def action_sort_next(self) -> None:
        """Sort the current table by its next column."""
        table = self._visible_table()
        keys = [c.key for c in table.columns]
        table.sort_by(keys[(keys.index(table.sort_column) + 1) % len(keys)], reverse=False)

    def action_sort_reverse(self) -> None:
        """Reverse the current table's order."""
        table = self._visible_table()
        table.sort_by(table.sort_column, reverse=not table.sort_reverse)

    def action_sort(self, column: str) -> None:
        """Sort the current table by a column."""
        self._visible_table().sort_by(column)

    def action_reload(self) -> None:
        """Reload from the server."""
        self.load()

    def action_export(self) -> None:
        """Export the current tab, under the current filter."""
        tab = self._active_tab()
        what = {
            "tab-connections": "connections",
            "tab-destinations": "destinations",
            "tab-history": "closed-connections",
        }[tab]
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        name = f"smartmon-{_safe(self.device.device_name)}-{what}-{stamp}.csv"
        count = len(self._visible_table())
        self.app.push_screen(
            ExportScreen(what.replace("-", " "), count, name), partial(self._export, tab)
        )

    def _export(self, tab: str, choice: ExportChoice | None) -> None:
        if choice is None:
            return
        if tab == "tab-destinations":
            rows = [destination_export(d) for d in self.destinations.shown()]
            fields: tuple[str, ...] = DESTINATION_FIELDS
        else:
            table = self.history if tab == "tab-history" else self.connections
            rows = [connection_export(r) for r in table.shown()]
            fields = CONNECTION_FIELDS
        try:
            path = write_rows(choice.path, choice.format, rows, fields)
        except ExportError as exc:
            self.notify(str(exc), title="Export failed", severity="error")
            return
        self.notify(f"{len(rows)} rows written to {path}", title="Exported")

    def palette_commands(self) -> Iterable[SystemCommand]:
        """Every device screen action by name."""
        yield SystemCommand("Back to the fleet", "(esc)", self.action_back)
        yield SystemCommand(
            "Connections tab", "Open connections (c)", partial(self.action_tab, "c")
        )
        yield SystemCommand(
            "Destinations tab", "Remote endpoints (d)", partial(self.action_tab, "d")
        )
        yield SystemCommand("History tab", "Closed connections (h)", partial(self.action_tab, "h"))
        yield SystemCommand("Filter connections", "By IP, port or process (/)", self.action_filter)
        yield SystemCommand("Protocol filter", "All → TCP → UDP (p)", self.action_cycle_protocol)
        yield SystemCommand("State filter", "Next state (t)", self.action_cycle_state)
        yield SystemCommand("Clear filters", "(x)", self.action_clear_filters)
        for column in self._visible_table().columns:
            yield SystemCommand(
                f"Sort by {column.label}", "Again to reverse", partial(self.action_sort, column.key)
            )
        yield SystemCommand("Reverse sort order", "(S)", self.action_sort_reverse)
        yield SystemCommand(
            "Export this tab", "Under the current filter, to CSV or JSON (e)", self.action_export
        )
        yield SystemCommand("Reload device", "From the server (r)", self.action_reload)


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in name)[:40] or "device"
