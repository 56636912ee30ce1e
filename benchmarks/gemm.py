"""float32 GEMM on MLX's CPU stream with each BLAS found here, and with MLX's reference BLAS.

    uv run python benchmarks/gemm.py              # table: every BLAS found vs MLX's reference BLAS
    uv run python benchmarks/gemm.py --repeat 3   # three rounds, the BLASes interleaved in each
    uv run python benchmarks/gemm.py --json       # this process's rates only, as JSON

Each BLAS is measured in its own subprocess started with TRACER_BLAS=<its path> (TRACER_BLAS=none
for the reference), one after the other within a round, so a drifting machine affects them alike.
Shapes are M x K x N (A is M x K): 110 x 576 x 1536 is one patched forward of SmolLM2-135M's MLP
(11 tokens x 10 samples), 1100 x ... is a batch of ten of those.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

SHAPES = [(11, 576, 1536), (110, 576, 1536), (1100, 576, 1536), (1024, 1024, 1024)]
MIN_SECONDS = 0.4  # per shape; at least 2 timed repeats


def gflops(m: int, k: int, n: int) -> float:
    import mlx.core as mx

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
    import tracer  # loads the BLAS named by TRACER_BLAS before mlx.core

    return {
        "blas": tracer.BLAS.describe(),
        "name": tracer.BLAS.name,
        "fast": tracer.BLAS.fast,
        "rates": {"x".join(map(str, s)): gflops(*s) for s in SHAPES},
    }


def run_one(blas: str) -> dict:
    env = {**os.environ, "TRACER_BLAS": blas}
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--json"], capture_output=True, text=True, env=env, timeout=600
    )
    if proc.returncode != 0:
        raise RuntimeError(f"TRACER_BLAS={blas}: {proc.stderr.strip()}")
    return json.loads(proc.stdout)


def libraries() -> list[tuple[str, str]]:
    """(label, TRACER_BLAS value): every BLAS found here, then the reference."""
    from tracer.blas import found_libraries  # light: does not import mlx

    libs = [(f"{name} ({where})", path) for name, path, where in found_libraries()]
    return [*libs, ("reference (MLX's own)", "none")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="measure this process only, print JSON")
    parser.add_argument("--repeat", type=int, default=1, help="rounds, the BLASes interleaved in each")
    args = parser.parse_args()
    if args.json:
        print(json.dumps(measure()))
        return 0
    libs = libraries()
    rounds: dict[str, list[dict]] = {path: [] for _, path in libs}
    for _ in range(args.repeat):
        for _, path in libs:
            rounds[path].append(run_one(path))
    import mlx.core as mx

    model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "")
    print(f"mlx {mx.__version__}, {platform.machine()}, {os.cpu_count()} CPUs {model}; {args.repeat} round(s)")
    for label, path in libs:
        print(f"  {label:<26} {rounds[path][0]['blas']}")
    print()
    shapes = list(rounds[libs[0][1]][0]["rates"])
    ref = rounds["none"]
    header = "".join(f"{label.split(' (')[0] + (' ' + label.split(' (')[1].rstrip(')') if 'python' in label else ''):>22}" for label, _ in libs)
    print(f"{'M x K x N':>18}{header}   GFLOP/s (best of rounds; range)")
    for shape in shapes:
        cells = []
        for _, path in libs:
            rates = [r["rates"][shape] for r in rounds[path]]
            cell = f"{max(rates):.1f}" if len(rates) == 1 else f"{max(rates):.1f} ({min(rates):.1f}-{max(rates):.1f})"
            cells.append(f"{cell:>22}")
        print(f"{shape.replace('x', ' x '):>18}{''.join(cells)}")
    best_ref = {s: max(r["rates"][s] for r in ref) for s in shapes}
    print("\nspeed-up over the reference BLAS (best of rounds):")
    for label, path in libs[:-1]:
        ups = [max(r["rates"][s] for r in rounds[path]) / best_ref[s] for s in shapes]
        print(f"  {label:<26} " + "  ".join(f"{u:6.1f}x" for u in ups))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
