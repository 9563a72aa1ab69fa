"""The command that connects a device, with a fresh enrollment token."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static


class ConnectDeviceScreen(ModalScreen[None]):
    """Shows `smartmon agent --token ... --server ...`; c copies it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "close", "Close", id="connect.close"),
        Binding("c", "copy", "Copy command", id="connect.copy"),
    ]

    def __init__(self, command: str) -> None:
        super().__init__()
        self.command = command

    def compose(self) -> ComposeResult:
        with Vertical(id="connect-box", classes="dialog"):
            yield Static("Connect a device", classes="dialog-title")
            yield Static("On the device (with smartmon installed), run:")
            yield Static(Text(self.command, style="bold green"), id="agent-command")
            yield Static(
                Text(
                    "The enrollment token was created just now and is valid for 7 days; "
                    "`smartmon token list` shows it, `smartmon token revoke` ends it.",
                    style="dim",
                )
            )
            with Horizontal(classes="dialog-buttons"):
                yield Button("Copy (c)", id="connect-copy", variant="primary")
                yield Button("Close", id="connect-close")

    @on(Button.Pressed, "#connect-copy")
    def action_copy(self) -> None:
        """Copy the command to the clipboard (the terminal must allow OSC 52)."""
        self.app.copy_to_clipboard(self.command)
        self.notify("Command copied to the clipboard")

    @on(Button.Pressed, "#connect-close")
    def action_close(self) -> None:
        """Close."""
        self.dismiss(None)
