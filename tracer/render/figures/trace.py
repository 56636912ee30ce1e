"""One trace's grids as ROME draws them (docs/method.md#d71-a-traces-heatmap): the heatmap's values,
labels, titles and colour scale, shared by the hand-written SVG and the matplotlib PDF/PNG.

Colour scale per metric:
- prob (ROME's figure): P(target) from vmin = the corrupted run's probability (ROME's low_score)
  to vmax = the grid's largest value; a cell below the corrupted probability is drawn at the floor.
- recovery: a fixed 0-100 % scale (values beyond are drawn at the end colours), so a trace whose
  cells recover 2 % looks pale instead of being stretched to full strength.
- logit_diff: the grid's own minimum to maximum.
Colour maps as ROME's: Purples for hidden states (and the severed-path series), Greens for MLP,
Reds for attention. Subject tokens carry a '*' after their label, as in ROME.
"""

from __future__ import annotations

import os

from ...errors import InputError
from ...guards import warning_lines
from ...metrics import METRICS
from ..tokens import escape_controls, show_token
from ..trace_text import row_labels
from .svg import HeatmapSpec, finite, heatmap_svg, layer_ticks

CMAP_OF_KIND = {"hidden": "Purples", "mlp": "Greens", "attn": "Reds"}
KIND_WORDS = {"mlp": "MLP", "attn": "Attn"}


def model_name(model: str) -> str:
    """A model's name for a figure: a path's last part ("SmolLM2-135M-Instruct.gguf" -> without .gguf)."""
    name = os.path.basename(str(model).rstrip("/\\")) or str(model)
    return escape_controls(name.removesuffix(".gguf"))


def cmap_for(kind: str) -> str:
    return CMAP_OF_KIND.get(kind, "Purples")  # hidden-severed-* are hidden states


def titles(kind: str, window: int, model: str) -> tuple[str, str]:
    """ROME's title and x label for a kind's per-trace heatmap."""
    if kind in KIND_WORDS:
        word = KIND_WORDS[kind]
        return (f"Impact of restoring {word} after corrupted input",
                f"center of interval of {window} restored {word} layers")
    title = "Impact of restoring state after corrupted input"
    if kind.startswith("hidden-severed-"):
        severed = KIND_WORDS.get(kind.rsplit("-", 1)[1], kind.rsplit("-", 1)[1])
        title = f"Impact of restoring state after corrupted input, {severed} severed"
    return title, f"single restored layer within {model}"


def target_label(result) -> str:
    """ROME's colour bar caption word: the target's text without its surrounding spaces."""
    text = escape_controls(result.target_text.strip())
    return text or show_token(result.target_text)


def scale(result, kind: str, metric: str) -> tuple[float, float]:
    """(vmin, vmax) of a grid's colour scale (see the module docstring)."""
    cells = [float(v) for row in result.grids[kind][metric] for v in row if finite(v)]
    if metric == "recovery":
        return 0.0, 100.0
    if metric == "prob":
        floor = float(result.corrupted_prob) if finite(result.corrupted_prob) else (min(cells) if cells else 0.0)
        top = max(cells) if cells else floor
        return floor, max(floor, top)
    if not cells:
        return 0.0, 0.0
    return min(cells), max(cells)


def labels(result) -> list[str]:
    """Each grid row's label: the token (tracer.render.export.show_token), '*' after a subject token;
    one row naming the restored positions ("a + b*") when positions were chosen."""
    b, e = result.subject_range
    marked = [show_token(t) + ("*" if b <= i < e else "") for i, t in row_labels(result)]
    if result.positions != "all":
        return [" + ".join(marked)]
    return marked


def interval_notes(result, kind: str) -> list[list[str]] | None:
    """A noise trace's 95% interval of each cell's mean P, for the tooltips, saying where the
    corrupted probability lies inside it (the cell cannot be told apart from the corrupted run);
    None when the grid has no interval (substitution)."""
    grid = result.grids[kind]
    if "prob_low" not in grid or "prob_high" not in grid:
        return None
    p0 = result.corrupted_prob
    notes = []
    for lows, highs in zip(grid["prob_low"], grid["prob_high"]):
        row = []
        for lo, hi in zip(lows, highs):
            if not (finite(lo) and finite(hi)):
                row.append("")
                continue
            same = "; indistinguishable from the corrupted run" if finite(p0) and lo <= p0 <= hi else ""
            row.append(f" (95% interval {lo:.4g} to {hi:.4g}{same})")
        notes.append(row)
    return notes


def heatmap_spec(result, kind: str, metric: str = "prob") -> HeatmapSpec:
    """The heatmap of one grid of `result` (see the module docstring).

    Args:
        result: a TraceResult.
        kind: a kind in result.grids ("hidden", "mlp", "attn", "hidden-severed-mlp", ...).
        metric: "prob" (ROME's figure), "recovery" or "logit_diff".

    Returns:
        A HeatmapSpec for figures.svg.heatmap_svg or figures.mpl.

    Raises:
        InputError: the kind was not traced or the metric is unknown.
    """
    if kind not in result.grids:
        raise InputError(f"no {kind!r} grid in this result (it has {', '.join(result.grids)})")
    if metric not in METRICS or metric not in result.grids[kind]:
        raise InputError(f"unknown metric {metric!r}: choose from {', '.join(METRICS)}")
    values = [[float(v) if finite(v) else None for v in row] for row in result.grids[kind][metric]]
    n_layers = len(values[0]) if values else 0
    vmin, vmax = scale(result, kind, metric)
    title, xlabel = titles(kind, result.request.window, model_name(result.model))
    caption = {"prob": f"p({target_label(result)})", "recovery": "recovery %", "logit_diff": "logit difference"}[metric]
    return HeatmapSpec(
        values=values, row_labels=labels(result), title=title, xlabel=xlabel, cbar_label=caption,
        vmin=vmin, vmax=vmax, cmap=cmap_for(kind), name=f"{kind}-{metric}", xticks=layer_ticks(n_layers),
        cell_unit="%" if metric == "recovery" else "",
        cell_format="{:.1f}" if metric == "recovery" else "{:.4g}",
        notes=interval_notes(result, kind) if metric == "prob" else None,
        caption=[escape_controls(line) for line in warning_lines(result.warnings)],
    )


def grid_svg(result, kind: str, metric: str = "prob") -> str:
    """A self-contained SVG heatmap of one grid, in ROME's style (see the module docstring).

    Args:
        result: a TraceResult.
        kind: which grid ("hidden", "mlp", "attn", or a severed-path series).
        metric: "prob" (default; colour floor at the corrupted probability), "recovery"
            (fixed 0-100 %) or "logit_diff" (the grid's range).

    Returns:
        The SVG document as text (UTF-8 XML); the same input always gives the same text.

    Raises:
        InputError: the kind was not traced or the metric is unknown.
    """
    return heatmap_svg(heatmap_spec(result, kind, metric))


def trace_svgs(result, metric: str = "prob") -> dict[str, str]:
    """grid_svg for every kind of `result`.

    Args:
        result: a TraceResult.
        metric: as grid_svg.

    Returns:
        {kind: SVG text}, in the result's kind order.
    """
    return {kind: grid_svg(result, kind, metric) for kind in result.grids}


def figure_size(spec: HeatmapSpec) -> tuple[float, float]:
    """Inches: ROME's 3.5 x 2 for a short prompt, taller for more rows."""
    rows = len(spec.values)
    return 3.5, max(2.0, 0.8 + 0.13 * rows)
