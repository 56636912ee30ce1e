"""The per-cell metrics: their names, labels and formats, and recovery's computation.

One source for every place that names, labels, formats or computes a metric (the engine,
the exports, the plots, the CLI's --metric and the app's views):

- prob: P(target) in the patched run, the mean over noise samples of each row's softmax
  (ROME's score; computed in the batched forward, tracer.core.schedule).
- recovery: 100 (p - p_corrupted) / (p_clean - p_corrupted), in percent.
- logit_diff: logit(target) - logit(r), mean over samples, where the reference r is the corrupted
  run's strongest token other than the target (the argmax of the corrupted run's mean softmax with
  the target excluded). Against the corrupted run's top token itself it would be exactly 0 wherever
  the corruption kept the target on top. For a target of several tokens, the logit difference is the
  first target token's, at the prompt's last position (computed beside prob in the forward).

A target of several tokens is traced by teacher forcing: P(target) per sample is the product of its
tokens' probabilities, then the mean over samples.

Noise mode also gives every cell the spread over the noise samples (`interval_grids`): the std of
P(target) (ddof=1), the 95% Student-t interval of the mean (`mean_interval`, `t_quantile_975`) and
the logit difference's std, all reduced in float64 from float32 per-sample values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np


@dataclass(frozen=True)
class Metric:
    name: str
    label: str  # in words: "recovery %"
    title: str  # a table's heading: "P(target)"
    cell: str  # a number table's cell: "{:6.1f}"
    short: str  # a value in a sentence or an axis: "{:.1f}"


METRICS = {
    "prob": Metric("prob", "probability", "P(target)", "{:6.3f}", "{:.3f}"),
    "recovery": Metric("recovery", "recovery %", "recovery %", "{:6.1f}", "{:.1f}"),
    "logit_diff": Metric("logit_diff", "logit difference", "logit difference", "{:6.2f}", "{:+.2f}"),
}
METRIC_NAMES = tuple(METRICS)  # the grids' order: prob, recovery, logit_diff
VIEW_ORDER = ("recovery", "prob", "logit_diff")  # the order views cycle through, recovery first
METRIC_LABELS = {name: m.label for name, m in METRICS.items()}


def recovery_percent(p_patched: float, p_clean: float, p_corrupted: float) -> float:
    """100 (p - p_corrupted) / (p_clean - p_corrupted); 0 when clean equals corrupted."""
    gap = p_clean - p_corrupted
    if abs(gap) < 1e-12:
        return 0.0
    return 100.0 * (p_patched - p_corrupted) / gap


def with_unit(value: float, metric: str) -> str:
    """A value in words: "42% recovery", "probability 0.123", "logit difference +1.50"."""
    if metric == "recovery":
        return f"{value:.0f}% recovery"
    return f"{METRICS[metric].label} {METRICS[metric].short.format(value)}"


cell_metrics = recovery_percent


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the regularized incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b), 0 <= x <= 1.

    Args:
        a, b: the positive shape parameters.
        x: the upper limit of integration.

    Returns:
        I_x(a, b) in [0, 1], to about 1e-14.
    """
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b


@lru_cache(maxsize=None)
def t_quantile_975(df: int) -> float:
    """The 0.975 quantile of Student's t with `df` degrees of freedom (12.706 for 1, 1.960 as df grows).

    Solves P(T > t) = 0.025, i.e. I_{df/(df+t^2)}(df/2, 1/2) = 0.05, by bisection (to ~1e-12).

    Args:
        df: degrees of freedom, a whole number >= 1.

    Returns:
        t with P(T <= t) = 0.975.
    """
    if not isinstance(df, int) or isinstance(df, bool) or df < 1:
        raise ValueError(f"degrees of freedom must be a whole number >= 1 (got {df!r})")
    lo, hi = 0.0, 100.0  # the tail beyond t shrinks as t grows; df = 1 needs 12.7
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if incomplete_beta(df / 2.0, 0.5, df / (df + mid * mid)) > 0.05:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12:
            break
    return 0.5 * (lo + hi)


def mean_interval(values) -> tuple[float, float, float, float]:
    """The mean of `values`, their std (ddof=1) and the 95% Student-t interval of the mean.

    Computed in float64: mean +- t_quantile_975(n - 1) * std / sqrt(n).

    Args:
        values: the per-sample values (any sequence or array of numbers).

    Returns:
        (mean, std, low, high); std, low and high are NaN for fewer than two values.
    """
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    mean = float(x.mean()) if x.size else math.nan
    if x.size < 2:
        return mean, math.nan, math.nan, math.nan
    std = float(x.std(ddof=1))
    half = t_quantile_975(int(x.size) - 1) * std / math.sqrt(x.size)
    return mean, std, mean - half, mean + half


def interval_grids(probs: np.ndarray, diffs: np.ndarray) -> dict[str, np.ndarray]:
    """Per cell, from per-sample values [cells, N] (any float dtype): the mean P, its std (ddof=1),
    the 95% Student-t interval of the mean, and the logit difference's mean and std, in float64.

    Args:
        probs: P(target) per cell and sample.
        diffs: the logit difference per cell and sample.

    Returns:
        {"prob", "prob_std", "prob_low", "prob_high", "logit_diff", "logit_diff_std"}: [cells] arrays;
        the std and interval are NaN when N < 2.
    """
    p = np.asarray(probs, dtype=np.float64)
    d = np.asarray(diffs, dtype=np.float64)
    n = p.shape[1]
    out = {"prob": p.mean(axis=1), "logit_diff": d.mean(axis=1)}
    if n < 2:
        nan = np.full(p.shape[0], np.nan)
        return {**out, "prob_std": nan, "prob_low": nan, "prob_high": nan, "logit_diff_std": nan}
    out["prob_std"], out["logit_diff_std"] = p.std(axis=1, ddof=1), d.std(axis=1, ddof=1)
    half = t_quantile_975(n - 1) * out["prob_std"] / math.sqrt(n)
    out["prob_low"], out["prob_high"] = out["prob"] - half, out["prob"] + half
    return out
