"""PathTable: the paths page as a Line API widget, so that a key press re-renders one or two lines.

Textual's DataTable invalidates every cached line on any cell update; on a 2-core machine with a sampler
running that made a decision cost hundreds of milliseconds. Here each line is built straight from segments,
cached per (row, version, cursor, width), and a decision refreshes only the rows it touched.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual.binding import Binding
from textual.events import Click, MouseScrollDown, MouseScrollUp
from textual.geometry import Region
from textual.message import Message
from textual.strip import Strip
from textual.widget import Widget

Piece = tuple[str, str]  # (text, rich style string)


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    width: int  # 0: takes the width left over
    right: bool = False
    min_width: int = 12


@lru_cache(maxsize=256)
def _style(spec: str) -> Style:
    return Style.parse(spec) if spec else Style()


class PathTable(Widget, can_focus=True):
    """Rows (objects with a unique ``id``) drawn by ``cells(row) -> list[list[Piece]]``; line 0 is the header."""

    COMPONENT_CLASSES = {"path-table--header", "path-table--cursor", "path-table--odd"}
    HELP_TITLE = "Path table (paths screen; the detail pane follows the cursor)"
    BINDINGS = [
        Binding("up,k", "cursor(-1)", "Up", show=False, tooltip="the path above", id="table.up"),
        Binding("down,j", "cursor(1)", "Down", show=False, tooltip="the path below", id="table.down"),
        Binding(
            "pageup", "page(-1)", "Page up", show=False, tooltip="a screenful up, within the page", id="table.page_up"
        ),
        Binding(
            "pagedown",
            "page(1)",
            "Page down",
            show=False,
            tooltip="a screenful down, within the page",
            id="table.page_down",
        ),
        Binding("home", "jump(0)", "First row", show=False, tooltip="the first path of the page", id="table.first_row"),
        Binding("end", "jump(-1)", "Last row", show=False, tooltip="the last path of the page", id="table.last_row"),
    ]

    class Highlighted(Message):
        """The cursor moved to another row (or the rows changed under it)."""

        def __init__(self, table: PathTable, index: int) -> None:
            super().__init__()
            self.table = table
            self.index = index

        @property
        def control(self) -> PathTable:
            return self.table

    def __init__(self, columns: Sequence[Column], cells: Callable[[object], list[list[Piece]]], **kwargs) -> None:
        super().__init__(**kwargs)
        self.columns = list(columns)
        self.cells = cells
        self.rows: list = []
        self.cursor_row = 0
        self.top = 0  # index of the first row on screen
        self._versions: dict[int, int] = {}
        self._cache: dict[tuple, Strip] = {}
        self._style_cache: dict[str, Style] | None = None
        self._combos: dict[tuple[int, str], Style] = {}
        self._widths: tuple[int, list[int]] | None = None

    # -- data ----------------------------------------------------------------------------------------
    def set_rows(self, rows: list, cursor: int = 0) -> None:
        self.rows = rows
        self._cache.clear()
        self._versions = {}
        self.cursor_row = max(0, min(cursor, len(rows) - 1)) if rows else 0
        self.top = min(self.top, max(0, len(rows) - self._visible()))
        self._scroll_to_cursor()
        self.refresh()
        self.post_message(self.Highlighted(self, self.cursor_row))

    def replace_rows(self, rows: list, changed: Sequence[int]) -> None:
        """The same rows (same ids, same order) with new data; only ``changed`` indexes are re-rendered."""
        self.rows = rows
        for index in changed:
            self.refresh_row(index)

    def refresh_row(self, index: int) -> None:
        """Re-render one row after its data changed."""
        if 0 <= index < len(self.rows):
            key = self.rows[index].id
            self._versions[key] = self._versions.get(key, 0) + 1
            self._refresh_index(index)

    def _refresh_index(self, index: int) -> None:
        y = index - self.top + 1
        if 1 <= y < self.size.height:
            self.refresh(Region(0, y, self.size.width, 1))

    def move_cursor(self, row: int) -> None:
        if not self.rows:
            return
        row = max(0, min(row, len(self.rows) - 1))
        if row == self.cursor_row:
            return
        old, self.cursor_row = self.cursor_row, row
        if not self._scroll_to_cursor():
            self._refresh_index(old)
            self._refresh_index(row)
        self.post_message(self.Highlighted(self, row))

    def _visible(self) -> int:
        return max(1, self.size.height - 1)

    def _scroll_to_cursor(self) -> bool:
        """Keep the cursor on screen; True when the view scrolled (everything was refreshed)."""
        visible = self._visible()
        top = self.top
        if self.cursor_row < top:
            top = self.cursor_row
        elif self.cursor_row >= top + visible:
            top = self.cursor_row - visible + 1
        if top != self.top:
            self.top = top
            self.refresh()
            return True
        return False

    def on_resize(self) -> None:
        self._cache.clear()
        self._scroll_to_cursor()

    # -- keys and mouse ----------------------------------------------------------------------------------
    def action_cursor(self, delta: int) -> None:
        self.move_cursor(self.cursor_row + delta)

    def action_page(self, direction: int) -> None:
        self.move_cursor(self.cursor_row + direction * self._visible())

    def action_jump(self, index: int) -> None:
        self.move_cursor(index if index >= 0 else len(self.rows) - 1)

    def on_click(self, event: Click) -> None:
        if event.y >= 1:
            self.move_cursor(self.top + event.y - 1)

    def on_mouse_scroll_down(self, event: MouseScrollDown) -> None:
        self._scroll(3)
        event.stop()

    def on_mouse_scroll_up(self, event: MouseScrollUp) -> None:
        self._scroll(-3)
        event.stop()

    def _scroll(self, delta: int) -> None:
        top = max(0, min(self.top + delta, max(0, len(self.rows) - self._visible())))
        if top != self.top:
            self.top = top
            self.refresh()

    # -- rendering -------------------------------------------------------------------------------------
    def widths(self, width: int) -> list[int]:
        if self._widths is None or self._widths[0] != width:
            fixed = sum(c.width for c in self.columns) + len(self.columns) - 1
            flex = [c for c in self.columns if c.width == 0]
            share = max(0, width - fixed) // max(1, len(flex))
            self._widths = (width, [c.width if c.width else max(c.min_width, share) for c in self.columns])
        return self._widths[1]

    def _combined(self, base: Style, spec: str) -> Style:
        key = (id(base), spec)  # bases come from _styles() and live as long as this cache
        style = self._combos.get(key)
        if style is None:
            style = self._combos[key] = base + _style(spec) if spec else base
        return style

    def _line(self, pieces_per_cell: list[list[Piece]], widths: list[int], base: Style) -> list[Segment]:
        """One row as segments, every cell padded or cut to its column's width, styles already combined."""
        segments: list[Segment] = []
        gap = Segment(" ", base)
        for n, (pieces, width) in enumerate(zip(pieces_per_cell, widths, strict=False)):
            if n:
                segments.append(gap)
            lengths = [len(t) if t.isascii() else cell_len(t) for t, _ in pieces]
            text_len = sum(lengths)
            if text_len > width:  # cut: keep the first pieces, end the one that overflows with an ellipsis
                kept: list[Piece] = []
                room = width
                for (t, spec), length in zip(pieces, lengths, strict=True):
                    if room <= 0:
                        break
                    if length > room:
                        if t.isascii():
                            t = (t[: room - 1] + "…") if room > 1 else t[:room]
                        else:
                            t = (set_cell_size(t, room - 1) + "…") if room > 1 else set_cell_size(t, room)
                        length = room
                    kept.append((t, spec))
                    room -= length
                pieces, text_len = kept, width - room
            pad = Segment(" " * (width - text_len), base) if width > text_len else None
            if pad is not None and self.columns[n].right:
                segments.append(pad)
            segments.extend(Segment(t, self._combined(base, spec)) for t, spec in pieces)
            if pad is not None and not self.columns[n].right:
                segments.append(pad)
        return segments

    def _styles(self) -> dict[str, Style]:
        """The widget's styles, computed once (``rich_style`` walks every ancestor)."""
        if self._style_cache is None:
            base = self.rich_style
            cursor = self.get_component_rich_style("path-table--cursor")
            self._style_cache = {
                "base": base,
                "header": base + self.get_component_rich_style("path-table--header"),
                "odd": base + self.get_component_rich_style("path-table--odd"),
                "cursor": cursor,
                "cursor_blurred": Style(bgcolor=cursor.bgcolor, dim=True),
            }
        return self._style_cache

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._style_cache = None
        self._combos.clear()
        self._cache.clear()

    def _strip(self, segments: list[Segment], width: int, style: Style, used: int) -> Strip:
        if used < width:
            segments.append(Segment(" " * (width - used), style))
        strip = Strip(segments, max(used, width))
        return strip.crop(0, width) if used > width else strip

    def _used(self, widths: list[int]) -> int:
        return sum(widths) + len(widths) - 1

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        styles = self._styles()
        if y == 0:
            key = ("header", width)
            strip = self._cache.get(key)
            if strip is None:
                labels = [[(c.label, "")] for c in self.columns]
                widths = self.widths(width)
                segments = self._line(labels, widths, styles["header"])
                strip = self._strip(segments, width, styles["header"], self._used(widths))
                self._cache[key] = strip
            return strip
        index = self.top + y - 1
        if index >= len(self.rows):
            return Strip.blank(width, styles["base"])
        row = self.rows[index]
        cursor = index == self.cursor_row
        focused = self.has_focus
        key = (row.id, self._versions.get(row.id, 0), cursor, cursor and focused, index % 2, width)
        strip = self._cache.get(key)
        if strip is None:
            style = styles["odd"] if index % 2 else styles["base"]
            if cursor:
                style = style + (styles["cursor"] if focused else styles["cursor_blurred"])
            widths = self.widths(width)
            strip = self._strip(self._line(self.cells(row), widths, style), width, style, self._used(widths))
            if len(self._cache) > 2000:
                self._cache.clear()
            self._cache[key] = strip
        return strip

    def on_focus(self) -> None:
        self._refresh_index(self.cursor_row)

    def on_blur(self) -> None:
        self._refresh_index(self.cursor_row)

    # -- reading it back (tests, the help text of a cell) ------------------------------------------------
    def cell_text(self, row_index: int, key: str) -> str:
        n = next(i for i, c in enumerate(self.columns) if c.key == key)
        return "".join(t for t, _ in self.cells(self.rows[row_index])[n])

    def plain_lines(self) -> list[str]:
        return [" | ".join("".join(t for t, _ in cell) for cell in self.cells(row)) for row in self.rows]
