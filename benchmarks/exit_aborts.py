"""Count aborts at process exit (issue #11 item 6: "terminate called without an active
exception", exit code 134, after the work is done).

    uv run python benchmarks/exit_aborts.py                   # 50 runs of each command
    uv run python benchmarks/exit_aborts.py --runs 20 --busy 1 # with one busy-loop process beside

Five commands, each run --runs times (in turn, one process at a time), with the embedded
SmolLM2-135M (or --model): `tracer-tui trace` (fast settings), `tracer-tui sweep` on the first
--facts-count facts of --facts, the same sweep with --check-only, and a Python script that
loads an Engine, runs one trace and closes it, and one using the Python front door
(tracer.load, tracer.trace; nothing closed by hand). Prints the exit codes' counts per command
and how many runs printed "terminate called" on stderr. Exit code 1 when any run failed.
`--busy N` keeps N busy-loop processes running beside the runs: a loaded machine widens
the race at interpreter exit the issue was about.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FACTS = ROOT.parent / "shared" / "data" / "known_1000.json"

ENGINE_SCRIPT = """
import sys, threading
import tracer
from tracer.engine import Engine
from tracer.types import TraceRequest

engine = Engine(sys.argv[1] or None)
engine.load().result()
request = TraceRequest(prompt="The Eiffel Tower is located in the city of", subject="Eiffel Tower",
                       kinds=("mlp",), samples=2, positions="subject-last")
result = engine.trace(request).result()
assert result is not None
engine.close()
print("engine ok")
"""

API_SCRIPT = """
import sys
import tracer

model = tracer.load(sys.argv[1] or None)
result = tracer.trace(model, "The Eiffel Tower is located in the city of", "Eiffel Tower",
                      kinds=("mlp",), samples=2, positions="subject-last")
assert result.grid("mlp").shape == (1, model.n_layers)
print("api ok")
"""


def commands(workdir: Path, model: str | None) -> dict[str, list[str]]:
    cli = [str(Path(sys.executable).with_name("tracer-tui"))]  # the installed console script
    model_args = ["--model", model] if model else []
    facts = str(workdir / "facts.json")
    sweep = [*cli, "sweep", facts, *model_args, "--kinds", "mlp", "--samples", "1"]
    return {
        "trace": [*cli, "trace", *model_args, "--prompt", "The Eiffel Tower is located in the city of",
                  "--subject", "Eiffel Tower", "--kinds", "mlp", "--positions", "subject-last",
                  "--samples", "2", "--quiet"],
        "sweep": [*sweep, "--output", str(workdir / "results.jsonl")],
        "sweep --check-only": [*sweep, "--check-only"],
        "engine script": [sys.executable, str(workdir / "engine_script.py"), model or ""],
        "python api": [sys.executable, str(workdir / "api_script.py"), model or ""],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50, help="runs of each command (default 50)")
    parser.add_argument("--model", default=None, help="model spec (default: the embedded SmolLM2-135M)")
    parser.add_argument("--facts", default=str(DEFAULT_FACTS), help="facts file in known_1000 format")
    parser.add_argument("--facts-count", type=int, default=3, help="facts the sweeps run (default 3)")
    parser.add_argument("--only", action="append", default=None,
                        help="run only this command (trace, sweep, 'sweep --check-only', 'engine script', 'python api'); repeatable")
    parser.add_argument("--busy", type=int, default=0, help="busy-loop processes to run beside (default 0)")
    parser.add_argument("--minutes", type=float, default=None, help="start no new round after this many minutes")
    parser.add_argument("--show", type=int, default=3, help="print the stderr tail of the first N failed runs")
    args = parser.parse_args()

    started = time.perf_counter()
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    counts: dict[str, collections.Counter] = {}
    terminate: collections.Counter = collections.Counter()
    shown = 0
    try:
        with tempfile.TemporaryDirectory(prefix="exit-aborts-") as tmp:
            workdir = Path(tmp)
            facts = json.loads(Path(args.facts).read_text())[: args.facts_count]
            (workdir / "facts.json").write_text(json.dumps(facts))
            (workdir / "engine_script.py").write_text(ENGINE_SCRIPT)
            (workdir / "api_script.py").write_text(API_SCRIPT)
            cmds = commands(workdir, args.model)
            names = args.only or list(cmds)
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            counts = {name: collections.Counter() for name in names}
            for i in range(args.runs):  # round robin: a time limit or Ctrl-C leaves even counts
                if args.minutes and time.perf_counter() - started > 60 * args.minutes:
                    break
                for name in names:
                    (workdir / "results.jsonl").unlink(missing_ok=True)  # every sweep run does the work
                    proc = subprocess.run(cmds[name], cwd=ROOT, env=env, capture_output=True, text=True, check=False)
                    counts[name][proc.returncode] += 1
                    if "terminate called" in proc.stderr:
                        terminate[name] += 1
                    if proc.returncode != 0 and shown < args.show:
                        shown += 1
                        print(f"\n--- {name} run {i + 1}: exit code {proc.returncode}\n{proc.stderr[-1500:]}", file=sys.stderr)
                progress = "  ".join(f"{name}: {dict(c)}" for name, c in counts.items())
                print(f"round {i + 1}/{args.runs} ({time.perf_counter() - started:.0f} s)  {progress}", file=sys.stderr, flush=True)
    except KeyboardInterrupt:  # the counts so far still get printed
        print("\ninterrupted", file=sys.stderr)
    finally:
        seconds = time.perf_counter() - started
        for p in busy:
            p.kill()
            p.wait()

    total = sum(sum(c.values()) for c in counts.values())
    aborts = sum(c[134] + c[-6] for c in counts.values())  # 134 through a shell, -6 (SIGABRT) directly
    print(f"exit codes per command (busy loops beside: {args.busy}):")
    for name, c in counts.items():
        codes = ", ".join(f"{code}: {n}" for code, n in sorted(c.items()))
        print(f"  {name:20} {sum(c.values()):3} runs   exit codes {codes}   'terminate called' on stderr: {terminate[name]}")
    print(f"{aborts} aborts in {total} exits ({seconds:.0f} s)")
    bad = total - sum(c[0] for c in counts.values())
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
