"""How long the app's process takes to exit when the user quits (ctrl+q) during a trace
(issue 16.8: within 1 s, exit code 0).

    uv run python benchmarks/tui_quit_during_run.py                # the embedded SmolLM2-135M, 5 runs
    uv run python benchmarks/tui_quit_during_run.py --model DIR --runs 10

Each run starts a fresh process that opens the real app headless (App.run with an auto-pilot),
starts a long all-tokens trace, presses ctrl+q once the first cells are in, and prints the wall
clock time of that key press; the parent takes the time at which the process has exited.
`--child` is the child's entry point (tests/tui/test_runs_in_progress.py runs it too).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(model: str | None, samples: int) -> int:
    sys.path.insert(0, str(ROOT))
    import tracer  # noqa: F401  - fast BLAS before mlx.core
    from tracer.settings import TraceSettings

    from textual import events

    from tui.app import make_app

    app = make_app(model_spec=model or None, settings=TraceSettings(samples=samples))
    app.leaves_at_once = True  # as run_app: the process ends with leave() below

    async def pilot_steps(pilot) -> None:
        screen = app.trace_screen
        while app.model_info is None or not screen.strip.tokens:
            if app.model_error:
                raise SystemExit(f"model failed: {app.model_error}")
            await pilot.pause(0.05)
        await pilot.press("ctrl+r")
        while screen.run is None or screen.run.progress.done == 0:
            await pilot.pause(0.02)
        print(json.dumps({"quit_at": time.time(), "cells": screen.run.progress.done}), flush=True)
        # the key as the terminal driver delivers it (Pilot.press would also wait for the app to idle)
        app.post_message(events.Key("ctrl+q", None))

    app.run(headless=True, size=(120, 40), auto_pilot=pilot_steps)
    from tui.__main__ import leave

    leave(int(app.return_code or 0))  # as `tracer-tui` ends its process
    return 0


def measure(model: str | None, samples: int, timeout: float = 300.0) -> tuple[int, float]:
    """(exit code, seconds from ctrl+q to the process's exit) of one child run."""
    with tempfile.TemporaryDirectory() as config:
        env = {**os.environ, "TRACER_TUI_CONFIG_DIR": config}
        out = subprocess.run([sys.executable, __file__, "--child", "--model", model or "", "--samples", str(samples)],
                             capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
        ended = time.time()
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"the child never quit (exit {out.returncode}): {out.stderr[-2000:]}")
    return out.returncode, ended - json.loads(lines[-1])["quit_at"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args.model, args.samples)
    times, codes = [], []
    for _ in range(args.runs):
        code, seconds = measure(args.model, args.samples)
        codes.append(code)
        times.append(seconds)
        print(f"exit {code} after {seconds:.3f} s")
    print(f"median {statistics.median(times):.3f} s, max {max(times):.3f} s; exit codes {sorted(set(codes))}")
    return 0 if set(codes) == {0} and max(times) < 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
