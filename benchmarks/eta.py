"""How right the app's ETAs are (issue 24.4: within 25% after the first 10% of the work).

    uv run python benchmarks/eta.py                     # the Eiffel trace, embedded SmolLM2-135M
    uv run python benchmarks/eta.py --samples 4 --model PATH

Traces a first prompt on an Engine (as the app's first launch does: the engine measures its cost
per token-layer), then the Eiffel prompt, timestamping every event. Replays them into the app's
own progress (tui.gridmodel.Progress with the WorkPlan the trace screen makes: each recording
layer and finished cell weighted by its token-layers, tracer.engine.trace_work, and the measured
cost), into the run's own pace alone, and into the cells/s ETA the app had before. At every event
after 10% of the work (and with at least 5% of the time left), compares each ETA with the time
that really remained: prints the largest and the median relative error. Then the sweep estimate's
check: the cost measured on the Eiffel trace times the work of the first prompt, against that
prompt's traced time.
Timings on a shared machine vary: run it twice.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

from tracer.engine import Engine, trace_work
from tracer.events import CellsDone, Recording
from tracer.types import TraceRequest

from tui.gridmodel import Progress, WorkPlan

PROMPT, SUBJECT = "The Eiffel Tower is located in the city of", "Eiffel Tower"
SECOND = ("Michael Jordan plays the sport of", "Michael Jordan")


def timed_trace(engine: Engine, request: TraceRequest) -> tuple[list, float]:
    """[(seconds since the start, event)] of one trace, and its total seconds."""
    events, start = [], time.monotonic()
    lock = threading.Lock()

    def on_event(event) -> None:
        with lock:
            events.append((time.monotonic() - start, event))

    engine.trace(request, on_event=on_event).result()
    return events, time.monotonic() - start


def errors(events, total: float, plan: WorkPlan, cost: float | None) -> tuple[list[float], list[float], list[float]]:
    """Relative errors of the app's ETA, the pace-only ETA and the old cells/s ETA, after 10% of the work."""
    progress = Progress(plan=plan, cost=cost)
    pace = Progress(plan=plan)
    work, alone, cells = [], [], []
    first_cells_at = first_done = None
    for t, event in events:
        if isinstance(event, Recording):
            progress.add_recording(event)
            pace.add_recording(event)
        elif isinstance(event, CellsDone):
            progress.add_cells(event.kind, event.cells)
            pace.add_cells(event.kind, event.cells)
            if first_cells_at is None:
                first_cells_at, first_done = t, event.done
            elif t - first_cells_at > 0.05 and event.done > first_done:  # the old ETA: cells/s since the first batch
                rate = (event.done - first_done) / (t - first_cells_at)
                cells_eta = (event.total - event.done) / rate
                left = total - t
                if progress.fraction >= 0.1 and left >= 0.05 * total:
                    cells.append(abs(cells_eta - left) / left)
        else:
            continue
        left = total - t
        progress.started = pace.started = time.monotonic() - t  # replayed: `t` seconds have elapsed
        if progress.fraction >= 0.1 and left >= 0.05 * total:
            work.append(abs(progress.eta - left) / left)
            alone.append(abs(pace.eta - left) / left)
    return work, alone, cells


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model path or repo (default: the embedded SmolLM2-135M)")
    parser.add_argument("--samples", type=int, default=3)
    args = parser.parse_args()
    engine = Engine(args.model)
    info = engine.load().result()
    try:
        _, first_seconds = timed_trace(engine, TraceRequest(*SECOND, samples=args.samples))
        cost = engine.cost_per_token_layer
        request = TraceRequest(PROMPT, SUBJECT, samples=args.samples)
        events, total = timed_trace(engine, request)
        tokens, span = engine.tokenize(PROMPT, SUBJECT)
        n_tokens = len(tokens)
        plan = WorkPlan(n_tokens, info.n_layers, request.samples, request.window, 0, True,
                        trace_work(n_tokens, info.n_layers, settings=request, free_before=span[0]), span[0])
        work, alone, cells = errors(events, total, plan, cost)
        print(f"model {info.name}, {info.n_layers} layers; {n_tokens} tokens, {request.samples} samples, "
              f"kinds {','.join(request.kinds)}: traced in {total:.1f} s, {len(events)} events; predicted from "
              f"the first trace's cost ({first_seconds:.1f} s): {cost * plan.total:.1f} s")
        for name, errs in (("the app's ETA (measured cost + pace, in token-layers)", work),
                           ("this run's pace alone (token-layers)", alone), ("cells/s ETA (before)", cells)):
            if errs:
                print(f"{name}: after 10% of the work, max error {100 * max(errs):.0f}%, "
                      f"median {100 * statistics.median(errs):.0f}% ({len(errs)} readings)")
        cost = engine.cost_per_token_layer
        second = TraceRequest(*SECOND, samples=args.samples)
        tokens2, span2 = engine.tokenize(*SECOND)
        estimate = cost * trace_work(len(tokens2), info.n_layers, settings=second, free_before=span2[0])
        _, seconds = timed_trace(engine, second)
        print(f"estimate from the measured cost ({cost * 1e6:.3f} µs per token-layer): {estimate:.1f} s for "
              f"{SECOND[0]!r}; traced in {seconds:.1f} s ({100 * (estimate - seconds) / seconds:+.0f}%)")
    finally:
        engine.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
