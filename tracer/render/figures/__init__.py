"""Figures in ROME's style: a trace's heatmaps and a sweep report's AIE plots.

- SVG is written by hand (tracer.render.figures.svg) and needs nothing beyond the standard library:
  `grid_svg`, `trace_svgs`, `report_svgs`.
- PDF and PNG go through matplotlib, the optional extra `plots` (`pip install tracer-tui[plots]`):
  `save_heatmap`, `save_report_plots` (which also writes SVG without it).
See tracer/render/figures/trace.py for the colour scales and titles, tracer/render/figures/report.py for the
report's bands.
"""

from __future__ import annotations

import os

from ...errors import InputError
from . import mpl
from .bars import BarChartSpec
from .mpl import FORMATS, MISSING_MESSAGE, save_bar_chart_spec, save_heatmap_spec, save_line_plot_spec
from .report import report_specs, report_svgs
from .svg import LinePlotSpec
from .trace import figure_size, grid_svg, heatmap_spec, trace_svgs

__all__ = ["FORMATS", "grid_svg", "plot_format", "report_svgs", "save_heatmap", "save_report_plots",
           "save_trace_plots", "trace_svgs"]


def plot_format(path: str) -> str:
    """The figure format named by a file's suffix: "svg", "pdf" or "png".

    Raises:
        InputError: another suffix, or PDF/PNG without matplotlib.
    """
    fmt = os.path.splitext(str(path))[1].lower().lstrip(".")
    if fmt not in FORMATS:
        raise InputError(f"figure file {path} must end in .svg, .pdf or .png")
    if fmt != "svg" and not mpl.have_matplotlib():
        raise InputError(MISSING_MESSAGE)
    return fmt


def _write_text(path: str, text: str) -> str:
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as exc:
        raise InputError(f"cannot write figure {path}: {exc.strerror or exc}") from None
    return path


def save_heatmap(result, path: str, kind: str, *, metric: str = "prob") -> str:
    """One grid of a trace as a figure file in ROME's style (format from the suffix).

    Args:
        result: a TraceResult.
        path: the file to write, ending in .pdf or .png (matplotlib) or .svg (by hand).
        kind: which grid ("hidden", "mlp", "attn", or a severed-path series).
        metric: "prob" (ROME's: floor at the corrupted probability), "recovery" (0-100 %) or "logit_diff".

    Returns:
        `path`.

    Raises:
        InputError: unknown kind, metric or suffix; matplotlib missing for PDF/PNG; an unwritable path.
    """
    fmt = plot_format(path)
    spec = heatmap_spec(result, kind, metric)
    if fmt == "svg":
        return _write_text(path, grid_svg(result, kind, metric))
    return save_heatmap_spec(spec, path, figure_size(spec))


def trace_plot_paths(result, path: str) -> dict[str, str]:
    """{kind: file}: `path` itself for a one-kind trace, else `path`'s stem + "_<kind>" + its suffix."""
    kinds = list(result.grids)
    if len(kinds) == 1:
        return {kinds[0]: path}
    stem, suffix = os.path.splitext(path)
    return {kind: f"{stem}_{kind}{suffix}" for kind in kinds}


def save_trace_plots(result, path: str, *, metric: str = "prob") -> list[str]:
    """Every grid of a trace as figure files (trace_plot_paths names them).

    Args:
        result: a TraceResult.
        path: .svg, .pdf or .png; with several kinds, one file per kind beside it.
        metric: as save_heatmap.

    Returns:
        The paths written.

    Raises:
        InputError: as save_heatmap.
    """
    plot_format(path)
    return [save_heatmap(result, p, kind, metric=metric) for kind, p in trace_plot_paths(result, path).items()]


def save_report_plots(report, directory: str, formats=("svg",)) -> list[str]:
    """A sweep report's figures (report_svgs' names) written into `directory`, one file per format.

    Args:
        report: a SweepReport.
        directory: created if missing (its parent must exist).
        formats: any of "svg" (by hand), "pdf", "png" (matplotlib).

    Returns:
        The paths written, e.g. ["DIR/aie-lines-hidden.svg", "DIR/aie-heatmap-hidden.svg", ...].

    Raises:
        InputError: an unknown format, matplotlib missing for PDF/PNG, an unwritable directory,
            or a report without kept facts (nothing to draw).
    """
    formats = tuple(dict.fromkeys(str(f).lower().lstrip(".") for f in formats))
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise InputError(f"unknown figure format {', '.join(bad) or '(none)'}: choose from {', '.join(FORMATS)}")
    if any(f != "svg" for f in formats) and not mpl.have_matplotlib():
        raise InputError(MISSING_MESSAGE)
    specs = report_specs(report)
    if not specs:
        raise InputError("the report has no kept facts: no figures to draw")
    try:
        if not os.path.isdir(directory):
            os.mkdir(directory)
    except OSError as exc:
        raise InputError(f"cannot create figure folder {directory}: {exc.strerror or exc}") from None
    svgs = report_svgs(report) if "svg" in formats else {}
    written = []
    for name, spec in specs.items():
        for fmt in formats:
            path = os.path.join(directory, f"{name}.{fmt}")
            if fmt == "svg":
                written.append(_write_text(path, svgs[name]))
            elif isinstance(spec, LinePlotSpec):
                written.append(save_line_plot_spec(spec, path))
            elif isinstance(spec, BarChartSpec):
                written.append(save_bar_chart_spec(spec, path))
            else:
                written.append(save_heatmap_spec(spec, path, (4.5, 2.2)))
    return written
