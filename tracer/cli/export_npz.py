"""`tracer-tui sweep-export-npz`: a sweep's results as ROME's per-case knowledge_*.npz files."""

from __future__ import annotations

import sys


def add_parser(sub) -> None:
    x = sub.add_parser(
        "sweep-export-npz",
        help="write a sweep's results as ROME's per-case knowledge_*.npz files",
        description="One knowledge_{known_id}{'',_mlp,_attn}.npz per fact and kind (numpy arrays only, no pickle), "
        "as ROME's causal_trace.py writes them; skipped facts get a file holding only correct_prediction=False.",
    )
    x.add_argument("results", metavar="RESULTS.jsonl", help="a sweep's results file")
    x.add_argument("directory", metavar="DIR", help="created if missing; must not hold knowledge_*.npz files already")


def run(args) -> int:
    from ..sweeps.npz import export_results

    files, kept, skipped, warnings = export_results(args.results, args.directory)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(f"{files} files in {args.directory}: {kept} kept facts, {skipped} skipped (correct_prediction=False)")
    return 0
