"""A sweep's per-fact grids -> the average indirect effect (AIE) per kind, token group and layer.

Input: records shaped like the results file's lines (tracer.sweeps.results): kept
lines with tokens, subject_range [b, e), clean_prob (ROME's high_score),
corrupted_prob (low_score) and grids {kind: {"prob": T x L}}; a grid may carry
its own "low_score"/"high_score" (records read from ROME's per-kind .npz files).

Token groups of a fact with T tokens and subject [b, e) (docs/method.md#d52-token-groups;
the D-labels below are that page's sections):
    first subject      b
    middle subject     b+1 .. e-2 (none for subjects of <= 2 tokens)
    last subject       e-1
    first subsequent   e, always, even when it is also the last token; none when
                       the subject ends the prompt (e == T; such facts are counted)
    further tokens     e+1 .. T-2
    last token         T-1
A one-token subject puts row b in both first and last subject.

Two estimators (`mode`):
    rome      ROME's notebook (D5.3): every row of every kept fact is one sample of its
              group (pooled), R_g[l] = mean of the pooled scores S[row, l];
              baseline λ = mean low_score over ALL kept facts of the kind;
              AIE_g[l] = R_g[l] - λ; std = population std (ddof=0) of the pooled RAW scores.
    per-fact  this project's earlier estimator, NOT the reference's: per fact, the mean of
              S[row, l] - low_score over the group's rows; then the mean and population std
              over the facts having such rows. Equal to rome's mean for the one-row groups.
Both: total effect (ATE) = mean high_score - mean low_score; heatmap H = max(AIE, 0) with
vmin 0 and vmax = the max of H for the hidden kind, shared by mlp and attn (D5.4; without
a hidden grid, the first kind present in the order hidden, mlp, attn sets it).

Empty cells: a grid cell may be None/NaN (a clean token without counterpart in an aligned
corrupted prompt of another length). Every mean, std and count skips such cells, layer by
layer (`count` per layer); a fact whose rows of a group are all empty at a layer adds
nothing there.

Uncertainty over facts (the 95% band of ROME's line plot, D5.5): low/high =
AIE ± 1.96·std/√count per layer, with the curve's std (rome: population std of the pooled
raw scores; per-fact: of the per-fact effects) and count the samples behind that layer's
mean (rome: pooled rows, the count D5.5 recommends instead of the notebook's stale one;
per-fact: facts). Peak layers: for each fact and group, the layer where the fact's own
curve (the mean of its rows of the group) is largest; `peak_counts[l]` facts peak at l.
"""

from __future__ import annotations

import math
import warnings as _warnings
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError

GROUPS = ("first_subject", "middle_subject", "last_subject", "first_subsequent", "further", "last")
GROUP_LABELS = {
    "first_subject": "first subject",
    "middle_subject": "middle subject",
    "last_subject": "last subject",
    "first_subsequent": "first subsequent",
    "further": "further tokens",
    "last": "last token",
}
THIRDS = ("early", "middle", "late")
Z95 = 1.96  # ROME's line plot: AIE ± 1.96·std/√n (docs/method.md#d55-the-95-band)
INTERVAL_METHOD = ("95% band of ROME's line plot: AIE ± 1.96·std/√n per layer (std: population std, ddof 0; "
                   "n: the samples behind that layer's mean, pooled rows under rome, facts under per-fact)")
AGGREGATES = ("rome", "per-fact")
DEFAULT_AGGREGATE = "rome"
AGGREGATE_NAMES = {
    "rome": "ROME's pooled statistics (each token one sample; baseline = mean corrupted P over all kept facts)",
    "per-fact": "per-fact averaging (each fact once per group; not the reference's estimator)",
}


def token_groups(n_tokens: int, subject_range) -> dict[str, list[int]]:
    """Token positions of each group for one fact (see the module docstring)."""
    b, e = int(subject_range[0]), int(subject_range[1])
    T = n_tokens
    return {
        "first_subject": [b],
        "middle_subject": list(range(b + 1, e - 1)),
        "last_subject": [e - 1],
        "first_subsequent": [e] if e < T else [],
        "further": list(range(e + 1, T - 1)),
        "last": [T - 1],
    }


def layer_thirds(n_layers: int) -> list[tuple[int, int]]:
    """[start, end) of the early, middle and late thirds (numpy.array_split sizes)."""
    sizes = [len(a) for a in np.array_split(np.arange(n_layers), 3)]
    out, start = [], 0
    for s in sizes:
        out.append((start, start + s))
        start += s
    return out


@dataclass
class Curve:
    mean: list[float]  # the AIE per layer
    std: list[float]  # rome: std of the pooled raw scores; per-fact: std of the per-fact effects
    n: int  # samples behind `mean`: pooled rows (rome) or facts (per-fact)
    peak_layer: int | None  # argmax of mean
    peak: float | None
    thirds: list[float | None]  # mean of `mean` over the early, middle, late layers
    score: list[float] = field(default_factory=list)  # the raw P(target) average (rome: R_g)
    rows: int = 0  # token rows pooled, over all facts
    facts: int = 0  # facts with at least one row in the group
    heat: list[float] = field(default_factory=list)  # max(mean, 0): ROME's heatmap values
    low: list[float] = field(default_factory=list)  # mean - 1.96·std/√count (ROME's band)
    high: list[float] = field(default_factory=list)  # mean + 1.96·std/√count
    count: list[int] = field(default_factory=list)  # samples behind each layer's mean (empty cells left out)
    peak_counts: list[int] = field(default_factory=list)  # facts whose own curve peaks at each layer


@dataclass
class KindStats:
    facts: int  # kept facts with this kind's grid (ROME's n, "over n prompts")
    baseline: float | None  # λ: mean low_score
    high: float | None  # mean high_score
    total_effect: float | None  # mean high - mean low
    no_first_subsequent: int  # facts whose subject ends the prompt (no G4 row)
    best_fixed: float | None  # mean over facts of max_{t,l} S (D5.6)
    best_fixed_last_subject: float | None
    best_fixed_last: float | None


# ---- per kind ------------------------------------------------------------------------------


@dataclass
class Case:
    """One kept fact's trace of one kind: ROME's per-trace record, reduced to what averaging needs."""

    known_id: object
    scores: np.ndarray  # [T, L] P(target)
    low: float
    high: float
    subject_range: tuple[int, int]


def _empty(n_layers: int) -> Curve:
    nan = [math.nan] * n_layers
    zeros = [0] * n_layers
    return Curve(nan, nan, 0, None, None, [None, None, None], nan, 0, 0, nan, nan, nan, zeros, zeros)


def nan_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Column statistics that leave NaN cells out.

    Args:
        x: samples x layers, NaN where a cell has no value.

    Returns:
        (mean, population std, count) per column; NaN mean and std where a column has no value.
    """
    x = np.asarray(x, dtype=np.float64)
    present = ~np.isnan(x)
    count = present.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(present, x, 0.0).sum(axis=0) / count
        var = np.where(present, (x - mean) ** 2, 0.0).sum(axis=0) / count
    return mean, np.sqrt(var), count


def _nanmean_rows(x: np.ndarray) -> np.ndarray:
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x, axis=0)


def _nan_max(values) -> float | None:
    finite = [v for v in values if not math.isnan(v)]
    return max(finite) if finite else None


def _curve(mean, std, score, count, n: int, rows: int, facts: int, thirds, peak_counts) -> Curve:
    ok = ~np.isnan(mean)
    peak = int(np.argmax(np.where(ok, mean, -np.inf))) if ok.any() else None
    with np.errstate(invalid="ignore", divide="ignore"):
        half = Z95 * std / np.sqrt(count)

    def third(s, e):
        part = mean[s:e][~np.isnan(mean[s:e])]
        return float(part.mean()) if len(part) else None

    return Curve(
        [float(x) for x in mean],
        [float(x) for x in std],
        n,
        peak,
        None if peak is None else float(mean[peak]),
        [third(s, e) for s, e in thirds],
        [float(x) for x in score],
        rows,
        facts,
        [float(x) for x in np.where(ok, np.clip(mean, 0.0, None), np.nan)],
        [float(x) for x in mean - half],
        [float(x) for x in mean + half],
        [int(c) for c in count],
        [int(c) for c in peak_counts],
    )


def kind_curves(cases: list[Case], mode: str, n_layers: int) -> tuple[dict[str, Curve], KindStats]:
    """The six group curves of one kind and its summary numbers."""
    if mode not in AGGREGATES:
        raise InputError(f"unknown aggregate {mode!r}: choose {' or '.join(AGGREGATES)}")
    thirds = layer_thirds(n_layers) if n_layers else []
    lows = np.array([c.low for c in cases], dtype=np.float64)
    highs = np.array([c.high for c in cases], dtype=np.float64)
    baseline = float(lows.mean()) if cases else None
    pooled: dict[str, list[np.ndarray]] = {g: [] for g in GROUPS}  # rome: raw rows
    per_fact: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {g: [] for g in GROUPS}  # (effect, raw) per fact
    peaks: dict[str, np.ndarray] = {g: np.zeros(n_layers, dtype=int) for g in GROUPS}
    no_g4 = 0
    for c in cases:
        T = c.scores.shape[0]
        groups = token_groups(T, c.subject_range)
        if not groups["first_subsequent"]:
            no_g4 += 1
        for g, rows in groups.items():
            if rows:
                raw = c.scores[rows]
                fact_curve = _nanmean_rows(raw)  # NaN at a layer where all its rows are empty
                pooled[g].append(raw)
                per_fact[g].append((fact_curve - c.low, fact_curve))
                if not np.isnan(fact_curve).all():
                    peaks[g][int(np.nanargmax(fact_curve))] += 1
    curves = {}
    for g in GROUPS:
        rows = sum(len(a) for a in pooled[g])
        facts = len(pooled[g])
        if not facts:
            curves[g] = _empty(n_layers)
        elif mode == "rome":
            score, std, count = nan_stats(np.concatenate(pooled[g], axis=0))
            curves[g] = _curve(score - baseline, std, score, count, rows, rows, facts, thirds, peaks[g])
        else:
            mean, std, count = nan_stats(np.stack([e for e, _ in per_fact[g]]))
            score, _, _ = nan_stats(np.stack([r for _, r in per_fact[g]]))
            curves[g] = _curve(mean, std, score, count, facts, rows, facts, thirds, peaks[g])

    def mean_of(xs):
        xs = [x for x in xs if not math.isnan(x)]
        return float(np.mean(xs)) if len(xs) else None

    def row_max(c: Case, row: int) -> float:
        values = c.scores[row][~np.isnan(c.scores[row])]
        return float(values.max()) if len(values) else math.nan

    stats = KindStats(
        facts=len(cases),
        baseline=baseline,
        high=mean_of(highs),
        total_effect=float(highs.mean() - lows.mean()) if cases else None,
        no_first_subsequent=no_g4,
        best_fixed=mean_of([float(np.nanmax(c.scores)) if not np.isnan(c.scores).all() else math.nan for c in cases]),
        best_fixed_last_subject=mean_of([row_max(c, c.subject_range[1] - 1) for c in cases]),
        best_fixed_last=mean_of([row_max(c, -1) for c in cases]),
    )
    return curves, stats
