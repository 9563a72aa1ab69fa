"""`?`: the keys of the screen underneath, and what its parts mean."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

GENERAL = [
    ("?", "this help"),
    ("ctrl+p", "command palette: every action by name"),
    ("q", "quit"),
]

SCREEN_KEYS: dict[str, list[tuple[str, str]]] = {
    "DashboardScreen": [
        ("↑ ↓ pgup pgdn home end", "move in the device table"),
        ("enter", "open the device under the cursor"),
        ("/", "filter by name, owner, IP or status (words AND); esc clears"),
        ("s / S", "sort by the next column / reverse the order"),
        ("1 … 9", "sort by column 1 … 9 (again: reverse); or click a header"),
        ("a", "connect a device: the agent command with a fresh enrollment token"),
        ("e", "export the devices shown (CSV or JSON)"),
        ("r", "reload everything from the server"),
    ],
    "DeviceScreen": [
        ("esc", "back to the fleet"),
        ("c / d / h", "Connections, Destinations, History tab"),
        ("/", "filter by IP, port or process"),
        ("p", "protocol filter: all → TCP → UDP"),
        ("t", "state filter: next state"),
        ("x", "clear the filters"),
        ("s / S", "sort by the next column / reverse the order"),
        ("e", "export the current tab under the current filter"),
        ("r", "reload from the server"),
    ],
    "LoginScreen": [
        ("tab / shift+tab", "next / previous field"),
        ("enter", "log in (or register)"),
        ("ctrl+r", "switch between logging in and registering"),
        ("esc", "quit"),
    ],
}

NOTES = {
    "DashboardScreen": (
        "Rows update in place as reports arrive; the selected device stays where it is on "
        "screen. Rates are bytes per second over the last report interval. A device is "
        "offline when it missed about three report intervals."
    ),
    "DeviceScreen": (
        "New connections are highlighted in green for a few seconds; closed ones turn red "
        "and fade out, then move to History. Rate is bytes per second in both directions "
        "between the last two reports; '-' means the agent cannot count bytes on that device "
        "(see Capabilities in the header)."
    ),
}


class HelpScreen(ModalScreen[None]):
    """Keys and notes for the screen it was opened over."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark", "dismiss", "Close", id="help.close"),
    ]

    def __init__(self, under: Screen[Any]) -> None:
        super().__init__()
        self.under = type(under).__name__

    def compose(self) -> ComposeResult:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column()
        for key, what in [*SCREEN_KEYS.get(self.under, []), *GENERAL]:
            table.add_row(key, what)
        with VerticalScroll(id="help-box", classes="dialog"):
            yield Static("Keys", classes="dialog-title")
            yield Static(table)
            if self.under in NOTES:
                yield Static(Text(NOTES[self.under], style="dim"), id="help-notes")
            yield Static(Text("esc closes this help", style="dim italic"))

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(result)
