"""A sweep report's figures as ROME's notebook draws them (docs/method.md#d72-the-aie-heatmap,
#d73-the-aie-line-plot): per kind,
the average indirect effect (AIE) over layers for the six token groups with a 95% band, and the
AIE heatmap (groups x layers, max(AIE, 0) from 0 to the report's shared vmax).

The band: the report's own interval per layer when its curves carry one (a pair of attributes
such as `low`/`high` or `ci_low`/`ci_high`), else mean ± 1.96·std/√n from the curve's mean,
std and n (ROME's line plot, with n the samples pooled in the group, as D5.5 recommends).
The y axis is shared by every kind's line plot, as ROME's three panels share it.
"""

from __future__ import annotations

import math

from ...sweeps.stats import GROUPS
from .bars import BarChartSpec, bar_chart_svg, severed_spec
from .svg import H_IL, TAB10, HeatmapSpec, LinePlotSpec, Series, finite, heatmap_svg, layer_ticks, line_plot_svg
from .trace import KIND_WORDS, cmap_for, model_name

ROME_LABELS = {  # D5.2's group labels, as ROME's figures print them
    "first_subject": "First subject token",
    "middle_subject": "Middle subject tokens",
    "last_subject": "Last subject token",
    "first_subsequent": "First subsequent token",
    "further": "Further tokens",
    "last": "Last token",
}
GROUP_COLOURS = dict(zip(GROUPS, (TAB10[i] for i in (0, 1, 2, 4, 5, 3))))  # ROME's colour order
INTERVAL_FIELDS = (("low", "high"), ("ci_low", "ci_high"), ("lower", "upper"), ("interval_low", "interval_high"))
Z95 = 1.96


def band(curve) -> tuple[list[float], list[float]] | None:
    """A curve's 95% interval per layer (see the module docstring); None when it has no samples.

    Args:
        curve: a tracer.sweeps.stats.Curve (mean, std, n; interval fields if the report has them).

    Returns:
        (low, high) lists, one value per layer (NaN where the mean is NaN), or None.
    """
    if not curve.n:
        return None
    for lo_name, hi_name in INTERVAL_FIELDS:
        lo, hi = getattr(curve, lo_name, None), getattr(curve, hi_name, None)
        if isinstance(lo, (list, tuple)) and isinstance(hi, (list, tuple)) and len(lo) == len(hi) == len(curve.mean):
            return ([float(x) if finite(x) else math.nan for x in lo], [float(x) if finite(x) else math.nan for x in hi])
    half = [Z95 * s / math.sqrt(curve.n) if finite(s) else math.nan for s in curve.std]
    return [m - h for m, h in zip(curve.mean, half)], [m + h for m, h in zip(curve.mean, half)]


def line_title(kind: str, window) -> str:
    """ROME's line plot panel title for a kind."""
    if kind == "mlp":
        return f"Average indirect effect of a run of {window} MLP lookups"
    if kind == "attn":
        return f"Average indirect effect of a run of {window} Attn modules"
    if kind.startswith("hidden-severed-"):
        severed = kind.rsplit("-", 1)[1]
        return f"Average indirect effect of a single hidden vector, {KIND_WORDS.get(severed, severed)} severed"
    return "Average indirect effect of a single hidden vector"


def _series(report, kind: str) -> list[Series]:
    out = []
    for g in GROUPS:
        c = report.curves[kind][g]
        if not c.n:
            continue
        b = band(c)
        out.append(Series(ROME_LABELS[g], GROUP_COLOURS[g], [float(v) for v in c.mean],
                          b[0] if b else None, b[1] if b else None))
    return out


def shared_ylim(report) -> tuple[float, float]:
    """The y range of every kind's line plot: all means and bands, with 5% room, 0 included."""
    values = [0.0]
    for kind in report.kinds:
        for s in _series(report, kind):
            values += [v for v in s.values + (s.low or []) + (s.high or []) if finite(v)]
    lo, hi = min(values), max(values)
    pad = 0.05 * (hi - lo) if hi > lo else 0.5
    return lo - pad, hi + pad


def line_spec(report, kind: str, ylim: tuple[float, float] | None = None) -> LinePlotSpec:
    """ROME's AIE line plot of one kind (D7.3)."""
    arch = model_name(report.config.get("model") or "the model")
    return LinePlotSpec(
        series=_series(report, kind), title=line_title(kind, report.config.get("window", "?")),
        xlabel=f"Layer number in {arch}", ylabel="Average indirect effect on p(o)",
        ylim=ylim or shared_ylim(report), n_layers=report.n_layers, name=f"aie-lines-{kind}",
    )


def heatmap_spec(report, kind: str) -> HeatmapSpec:
    """ROME's AIE heatmap of one kind (D7.2): max(AIE, 0), vmin 0, vmax shared by the kinds."""
    n = report.stats[kind].facts if kind in report.stats else report.kept
    if kind in KIND_WORDS:
        title = f"Avg Indirect Effect of {KIND_WORDS[kind]} over {n} prompts"
        xlabel = f"center of interval of {report.config.get('window', '?')} patched {kind} layers"
    else:
        title = f"Avg Indirect Effect of {H_IL} over {n} prompts"
        if kind.startswith("hidden-severed-"):
            title += f", {KIND_WORDS.get(kind.rsplit('-', 1)[1], kind)} severed"
        xlabel = f"single patched layer within {model_name(report.config.get('model') or 'the model')}"
    values = [[float(v) if finite(v) else None for v in report.curves[kind][g].heat] if report.curves[kind][g].facts
              else [None] * report.n_layers for g in GROUPS]
    vmax = report.vmax if finite(report.vmax) else 0.0
    return HeatmapSpec(
        values=values, row_labels=[ROME_LABELS[g] for g in GROUPS], title=title, xlabel=xlabel, cbar_label="AIE",
        vmin=0.0, vmax=max(0.0, vmax), cmap=cmap_for(kind), name=f"aie-heatmap-{kind}",
        xticks=layer_ticks(report.n_layers),
    )


def report_specs(report) -> dict[str, object]:
    """Every figure of a report by name: "aie-lines-<kind>" and "aie-heatmap-<kind>" per kind
    with kept facts, in the report's kind order, and "severed-paths" (the paper's Figure 3) when
    the sweep severed paths."""
    if not report.kept or not report.n_layers:
        return {}
    ylim = shared_ylim(report)
    out: dict[str, object] = {}
    for kind in report.kinds:
        if kind in report.stats and not report.stats[kind].facts:
            continue
        out[f"aie-lines-{kind}"] = line_spec(report, kind, ylim)
        out[f"aie-heatmap-{kind}"] = heatmap_spec(report, kind)
    severed = severed_spec(report)
    if severed is not None:
        out["severed-paths"] = severed
    return out


def spec_svg(spec) -> str:
    """The SVG of any figure spec (line plot, heatmap or column chart)."""
    if isinstance(spec, LinePlotSpec):
        return line_plot_svg(spec)
    if isinstance(spec, BarChartSpec):
        return bar_chart_svg(spec)
    return heatmap_svg(spec)


def report_svgs(report) -> dict[str, str]:
    """The sweep report's figures as SVG text.

    Args:
        report: a tracer.sweeps.stats.SweepReport (tracer.render.sweep_report.load_report).

    Returns:
        {name: SVG text}: "aie-lines-<kind>" (ROME's line plot with 95% bands) and
        "aie-heatmap-<kind>" (ROME's AIE heatmap) for each kind with kept facts, and
        "severed-paths" (the paper's Figure 3) for a sweep with --sever; empty when the report
        has no kept facts.
    """
    return {name: spec_svg(spec) for name, spec in report_specs(report).items()}
