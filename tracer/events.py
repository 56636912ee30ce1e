"""What a trace reports while it runs: events the engine emits, in order (Recording..., Started,
Estimate... (a request with estimate "progressive" or "only"), CellsDone..., then Finished, Failed or
Cancelled; Log at any time).

Plain dataclasses holding Python values: safe to hand from the engine thread to any other thread.
"""

from __future__ import annotations

from dataclasses import dataclass

from .types import TraceResult


@dataclass
class Recording:
    """Progress of the clean and corrupted runs recorded before any cell is computed: `layer`
    of `n_layers` blocks done in batch `batch` (from 1) of `n_batches` (the corrupted run's
    noise samples are recorded in batches); layer 0 when a phase begins."""

    phase: str  # "clean" or "corrupted"
    layer: int
    n_layers: int
    batch: int = 1
    n_batches: int = 1
    work_done: int = 0  # token-layers of the whole trace done by now (core.tracing.WorkMeter)
    work_total: int = 0  # and in all (0: not counted)

    @property
    def fraction(self) -> float:
        """This phase's share done, 0..1."""
        return ((self.batch - 1) * self.n_layers + self.layer) / max(1, self.n_layers * self.n_batches)

    def describe(self) -> str:
        """e.g. "recording corrupted run: layer 12/30 (batch 2/5)"."""
        text = f"recording {self.phase} run: layer {self.layer}/{self.n_layers}"
        return text + (f" (batch {self.batch}/{self.n_batches})" if self.n_batches > 1 else "")


@dataclass
class Started:
    tokens: list[str]
    subject_range: tuple[int, int]
    clean_prob: float
    corrupted_prob: float
    shape: tuple[int, int]  # rows x layers of each kind's grid
    kinds: tuple[str, ...]
    target_text: str
    total_cells: int
    work_total: int = 0  # token-layers the whole trace costs (core.tracing.WorkMeter; 0: not counted)


@dataclass
class CellsDone:
    """Finished cells of one grid. `recovery` holds None for every cell when recovery % is not
    available (the total effect is below guards.MIN_TOTAL_EFFECT: show n/a). Cells without a
    value (a prompt token with no counterpart in an aligned corrupted prompt) never arrive."""

    kind: str
    cells: list[tuple[int, int]]  # (row, layer) of each finished cell
    prob: list[float]
    recovery: list[float | None]
    logit_diff: list[float]
    done: int  # cells finished so far, all kinds
    total: int
    work: int = 0  # token-layers these cells' forwards cost (schedule.cell_token_layers)
    work_done: int = 0  # token-layers of the whole trace done by now: recording, estimate, cells (half of
    # the forwards still running on the workers: core.tracing.WorkMeter.shown)
    work_total: int = 0  # and in all (0: not counted); work_done / work_total is the share done
    # exact values of a progressive trace's first cells, computed ahead in small forwards: the same
    # cells arrive again later (counted in `done` then) from the trace's own forwards, equal up to
    # float rounding (the result holds those)
    preview: bool = False
    samples: list[int] | None = None  # adaptive samples: each cell's noise samples (None: the request's)
    prob_low: list[float | None] | None = None  # noise mode: each cell's 95% interval of P (None: not known)
    prob_high: list[float | None] | None = None


@dataclass
class Estimate:
    """The first-order estimate (attribution patching, core/estimate.py) of one grid's cells, sent
    once per grid after Started and before the exact cells of those grids. Show it marked as an
    estimate; each CellsDone then replaces its cells with exact values (and estimate minus exact
    is the estimate's error there). `cells` are the grid's cells that have an estimate and are not
    exact yet (cells restoring only positions before the corruption arrive exactly, at once, in a
    CellsDone before it)."""

    kind: str  # the grid
    cells: list[tuple[int, int]]  # (row, layer)
    prob: list[float]
    recovery: list[float | None]  # None for every cell when recovery % is not available
    seconds: float  # the estimate's time (its forward and backward passes)


@dataclass
class Log:
    level: str  # "info", "warning", "error"
    text: str


@dataclass
class Finished:
    result: TraceResult
    seconds: float


@dataclass
class Failed:
    message: str


@dataclass
class Cancelled:
    pass


@dataclass
class RobustnessProgress:
    """Progress of tracer.robustness: variant `index` (from 0) of `total`, `name`, about to run
    (done False) or finished (done True, `index` then counts the variants done); work_done of
    work_total token-layers of all the variants' traces (each weighed by its predicted work)."""

    index: int
    total: int
    name: str
    done: bool
    work_done: int = 0
    work_total: int = 0  # 0: not counted


@dataclass
class RobustnessWork:
    """While variant `index` of tracer.robustness runs (after each of its traces' progress events):
    work_done of work_total token-layers of all the variants' traces, as RobustnessProgress counts them."""

    index: int
    work_done: int
    work_total: int


TraceEvent = Recording | Started | Estimate | CellsDone | Log | Finished | Failed | Cancelled
