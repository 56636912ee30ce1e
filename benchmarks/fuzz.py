"""Fuzz the Python API, the app's settings file and the results file with 10,000 generated hostile
inputs (issue 25): each must end in a result or an error of the project's own types, within a time limit.

    uv run python benchmarks/fuzz.py                     # 10,000 cases, seed 25
    uv run python benchmarks/fuzz.py --cases 50000 --seed 7

The cases come from tests/fuzz_cases.py (the suite's tests/test_fuzz_api_files.py runs 2,400 of them),
on a tiny random llama (tests/tiny.py) written to a temporary folder. Prints the cases per target,
the errors by type, the results, the tracebacks (each with where it was raised) and the hangs, the
wall time and the slowest case. Exit code 1 when any case ended in a traceback or a hang.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # tiny.py and fuzz_cases.py live with the tests


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=25)
    parser.add_argument("--per-case", type=float, default=10.0, help="seconds before a case counts as a hang")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ["TRACER_TUI_CONFIG_DIR"] = str(work / "config")  # never the user's own settings
        from tracer.core.tracing import Tracer
        from tracer.models.load import load_model

        from fuzz_cases import make_context, run_fuzz
        from tiny import make_tiny_model

        model = Tracer(load_model(str(make_tiny_model("llama", work / "tiny-llama", seed=0))))
        ctx = make_context(model, work / "work")
        started = time.perf_counter()
        out = run_fuzz(args.cases, args.seed, ctx, per_case_s=args.per_case)
        wall = time.perf_counter() - started
    print(f"cases: {out.total} ({', '.join(f'{k} {v}' for k, v in sorted(out.cases.items()))}), seed {args.seed}")
    print(f"results: {out.results} ({', '.join(f'{k} {v}' for k, v in sorted(out.results_by.items()))}); "
          f"app built on {ctx.app_builds} settings files")
    print(f"project errors: {sum(out.errors.values())} ({', '.join(f'{k} {v}' for k, v in sorted(out.errors.items()))})")
    print(f"tracebacks: {len(out.tracebacks)}   hangs (> {args.per_case:g} s): {len(out.hangs)}")
    for where, n in Counter(t[2] for t in out.tracebacks).most_common(20):
        print(f"  {n} x {where}")
    for category, index in out.hangs[:20]:
        print(f"  hang: {category} case {index}")
    print(f"wall: {wall:.1f} s ({1000 * wall / max(out.total, 1):.2f} ms a case); slowest case {out.slowest:.2f} s {out.slowest_case}")
    return 1 if out.tracebacks or out.hangs else 0


if __name__ == "__main__":
    sys.exit(main())
