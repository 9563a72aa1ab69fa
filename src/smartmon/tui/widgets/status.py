"""Small status widgets: stat cards and the connection-trouble banner."""

from __future__ import annotations

import time

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Static

from smartmon import api
from smartmon.tui.stream import FeedState
from smartmon.tui.units import clock_time, human_rate


class StatCard(Static):
    """A labelled number."""

    def __init__(self, label: str, *, id: str) -> None:
        super().__init__(id=id, classes="stat-card")
        self.label = label
        self.set_value("-")

    def set_value(self, value: str) -> None:
        """Show a new value under the label."""
        self.update(Text.assemble((value, "bold"), "\n", (self.label, "dim")))


class StatCards(Horizontal):
    """Fleet totals: devices, online, offline, connections, traffic in and out."""

    CARDS = (
        ("total", "devices"),
        ("online", "online"),
        ("offline", "offline"),
        ("connections", "connections"),
        ("in", "in"),
        ("out", "out"),
    )

    def compose(self) -> ComposeResult:
        for key, label in self.CARDS:
            yield StatCard(label, id=f"stat-{key}")

    def show(self, stats: api.FleetStats) -> None:
        """Show fleet stats."""
        values = {
            "total": str(stats.total_devices),
            "online": str(stats.online_devices),
            "offline": str(stats.offline_devices),
            "connections": str(stats.active_connections),
            "in": human_rate(stats.bytes_in_rate),
            "out": human_rate(stats.bytes_out_rate),
        }
        for key, value in values.items():
            self.query_one(f"#stat-{key}", StatCard).set_value(value)
        self.query_one("#stat-offline", StatCard).set_class(stats.offline_devices > 0, "bad")
        self.query_one("#stat-online", StatCard).set_class(stats.online_devices > 0, "good")


class Banner(Static):
    """Says when the server cannot be reached, what is on screen, and when the next try is."""

    def __init__(self, server: str, *, id: str = "banner") -> None:
        super().__init__("", id=id, classes="hidden")
        self.server = server
        self.state = FeedState("connecting")
        self.last_data: float | None = None

    def on_mount(self) -> None:
        self.set_interval(1.0, self._tick)

    def show_state(self, state: FeedState) -> None:
        """Show (or hide) the banner for a feed state."""
        self.state = state
        self._tick()

    def _tick(self) -> None:
        state = self.state
        if state.status == "live" or (state.status == "connecting" and state.trouble_since is None):
            self.set_class(True, "hidden")
            return
        if state.status == "polling":
            self.set_class(False, "hidden")
            self.set_class(False, "trouble")
            self.update(
                f"ⓘ {self.server} has no live stream: polling every few seconds (r reloads now)."
            )
            return
        self.set_class(False, "hidden")
        self.set_class(True, "trouble")
        shown = f" Showing data from {clock_time(self.last_data)}." if self.last_data else ""
        if state.status == "retrying" and state.retry_at is not None:
            wait = max(0, round(state.retry_at - time.time()))
            retry = f" Retrying in {wait}s." if wait else " Retrying…"
        else:
            retry = " Reconnecting…"
        reason = f" ({state.detail})" if state.detail else ""
        self.update(f"⚠ Cannot reach the server at {self.server}{reason}.{shown}{retry}")
