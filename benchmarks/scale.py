"""What the paper's full causal trace costs by model size and prompt length.

    uv run python benchmarks/scale.py --quick                        # 1/100 of the cells, every shape
    uv run python benchmarks/scale.py --fraction 1 --shapes smollm2-135m --tokens 10   # the whole trace
    uv run python benchmarks/scale.py --quick --keep-quantized --shapes smollm2-135m,llama-1b --json

The trace is the paper's: 3 kinds (hidden, mlp, attn), 10 noise samples, window 10, every position
of the prompt "The Eiffel Tower is located in the city of" (subject "Eiffel Tower"), lengthened
with filler words after the subject to 10, 30 and 100 tokens, on random-init models of the shapes in
shapes.py (SmolLM2-135M, SmolLM2-360M, Llama-3.2-1B, GPT-2 XL) with a tiny vocabulary.

--fraction f < 1 runs the clean and corrupted recordings whole but only the fraction f of the batched
forwards of the cells' schedule (tracer/core/schedule.py make_chunks), evenly spaced through it (so
forwards of every start layer and first position are among them), at least one, and extrapolates: seconds = recording + the forwards' time x
(all forwards' token-layers / the run forwards'). Rows say `extrapolated` then.

Per row: seconds; token-layers (block evaluations, recording included); GFLOP = token-layers x 2 x
the weights of a block's matmuls (attention scores, norms and logits aside); achieved GFLOP/s against
the float32 GEMM peak measured in this process before the traces (benchmarks/gemm.py, 1024^3 and
the model's MLP shape, the best of three rounds); MLX's peak memory during the trace (weights included).
--keep-quantized: each shape also 4-bit (mlx nn.quantize, group size 64), as `--keep-quantized` keeps
a quantized model's weights, against the float32 run (`vs_f32`: its seconds over float32's).
"""

from __future__ import annotations

import argparse
import json
import time

import tracer  # noqa: F401  (fast BLAS before mlx.core)
from tracer.core import schedule, tracing
from tracer.core.tracing import Tracer, run_trace
from tracer.events import Started
from tracer.types import TraceRequest
from tracer.work import recording_work

import mlx.core as mx
from gemm import gflops
from shapes import SHAPES, block_weights, random_model

PROMPT, SUBJECT = "The Eiffel Tower is located in the city of", "Eiffel Tower"
FILLER = ["the", "city", "is", "in", "of"]
QUICK_FRACTION = 0.01


def prompt_of(tokenizer, n_tokens: int) -> str:
    """PROMPT with filler words after the subject, `n_tokens` tokens long (the tiny tokenizer's): the
    positions a trace restores grow with the prompt, as in a long prompt whose subject comes early."""
    words: list[str] = []
    while True:
        cut = PROMPT.index(SUBJECT) + len(SUBJECT)
        text = PROMPT[:cut] + "".join(f" {w}" for w in words) + PROMPT[cut:]  # one token per word
        n = len(tokenizer.encode(text).ids)
        if n >= n_tokens:
            if n != n_tokens:
                raise SystemExit(f"cannot make a prompt of exactly {n_tokens} tokens (got {n})")
            return text
        words.append(FILLER[len(words) % len(FILLER)])


class StrideChunks:
    """Replaces tracing.plan_chunks while active: keeps `fraction` of the forwards (at least one),
    evenly spaced through the schedule, and counts the token-layers of all forwards and of those kept."""

    def __init__(self, fraction: float):
        self.fraction, self.all_work, self.run_work = fraction, 0, 0
        self.original = tracing.plan_chunks

    def __enter__(self):
        def plan(tracer_, cells, n_samples, n_tokens, use_prefix):
            chunks, packed = self.original(tracer_, cells, n_samples, n_tokens, use_prefix)
            work = [schedule.token_layers(c, n_samples, n_tokens, tracer_.n_layers, packed) for c in chunks]
            n = max(1, round(len(chunks) * self.fraction))
            kept = sorted({int((i + 0.5) * len(chunks) / n) for i in range(n)})
            self.all_work, self.run_work = sum(work), sum(work[i] for i in kept)
            return [chunks[i] for i in kept], packed

        tracing.plan_chunks = plan
        return self

    def __exit__(self, *exc):
        tracing.plan_chunks = self.original


def traced(engine: Tracer, prompt: str, fraction: float) -> dict:
    """One paper trace of `prompt` (or the fraction of its forwards): seconds (extrapolated when a
    fraction), token-layers, the recording's seconds, MLX's peak memory."""
    started: list[float] = []
    on_event = lambda e: started.append(time.perf_counter()) if isinstance(e, Started) else None  # noqa: E731
    request = TraceRequest(prompt, SUBJECT, samples=10, window=10, kinds=("hidden", "mlp", "attn"))
    mx.reset_peak_memory()
    t0 = time.perf_counter()
    with StrideChunks(fraction) as chunks:
        result = run_trace(engine, request, on_event=on_event)
    total = time.perf_counter() - t0
    recording = started[0] - t0
    cells = total - recording
    T, L = len(result.tokens), engine.n_layers
    recorded = recording_work(T, L, request.samples)  # clean and corrupted runs (whole rows: an upper bound)
    scale = chunks.all_work / max(1, chunks.run_work)
    return {
        "tokens": T, "layers": L, "seconds": round(recording + cells * scale, 2),
        "recording_s": round(recording, 2), "measured_s": round(total, 2),
        "token_layers": recorded + chunks.all_work,
        "fraction": round(chunks.run_work / max(1, chunks.all_work), 4),
        "extrapolated": chunks.run_work < chunks.all_work, "peak_gib": round(mx.get_peak_memory() / 2**30, 2),
    }


def gemm_peak(shape: str) -> float:
    """The best of three rounds of float32 GEMM at 1024^3 and at the model's MLP shape (768 token-rows)."""
    _, f = SHAPES[shape]
    hidden = f.get("hidden_size", f.get("n_embd"))
    ffn = f.get("intermediate_size", 4 * hidden)
    return max(gflops(m, k, n) for _ in range(3) for m, k, n in ((1024, 1024, 1024), (768, hidden, ffn)))


def row(shape: str, n_tokens: int, fraction: float, bits: int, engine: Tracer, peak: float) -> dict:
    prompt = prompt_of(engine.tokenizer, n_tokens)
    out = traced(engine, prompt, fraction)
    gflop = out["token_layers"] * 2 * block_weights(shape) / 1e9
    rate = gflop / out["seconds"]
    return {"shape": shape, "weights": "4-bit" if bits else "float32", **out, "gflop": round(gflop, 1),
            "gflops": round(rate, 1), "gemm_peak_gflops": round(peak, 1), "of_peak": round(rate / peak, 3)}


def print_row(r: dict) -> None:
    label = " (extrapolated from {:.1%})".format(r["fraction"]) if r["extrapolated"] else ""
    vs = f"  {r['vs_f32']:.2f}x f32" if "vs_f32" in r else ""
    print(f"{r['shape']:<13} {r['weights']:<7} {r['tokens']:>4} tok  {r['seconds']:>9.1f} s  "
          f"{r['token_layers'] / 1e6:>8.2f} M tok-layers  {r['gflop']:>9.1f} GFLOP  {r['gflops']:>6.1f} GFLOP/s "
          f"({r['of_peak']:.0%} of {r['gemm_peak_gflops']:.0f})  peak {r['peak_gib']:.2f} GiB{vs}{label}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated keys of shapes.SHAPES")
    parser.add_argument("--tokens", default="10,30,100", help="prompt lengths")
    parser.add_argument("--fraction", type=float, default=1.0, help="the forwards run (the rest extrapolated)")
    parser.add_argument("--quick", action="store_true", help=f"--fraction {QUICK_FRACTION}")
    parser.add_argument("--keep-quantized", action="store_true", help="each shape also with 4-bit weights")
    parser.add_argument("--json", action="store_true", help="one JSON object per row")
    args = parser.parse_args()
    fraction = QUICK_FRACTION if args.quick else args.fraction
    if not 0 < fraction <= 1:
        parser.error("--fraction must be in (0, 1]")
    lengths = [int(t) for t in args.tokens.split(",")]
    for shape in args.shapes.split(","):
        peak = gemm_peak(shape)
        f32: dict[int, float] = {}
        for bits in (0, 4) if args.keep_quantized else (0,):
            engine = Tracer(random_model(shape, quantize_bits=bits))
            run_trace(engine, TraceRequest(PROMPT, SUBJECT, samples=1, positions="subject-last"))  # warm-up
            for n in lengths:
                r = row(shape, n, fraction, bits, engine, peak)
                if bits:
                    r["vs_f32"] = round(r["seconds"] / f32[n], 2)
                else:
                    f32[n] = r["seconds"]
                print(json.dumps(r)) if args.json else print_row(r)
            del engine
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
