"""Long prompts: how soon a trace shows progress, when its cells start, and how fast a cancel
stops the recording of the clean and corrupted runs.

    uv run python benchmarks/long_prompt.py [--sizes 500,1000,2000] [--samples 10] [--skip-plain]

On the embedded SmolLM2-135M. Per prompt size (filler sentences around the Eiffel sentence):
- plain: one forward of the prompt through the model as mlx-lm runs it (MLX's attention);
- record: recording one row (every block/attn/MLP output and KV kept, attention in pieces),
  and the same with MLX's attention (`record, MLX attention`);
- subject last / subject first (--full-first): a trace (kinds hidden, positions subject-last, --samples noise
  samples) with the Eiffel sentence at the end (the corrupted run computes only the last
  tokens) or at the start (it recomputes nearly every position for every sample): seconds to
  the first progress event (a recorded block) and to Started (the first cells start);
- cancel: a cancel set from a timer thread 0.5 s into the clean run's recording and 0.5 s into
  the corrupted run's, and the seconds from setting it to TraceCancelled.
"""

from __future__ import annotations

import argparse
import threading
import time

import tracer  # noqa: F401  (fast BLAS before mlx.core)
from tracer.core.tracing import Tracer, run_trace
from tracer.errors import TraceCancelled
from tracer.events import Recording, Started
from tracer.inputs.prompts import tokenize
from tracer.models.load import load_model
from tracer.types import TraceRequest

import mlx.core as mx

SENTENCE = "The Eiffel Tower is located in the city of"
SUBJECT = "Eiffel Tower"
FILLER = ("The museum opens at nine and closes at six, except on Mondays, when it stays closed for "
          "cleaning and repairs. Visitors are asked to leave their bags at the entrance. ")


def make_prompt(tok, n_tokens: int, subject_first: bool) -> str:
    n = 0
    while True:
        n += 1
        body = FILLER * n
        text = SENTENCE + " Paris. " + body + SENTENCE if subject_first else body + SENTENCE
        if len(tokenize(tok, text)) >= n_tokens:
            return text


def trace_until_started(tr: Tracer, prompt: str, samples: int):
    """(seconds to the first recorded block's event, seconds to Started); cancelled at Started."""
    cancel, marks = threading.Event(), {}
    t0 = time.perf_counter()

    def on_event(e):
        now = time.perf_counter() - t0
        if isinstance(e, Recording) and e.layer > 0:
            marks.setdefault("first", now)
        if isinstance(e, Started):
            marks["started"] = now
            cancel.set()

    try:
        run_trace(tr, TraceRequest(prompt, SUBJECT, samples=samples, kinds=("hidden",), positions="subject-last"),
                  on_event=on_event, cancel=cancel)
    except TraceCancelled:
        pass
    return marks["first"], marks["started"]


def cancel_latency(tr: Tracer, prompt: str, samples: int, phase: str, after: float = 0.5) -> float:
    """Seconds from a cancel set `after` s into `phase`'s recording to TraceCancelled."""
    cancel, began, set_at = threading.Event(), threading.Event(), []

    def on_event(e):
        if isinstance(e, Recording) and e.phase == phase:
            began.set()

    def timer():
        began.wait()
        time.sleep(after)
        set_at.append(time.perf_counter())
        cancel.set()

    thread = threading.Thread(target=timer, daemon=True)
    thread.start()
    try:
        run_trace(tr, TraceRequest(prompt, SUBJECT, samples=samples, kinds=("hidden",), positions="subject-last"),
                  on_event=on_event, cancel=cancel)
        raise SystemExit(f"the {phase} recording finished before the cancel")
    except TraceCancelled:
        return time.perf_counter() - set_at[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="500,1000,2000")
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--skip-plain", action="store_true", help="skip the plain and one-row record timings")
    ap.add_argument("--full-first", action="store_true",
                    help="also time the subject-first trace to Started (the corrupted run recomputes ~all positions)")
    args = ap.parse_args()
    lm = load_model()
    tr = Tracer(lm)
    pm = tr.patchable
    trace_until_started(tr, SENTENCE, args.samples)  # warm-up: sigma, compiled kernels
    print(f"model {lm.name}, {tr.n_layers} layers, {args.samples} samples, device {mx.default_device()}")
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        last, first = make_prompt(tr.tokenizer, size, False), make_prompt(tr.tokenizer, size, True)
        T = len(tokenize(tr.tokenizer, last))
        row = {"tokens": T}
        if not args.skip_plain:
            ids = mx.array([tokenize(tr.tokenizer, last).ids])
            t = time.perf_counter()
            mx.eval(lm.model(ids))
            row["plain"] = time.perf_counter() - t
            t = time.perf_counter()
            mx.eval(pm.record(ids))
            row["record"] = time.perf_counter() - t
            t = time.perf_counter()
            mx.eval(pm.record(ids, chunk_attention=False))
            row["record, MLX attention"] = time.perf_counter() - t
        row["last: first event"], row["last: Started"] = trace_until_started(tr, last, args.samples)
        if args.full_first:
            row["first: first event"], row["first: Started"] = trace_until_started(tr, first, args.samples)
        row["cancel in clean"] = cancel_latency(tr, first, args.samples, "clean")
        row["cancel in corrupted"] = cancel_latency(tr, first, args.samples, "corrupted")
        rows.append(row)
        print("  ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()), flush=True)
    keys = list(rows[0])
    print("\n| " + " | ".join(keys) + " |\n|" + "---:|" * len(keys))
    for row in rows:
        print("| " + " | ".join(f"{row[k]:.2f}" if isinstance(row[k], float) else str(row[k]) for k in keys) + " |")


if __name__ == "__main__":
    main()
