"""What a trace reports while it runs: events the engine emits, in order (Started, CellsDone...,
then Finished, Failed or Cancelled; Log at any time).

Plain dataclasses holding Python values: safe to hand from the engine thread to any other thread.
"""

from __future__ import annotations

from dataclasses import dataclass

from .settings import KINDS  # noqa: F401  (re-exported: the app's kind choices)
from .types import TraceResult


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
