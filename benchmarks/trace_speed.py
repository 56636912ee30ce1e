"""Causal-tracing speed: our engine vs a naive MLX loop that does what the paper's code does.

    uv run python benchmarks/trace_speed.py [--kinds hidden,mlp,attn] [--samples 10] [--skip-naive]

On the embedded SmolLM2-135M, the Eiffel prompt (10 tokens, 30 layers), positions=all, window 10:
(a) our engine; (b) per cell, one batched forward of 1 clean + N corrupted rows with full logits,
restoring the clean row's state into the corrupted rows (the paper's schedule); (c) the
token-layer count and useful FLOPs of our schedule against a measured GEMM peak. Prints a table.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import tracer  # noqa: F401  (fast BLAS before mlx.core)
from tracer import BLAS
from tracer.blas import set_blas_threads
from tracer.core.schedule import make_cells, token_layers
from tracer.core.tracing import Tracer, plan_chunks, run_trace
from tracer.inputs.prompts import subject_span, tokenize
from tracer.models.anatomy import find_anatomy
from tracer.models.load import load_model
from tracer.settings import window_layers
from tracer.types import TraceRequest

import mlx.core as mx
import mlx.nn as nn
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from oracle import install_hooks  # noqa: E402  (the tests' plain wrappers, independent of tracer.core.patching)

PROMPT = "The Eiffel Tower is located in the city of"
SUBJECT = "Eiffel Tower"


def naive_paper_loop(lm, kinds, samples, noise_std, window, seed):
    """One forward of [clean, corrupted x N] per cell, full logits, clean row's state copied in."""
    model, tok = lm.model, lm.tokenizer
    anatomy, hooks = install_hooks(model)
    L = anatomy.n_layers
    embed = hooks["embed"]
    tokens = tokenize(tok, PROMPT)
    T = len(tokens)
    span = subject_span(PROMPT, SUBJECT, tokens)
    b, e = span  # ROME's noise: RandomState draws added in float64 to rows 1..N, rounded once
    x = np.array(embed.inner(mx.array([tokens.ids]))[0], dtype=np.float64)
    rows = np.repeat(x[None], samples + 1, axis=0)
    rows[1:, b:e] += noise_std * np.random.RandomState(seed).randn(samples, e - b, anatomy.hidden_size)
    embeds = mx.array(rows.astype(np.float32))
    embed.fn = lambda _: mx.array(embeds)
    ids = mx.array([tokens.ids] * (samples + 1))
    probs = mx.softmax(model(ids).astype(mx.float32), axis=-1)
    target = int(mx.argmax(probs[0, -1]).item())
    grids = {}
    for kind in kinds:
        grid = np.zeros((T, L))
        for t in range(T):
            for layer in range(L):
                l0, l1 = window_layers(kind, layer, window, L)

                def patch(h, t=t):
                    keep = np.zeros((samples + 1, T, 1), bool)
                    keep[1:, t] = True
                    return mx.where(mx.array(keep), h[0:1], h)

                for j in range(l0, l1):
                    hooks[(kind, j)].fn = patch
                logits = model(ids)  # full logits, every position, as the paper's code
                p = mx.softmax(logits.astype(mx.float32), axis=-1)[1:, -1, target].mean()
                grid[t, layer] = p.item()
                for j in range(l0, l1):
                    hooks[(kind, j)].fn = None
        grids[kind] = grid
    return grids, T, L


def block_us_per_token(lm, rows=77, tokens=10, reps=20) -> float:
    """One block (with our taps and fast MLP) on one stream, at the engine's CPU batch of ~768
    token-rows."""
    block = lm.model.layers[len(lm.model.layers) // 2]
    x = mx.random.normal((rows, tokens, find_anatomy(lm.model).hidden_size))
    mx.eval(block(x, "causal", None))
    start = time.perf_counter()
    for _ in range(reps):
        mx.eval(block(x, "causal", None))
    return (time.perf_counter() - start) / reps / (rows * tokens) * 1e6


def gemm_peak() -> float:
    a, b = mx.random.normal((1100, 576)), mx.random.normal((576, 1536))
    mx.eval(a @ b)
    start = time.perf_counter()
    for _ in range(20):
        mx.eval(a @ b)
    return 2 * 1100 * 576 * 1536 * 20 / (time.perf_counter() - start) / 1e9


def flops_per_token_layer(model) -> float:
    """Matmul FLOPs of one block for one token (2 x weights); attention scores are negligible at T=10."""
    block = find_anatomy(model).layers[0]
    n = sum(v.size for k, v in nn.utils.tree_flatten(block.parameters()) if v.ndim == 2)
    return 2.0 * n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kinds", default="hidden,mlp,attn")
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--window", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--target-tokens", type=int, default=None, help="token-rows per forward (default: the engine's)")
    ap.add_argument("--skip-naive", action="store_true", help="only our engine (the naive loop takes minutes)")
    args = ap.parse_args()
    kinds = tuple(args.kinds.split(","))

    lm = load_model()
    tr = Tracer(lm)
    tr.target_tokens = args.target_tokens
    req = TraceRequest(PROMPT, SUBJECT, kinds=kinds, samples=args.samples, window=args.window, seed=args.seed)
    first = []
    start = time.perf_counter()
    result = run_trace(tr, req, on_event=lambda e: first or (hasattr(e, "cells") and first.append(time.perf_counter() - start)))
    ours = time.perf_counter() - start
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    T, L = len(result.tokens), tr.n_layers
    cells = [c for c in make_cells(kinds, "all", T, L, args.window) if max(c.positions) >= result.subject_range[0]]
    chunks, packed = plan_chunks(tr, cells, args.samples, T, use_prefix=tr.patchable.prefix_cache)
    ours_tl = sum(token_layers(c, args.samples, T, L, packed) for c in chunks)
    paper_tl = len(kinds) * T * L * (args.samples + 1) * T * L
    flops = flops_per_token_layer(lm.model)
    # single-stream measurements (and the naive loop) get every core for each GEMM;
    # the engine's workers had set one BLAS thread per worker
    set_blas_threads(os.cpu_count() or 1)
    peak = gemm_peak()
    block_us = block_us_per_token(tr.lm)

    print(f"BLAS: {BLAS.describe()}; model {lm.name}, {T} tokens x {L} layers, kinds {','.join(kinds)}, "
          f"{args.samples} samples, window {args.window}")
    print(f"{'':34s}{'seconds':>10s}{'token-layers':>14s}{'us/token-layer':>16s}")
    print(f"{'(a) tracer engine':34s}{ours:10.1f}{ours_tl:14,d}{ours / ours_tl * 1e6:16.1f}")
    print(f"{'    one block, 77x10 batch':34s}{'':10s}{'':14s}{block_us:16.1f}")
    print(f"{'    its matmuls at the GEMM peak':34s}{'':10s}{'':14s}{flops / peak / 1e3:16.1f}")
    print(f"(c) useful GFLOP {ours_tl * flops / 1e9:.0f}: {ours_tl * flops / ours / 1e9:.0f} GFLOP/s achieved; "
          f"GEMM peak 1100x576x1536 {peak:.0f} GFLOP/s")
    print(f"first cells after {first[0] if first else float('nan'):.2f} s; peak RSS {peak_rss:.0f} MiB; "
          f"{len(chunks)} forwards")
    if args.skip_naive:
        return
    naive_lm = load_model()
    start = time.perf_counter()
    naive, _, _ = naive_paper_loop(naive_lm, kinds, args.samples, result.noise_std, args.window, args.seed)
    naive_s = time.perf_counter() - start
    diff = max(np.abs(np.array(result.grids[k]["prob"]) - naive[k]).max() for k in kinds)
    print(f"{'(b) naive loop, paper schedule':34s}{naive_s:10.1f}{paper_tl:14,d}{naive_s / paper_tl * 1e6:16.1f}")
    print(f"speed-up (b)/(a): {naive_s / ours:.2f}x; grid max |diff| (P(target)) {diff:.2e}; "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
