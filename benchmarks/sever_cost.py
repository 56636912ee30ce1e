"""The cost of severed paths (the paper's Figure 3) against a plain hidden trace.

    uv run python benchmarks/sever_cost.py [--rounds 3] [--positions all|subject-last]

On the embedded SmolLM2-135M and the Eiffel prompt: (a) kinds=hidden; (b) kinds=hidden with
--sever mlp,attn (three series), run interleaved in one process (this VM's speed drifts);
prints each round's seconds, the medians, and the block evaluations (token x layer) each
schedule costs, which do not depend on the machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

import tracer  # noqa: F401  (fast BLAS before mlx.core)
from tracer.core.schedule import make_cells, token_layers
from tracer.core.tracing import Tracer, plan_chunks, run_trace
from tracer.inputs.positions import resolve_positions
from tracer.models.load import load_model
from tracer.types import TraceRequest

PROMPT = "The Eiffel Tower is located in the city of"
SUBJECT = "Eiffel Tower"


def block_evaluations(tr: Tracer, req: TraceRequest, result) -> int:
    T, L = len(result.tokens), tr.n_layers
    positions = resolve_positions(req.positions, result.subject_range, T)
    cells = [c for c in make_cells(req.kinds, positions, T, L, req.window, req.sever)
             if max(c.positions) >= result.subject_range[0]]
    chunks, packed = plan_chunks(tr, cells, req.samples, T, use_prefix=tr.patchable.prefix_cache)
    return sum(token_layers(c, req.samples, T, L, packed) for c in chunks)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--positions", default="all")
    args = ap.parse_args()
    tr = Tracer(load_model())
    configs = {
        "hidden": TraceRequest(PROMPT, SUBJECT, kinds=("hidden",), positions=args.positions),
        "hidden + sever mlp,attn": TraceRequest(PROMPT, SUBJECT, kinds=("hidden",), sever=("mlp", "attn"),
                                                positions=args.positions),
    }
    times = {name: [] for name in configs}
    results = {}
    run_trace(tr, configs["hidden"])  # warm-up: sigma, compiled kernels
    for _ in range(args.rounds):
        for name, req in configs.items():
            start = time.perf_counter()
            results[name] = run_trace(tr, req)
            times[name].append(time.perf_counter() - start)
    print(f"positions={args.positions}, 10 samples, Eiffel prompt, {tr.n_layers} layers")
    for name, req in configs.items():
        work = block_evaluations(tr, req, results[name])
        runs = ", ".join(f"{t:.1f}" for t in times[name])
        print(f"{name:26s} median {statistics.median(times[name]):6.1f} s  ({runs})  {work:,d} token-layers")
    ratio = statistics.median(times["hidden + sever mlp,attn"]) / statistics.median(times["hidden"])
    print(f"severed paths cost {ratio:.2f}x a plain hidden trace")


if __name__ == "__main__":
    main()
