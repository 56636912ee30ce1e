"""How right the app's ETAs are (issue 24.4: within 25% after the first 10% of the work), for each
long phase: a trace, robustness, a sweep.

    uv run python benchmarks/eta.py                         # the embedded SmolLM2-135M, all three phases
    uv run python benchmarks/eta.py --phases trace --samples 4 --model PATH

First traces a warm-up prompt on an Engine (as the app's first launch does: the engine measures its
cost per token-layer). Then runs each phase, timestamping every event that reports work (the
engine's token-layers done and in all: Recording and CellsDone of a trace, RobustnessProgress and
RobustnessWork, FactProgress and FactDone of a sweep's tracing). Replays them into the app's own
ETA (tui.gridmodel.WorkClock: the work done / in all by the time elapsed since the first count,
blended with the measured cost) and into the pace alone (no cost), and at the first event past 10%, 25% and 50% of the work
compares each ETA with the time that really remained: the relative error (ETA - left) / left.
Prints one JSON object. Timings on a shared machine vary: run it twice.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

from tracer.engine import Engine
from tracer.events import CellsDone, Recording, RobustnessProgress, RobustnessWork
from tracer.inputs.facts_file import load_facts
from tracer.sweeps.results import SweepConfig
from tracer.sweeps.run import FactDone, FactProgress, TracingStarted
from tracer.types import TraceRequest

from tui.gridmodel import WorkClock

PROMPT, SUBJECT = "The Eiffel Tower is located in the city of", "Eiffel Tower"
WARM_UP = ("Michael Jordan plays the sport of", "Michael Jordan")
MARKS = (0.10, 0.25, 0.50)
WORK_EVENTS = (Recording, CellsDone, RobustnessProgress, RobustnessWork, FactProgress, FactDone)


class Timeline:
    """(seconds since the start, work done, work in all) of every event that reports work."""

    def __init__(self) -> None:
        self.start, self.points, self.lock = time.monotonic(), [], threading.Lock()
        self.work_start = None  # a sweep: when its tracing began (its ETA counts from there)

    def on_event(self, event) -> None:
        t = time.monotonic() - self.start
        with self.lock:
            if isinstance(event, TracingStarted):
                self.work_start = t
            elif isinstance(event, WORK_EVENTS) and getattr(event, "work_total", 0):
                self.points.append((t, event.work_done, event.work_total))


def readings(timeline: Timeline, seconds: float, cost: float | None) -> dict:
    """At each mark, the first event at or past it: the ETAs (app: with the measured cost; pace:
    without) against the time left, and their relative errors."""
    out = {}
    # the app's clock starts at the first event that counts work (a sweep's: when its tracing began)
    t0 = timeline.work_start if timeline.work_start is not None else (timeline.points or [(0.0,)])[0][0]
    for mark in MARKS:
        hit = next(((t, d, n) for t, d, n in timeline.points if d / n >= mark), None)
        if hit is None:
            continue
        t, done, total = hit
        left = seconds - t
        app = WorkClock(time.monotonic() - (t - t0), done, total, cost).eta
        pace = WorkClock(time.monotonic() - (t - t0), done, total).eta
        out[f"{round(100 * mark)}%"] = {
            "at_s": round(t, 2), "work": round(done / total, 3), "left_s": round(left, 2),
            "eta_app_s": round(app, 2), "error_app": round((app - left) / left, 3),
            "eta_pace_s": round(pace, 2), "error_pace": round((pace - left) / left, 3)}
    return out


def timed(run) -> tuple[Timeline, float]:
    """Run `run(on_event)` (returns a future) and time it."""
    timeline = Timeline()
    run(timeline.on_event).result()
    return timeline, time.monotonic() - timeline.start


def phase_trace(engine: Engine, args) -> tuple[Timeline, float, dict]:
    request = TraceRequest(PROMPT, SUBJECT, samples=args.samples, estimate=args.estimate)
    timeline, seconds = timed(lambda on_event: engine.trace(request, on_event=on_event))
    return timeline, seconds, {"prompt": PROMPT, "samples": args.samples, "kinds": list(request.kinds),
                               "estimate": args.estimate}


def phase_robustness(engine: Engine, args) -> tuple[Timeline, float, dict]:
    options = dict(samples=args.samples, substitutes=args.substitutes, kinds=tuple(args.robust_kinds.split(",")))
    timeline, seconds = timed(lambda on_event: engine.robustness(PROMPT, SUBJECT, on_event=on_event, **options))
    return timeline, seconds, {"prompt": PROMPT, **options}


def phase_sweep(engine: Engine, args) -> tuple[Timeline, float, dict]:
    config = SweepConfig(samples=args.samples, kinds=tuple(args.sweep_kinds.split(",")))
    candidates = load_facts("known_1000")[:60]
    checks = engine.count_known(candidates, config.filter).result()[2]  # facts the model knows: traced
    facts = [f for f, check in zip(candidates, checks) if check.ok][: args.facts]
    with tempfile.TemporaryDirectory() as folder:
        output = str(Path(folder) / "results.jsonl")
        timeline, seconds = timed(lambda on_event: engine.sweep(facts, output, config, on_event=on_event))
    return timeline, seconds, {"facts": len(facts), "samples": args.samples, "kinds": list(config.kinds)}


PHASES = {"trace": phase_trace, "robustness": phase_robustness, "sweep": phase_sweep}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model path or repo (default: the embedded SmolLM2-135M)")
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--phases", default="trace,robustness,sweep")
    parser.add_argument("--estimate", default="progressive", help="the traces' estimate (the app's: progressive)")
    parser.add_argument("--substitutes", type=int, default=1, help="robustness: substituted subjects")
    parser.add_argument("--robust-kinds", default="hidden,mlp,attn")
    parser.add_argument("--facts", type=int, default=4, help="sweep: the first N known_1000 facts the model knows")
    parser.add_argument("--sweep-kinds", default="hidden,mlp,attn")
    args = parser.parse_args()
    engine = Engine(args.model)
    info = engine.load().result()
    report = {"model": info.name, "n_layers": info.n_layers, "marks": [f"{round(100 * m)}%" for m in MARKS]}
    try:
        engine.trace(TraceRequest(*WARM_UP, samples=args.samples, estimate=args.estimate)).result()  # the measured cost, as in the app
        for name in args.phases.split(","):
            cost = engine.cost_per_token_layer  # what the app reads when the phase starts
            timeline, seconds, config = PHASES[name](engine, args)
            report[name] = {"config": config, "seconds": round(seconds, 2), "events": len(timeline.points),
                            "cost_us_per_token_layer": round(1e6 * cost, 3) if cost else None,
                            "readings": readings(timeline, seconds, cost)}
            print(f"{name}: {seconds:.1f} s", flush=True, file=sys.stderr)
    finally:
        engine.close()
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
