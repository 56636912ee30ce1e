"""The figure options of `trace` (--plot FILE, --plot-metric) and `sweep-report` (--plots DIR,
--plot-formats): each subcommand adds them with one call and writes the figures with another.

Paths and formats are checked while the command line is parsed, before any work: a bad suffix,
PDF/PNG without matplotlib, or an unwritable place is one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import InputError
from ..metrics import VIEW_ORDER
from .common import check_writable


def _checked(check):
    """An argparse type from a check that raises InputError (argparse then prints one line, exit 2)."""

    def convert(text: str):
        try:
            return check(text)
        except InputError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = check.__name__
    return convert


def plot_file(path: str) -> str:
    """--plot's FILE: ends in .svg, .pdf or .png (the latter two need matplotlib), and can be written."""
    from ..render.figures import plot_format

    plot_format(path)
    check_writable(path)
    return path


def plots_dir(path: str) -> str:
    """--plots' DIR: a writable folder, or one that can be created in a writable folder."""
    if not path.strip():
        raise InputError("the figure folder is empty")
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise InputError(f"figure folder {path} is a file")
        if not os.access(path, os.W_OK | os.X_OK):
            raise InputError(f"cannot write into figure folder {path}")
        return path
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"cannot create figure folder {path}")
    return path


def plot_formats(text: str) -> tuple[str, ...]:
    """--plot-formats: comma-separated svg, pdf, png."""
    from ..render.figures.mpl import FORMATS, MISSING_MESSAGE, have_matplotlib

    formats = tuple(dict.fromkeys(f.strip().lower().lstrip(".") for f in text.split(",") if f.strip()))
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise InputError(f"unknown figure format {', '.join(bad) or '(none)'}: choose from {', '.join(FORMATS)}")
    if any(f != "svg" for f in formats) and not have_matplotlib():
        raise InputError(MISSING_MESSAGE)
    return formats


def add_trace_plot_arguments(p: argparse.ArgumentParser) -> None:
    """trace's --plot FILE and --plot-metric."""
    p.add_argument("--plot", metavar="FILE", type=_checked(plot_file), default=None,
                   help="also draw each grid as a figure in ROME's style: .svg (no extra needed), .pdf or .png "
                   "(needs tracer-tui[plots]); with several kinds, FILE's stem + _<kind> per kind")
    p.add_argument("--plot-metric", choices=VIEW_ORDER, default="prob",
                   help="what --plot draws (default: prob, ROME's figure: P(target) from the corrupted probability "
                   "up; recovery on a fixed 0-100%% scale)")


def write_trace_plots(args, result) -> None:
    """The figures --plot asked for (none without it); says which files on stderr."""
    if getattr(args, "plot", None):
        from ..render.figures import save_trace_plots

        paths = save_trace_plots(result, args.plot, metric=args.plot_metric)
        print(f"wrote {', '.join(paths)}", file=sys.stderr)


def add_report_plot_arguments(p: argparse.ArgumentParser) -> None:
    """sweep-report's --plots DIR and --plot-formats."""
    p.add_argument("--plots", metavar="DIR", type=_checked(plots_dir), default=None,
                   help="also write ROME's figures per kind into DIR (created if missing): the AIE line plot with "
                   "95%% bands (aie-lines-<kind>), the AIE heatmap (aie-heatmap-<kind>), and with severed paths the "
                   "paper's Figure 3 (severed-paths)")
    p.add_argument("--plot-formats", metavar="LIST", type=_checked(plot_formats), default=("svg",),
                   help="comma-separated svg, pdf, png (default: svg; pdf and png need tracer-tui[plots])")


def write_report_plots(args, report) -> None:
    """The figures --plots asked for (none without it); names the folder and files on stderr."""
    if not getattr(args, "plots", None):
        return
    if not report.kept:
        print("tracer-tui: warning: no kept facts: no figures written", file=sys.stderr)
        return
    from ..render.figures import save_report_plots

    paths = save_report_plots(report, args.plots, formats=args.plot_formats)
    print(f"wrote {len(paths)} figure(s) to {args.plots}: {', '.join(os.path.basename(p) for p in paths)}",
          file=sys.stderr)
