"""A virtual table for live data: sorted, filtered, updated row by row in O(log n).

Textual's DataTable recomputes offsets over every row on each cell update (about 100 ms
per update at 10,000 rows), so the fleet and connection tables use this Line API widget
instead. It keeps records (not rendered cells), renders only the visible lines, keeps the
order with bisect, and keeps the selected row where it is on screen while others move.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Literal, TypeVar

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.timer import Timer

K = TypeVar("K", bound=Hashable)
R = TypeVar("R")

Clock = Callable[[], float]


@dataclass(frozen=True)
class Column(Generic[R]):
    """How one column shows, sorts and exports a record."""

    key: str
    label: str
    render: Callable[[R, float], str | Text]  # (record, now) -> cell
    sort_value: Callable[[R], Any]  # None sorts last in both directions
    width: int
    flex: int = 0  # share of the spare width
    align: Literal["left", "right"] = "left"


class _Desc:
    """Reverses the order of a comparable value (for descending bisect)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __lt__(self, other: _Desc) -> bool:
        return bool(other.value < self.value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Desc) and bool(self.value == other.value)

    __hash__ = None  # type: ignore[assignment]


@dataclass
class _Mark:
    kind: str  # "new" or "closed"
    start: float
    until: float
    remove: bool


class LiveTable(ScrollView, Generic[K, R], can_focus=True):
    """Rows of records with a fixed header, a row cursor, sorting, filtering and marks."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "live-table--header",
        "live-table--header-sorted",
        "live-table--cursor",
        "live-table--cursor-blurred",
        "live-table--new",
        "live-table--closed",
        "live-table--faded",
        "live-table--odd",
    }

    DEFAULT_CSS = """
    LiveTable { height: 1fr; scrollbar-gutter: stable; }
    LiveTable > .live-table--header { text-style: bold; background: $panel; color: $text; }
    LiveTable > .live-table--header-sorted { text-style: bold underline; background: $panel; color: $accent; }
    LiveTable > .live-table--cursor { background: $block-cursor-background; color: $block-cursor-foreground; }
    LiveTable > .live-table--cursor-blurred { background: $block-cursor-blurred-background; }
    LiveTable > .live-table--new { background: $success 35%; }
    LiveTable > .live-table--closed { background: $error 25%; text-style: strike; }
    LiveTable > .live-table--faded { color: $text-disabled; text-style: strike; }
    LiveTable > .live-table--odd { background: $surface-lighten-1 30%; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "cursor_up", "Up", show=False),
        Binding("down,j", "cursor_down", "Down", show=False),
        Binding("pageup", "page_up", "Page up", show=False),
        Binding("pagedown", "page_down", "Page down", show=False),
        Binding("home,g", "first", "First", show=False),
        Binding("end,G", "last", "Last", show=False),
        Binding("left", "scroll_left", "Left", show=False),
        Binding("right", "scroll_right", "Right", show=False),
    ]

    MARK_SECONDS = 3.0

    cursor_row: reactive[int] = reactive(0, always_update=True, init=False)

    class Selected(Message):
        """Enter (or a click on the cursor row) on a row."""

        def __init__(self, table: LiveTable[Any, Any], key: Any) -> None:
            super().__init__()
            self.table = table
            self.key = key

        @property
        def control(self) -> LiveTable[Any, Any]:
            return self.table

    class Sorted(Message):
        """The sort column or direction changed (header click or `sort_by`)."""

        def __init__(self, table: LiveTable[Any, Any], column: str, reverse: bool) -> None:
            super().__init__()
            self.table = table
            self.column = column
            self.reverse = reverse

        @property
        def control(self) -> LiveTable[Any, Any]:
            return self.table

    def __init__(
        self,
        columns: list[Column[R]],
        key: Callable[[R], K],
        *,
        clock: Clock = time.time,
        sort: str | None = None,
        reverse: bool = False,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.columns = columns
        self._columns_by_key = {c.key: c for c in columns}
        self._key = key
        self.clock = clock
        self.sort_column = sort or columns[0].key
        self.sort_reverse = reverse
        self._records: dict[K, R] = {}
        self._order: list[K] = []  # the displayed rows, in order
        self._sort_keys: list[Any] = []  # parallel to _order, ascending, for bisect
        self._filter: Callable[[R], bool] | None = None
        self._marks: dict[K, _Mark] = {}
        self._mark_timer: Timer | None = None
        self._widths = [c.width for c in columns]
        self._fitted_width = 0
        self._style_cache: dict[str, Style] = {}

    # ---- reading ----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._order)

    @property
    def total(self) -> int:
        """Records held, shown or filtered out."""
        return len(self._records)

    @property
    def records(self) -> dict[K, R]:
        """Every record by key (do not modify)."""
        return self._records

    def shown(self) -> Iterator[R]:
        """The displayed records, in display order."""
        return (self._records[k] for k in self._order)

    def shown_keys(self) -> list[K]:
        """The displayed keys, in display order."""
        return list(self._order)

    @property
    def cursor_key(self) -> K | None:
        """The key of the row under the cursor."""
        if 0 <= self.cursor_row < len(self._order):
            return self._order[self.cursor_row]
        return None

    def get(self, key: K) -> R | None:
        """The record with a key, shown or not."""
        return self._records.get(key)

    def index_of(self, key: K) -> int | None:
        """The display position of a key, if shown."""
        record = self._records.get(key)
        if record is None:
            return None
        sort_key = self._sort_key(key, record)
        i = bisect.bisect_left(self._sort_keys, sort_key)
        if i < len(self._order) and self._order[i] == key:
            return i
        return None

    def cell_text(self, row: int, column: str) -> str:
        """The plain text of a displayed cell (as the user sees it)."""
        record = self._records[self._order[row]]
        cell = self._columns_by_key[column].render(record, self.clock())
        return cell.plain if isinstance(cell, Text) else cell

    # ---- ordering ---------------------------------------------------------------------------

    def _sort_key(self, key: K, record: R) -> Any:
        value = self._columns_by_key[self.sort_column].sort_value(record)
        if value is None:
            return (True, key) if not self.sort_reverse else (True, _Desc(key))
        pair = (value, key)
        return (False, _Desc(pair) if self.sort_reverse else pair)

    def _rebuild(self) -> None:
        """Filter and sort everything again, keeping the cursor row and its screen offset."""
        keep = self.cursor_key
        offset = self.cursor_row - self.scroll_offset.y
        keep_filter = self._filter
        pairs = [
            (self._sort_key(k, r), k)
            for k, r in self._records.items()
            if keep_filter is None or keep_filter(r)
        ]
        pairs.sort(key=lambda p: p[0])
        self._sort_keys = [p[0] for p in pairs]
        self._order = [p[1] for p in pairs]
        self._marks = {k: m for k, m in self._marks.items() if k in self._records}
        row = self.index_of(keep) if keep is not None else None
        self._relayout(
            row if row is not None else min(self.cursor_row, max(0, len(self._order) - 1)), offset
        )

    def sort_by(self, column: str, reverse: bool | None = None) -> None:
        """Sort by a column; without `reverse`, a second sort on the same column flips it."""
        if column not in self._columns_by_key:
            raise KeyError(column)
        if reverse is None:
            reverse = not self.sort_reverse if column == self.sort_column else False
        self.sort_column, self.sort_reverse = column, reverse
        self._rebuild()
        self.post_message(self.Sorted(self, column, reverse))

    def set_filter(self, predicate: Callable[[R], bool] | None) -> None:
        """Show only records the predicate accepts (None: all)."""
        self._filter = predicate
        self._rebuild()

    # ---- changing ---------------------------------------------------------------------------

    def replace_all(self, records: Iterable[R]) -> None:
        """Replace every record (a resync), keeping the cursor on the same key if it stays."""
        self._records = {self._key(r): r for r in records}
        self._rebuild()

    def upsert(self, record: R, mark: str | None = None) -> None:
        """Add or update one record; only its own line is redrawn unless its place changes."""
        key = self._key(record)
        old = self._records.get(key)
        self._records[key] = record
        shown_before = old is not None and self._position(key, old) is not None
        wanted = self._filter is None or self._filter(record)
        if mark is not None:
            self.mark(key, mark)
        if shown_before and wanted:
            assert old is not None
            new_sort_key = self._sort_key(key, record)
            old_sort_key = self._sort_key(key, old)
            if new_sort_key == old_sort_key:
                row = self._position(key, record)
                assert row is not None
                self._refresh_row(row)
                return
            self._move(key, old_sort_key, new_sort_key)
        elif shown_before:
            assert old is not None
            self._take_out(key, self._sort_key(key, old))
        elif wanted:
            self._put_in(key, self._sort_key(key, record))

    def discard(self, key: K) -> None:
        """Drop a record now."""
        record = self._records.pop(key, None)
        self._marks.pop(key, None)
        if record is not None:
            sort_key = self._sort_key(key, record)
            if self._position_of_sort_key(key, sort_key) is not None:
                self._take_out(key, sort_key)

    def mark(
        self, key: K, kind: str, *, remove: bool = False, seconds: float | None = None
    ) -> None:
        """Highlight a row for a moment ('new' or 'closed'); `remove` drops it afterwards."""
        now = time.monotonic()
        self._marks[key] = _Mark(kind, now, now + (seconds or self.MARK_SECONDS), remove)
        row = self.index_of(key)
        if row is not None:
            self._refresh_row(row)
        if self._mark_timer is None and self.is_mounted:
            self._mark_timer = self.set_interval(0.25, self._expire_marks)

    def marked(self, key: K) -> str | None:
        """The mark on a row, if any."""
        mark = self._marks.get(key)
        return mark.kind if mark else None

    def _expire_marks(self) -> None:
        now = time.monotonic()
        for key, mark in list(self._marks.items()):
            if now >= mark.until:
                del self._marks[key]
                if mark.remove:
                    self.discard(key)
                    continue
            row = self.index_of(key)
            if row is not None:
                self._refresh_row(row)
        if not self._marks and self._mark_timer is not None:
            self._mark_timer.stop()
            self._mark_timer = None

    def _position(self, key: K, record: R) -> int | None:
        return self._position_of_sort_key(key, self._sort_key(key, record))

    def _position_of_sort_key(self, key: K, sort_key: Any) -> int | None:
        i = bisect.bisect_left(self._sort_keys, sort_key)
        if i < len(self._order) and self._order[i] == key:
            return i
        return None

    def _visible_keys(self) -> list[K]:
        top = self.scroll_offset.y
        return self._order[top : top + self._page]

    def _move(self, key: K, old: Any, new: Any) -> None:
        before = self._visible_keys()
        keep = self.cursor_key
        offset = self.cursor_row - self.scroll_offset.y
        i = bisect.bisect_left(self._sort_keys, old)
        del self._sort_keys[i], self._order[i]
        j = bisect.bisect_left(self._sort_keys, new)
        self._sort_keys.insert(j, new)
        self._order.insert(j, key)
        cursor = self.cursor_row
        if keep == key:
            cursor = j
        else:
            cursor -= i < cursor
            cursor += j <= cursor
        self._relayout(cursor, offset, before, key)

    def _take_out(self, key: K, sort_key: Any) -> None:
        before = self._visible_keys()
        offset = self.cursor_row - self.scroll_offset.y
        i = bisect.bisect_left(self._sort_keys, sort_key)
        del self._sort_keys[i], self._order[i]
        cursor = self.cursor_row - (i < self.cursor_row)
        self._relayout(min(cursor, max(0, len(self._order) - 1)), offset, before, key)

    def _put_in(self, key: K, sort_key: Any) -> None:
        before = self._visible_keys()
        offset = self.cursor_row - self.scroll_offset.y
        j = bisect.bisect_left(self._sort_keys, sort_key)
        self._sort_keys.insert(j, sort_key)
        self._order.insert(j, key)
        cursor = self.cursor_row + (j <= self.cursor_row and len(self._order) > 1)
        self._relayout(cursor, offset, before, key)

    def _relayout(
        self, cursor: int, screen_offset: int, before: list[K] | None = None, key: K | None = None
    ) -> None:
        """After rows moved: the cursor row keeps its place on screen when it can.

        When the rows on screen are the same as `before` (the change happened off screen),
        nothing is redrawn: with 10,000 rows most changes are off screen.
        """
        top = self.scroll_offset.y
        size = Size(self._total_width(), len(self._order) + 1)
        if size != self.virtual_size:
            self.virtual_size = size
        self.set_reactive(LiveTable.cursor_row, max(0, min(cursor, len(self._order) - 1)))
        self._scroll_rows(self.cursor_row - screen_offset)
        self._keep_cursor_visible()
        after = self._visible_keys()
        scrolled = self.scroll_offset.y != top
        top = self.scroll_offset.y
        if before is None or len(before) != len(after) or scrolled:
            self.refresh()
        elif before != after:  # only the lines between the first and last difference
            first = next(i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b)
            last = next(i for i in range(len(after) - 1, -1, -1) if before[i] != after[i])
            self.refresh_lines(top + first + 1, last - first + 1)
        elif key is not None and key in before:
            self._refresh_row(top + before.index(key))

    # ---- cursor and scrolling ---------------------------------------------------------------

    @property
    def _page(self) -> int:
        return max(1, self.scrollable_content_region.height - 1)

    def _scroll_rows(self, y: int) -> None:
        limit = max(0, len(self._order) + 1 - self.scrollable_content_region.height)
        y = max(0, min(y, limit))
        if y != self.scroll_offset.y:
            self.scroll_to(y=y, animate=False, immediate=True)
            if self.scroll_offset.y != y:  # the new size is not laid out yet: once it is
                self.call_after_refresh(self.scroll_to, y=y, animate=False, immediate=True)

    def _keep_cursor_visible(self) -> None:
        top = self.scroll_offset.y
        if self.cursor_row < top:
            self._scroll_rows(self.cursor_row)
        elif self.cursor_row >= top + self._page:
            self._scroll_rows(self.cursor_row - self._page + 1)

    def validate_cursor_row(self, row: int) -> int:
        return max(0, min(row, len(self._order) - 1))

    def watch_cursor_row(self) -> None:
        self._keep_cursor_visible()
        self.refresh()

    def move_cursor(self, key: K) -> bool:
        """Put the cursor on a key's row; False when it is not shown."""
        row = self.index_of(key)
        if row is None:
            return False
        self.cursor_row = row
        return True

    def action_cursor_up(self) -> None:
        self.cursor_row -= 1

    def action_cursor_down(self) -> None:
        self.cursor_row += 1

    def action_page_up(self) -> None:
        self._scroll_rows(self.scroll_offset.y - self._page)
        self.cursor_row -= self._page

    def action_page_down(self) -> None:
        self._scroll_rows(self.scroll_offset.y + self._page)
        self.cursor_row += self._page

    def action_first(self) -> None:
        self.cursor_row = 0

    def action_last(self) -> None:
        self.cursor_row = len(self._order) - 1

    def action_select(self) -> None:
        """Post Selected for the cursor row (screens bind enter themselves)."""
        if self.cursor_key is not None:
            self.post_message(self.Selected(self, self.cursor_key))

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None:
            return
        if offset.y == 0:
            x = offset.x + self.scroll_offset.x
            for column, width in zip(self.columns, self._widths, strict=True):
                if x < width + 1:
                    self.sort_by(column.key)
                    return
                x -= width + 1
            return
        row = self.scroll_offset.y + offset.y - 1
        if row >= len(self._order):
            return
        if row == self.cursor_row and event.chain >= 1 and self.has_focus:
            self.action_select()
        else:
            self.cursor_row = row
        self.focus()

    # ---- rendering --------------------------------------------------------------------------

    def _total_width(self) -> int:
        return sum(self._widths) + len(self._widths) - 1

    def on_resize(self) -> None:
        self._fit_widths()

    def _fit_widths(self) -> None:
        base = [max(c.width, cell_len(c.label) + 2) for c in self.columns]
        self._fitted_width = max(self.scrollable_content_region.width, 1)
        spare = self._fitted_width - (sum(base) + len(base) - 1)
        shares = sum(c.flex for c in self.columns)
        if spare > 0 and shares:
            for i, column in enumerate(self.columns):
                base[i] += spare * column.flex // shares
        self._widths = base
        self.virtual_size = Size(self._total_width(), len(self._order) + 1)
        self.refresh()

    def _refresh_row(self, row: int) -> None:
        y = row - self.scroll_offset.y + 1
        if 1 <= y < self.scrollable_content_region.height:
            self.refresh_line(row + 1)

    def refresh_visible(self) -> None:
        """Redraw what is on screen (for cells that depend on the clock)."""
        self.refresh()

    def render_line(self, y: int) -> Strip:
        width = max(self.scrollable_content_region.width, 1)
        if width != self._fitted_width:
            self._fit_widths()
        scroll_x, scroll_y = self.scroll_offset
        if y == 0:
            strip = self._header_strip()
        else:
            row = scroll_y + y - 1
            if row >= len(self._order):
                return Strip.blank(width, self._style("base"))
            strip = self._row_strip(row)
        return strip.crop_extend(scroll_x, scroll_x + width, self._style("base"))

    def _header_strip(self) -> Strip:
        plain = self._style("live-table--header")
        sorted_style = self._style("live-table--header-sorted")
        arrow = " ▼" if self.sort_reverse else " ▲"
        segments: list[Segment] = []
        for i, (column, width) in enumerate(zip(self.columns, self._widths, strict=True)):
            is_sorted = column.key == self.sort_column
            label = column.label + (arrow if is_sorted else "")
            text = _fit(label, width, column.align)
            if i:
                segments.append(Segment(" ", plain))
            segments.append(Segment(text, sorted_style if is_sorted else plain))
        return Strip(segments)

    def notify_style_update(self) -> None:
        self._style_cache.clear()
        super().notify_style_update()

    def _style(self, name: str) -> Style:
        """A component style, over the widget's own (cached: computing them is costly)."""
        style = self._style_cache.get(name)
        if style is None:
            base = self.rich_style
            style = base if name == "base" else base + self.get_component_rich_style(name)
            self._style_cache[name] = style
        return style

    def _row_style(self, row: int, key: K) -> Style:
        style = self._style("live-table--odd" if row % 2 else "base")
        mark = self._marks.get(key)
        if mark is not None:
            kind = mark.kind
            if kind == "closed" and time.monotonic() > (mark.start + mark.until) / 2:
                kind = "faded"
            style += self.get_component_rich_style(f"live-table--{kind}")
        if row == self.cursor_row:
            style += self.get_component_rich_style(
                "live-table--cursor" if self.has_focus else "live-table--cursor-blurred"
            )
        return style

    def _row_strip(self, row: int) -> Strip:
        key = self._order[row]
        record = self._records[key]
        base = self._row_style(row, key)
        now = self.clock()
        segments: list[Segment] = []
        for i, (column, width) in enumerate(zip(self.columns, self._widths, strict=True)):
            if i:
                segments.append(Segment(" ", base))
            cell = column.render(record, now)
            if isinstance(cell, str):
                segments.append(Segment(_fit(cell, width, column.align), base))
            else:
                text = cell.copy()
                text.truncate(width, overflow="ellipsis")
                text.align(column.align, width)
                segments.extend(
                    Segment(s.text, base + s.style if s.style else base)
                    for s in text.render(self.app.console)
                    if s.text != "\n"
                )
        return Strip(segments)


def _fit(text: str, width: int, align: str) -> str:
    """Truncate with an ellipsis and pad to exactly `width` cells."""
    size = cell_len(text)
    if size > width:
        return set_cell_size(text, width - 1) + "…" if width > 0 else ""
    if size == width:
        return text
    pad = " " * (width - size)
    return pad + text if align == "right" else text + pad
