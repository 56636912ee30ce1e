"""`tracer-tui sweep-report`: the average indirect effects of a sweep's results (ROME's statistics by
default), from its JSONL file or a directory of ROME's per-case .npz files."""

from __future__ import annotations

import sys

from ..errors import InputError
from .common import write_output
from .plots import add_report_plot_arguments, write_report_plots


def add_parser(sub) -> None:
    r = sub.add_parser(
        "sweep-report",
        help="average indirect effect curves of a sweep's results",
        description="The paper's average indirect effect per kind at six token groups, from a sweep's JSONL "
        "or a directory of ROME's knowledge_*.npz case files.",
    )
    r.add_argument("results", metavar="RESULTS", help="a sweep's results.jsonl, or a directory of knowledge_{id}[_mlp|_attn].npz files")
    r.add_argument("--aggregate", choices=("rome", "per-fact"), default="rome",
                   help="rome (default): ROME's notebook, every token row one sample, baseline = mean corrupted P over all "
                   "kept facts; per-fact: each fact once per group (not the reference's)")
    r.add_argument("--by", choices=("relation",), default=None,
                   help="relation: one report per relation_id (known_1000 and counterfact facts carry one), as ROME's "
                   "per-relation analyses; text shows a table of each relation's effect and peak layer")
    r.add_argument("--format", choices=("text", "csv", "json"), default="text", help="default: text")
    r.add_argument("--output", "-o", metavar="FILE", help="write here instead of stdout")
    r.add_argument("--no-plots", action="store_true", help="text format: tables only")
    add_report_plot_arguments(r)  # --plots DIR, --plot-formats (tracer/cli/plots.py, tracer.render.figures)


def run(args) -> int:
    from ..render.sweep_report import render, render_relations
    from ..sweeps.aggregate import load_relation_reports, load_report

    if args.by == "relation":
        if args.plots:
            raise InputError("--by relation writes tables only; drop --plots")
        return write_output(args.output, render_relations(load_relation_reports(args.results, args.aggregate), args.format))
    report = load_report(args.results, args.aggregate)
    write_report_plots(args, report)
    to_terminal = args.output is None and sys.stdout.isatty()
    if args.format == "text":
        from ..render.sweep_report import render_text

        text = render_text(report, plots=not args.no_plots, color=to_terminal)
    else:
        text = render(report, args.format)
    return write_output(args.output, text)
