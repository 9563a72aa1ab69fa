"""The live table: order, filter, and an unmoved selection while rows change around it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from textual.app import App, ComposeResult

from smartmon.tui.widgets.live_table import Column, LiveTable


@dataclass(frozen=True)
class Item:
    key: int
    name: str
    value: float | None


COLUMNS = [
    Column[Item]("name", "Name", lambda r, now: r.name, lambda r: r.name, 10),
    Column[Item]("value", "Value", lambda r, now: "-" if r.value is None else f"{r.value:g}", lambda r: r.value, 8, align="right"),
]  # fmt: skip


class TableApp(App[None]):
    def compose(self) -> ComposeResult:
        yield LiveTable(COLUMNS, lambda r: r.key)


def table_of(app: TableApp) -> LiveTable[int, Item]:
    return app.query_one(LiveTable)


def shown(table: LiveTable[int, Item]) -> list[str]:
    return [r.name for r in table.shown()]


async def test_sorting_keeps_none_last_in_both_directions() -> None:
    app = TableApp()
    async with app.run_test(size=(40, 10)):
        table = table_of(app)
        table.replace_all([Item(1, "b", 2), Item(2, "a", None), Item(3, "c", 1)])
        assert shown(table) == ["a", "b", "c"]
        table.sort_by("value")
        assert shown(table) == ["c", "b", "a"]
        table.sort_by("value")  # again: descending
        assert table.sort_reverse and shown(table) == ["b", "c", "a"]
        table.upsert(Item(4, "d", 5))
        assert shown(table) == ["d", "b", "c", "a"]


async def test_selection_keeps_its_place_on_screen_while_rows_move() -> None:
    app = TableApp()
    async with app.run_test(size=(40, 12)) as pilot:
        table = table_of(app)
        table.replace_all(Item(i, f"n{i:04d}", float(i)) for i in range(1000))
        table.focus()
        table.cursor_row = 500
        await pilot.pause()
        screen_row = table.cursor_row - table.scroll_offset.y
        table.upsert(Item(5000, "a-first", 0.0))  # inserted far above the view
        table.discard(999)  # removed far below
        table.upsert(Item(10, "zzz-last", 10.0))  # moved from above to the end
        await pilot.pause()
        assert table.cursor_key == 500, "the cursor stays on its row"
        assert table.cursor_row - table.scroll_offset.y == screen_row, "at the same place on screen"
        table.upsert(Item(500, "aaa", 500.0))  # the selected row itself moves to the top
        await pilot.pause()
        assert table.cursor_key == 500 and table.cursor_row == 1


async def test_filter_and_updates_that_enter_or_leave_it() -> None:
    app = TableApp()
    async with app.run_test(size=(40, 10)):
        table = table_of(app)
        table.replace_all([Item(1, "alpha", 1), Item(2, "beta", 2), Item(3, "alps", 3)])
        table.set_filter(lambda r: r.name.startswith("al"))
        assert shown(table) == ["alpha", "alps"] and table.total == 3
        table.upsert(Item(2, "alba", 2))  # now matches
        assert shown(table) == ["alba", "alpha", "alps"]
        table.upsert(Item(1, "omega", 1))  # no longer matches
        assert shown(table) == ["alba", "alps"]
        table.set_filter(None)
        assert shown(table) == ["alba", "alps", "omega"]


async def test_marks_highlight_then_expire_or_remove(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(LiveTable, "MARK_SECONDS", 0.3)
    app = TableApp()
    async with app.run_test(size=(40, 10)) as pilot:
        table = table_of(app)
        table.replace_all([Item(1, "a", 1)])
        table.upsert(Item(2, "b", 2), mark="new")
        table.mark(1, "closed", remove=True)
        assert table.marked(2) == "new" and table.marked(1) == "closed"
        await pilot.pause(0.8)
        assert table.marked(2) is None and shown(table) == ["b"]


async def test_keys_and_header_click() -> None:
    selected: list[Any] = []

    class Watching(TableApp):
        def on_live_table_selected(self, event: LiveTable.Selected) -> None:
            selected.append(event.key)

    app = Watching()
    async with app.run_test(size=(40, 8)) as pilot:
        table = table_of(app)
        table.replace_all(Item(i, f"n{i:02d}", float(i)) for i in range(30))
        table.focus()
        await pilot.press("down", "down", "end")
        assert table.cursor_row == 29 and table.scroll_offset.y > 0
        await pilot.press("home", "pagedown")
        assert table.cursor_row > 0
        await pilot.click(LiveTable, offset=(13, 0))  # the Value header
        assert table.sort_column == "value"
        await pilot.click(LiveTable, offset=(2, 2))
        await pilot.click(LiveTable, offset=(2, 2))
        assert selected == [table.cursor_key]
