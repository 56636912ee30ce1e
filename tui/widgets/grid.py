"""The trace grid: its data (filled live from CellsDone), the plotext heatmap, the legend,
the peak in words, and the numeric table of the same values."""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.coordinate import Coordinate
from textual.widgets import DataTable, Static
from textual_plotext import PlotextPlot

from tracer.events import CellsDone, Started

from tracer.types import TraceResult
from tracer.metrics import VIEW_ORDER
from tracer.plot import METRIC_LABELS, draw_grid, format_value, format_with_unit, peak, row_label, value_range

from ..themes import heat_scale

METRICS = VIEW_ORDER
MODES = {"positions": "chosen positions", "all": "all tokens"}


@dataclass
class GridView:
    """What one view shows: rows x layers values with labels, ready to draw or tabulate."""

    values: list[list[float | None]]
    labels: list[str]  # plot/table row labels
    names: list[str]  # rows in words, for the peak sentence
    title: str
    metric: str
    kind: str | None  # the colour scale's kind (tokens view), None for the components view
    row_kinds: list[str]  # the kind of each row (components view) or the chosen kind repeated


@dataclass
class GridData:
    """One run's grids, filled cell by cell: values[kind][metric][row][layer] (None = pending)."""

    mode: str  # "positions" (rows: kinds at the chosen positions) or "all" (rows: tokens)
    tokens: list[str]
    subject_range: tuple[int, int]
    kinds: tuple[str, ...]
    n_rows: int
    n_layers: int
    positions: list[int] = field(default_factory=list)
    target_text: str = ""
    done: int = 0
    total: int = 0
    values: dict = field(default_factory=dict)
    final: bool = False

    @classmethod
    def from_started(cls, mode: str, event: Started, positions=()) -> "GridData":
        rows, layers = event.shape
        grid = cls(mode, list(event.tokens), tuple(event.subject_range), tuple(event.kinds), rows, layers,
                   list(positions), event.target_text, 0, event.total_cells)
        grid.values = {k: {m: [[None] * layers for _ in range(rows)] for m in METRICS} for k in event.kinds}
        return grid

    @classmethod
    def from_result(cls, mode: str, result: TraceResult) -> "GridData":
        kinds = tuple(result.grids)
        first = result.grids[kinds[0]]["prob"]
        positions = [] if result.positions == "all" else list(result.positions)
        grid = cls(mode, list(result.tokens), tuple(result.subject_range), kinds, len(first), len(first[0]), positions,
                   result.target_text)
        grid.fill(result)
        return grid

    def apply(self, event: CellsDone) -> None:
        table = self.values.get(event.kind)
        if table is None:
            return
        for (r, c), p, rec, ld in zip(event.cells, event.prob, event.recovery, event.logit_diff):
            table["prob"][r][c], table["recovery"][r][c], table["logit_diff"][r][c] = p, rec, ld
        self.done, self.total = event.done, event.total

    def fill(self, result: TraceResult) -> None:
        """The final, authoritative values."""
        self.values = {k: {m: [list(row) for row in g[m]] for m in METRICS} for k, g in result.grids.items()}
        self.done = self.total = self.n_rows * self.n_layers * len(self.kinds)
        self.final = True

    def position_text(self) -> str:
        return " + ".join(repr(self.tokens[p]) for p in self.positions if 0 <= p < len(self.tokens))

    def view(self, kind: str, metric: str) -> GridView:
        label = METRIC_LABELS.get(metric, metric)
        if self.mode == "positions":
            rows = [self.values[k][metric][0] for k in self.kinds]
            where = self.position_text()
            return GridView(rows, list(self.kinds), [f"{k} layer {{layer}} at {where}" for k in self.kinds],
                            f"{label} restoring {where}", metric, None, list(self.kinds))
        kind = kind if kind in self.values else self.kinds[0]
        b, e = self.subject_range
        labels = [row_label(t, b <= i < e) for i, t in enumerate(self.tokens)]
        names = [f"{kind} layer {{layer}} at {t!r}" for t in self.tokens]
        return GridView(self.values[kind][metric], labels, names, f"{kind} · {label} · all tokens", metric, kind,
                        [kind] * len(labels))


def peak_sentence(view: GridView) -> str:
    best = peak(view.values)
    if best is None:
        return "peak: –"
    r, c, v = best
    return f"peak: {view.names[r].format(layer=c)}, {format_with_unit(v, view.metric)}"


class GridPlot(PlotextPlot):
    """The heatmap, drawn through this widget's own plotext figure (`self.plt`)."""

    DEFAULT_CSS = """
    GridPlot { height: 1fr; min-height: 8; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.grid_view: GridView | None = None
        self.placeholder = "No trace yet: press ctrl+r (or enter in the prompt) to run."
        self.scale: tuple[float, float] | None = None
        self.canvas_cache: dict = {}

    def show(self, view: GridView | None, placeholder: str | None = None) -> None:
        self.grid_view = view
        if placeholder:
            self.placeholder = placeholder
        if view is not None:
            self.styles.min_height = max(8, len(view.values) + 6)
        self.refresh()

    def render(self):
        width, height = self.size.width, self.size.height
        view = self.grid_view
        if view is None or width < 20 or height < 6:
            return Text(self.placeholder if view is None else "(too small to draw)", style="italic", justify="center")
        plt = self.plt
        plt.plotsize(width, height)
        plt._set_size(width, height)  # as PlotextPlot.render does (textual-plotext issue #5)
        plt.theme(self._get_plotext_theme_name(self.app.theme))
        scale = heat_scale(self.app.theme_variables, view.kind)
        self.scale = draw_grid(plt, view.values, view.labels, title=view.title, colour=scale.at,
                               canvas_cache=self.canvas_cache)
        return Text.from_ansi(plt.build())


class GridPane(VerticalScroll):
    """The peak in words and the colour legend (on top, so they stay in view), then the plot."""

    DEFAULT_CSS = """
    GridPane { height: 1fr; }
    GridPane > #legend, GridPane > #peak { height: 1; padding: 0 1; }
    GridPane > #peak { color: $accent; text-style: bold; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.current: GridView | None = None

    def compose(self) -> ComposeResult:
        yield Static(id="peak")
        yield Static(id="legend")
        yield GridPlot(id="plot")

    def show(self, view: GridView | None, placeholder: str | None = None) -> None:
        self.current = view
        self.query_one(GridPlot).show(view, placeholder)
        self.query_one("#legend", Static).update(self.legend(view))
        self.query_one("#peak", Static).update(peak_sentence(view) if view else "")

    def legend(self, view: GridView | None) -> Text:
        if view is None:
            return Text("")
        rng = value_range(view.values)
        if rng is None:
            return Text("scale: waiting for the first cells…", style="italic")
        lo, hi = rng
        scale = heat_scale(self.app.theme_variables, view.kind)
        text = Text(f"{format_value(lo, view.metric)} ")
        steps = 16
        for i in range(steps):
            text.append("█", style=scale.hex(i / (steps - 1)))
        text.append(f" {format_value(hi, view.metric)}  {METRIC_LABELS.get(view.metric, view.metric)}")
        return text

    def on_mount(self) -> None:
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self.show(self.current))


class GridTable(DataTable):
    """The same cells as numbers; rebuilt when the view's shape changes, else updated in place."""

    DEFAULT_CSS = """
    GridTable { height: 1fr; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, zebra_stripes=True, cursor_type="cell")
        self.shape_key: tuple | None = None
        self.texts: list[list[str]] = []

    def show(self, view: GridView | None) -> None:
        if view is None:
            self.clear(columns=True)
            self.shape_key, self.texts = None, []
            return
        n_cols = max((len(r) for r in view.values), default=0)
        texts = [[format_value(v, view.metric) for v in row] for row in view.values]
        key = (tuple(view.labels), n_cols, view.metric, view.title)
        if key != self.shape_key:
            self.clear(columns=True)
            self.add_column("row", key="row")
            for c in range(n_cols):
                self.add_column(f"L{c}", key=f"L{c}", width=6)  # fits -100.0, +12.34, 0.123
            for label, row in zip(view.labels, texts):
                self.add_row(Text(label), *(Text(t, justify="right") for t in row))
            self.shape_key, self.texts = key, texts
            return
        for r, row in enumerate(texts):
            for c, t in enumerate(row):
                if self.texts[r][c] != t:
                    self.update_cell_at(Coordinate(r, c + 1), Text(t, justify="right"), update_width=True)
        self.texts = texts

