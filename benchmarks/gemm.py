"""float32 GEMM on MLX's CPU stream, with the fast BLAS tracer loads and without it.

    uv run python benchmarks/gemm.py            # table: fast BLAS vs MLX's reference BLAS
    uv run python benchmarks/gemm.py --json     # this process's rates only, as JSON

The "without" column comes from re-running this script in a subprocess with
TRACER_BLAS=none. Shapes are M x K x N (A is M x K): 110 x 576 x 1536 is one
patched forward of SmolLM2-135M's MLP (11 tokens x 10 samples), 1100 x ... is a
batch of ten of those.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import tracer  # noqa: F401  - loads the fast BLAS before mlx.core

import mlx.core as mx  # noqa: E402

SHAPES = [(11, 576, 1536), (110, 576, 1536), (1100, 576, 1536), (1024, 1024, 1024)]
MIN_SECONDS = 0.4  # per shape; at least 2 timed repeats


def gflops(m: int, k: int, n: int) -> float:
    with mx.stream(mx.cpu):
        a = mx.random.normal((m, k))
        b = mx.random.normal((k, n))
        mx.eval(a, b, a @ b)  # warm-up
        reps, start = 0, time.perf_counter()
        while True:
            mx.eval(a @ b)
            reps += 1
            elapsed = time.perf_counter() - start
            if reps >= 2 and elapsed >= MIN_SECONDS or reps >= 200:
                break
    return 2 * m * k * n * reps / elapsed / 1e9


def measure() -> dict:
    return {
        "blas": tracer.BLAS.describe(),
        "fast": tracer.BLAS.fast,
        "rates": {"x".join(map(str, s)): gflops(*s) for s in SHAPES},
    }


def main() -> int:
    if "--json" in sys.argv[1:]:
        print(json.dumps(measure()))
        return 0
    fast = measure()
    env = {**os.environ, "TRACER_BLAS": "none"}
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--json"], capture_output=True, text=True, env=env, timeout=300
    )
    if proc.returncode != 0:
        print(proc.stderr, file=sys.stderr)
        return proc.returncode
    ref = json.loads(proc.stdout)
    print(f"mlx {mx.__version__}, {os.cpu_count()} CPUs")
    print(f"with:    {fast['blas']}")
    print(f"without: {ref['blas']}")
    print()
    print(f"{'M x K x N':>18}  {'with GFLOP/s':>12}  {'without':>9}  {'speed-up':>8}")
    for shape in fast["rates"]:
        a, b = fast["rates"][shape], ref["rates"][shape]
        print(f"{shape.replace('x', ' x '):>18}  {a:12.1f}  {b:9.1f}  {a / b:7.1f}x")
    if not fast["fast"]:
        print(f"\nnote: no fast BLAS was loaded in this process ({fast['blas']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
