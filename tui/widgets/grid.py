"""The trace grid's widgets: the plotext heatmap, the pane with the peak in words and the colour
legend, and the numeric table of the same values. The data they show is tui.gridmodel's GridView."""

from __future__ import annotations

from dataclasses import dataclass

from tracer.metrics import METRIC_LABELS
from tracer.render.terminal_plot import draw_grid, format_value

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.coordinate import Coordinate
from textual.message import Message
from textual.widgets import DataTable, Static
from textual_plotext import PlotextPlot

from .. import plotting_internals
from ..gridmodel import GridView, peak_sentence, scale_ends
from ..themes import heat_scale, rgb


class GridPlot(PlotextPlot):
    """The heatmap, drawn through this widget's own plotext figure (`self.plt`), with a cursor (◆)
    moved by the arrow keys (when the plot has focus) and the mouse; it posts CursorMoved."""

    can_focus = True
    BINDINGS = [
        Binding("up", "move(-1, 0)", "Cell ↑", show=False),
        Binding("down", "move(1, 0)", "Cell ↓", show=False),
        Binding("left", "move(0, -1)", "Layer ←", show=False),
        Binding("right", "move(0, 1)", "Layer →", show=False),
        Binding("home", "move(0, -1000)", "First layer", show=False),
        Binding("end", "move(0, 1000)", "Last layer", show=False),
    ]
    DEFAULT_CSS = """
    GridPlot { height: 1fr; min-height: 6; }
    """

    @dataclass
    class CursorMoved(Message):
        """The user put the cursor on (row, layer) of the view on screen."""

        row: int
        layer: int

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.grid_view: GridView | None = None
        self.placeholder = "No trace yet: press ctrl+r (or enter in the prompt) to run."
        self.scale: tuple[float, float] | None = None
        self.canvas_cache: dict = {}
        self.cursor: tuple[int, int] | None = None
        self.origin: tuple[int, int] | None = None  # where the drawing area sat in the last build
        self.first_row, self.shown_rows = 0, 0  # the rows drawn in the last build (all, or a window)
        self._start: int | None = None  # the window's first row, kept while the user scrolls

    def set_cursor(self, cursor: tuple[int, int] | None) -> None:
        if cursor != self.cursor:
            self.cursor = cursor
            self.refresh()

    def action_move(self, d_row: int, d_layer: int) -> None:
        view = self.grid_view
        if view is None or not view.values:
            return
        row, layer = self.cursor or (0, 0)
        n_cols = max(len(r) for r in view.values)
        row = min(max(0, row + d_row), len(view.values) - 1)
        layer = min(max(0, layer + d_layer), n_cols - 1)
        self.post_message(self.CursorMoved(row, layer))

    def on_click(self, event) -> None:
        view, origin = self.grid_view, self.origin
        if view is None or origin is None or not self.canvas_cache:
            return
        cell = plotting_internals.cell_at(event.x, event.y, figure_height=self.size.height, origin=origin,
                                          canvas=next(iter(self.canvas_cache.values())), n_rows=self.shown_rows,
                                          n_cols=max((len(r) for r in view.values), default=0))
        if cell is not None:
            self.focus()
            self.post_message(self.CursorMoved(cell[0] + self.first_row, cell[1]))

    def show(self, view: GridView | None, placeholder: str | None = None) -> None:
        if view is None or self.grid_view is None or len(view.values) != len(self.grid_view.values):
            self._start = None  # another grid: the window starts from its focus row again
        self.grid_view = view
        if placeholder:
            self.placeholder = placeholder
        self.refresh()

    def render(self):
        width, height = self.size.width, self.size.height
        view = self.grid_view
        if view is None or width < 20 or height < 6:
            return Text(self.placeholder if view is None else "(too small to draw)", style="italic", justify="center")
        plt = self.plt
        plotting_internals.prepare(self, plt)
        scale = heat_scale(self.app.theme_variables, view.kind)
        lo, hi = view.scale if view.scale is not None else (None, None)
        if lo is None and view.values:  # auto scale: the whole grid's range, also when rows are off screen
            lo, hi = scale_ends(view) or (None, None)
        n_rows = len(view.values)

        def draw(first: int, shown: int, title: str) -> None:
            room = width - 4 - max((len(label) for label in view.labels), default=0)
            if len(title) > room:  # plotext leaves out a title wider than the drawing area
                title = title[:max(1, room - 1)] + "…"
            values, labels = view.values[first:first + shown], view.labels[first:first + shown]
            marks = {(r - first, c) for r, c in view.marks if first <= r < first + shown}
            cursor = (self.cursor[0] - first, self.cursor[1]) if self.cursor else None
            self.scale = draw_grid(plt, values, labels, title=title, colour=scale.at, lo=lo, hi=hi,
                                   canvas_cache=self.canvas_cache)
            if self.canvas_cache:
                n_cols = max((len(r) for r in values), default=0)
                canvas = next(iter(self.canvas_cache.values()))
                plotting_internals.mark_cells(plt, marks, len(values), n_cols, canvas, scale.at(0.5))
                plotting_internals.thin_row_ticks(plt, labels, len(values), canvas)
                plotting_internals.mark_cursor(plt, cursor, len(values), n_cols, canvas,
                                               rgb(self.app.theme_variables.get("foreground", "#ffffff")))

        self.first_row, self.shown_rows = 0, n_rows
        if plotting_internals.drawing(lambda: draw(0, n_rows, view.title)) is None:
            self.canvas_cache.clear()
            return Text(plotting_internals.TOO_SMALL, style="italic", justify="center")
        rows_room = next(iter(self.canvas_cache.values()))[1] if self.canvas_cache else n_rows
        if rows_room < n_rows:  # one canvas row per grid row at least: show a window, say what is off screen
            first = self.window_start(n_rows, rows_room, view.focus_row)
            self.first_row, self.shown_rows = first, rows_room
            title = f"rows {first}-{first + rows_room - 1} of {n_rows} (↑↓ {n_rows - rows_room} more) · {view.title}"
            if plotting_internals.drawing(lambda: draw(first, rows_room, title)) is None:
                return Text(plotting_internals.TOO_SMALL, style="italic", justify="center")
        text = plotting_internals.build(plt)
        self.origin = plotting_internals.canvas_origin(plt)
        return text

    def window_start(self, n_rows: int, room: int, focus: int | None) -> int:
        """The first row shown when only `room` rows fit: the cursor's row stays in view; without a
        cursor, the view's focus row (the subject's last token) and as many rows after it."""
        start = getattr(self, "_start", None)
        if start is None:
            start = min(focus or 0, n_rows - room)
        if self.cursor is not None:
            row = self.cursor[0]
            start = min(start, row) if row < start else (row - room + 1 if row >= start + room else start)
        self._start = max(0, min(start, n_rows - room))
        return self._start

def legend_text(view: GridView | None, scale) -> Text:
    """The colour bar with its ends, cells beyond a fixed scale, and the marks' meaning."""
    if view is None:
        return Text("")
    ends = scale_ends(view)
    if ends is None:
        return Text("scale: waiting for the first cells…" if not view.final else "scale: no values", style="italic")
    lo, hi = ends
    text = Text(f"{format_value(lo, view.metric)} ")
    steps = 16
    for i in range(steps):
        text.append("█", style=scale.hex(i / (steps - 1)))
    text.append(f" {format_value(hi, view.metric)}  {METRIC_LABELS.get(view.metric, view.metric)}")
    text.append(" (fixed scale)" if view.scale is not None else " (auto scale)", style="dim")
    n, low, high = view.beyond
    if n:
        span = " .. ".join(format_value(v, view.metric) for v in (low, high) if v is not None)
        text.append(f"  ▲ {n} cell{'s' if n != 1 else ''} beyond the scale ({span})", style="bold")
    if view.marks:
        text.append(f"  ░ {len(view.marks)} indistinguishable from the corrupted run", style="italic")
    return text


class GridPane(Vertical):
    """The peak in words and the colour legend (on top, so they stay in view), then the plot."""

    DEFAULT_CSS = """
    GridPane { height: 1fr; }
    GridPane > #legend, GridPane > #peak { height: auto; max-height: 2; padding: 0 1; }
    GridPane > #peak { color: $accent; text-style: bold; }
    GridPane > #readout { height: 1; padding: 0 1; color: $text; }
    GridPane.-stale > #peak { color: $warning; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.current: GridView | None = None
        self.peak = Static(id="peak")
        self.legend = Static(id="legend")
        self.readout = Static(id="readout")
        self.plot = GridPlot(id="plot")

    def compose(self) -> ComposeResult:
        yield self.peak
        yield self.legend
        yield self.readout
        yield self.plot

    def show_readout(self, text: str) -> None:
        """The cursor's cell in words (tui.gridmodel.cell_readout), or how to get a cursor."""
        self.readout.update(Text(text or "cell: click the grid, or focus it (tab) and use the arrow keys · F9 top-5",
                                 no_wrap=True, overflow="ellipsis"))

    def show(self, view: GridView | None, placeholder: str | None = None) -> None:
        self.current = view
        self.plot.show(view, placeholder)
        self.legend.update(legend_text(view, heat_scale(self.app.theme_variables, view.kind if view else None)))
        self.peak.update(peak_sentence(view) if view else "")

    def on_mount(self) -> None:
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self.show(self.current))


class GridTable(DataTable):
    """The same cells as numbers, every layer a column (scroll sideways), the row labels frozen;
    rebuilt when the view's shape changes, else updated in place."""

    DEFAULT_CSS = """
    GridTable { height: 1fr; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, zebra_stripes=True, cursor_type="cell", fixed_columns=1)
        self.shape_key: tuple | None = None
        self.texts: list[list[str]] = []

    def show(self, view: GridView | None) -> None:
        if view is None:
            self.clear(columns=True)
            self.shape_key, self.texts = None, []
            return
        n_cols = max((len(r) for r in view.values), default=0)
        texts = [[view.cell_text(r, c) for c in range(len(row))] for r, row in enumerate(view.values)]
        key = (tuple(view.labels), n_cols, view.metric, view.title, view.spread is not None)
        if key != self.shape_key:
            self.clear(columns=True)
            self.add_column("row", key="row")
            width = max(6, max((len(t) for row in texts for t in row), default=0))
            for c in range(n_cols):
                self.add_column(f"L{c}", key=f"L{c}", width=width)
            for label, row in zip(view.labels, texts):
                self.add_row(Text(label), *(Text(t, justify="right") for t in row))
            self.shape_key, self.texts = key, texts
            return
        for r, row in enumerate(texts):
            for c, t in enumerate(row):
                if self.texts[r][c] != t:
                    self.update_cell_at(Coordinate(r, c + 1), Text(t, justify="right"), update_width=True)
        self.texts = texts
