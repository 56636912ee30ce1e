"""The per-cell metrics: their names, labels and formats, and recovery's computation.

One source for every place that names, labels, formats or computes a metric (the engine,
the exports, the plots, the CLI's --metric and the app's views):

- prob: P(target) in the patched run, the mean over noise samples of each row's softmax
  (ROME's score; computed in the batched forward, tracer.schedule).
- recovery: 100 (p - p_corrupted) / (p_clean - p_corrupted), in percent.
- logit_diff: logit(target) - logit(the corrupted run's strongest token other than the target),
  mean over samples
  (computed beside prob in the forward).
"""

from __future__ import annotations

from dataclasses import dataclass


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
