"""Progressive trace: how soon the estimate and the exact peak arrive, what the whole costs against
today's schedule, and how well the first-order estimate correlates with the exact grids.

    uv run python benchmarks/progressive.py --json                   # the Eiffel trace, embedded model
    uv run python benchmarks/progressive.py --facts 6,21             # also known_1000 facts (by known_id)
    uv run python benchmarks/progressive.py --json --model-shape gpt2-xl --quick   # random init, timings

All measured in one process, after a small warm-up trace: a trace with today's schedule
(`baseline_total_s`), then the same trace with estimate="progressive": `estimate_s` is the time from
the call to the first Estimate event (the clean and corrupted runs included), `estimate_only_s` the
estimate's own forward and backward passes, `exact_peak_s` the time until every kind's peak cell (the
final grid's largest P(target)) is exact, `peak_region_s` the time until every kind has an exact
cell within its peak's 95% interval (one the noise samples cannot tell from the peak: where the
peak is a plateau, which of its cells comes out largest is chance), `total_s` the whole
progressive trace.
`baseline_peak_s` is the same peak time under today's schedule. `correlation` is the Pearson r of
the estimated and exact P(target) per kind (None for a random-init model: timings only).

--app measures the same in the app itself (Textual's Pilot, headless, 120x40): from ctrl+r to the
grid holding the estimate (and to the engine sending it: `estimate_sent_s`), and to each kind's final
peak cell being exact (the grid's model polled on the UI thread every 10 ms: what the next frame
draws), after a one-sample warm-up run.

--model-shape gpt2-xl / llama-1b / ... builds a random-init model of that shape in memory (shapes.py).
--quick restricts the cells to positions subject-last and 3 samples (the whole grid of a 1.5B model
takes many minutes here).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time

import tracer  # noqa: F401  (fast BLAS before mlx.core)
from tracer.core.tracing import Tracer, run_trace
from tracer.events import CellsDone, Estimate
from tracer.inputs.facts_file import load_facts
from tracer.models.load import load_model
from tracer.types import TraceRequest

import numpy as np
from shapes import SHAPES, random_model

PROMPT = "The Eiffel Tower is located in the city of"
SUBJECT = "Eiffel Tower"

def timed_trace(engine: Tracer, request: TraceRequest) -> tuple[object, dict]:
    """The result and the times (from the call) of the first Estimate event and of each exact cell."""
    started = time.perf_counter()
    times: dict = {"cells": {}}

    def on_event(event):
        now = time.perf_counter() - started
        if isinstance(event, Estimate):
            times.setdefault("estimate", now)
            times["estimate_only"] = event.seconds
        elif isinstance(event, CellsDone):
            for cell in event.cells:
                times["cells"].setdefault((event.kind, *cell), now)  # a preview first: exact values

    result = run_trace(engine, request, on_event=on_event)
    times["total"] = time.perf_counter() - started
    return result, times


def peak_time(result, times: dict) -> dict:
    """Per kind: when the final grid's largest-P(target) cell arrived exact."""
    out = {}
    for kind in result.request.kinds:
        grid = result.grid(kind)
        row, layer = np.unravel_index(int(np.nanargmax(grid)), grid.shape)
        out[kind] = times["cells"][(kind, int(row), int(layer))]
    return out


def peak_region_time(result, times: dict) -> dict:
    """Per kind: when the first exact cell arrived whose P(target) is within the final peak cell's
    95% interval over the noise samples (a cell the samples cannot tell from the peak; the
    peak itself at the latest). None in substitution mode (no interval)."""
    out = {}
    for kind in result.request.kinds:
        grid = result.grid(kind)
        row, layer = np.unravel_index(int(np.nanargmax(grid)), grid.shape)
        low = result.grids[kind].get("prob_low")
        if low is None or low[row][layer] is None:
            out[kind] = None
            continue
        near = np.argwhere(grid >= low[row][layer])
        out[kind] = min(times["cells"][(kind, int(r), int(c))] for r, c in near)
    return out


def measure(engine: Tracer, request: TraceRequest, correlations: bool) -> dict:
    """Today's schedule, then the progressive one, on the same request (see the module docstring)."""
    base, base_times = timed_trace(engine, request)
    prog, times = timed_trace(engine, TraceRequest(**{**_fields(request), "estimate": "progressive"}))
    for kind in request.kinds:
        assert np.array_equal(base.grid(kind), prog.grid(kind), equal_nan=True), f"{kind}: grids differ"
    peaks, base_peaks = peak_time(prog, times), peak_time(base, base_times)
    regions = peak_region_time(prog, times)
    errors = prog.estimate_error or {}
    return {
        "estimate_s": round(times["estimate"], 3),
        "estimate_only_s": round(times["estimate_only"], 3),
        "exact_peak_s": round(max(peaks.values()), 3),
        "total_s": round(times["total"], 3),
        "baseline_total_s": round(base_times["total"], 3),
        "baseline_peak_s": round(max(base_peaks.values()), 3),
        "exact_peak_s_by_kind": {k: round(v, 3) for k, v in peaks.items()},
        "peak_region_s": None if None in regions.values() else round(max(regions.values()), 3),
        "peak_region_s_by_kind": {k: None if v is None else round(v, 3) for k, v in regions.items()},
        "correlation": {k: (None if not correlations or e["correlation"] is None else round(e["correlation"], 4))
                        for k, e in errors.items()},
        "largest_errors": {k: e["largest"][:3] for k, e in errors.items()} if correlations else {},
        "cells": sum(np.isfinite(prog.grid(k)).sum() for k in request.kinds).item(),
    }


async def in_app() -> dict:
    """The Eiffel trace in the app (see the module docstring): seconds from ctrl+r."""
    from textual import events

    from tui.app import make_app

    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        async def until(condition, step=0.01):
            while not condition():
                await asyncio.sleep(step)

        await until(lambda: app.model_info is not None and bool(app.query_one("#strip").tokens), 0.05)
        screen = app.trace_screen
        ended = lambda: screen.run is None or screen.run.ended  # noqa: E731
        app.query_one("#samples").value = "1"
        await pilot.press("ctrl+r")
        await until(ended, 0.05)
        app.query_one("#samples").value = "10"
        before, emitted = screen.run, {}
        engine_trace = screen.engine.trace

        def trace(request, on_event=None, *args, **kwargs):  # when the engine sends the estimate
            def relay(event):
                if isinstance(event, Estimate):
                    emitted.setdefault("estimate", time.perf_counter() - started)
                on_event(event)
            return engine_trace(request, relay, *args, **kwargs)

        screen.engine.trace = trace
        started, arrived, seen = time.perf_counter(), {}, None
        app.post_message(events.Key("ctrl+r", None))  # as the terminal would (pilot.press waits for idle)
        await until(lambda: screen.run is not before, 0.001)
        while not ended():
            grid = screen.run.grid
            if grid is not None:
                now = time.perf_counter() - started
                if seen is None and grid.n_estimated > 0:
                    seen = now
                for kind, table in grid.values.items():
                    estimated = grid.estimated.get(kind, set())
                    for r, row in enumerate(table["prob"]):
                        for c, v in enumerate(row):
                            if v is not None and (r, c) not in estimated:
                                arrived.setdefault((kind, r, c), now)
            await asyncio.sleep(0.01)
        total = time.perf_counter() - started
        result = screen.finished["all"][1]
    peaks = {}
    for kind in result.request.kinds:
        grid = result.grid(kind)
        row, layer = np.unravel_index(int(np.nanargmax(grid)), grid.shape)
        peaks[kind] = round(arrived.get((kind, int(row), int(layer)), total), 3)
    return {"case": "eiffel (app)", "estimate_on_screen_s": None if seen is None else round(seen, 3),
            "estimate_sent_s": round(emitted["estimate"], 3) if emitted else None,
            "exact_peak_s": max(peaks.values()), "exact_peak_s_by_kind": peaks, "total_s": round(total, 3)}


def _fields(request: TraceRequest) -> dict:
    from dataclasses import fields

    return {f.name: getattr(request, f.name) for f in fields(request)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON line per traced prompt")
    parser.add_argument("--model-shape", choices=("embedded", *SHAPES), default="embedded")
    parser.add_argument("--quick", action="store_true", help="positions subject-last and 3 samples")
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--facts", default="", help="known_1000 ids to trace too, e.g. 6,21")
    parser.add_argument("--app", action="store_true", help="the Eiffel trace in the app itself (headless)")
    args = parser.parse_args()
    if args.app:
        with tempfile.TemporaryDirectory() as config:
            os.environ["TRACER_TUI_CONFIG_DIR"] = config  # leave the user's settings alone
            print(json.dumps(asyncio.run(in_app())), flush=True)
        return 0
    real = args.model_shape == "embedded"
    engine = Tracer(load_model() if real else random_model(args.model_shape))
    settings = {"samples": 3 if args.quick else args.samples}
    if args.quick:
        settings["positions"] = "subject-last"
    facts = {f.known_id: f for f in load_facts("known_1000")}
    cases = [("eiffel", PROMPT, SUBJECT)] + [(f"known_{i}", facts[int(i)].prompt, facts[int(i)].subject)
                                             for i in args.facts.split(",") if i.strip()]
    run_trace(engine, TraceRequest(PROMPT, SUBJECT, samples=1, positions="subject-last", estimate="progressive"))
    for name, prompt, subject in cases:
        out = {"case": name, "model": engine.lm.name, "prompt": prompt,
               **measure(engine, TraceRequest(prompt, subject, **settings), correlations=real)}
        print(json.dumps(out) if args.json else json.dumps(out, indent=1), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
