"""The trace grid as plain data: filled live from CellsDone, made final from the TraceResult, and cut
into views (rows x layers with labels, colour scale, ± half-widths and marks). No widgets here.

Colour scales (issue 16.3): recovery on a fixed 0-100 % scale, probability from p_corrupted to
p_clean as ROME draws it, the logit difference on its own range; `auto=True` scales every metric to
its cells' range instead. Values beyond a fixed scale are counted (`GridView.beyond`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from tracer.analyses.summary import PartialTrace, sites_line
from tracer.events import CellsDone, Started
from tracer.metrics import METRIC_LABELS, VIEW_ORDER
from tracer.render.terminal_plot import finite, format_value, format_with_unit, peak, row_label, value_range

METRICS = VIEW_ORDER
MODES = {"positions": "chosen positions", "all": "all tokens"}
NOT_AVAILABLE = "n/a"  # a finished cell without a value (recovery not available, no counterpart)
PENDING = "·"  # a cell not computed yet
ESTIMATED = "≈"  # a cell showing the first-order estimate (tracer.events.Estimate), not its exact value yet
ESTIMATE_TITLE = "ESTIMATE"  # the title's marker while estimated cells are shown


@dataclass
class GridView:
    """What one view shows: rows x layers values with labels, ready to draw or tabulate.

    Args (fields):
        values: rows x layers; None where a cell has no value (yet).
        labels: plot/table row labels; names: rows in words for the peak sentence ("{layer}" filled in).
        title, metric: the plot's title and the metric drawn.
        kind: the colour scale's kind (tokens view), None for the components view.
        row_kinds: the kind of each row.
        final: the run finished (a None cell is "n/a", not pending).
        scale: (lo, hi) of the colour scale, None: the cells' own range.
        spread: rows x layers half-widths of the 95% interval (noise mode), or None.
        marks: (row, layer) cells indistinguishable from the corrupted run.
    """

    values: list[list[float | None]]
    labels: list[str]
    names: list[str]
    title: str
    metric: str
    kind: str | None
    row_kinds: list[str]
    final: bool = False
    scale: tuple[float, float] | None = None
    spread: list[list[float | None]] | None = None
    marks: frozenset = frozenset()
    headline: str | None = None  # a finished trace's sites (sites_sentence), shown instead of the peak
    focus_row: int | None = None  # the row kept in view when not all fit (the subject's last token)
    estimated: frozenset = frozenset()  # (row, layer) cells showing the first-order estimate, not exact yet

    @property
    def beyond(self) -> tuple[int, float | None, float | None]:
        """(cells outside the fixed scale, lowest, highest value) — (0, None, None) when auto. A cell
        counts only when it shows a value beyond the scale's end (-0.0 against 0.0 is rounding)."""
        if self.scale is None:
            return 0, None, None
        lo, hi = self.scale
        out = [v for row in self.values for v in row if finite(v) and (v < lo or v > hi)
               and _shown(v, self.metric) != _shown(min(max(v, lo), hi), self.metric)]  # not rounding
        return len(out), (min(out) if out else None), (max(out) if out else None)

    def cell_text(self, r: int, c: int) -> str:
        """A table cell: the value (with ± in noise mode), "n/a" or "·"."""
        v = self.values[r][c]
        if not finite(v):
            return NOT_AVAILABLE if self.final or v is not None else PENDING
        text = format_value(v, self.metric)
        half = self.spread[r][c] if self.spread else None
        if finite(half):
            text += "±" + format_value(half, self.metric).lstrip("+")
        if (r, c) in self.marks:
            text += "~"
        return ESTIMATED + text if (r, c) in self.estimated else text


def _difference(estimate, exact, row: int, layer: int) -> float | None:
    """estimate[row][layer] - exact[row][layer] where both are numbers, else None."""
    if estimate is None:
        return None
    a, b = estimate[row][layer], exact[row][layer]
    return a - b if finite(a) and finite(b) else None


def _shown(value: float, metric: str) -> float:
    """The value as the table shows it, read back (so -0.0 and 0.0 are the same)."""
    text = format_value(value, metric).rstrip("%").lstrip("+")
    try:
        return float(text) + 0.0
    except ValueError:
        return value


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
    clean_prob: float | None = None
    corrupted_prob: float | None = None
    intervals: dict = field(default_factory=dict)  # kind -> (prob_low, prob_high) grids, noise mode
    samples: int | None = None  # noise samples per cell (adaptive: the most); None: substitution (one corrupted run)
    ci_width: float | None = None  # adaptive samples: the 95% interval width cells are run to
    cell_samples: dict = field(default_factory=dict)  # kind -> rows x layers samples of each cell (adaptive)
    source: tuple = ()  # (prompt, subject, corrupted prompt, target, settings): what the grid belongs to
    estimate: dict = field(default_factory=dict)  # kind -> {"prob", "recovery"} grids of the first-order estimate
    estimated: dict = field(default_factory=dict)  # kind -> {(row, layer)} cells still showing the estimate

    @classmethod
    def from_started(cls, mode: str, event: Started, positions=()) -> "GridData":
        rows, layers = event.shape
        grid = cls(mode, list(event.tokens), tuple(event.subject_range), tuple(event.kinds), rows, layers,
                   list(positions), event.target_text, 0, event.total_cells,
                   clean_prob=event.clean_prob, corrupted_prob=event.corrupted_prob)
        grid.values = {k: {m: [[None] * layers for _ in range(rows)] for m in METRICS} for k in event.kinds}
        return grid

    @classmethod
    def from_result(cls, mode: str, result) -> "GridData":
        kinds = tuple(result.grids)
        first = result.grids[kinds[0]]["prob"]
        positions = [] if result.positions == "all" else list(result.positions)
        grid = cls(mode, list(result.tokens), tuple(result.subject_range), kinds, len(first), len(first[0]), positions,
                   result.target_text, clean_prob=result.clean_prob, corrupted_prob=result.corrupted_prob)
        grid.fill(result)
        estimate = getattr(result, "estimate", None) if getattr(result, "exact", True) else None
        grid.estimate = {k: {m: g[m] for m in ("prob", "recovery") if m in g} for k, g in (estimate or {}).items()}
        return grid

    def apply(self, event: CellsDone) -> None:
        """Exact cells: they replace what was there (pending, or the estimate)."""
        table = self.values.get(event.kind)
        if table is None:
            return
        for (r, c), p, rec, ld in zip(event.cells, event.prob, event.recovery, event.logit_diff):
            table["prob"][r][c], table["recovery"][r][c], table["logit_diff"][r][c] = p, rec, ld
        if event.samples is not None:  # adaptive samples: each cell's own count, as it arrives
            counts = self.cell_samples.setdefault(event.kind, [[None] * self.n_layers for _ in range(self.n_rows)])
            for (r, c), n in zip(event.cells, event.samples):
                counts[r][c] = n
        if event.prob_low is not None and event.prob_high is not None:  # noise mode: the cells' intervals
            low, high = self.intervals.setdefault(event.kind, tuple([[None] * self.n_layers for _ in range(self.n_rows)]
                                                                    for _ in range(2)))
            for (r, c), lo, hi in zip(event.cells, event.prob_low, event.prob_high):
                low[r][c], high[r][c] = lo, hi
        self.estimated.get(event.kind, set()).difference_update(event.cells)
        self.done, self.total = event.done, event.total

    def apply_estimate(self, event) -> None:
        """A grid's first-order estimate (tracer.events.Estimate): shown in its cells not exact yet (and
        kept for estimate minus exact); it has P and recovery, no logit difference."""
        table = self.values.get(event.kind)
        if table is None:
            return
        kept = self.estimate.setdefault(event.kind, {m: [[None] * self.n_layers for _ in range(self.n_rows)]
                                                     for m in ("prob", "recovery")})
        for (r, c), p, rec in zip(event.cells, event.prob, event.recovery):
            kept["prob"][r][c], kept["recovery"][r][c] = p, rec
            if table["prob"][r][c] is None:  # not exact yet
                table["prob"][r][c], table["recovery"][r][c] = p, rec
                self.estimated.setdefault(event.kind, set()).add((r, c))

    def partial(self, kinds) -> PartialTrace:
        """The exact cells of `kinds` so far (not those showing the estimate), with their intervals,
        as the headline rules read them (tracer.analyses.summary.PartialTrace)."""
        grids = {}
        for kind in kinds:
            shown = self.estimated.get(kind, set())
            grids[kind] = {m: [[None if (r, c) in shown else v for c, v in enumerate(row)] for r, row in enumerate(g)]
                           for m, g in self.values[kind].items()}
            if kind in self.intervals:
                grids[kind]["prob_low"], grids[kind]["prob_high"] = self.intervals[kind]
        positions = list(self.positions) if self.mode == "positions" else "all"
        return PartialTrace(self.tokens, self.subject_range, positions, self.corrupted_prob, grids)

    @property
    def n_estimated(self) -> int:
        """Cells showing the estimate, all kinds."""
        return sum(len(cells) for cells in self.estimated.values())

    def fill(self, result) -> None:
        """The final, authoritative values (and the noise intervals where the result has them)."""
        self.values = {k: {m: [list(row) for row in g[m]] for m in METRICS} for k, g in result.grids.items()}
        self.intervals = {k: (g["prob_low"], g["prob_high"]) for k, g in result.grids.items()
                          if "prob_low" in g and "prob_high" in g}
        self.cell_samples = {k: g["samples"] for k, g in result.grids.items() if "samples" in g}
        self.done = self.total = self.n_rows * self.n_layers * len(self.kinds)
        self.estimated = {}
        self.final = True

    def position_text(self) -> str:
        return " + ".join(repr(self.tokens[p]) for p in self.positions if 0 <= p < len(self.tokens))

    def view(self, kind: str, metric: str, *, auto: bool = False) -> GridView:
        """The grid of `kind` (all-tokens view) or of every kind (positions view) for `metric`."""
        label = METRIC_LABELS.get(metric, metric)
        if self.mode == "positions":
            kinds = list(self.kinds)
            rows = [self.values[k][metric][0] for k in kinds]
            where = self.position_text()
            names = [f"{k} layer {{layer}} at {where}" for k in kinds]
            view = GridView(rows, kinds, names, f"{label} restoring {where}", metric, None, kinds, self.final)
            cells = [(k, 0, i) for i, k in enumerate(kinds)]
        else:
            kind = kind if kind in self.values else self.kinds[0]
            b, e = self.subject_range
            labels = [row_label(t, b <= i < e) for i, t in enumerate(self.tokens)]
            names = [f"{kind} layer {{layer}} at {t!r}" for t in self.tokens]
            view = GridView(self.values[kind][metric], labels, names, f"{kind} · {label} · all tokens", metric, kind,
                            [kind] * len(labels), self.final, focus_row=e - 1)
            cells = [(kind, r, r) for r in range(self.n_rows)]
        view.scale = None if auto else self.fixed_scale(metric)
        self._add_intervals(view, cells)
        self._mark_estimated(view, cells)
        return view

    def _mark_estimated(self, view: GridView, cells) -> None:
        """The view's cells showing the estimate, and the title's marker while there are any."""
        estimated = {(view_row, c) for kind, src_row, view_row in cells
                     for r, c in self.estimated.get(kind, ()) if r == src_row}
        if estimated:
            view.estimated = frozenset(estimated)
            view.title = (f"{ESTIMATE_TITLE} (first-order, {len(estimated)} cells; exact values replace it) · "
                          f"{view.title}")

    def estimate_error_view(self, kind: str, metric: str) -> GridView | None:
        """Estimate minus exact (`metric`: prob or recovery; prob for the logit difference, which the
        estimate lacks) of a finished grid, on its own scale; None without an estimate."""
        if not self.final or not self.estimate:
            return None
        metric = metric if metric in ("prob", "recovery") else "prob"
        view = self.view(kind, metric, auto=True)
        kinds = view.row_kinds
        src = [0 if self.mode == "positions" else r for r in range(len(view.values))]
        values = [[_difference(self.estimate.get(k, {}).get(metric), self.values[k][metric], s, c)
                   for c in range(self.n_layers)] for k, s in zip(kinds, src)]
        title = f"estimate − exact ({METRIC_LABELS.get(metric, metric)}) · {view.title}"
        return GridView(values, view.labels, [n.replace("layer", "estimate − exact at layer", 1) for n in view.names],
                        title, metric, None, kinds, True, None, focus_row=view.focus_row)

    def fixed_scale(self, metric: str) -> tuple[float, float] | None:
        """ROME's scales: recovery 0..100 %, probability p_corrupted..p_clean; else None (auto)."""
        if metric == "recovery":
            return (0.0, 100.0)
        if metric == "prob" and finite(self.clean_prob) and finite(self.corrupted_prob):
            lo, hi = sorted((self.corrupted_prob, self.clean_prob))
            return (lo, hi) if hi - lo > 1e-9 else None
        return None

    def _add_intervals(self, view: GridView, cells) -> None:
        """± half-widths (prob, and recovery in % of the total effect) and the marks of cells whose
        interval holds p_corrupted."""
        if not self.intervals or view.metric not in ("prob", "recovery"):
            return
        gap = (self.clean_prob or 0.0) - (self.corrupted_prob or 0.0)
        spread, marks = [], set()
        for kind, src_row, view_row in cells:
            low, high = self.intervals.get(kind, (None, None))
            if low is None:
                spread.append([None] * self.n_layers)
                continue
            row = []
            for c, (lo, hi) in enumerate(zip(low[src_row], high[src_row])):
                if not (finite(lo) and finite(hi)):
                    row.append(None)
                    continue
                half = (hi - lo) / 2
                row.append(half if view.metric == "prob" else (100 * half / gap if abs(gap) > 1e-12 else None))
                if self.corrupted_prob is not None and lo <= self.corrupted_prob <= hi:
                    marks.add((view_row, c))
            spread.append(row)
        view.spread, view.marks = spread, frozenset(marks)


def cell_readout(grid: GridData, view: GridView, row: int, layer: int) -> str:
    """One line on the cursor's cell: token, layer, kind, value, the 95% interval of P and the
    samples, e.g. "' Tower' (token 4) · layer 3 · mlp · 64.2% · P 95%: 0.41..0.52 · 10 samples"."""
    if not (0 <= row < len(view.values) and 0 <= layer < len(view.values[row])):
        return ""
    kind = view.row_kinds[row]
    where = grid.position_text() if grid.mode == "positions" else f"{grid.tokens[row]!r} (token {row})"
    value = view.values[row][layer]
    if finite(value):
        shown = format_with_unit(value, view.metric)
    else:
        shown = f"{METRIC_LABELS.get(view.metric, view.metric)} {NOT_AVAILABLE if view.final else 'pending'}"
    parts = [where, f"layer {layer}", kind, shown]
    low, high = grid.intervals.get(kind, (None, None))
    src = 0 if grid.mode == "positions" else row
    if low is not None and finite(low[src][layer]) and finite(high[src][layer]):
        lo, hi = low[src][layer], high[src][layer]
        inside = grid.corrupted_prob is not None and lo <= grid.corrupted_prob <= hi
        parts.append(f"P 95%: {lo:.4f}..{hi:.4f}" + (" (holds p_corrupted: within noise)" if inside else ""))
    parts.append(samples_text(grid, kind, src, layer))
    return " · ".join(parts)


def samples_text(grid: GridData, kind: str, row: int, layer: int) -> str:
    """A cell's samples in words: its own count (adaptive samples, once the cell is done), "adaptive,
    up to 40 samples" while it runs, the grid's count, or substitution's one corrupted run."""
    counts = grid.cell_samples.get(kind)
    if counts is not None and counts[row][layer] is not None:
        return f"{counts[row][layer]} samples"
    if grid.ci_width is not None:
        return f"adaptive, up to {grid.samples} samples (to a {grid.ci_width:g}-wide interval)"
    return f"{grid.samples} samples" if grid.samples else "substitution (one corrupted run)"


def sites_sentence(result, kinds, metric: str) -> str:
    """The finished trace's headline for the kinds on screen (tracer.analyses.summary: the subject site and
    the late site, trivial cells and cells within noise left out), in `metric` (probability where
    recovery is not available)."""
    if metric == "recovery" and not result.recovery_available:
        metric = "prob"
    return sites_line(result, kinds, metric)


def running_sites_sentence(grid: GridData, kinds, metric: str) -> str:
    """A running trace's headline by the same rules, over its exact cells so far, e.g. "subject site so
    far: mlp layer 3 at ␣Tower (64.2%) · late site so far: none yet" (probability while no cell has a
    recovery: not available); "" before the first exact cell."""
    partial = grid.partial([k for k in kinds if k in grid.values])
    cells = [v for g in partial.grids.values() for row in g["prob"] for v in row]
    if not any(v is not None for v in cells):
        return ""
    if metric == "recovery" and not any(v is not None for g in partial.grids.values() for row in g["recovery"]
                                        for v in row):
        metric = "prob"
    return sites_line(partial, kinds, metric, so_far=True)


def peak_sentence(view: GridView) -> str:
    """The headline of the view (sites_sentence, running_sites_sentence), else the grid's plain peak
    (a logit-difference or estimate-error view, or no exact cell yet), e.g. "peak so far: mlp layer
    3 at ' Tower', 64% recovery"."""
    if view.headline:
        return view.headline
    best = peak(view.values)
    if best is None:
        return "peak: –" if not view.final else f"peak: {NOT_AVAILABLE}"
    r, c, v = best
    return f"peak{'' if view.final else ' so far'}: {view.names[r].format(layer=c)}, {format_with_unit(v, view.metric)}"


def scale_ends(view: GridView) -> tuple[float, float] | None:
    """The colour scale's (lo, hi): the fixed scale, else the cells' range."""
    return view.scale if view.scale is not None else value_range(view.values)


@dataclass
class WorkClock:
    """The ETA of a long phase from the work the engine reports (token-layers done and in all, the
    events' work_done and work_total) and the time elapsed since the first count (as the engine
    measures its cost: engine._cost): this run's own pace, blended with the prediction from the
    engine's measured cost per token-layer (eta_blend) when there is one."""

    started: float | None = None  # None: the time of the first update that counts work
    done: int = 0
    total: int = 0
    cost: float | None = None  # the engine's seconds per token-layer, measured on the last trace

    def update(self, done: int, total: int) -> None:
        """Work `done` of `total` (ignored when total is 0: an event that does not count work)."""
        if total > 0:
            if self.started is None:
                self.started = time.monotonic()
            self.done, self.total = done, total

    @property
    def fraction(self) -> float | None:
        """The share of the work done, 0..1 (None before the first count)."""
        return min(1.0, self.done / self.total) if self.total > 0 else None

    @property
    def elapsed(self) -> float:
        return 0.0 if self.started is None else time.monotonic() - self.started

    @property
    def eta(self) -> float | None:
        fraction = self.fraction
        if fraction is None:
            return None
        return eta_blend(self.elapsed, fraction, self.cost * self.total if self.cost else None)


@dataclass
class Progress:
    """Cells done and the ETA of the running trace, measured on the UI side. The ETA is the work's
    (WorkClock: the engine's token-layers done / in all, by the time elapsed); cells/s before the
    first event that counts work."""

    done: int = 0
    total: int = 0
    started: float = field(default_factory=time.monotonic)
    first_cell_at: float | None = None
    first_done: int = 0
    work: WorkClock | None = None

    def __post_init__(self) -> None:
        if self.work is None:
            self.work = WorkClock()  # its time from the first event that counts work

    def update(self, done: int, total: int) -> None:
        if self.first_cell_at is None and done > 0:
            self.first_cell_at, self.first_done = time.monotonic(), done
        self.done, self.total = done, total

    def add_work(self, event) -> None:
        """The work an event reports (Recording, CellsDone: work_done, work_total)."""
        self.work.update(getattr(event, "work_done", 0), getattr(event, "work_total", 0))

    @property
    def fraction(self) -> float | None:
        """The share of the trace's token-layers done, 0..1 (None before the first count)."""
        return self.work.fraction

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def rate(self) -> float | None:
        """Cells per second since the first batch (the clean/corrupted runs come before it)."""
        if self.first_cell_at is None:
            return None
        span = time.monotonic() - self.first_cell_at
        counted = self.done - self.first_done
        if span < 0.05 or counted <= 0:
            return None
        return counted / span

    @property
    def eta(self) -> float | None:
        if self.work.fraction is not None:
            return self.work.eta
        rate = self.rate
        if not rate or self.total <= 0:
            return None
        return max(0.0, (self.total - self.done) / rate)


def eta_blend(elapsed: float, fraction: float, predicted: float | None) -> float | None:
    """Seconds left: the prediction (`predicted` seconds for the whole trace, from the measured
    cost) less the time elapsed, weighted by the work left, and this run's own pace
    (eta_from_work), weighted by the work done. Early the running workers' chunks are not counted
    yet (the pace alone overestimates by up to 2x); late the pace knows this run's load."""
    live = eta_from_work(elapsed, fraction)
    if predicted is None:
        return live
    prior = max(0.0, predicted - elapsed)
    return prior if live is None else (1.0 - fraction) * prior + fraction * live


def eta_from_work(elapsed: float, fraction: float) -> float | None:
    """Seconds left when `fraction` of the work took `elapsed` seconds (None before 1% is done)."""
    if fraction < 0.01:
        return None
    return max(0.0, elapsed * (1.0 - fraction) / fraction)


def format_seconds(seconds: float | None) -> str:
    """A duration for the status line: "4.2s", "12s", "3m05s", "1h02m"; "–" for None."""
    if seconds is None or not math.isfinite(seconds):
        return "–"
    if seconds < 60:
        return f"{seconds:.0f}s" if seconds >= 10 else f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds + 0.5), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
