"""What a trace asks for, what it reports while running, and what it returns.

Plain dataclasses holding Python values (lists, floats): safe to hand from the
engine thread to any other thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import InputError

KINDS = ("hidden", "mlp", "attn")


def check_settings(kinds, samples: int, window: int, noise: float) -> None:
    """The settings every trace needs, checked in one place (InputError names the bad one)."""
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise InputError(f"unknown kind {unknown[0] if unknown else '(none)'!r}: choose from {', '.join(KINDS)}")
    if samples < 1:
        raise InputError(f"samples must be at least 1 (got {samples})")
    if window < 1:
        raise InputError(f"window must be at least 1 (got {window})")
    if noise < 0:
        raise InputError(f"noise must be non-negative (got {noise})")


@dataclass(frozen=True)
class TraceRequest:
    prompt: str
    subject: str
    corrupted_prompt: str | None = None  # set: substitution mode; None: noise mode
    target: str | None = None  # None: the clean run's top token
    kinds: tuple[str, ...] = KINDS
    samples: int = 10
    noise: float = 3.0  # k: noise std = k x std of the token-embedding values
    window: int = 10
    positions: str | tuple[int, ...] = "all"  # "all", "subject-last" or token indices
    seed: int = 0


@dataclass
class Prediction:
    token_id: int
    text: str
    prob: float


@dataclass
class TraceResult:
    model: str
    tokens: list[str]
    subject_range: tuple[int, int]  # [begin, end)
    target_id: int
    target_text: str
    clean_prob: float
    corrupted_prob: float
    clean_top: list[Prediction]
    corrupted_top: list[Prediction]
    corrupted_top_id: int  # the token the logit difference is measured against
    noise_std: float
    corruption: str  # "noise" or "substitution"
    positions: str | list[int]  # "all" or the restored positions
    request: TraceRequest
    # grids[kind][metric] -> rows x layers; metric in "prob", "recovery", "logit_diff".
    # positions == "all": one row per token; otherwise one row.
    grids: dict[str, dict[str, list[list[float]]]] = field(default_factory=dict)
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    @property
    def n_layers(self) -> int:
        first = next(iter(self.grids.values()))
        return len(first["prob"][0])


# ---- events posted while a trace runs -------------------------------------------------


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


@dataclass
class CellsDone:
    kind: str
    cells: list[tuple[int, int]]  # (row, layer) of each finished cell
    prob: list[float]
    recovery: list[float]
    logit_diff: list[float]
    done: int  # cells finished so far, all kinds
    total: int


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


TraceEvent = Started | CellsDone | Log | Finished | Failed | Cancelled
