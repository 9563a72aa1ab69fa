"""Ask where to export the current view, and as what (CSV or JSON)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, RadioButton, RadioSet, Static

from smartmon.tui.export import Format, format_for


@dataclass(frozen=True)
class ExportChoice:
    """Where to write, and how."""

    path: Path
    format: Format


class ExportScreen(ModalScreen[ExportChoice | None]):
    """A file name (its extension picks the format) and a CSV/JSON switch."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="export.cancel"),
        Binding("enter", "export", "Export", id="export.ok", priority=True),
    ]

    def __init__(self, what: str, count: int, default_name: str) -> None:
        super().__init__()
        self.what = what
        self.count = count
        self.default_name = default_name

    def compose(self) -> ComposeResult:
        fmt = format_for(self.default_name) or "csv"
        with Vertical(id="export-box", classes="dialog"):
            yield Static(f"Export {self.count} {self.what}", classes="dialog-title")
            yield Static("File name (relative to the current folder, or absolute; ~ works):")
            yield Input(self.default_name, id="export-path")
            with RadioSet(id="export-format"):
                yield RadioButton("CSV", value=fmt == "csv", id="format-csv")
                yield RadioButton("JSON", value=fmt == "json", id="format-json")
            yield Static("", id="export-error", classes="error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Export", id="export-ok", variant="primary")
                yield Button("Cancel", id="export-cancel")

    def on_mount(self) -> None:
        path_input = self.query_one("#export-path", Input)
        path_input.focus()
        stem_end = len(path_input.value) - len(Path(path_input.value).suffix)
        path_input.cursor_position = stem_end

    @property
    def chosen_format(self) -> Format:
        """The format the radio buttons show."""
        return "json" if self.query_one("#format-json", RadioButton).value else "csv"

    @on(RadioSet.Changed, "#export-format")
    def _format_changed(self) -> None:
        path_input = self.query_one("#export-path", Input)
        path = Path(path_input.value)
        if format_for(path_input.value) != self.chosen_format and path.name:
            path_input.value = str(path.with_suffix("." + self.chosen_format))

    @on(Input.Changed, "#export-path")
    def _path_changed(self, event: Input.Changed) -> None:
        fmt = format_for(event.value)
        if fmt is not None and fmt != self.chosen_format:
            self.query_one(f"#format-{fmt}", RadioButton).value = True

    @on(Input.Submitted, "#export-path")
    @on(Button.Pressed, "#export-ok")
    def action_export(self) -> None:
        """Close with the choice (enter anywhere in the dialog, except on Cancel)."""
        if self.focused is not None and self.focused.id == "export-cancel":
            self.dismiss(None)
            return
        value = self.query_one("#export-path", Input).value.strip()
        if not value:
            self.query_one("#export-error", Static).update("Enter a file name.")
            return
        self.dismiss(ExportChoice(Path(value), self.chosen_format))

    @on(Button.Pressed, "#export-cancel")
    def action_cancel(self) -> None:
        """Close without exporting."""
        self.dismiss(None)
