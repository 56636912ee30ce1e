"""Adaptive samples (`trace --samples auto`) against a fixed 10 samples: patched forward rows used,
seconds, and how many cells reach the target interval width, on the Eiffel trace and known_1000 facts.

    uv run python benchmarks/adaptive_samples.py --json                      # Eiffel + 10 facts, embedded model
    uv run python benchmarks/adaptive_samples.py --facts 6 --kinds hidden   # quicker

Per prompt, in one process: the fixed trace (samples=10) and the adaptive one (ci_width=W, at most
--max-samples). `rows_fixed` / `rows_auto` are the patched cells x samples each ran (the forward rows
that cost the time; the clean and corrupted runs are the same in both); `within_fixed` / `within_auto`
the fraction of exact cells whose 95% interval of P is at most W wide (cells equal to the corrupted
run are left out of both: they are not patched). `rows_fixed_same_width` is what a fixed run costs that
gives every cell as many samples as the adaptive run's widest cells needed (the same widths everywhere).
"""

from __future__ import annotations

import argparse
import json
import time

import tracer  # noqa: F401  (fast BLAS before mlx.core)
from tracer.core.tracing import Tracer, run_trace
from tracer.inputs.facts_file import load_facts
from tracer.models.load import load_model
from tracer.types import TraceRequest

import numpy as np

PROMPT, SUBJECT = "The Eiffel Tower is located in the city of", "Eiffel Tower"
DEFAULT_FACTS = "0,6,21,42,77,100,250,500,750,1000"


def _patched(result, kinds) -> np.ndarray:
    """Which cells were patched: the subject's first token onwards (earlier rows equal the corrupted run)."""
    first = result.subject_range[0]
    rows = np.arange(len(result.tokens))[:, None] >= first
    return np.concatenate([np.broadcast_to(rows, np.array(result.grids[k]["prob"]).shape).ravel() for k in kinds])


def _widths(result, kinds) -> np.ndarray:
    return np.concatenate([(np.array(result.grids[k]["prob_high"], dtype=float)
                            - np.array(result.grids[k]["prob_low"], dtype=float)).ravel() for k in kinds])


def compare(engine: Tracer, prompt: str, subject: str, *, kinds, width: float, max_samples: int) -> dict:
    """One prompt: the fixed and the adaptive trace, measured."""
    start = time.perf_counter()
    fixed = run_trace(engine, TraceRequest(prompt, subject, kinds=kinds, samples=10))
    fixed_s = time.perf_counter() - start
    start = time.perf_counter()
    auto = run_trace(engine, TraceRequest(prompt, subject, kinds=kinds, samples=max_samples, ci_width=width))
    auto_s = time.perf_counter() - start
    patched = _patched(fixed, kinds)
    counts = np.concatenate([np.array(auto.grids[k]["samples"]).ravel() for k in kinds])[patched]
    w_fixed, w_auto = _widths(fixed, kinds)[patched], _widths(auto, kinds)[patched]
    return {
        "cells": int(patched.sum()), "rows_fixed": int(10 * patched.sum()), "rows_auto": int(counts.sum()),
        "rows_ratio": round(float(counts.sum() / (10 * patched.sum())), 3),
        # a fixed run giving every cell the samples the widest cells needed: the same widths everywhere
        "rows_fixed_same_width": int(counts.max() * patched.sum()),
        "fixed_s": round(fixed_s, 2), "auto_s": round(auto_s, 2),
        "within_fixed": round(float(np.mean(w_fixed <= width)), 3),
        "within_auto": round(float(np.mean(w_auto <= width)), 3),
        "samples_histogram": {int(n): int((counts == n).sum()) for n in np.unique(counts)},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="one JSON line per prompt, then a total")
    parser.add_argument("--facts", default=DEFAULT_FACTS, help=f"known_1000 ids (default: {DEFAULT_FACTS})")
    parser.add_argument("--kinds", default="hidden,mlp,attn")
    parser.add_argument("--ci-width", type=float, default=0.02)
    parser.add_argument("--max-samples", type=int, default=40)
    args = parser.parse_args()
    engine = Tracer(load_model())
    kinds = tuple(args.kinds.split(","))
    facts = {f.known_id: f for f in load_facts("known_1000")}
    cases = [("eiffel", PROMPT, SUBJECT)] + [(f"known_{i}", facts[int(i)].prompt, facts[int(i)].subject)
                                             for i in args.facts.split(",") if i.strip()]
    run_trace(engine, TraceRequest(PROMPT, SUBJECT, samples=1, positions="subject-last"))  # warm-up
    total = {"rows_fixed": 0, "rows_auto": 0, "fixed_s": 0.0, "auto_s": 0.0}
    for name, prompt, subject in cases:
        out = {"case": name, **compare(engine, prompt, subject, kinds=kinds, width=args.ci_width,
                                       max_samples=args.max_samples)}
        for key in total:
            total[key] += out[key]
        print(json.dumps(out) if args.json else json.dumps(out, indent=1), flush=True)
    total["rows_ratio"] = round(total["rows_auto"] / total["rows_fixed"], 3)
    print(json.dumps({"case": "total", **total}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
