"""Facts per hour: one process against two ranks of `mlx.launch` on this machine; the merge; N hosts.

    uv run python benchmarks/distributed.py [--facts 6] [--samples 3] [--kinds mlp] [--model DIR | --tiny] [--one-worker]

By default the embedded SmolLM2-135M traces 6 facts (kinds mlp, 3 samples: a few minutes on a
shared 2-core machine); --tiny uses the tiny random llama of tests/tiny.py instead (seconds,
but start-up then dominates and the rates are noise). The same CLI command runs

  (a) as one process with 2 engine workers (BLAS 1 thread per call: tracer.workers), and
  (b) under `mlx.launch --backend ring -n 2` on loopback, each rank 1 worker and 1 BLAS thread
      (MKL/OpenBLAS/OMP_NUM_THREADS=1): the same 2 threads of compute in both,
  (c) as the same 2 ranks started directly (MLX_RANK and MLX_HOSTFILE set per process): mlx.launch's
      I/O loop polls its ranks' pipes without blocking and keeps about one core busy,

each twice: a fresh sweep (wall time = start-up + tracing + merge) and the same command again
over the finished file (nothing to do: start-up, model load, the ranks' agreement). Facts per
hour are over the difference, i.e. the tracing itself. The merge is timed on its own: part
files of N copies of the run's result lines, appended to a results file by merge_parts. The
cost model for N hosts prints the time of known_1000 (1,209 facts) and counterfact (21,919)
from the measured per-fact time: T(N) = start + facts x t_fact / N + merge, plus the bytes each
fact ships to the shared results directory (the only communication after the start's two
all_gathers of 1.3 kB per rank).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PROMPTS = [
    ("The capital of Germany is", "Germany"), ("Big Ben is located in the city of", "Big Ben"),
    ("The Eiffel Tower is located in the city of", "Eiffel Tower"), ("Michael Jordan plays the sport of", "Michael Jordan"),
    ("Steve Jobs was the founder of", "Steve Jobs"), ("The Louvre Museum is located in", "Louvre Museum"),
    ("The Space Needle is located in", "Space Needle"), ("The capital of Japan is", "Japan"),
]
ONE_THREAD = {"MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLX_", "OMPI_", "PMI_"))}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def _port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _timed(argvs: list[list[str]], envs: list[dict]) -> float:
    """Seconds until every process of one run has ended (several: ranks started directly)."""
    started = time.perf_counter()
    procs = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
             for argv, env in zip(argvs, envs)]
    outputs = [p.communicate() for p in procs]
    seconds = time.perf_counter() - started
    if any(p.returncode for p in procs) or not any("sweep done" in out for out, _ in outputs):
        logs = "\n".join(out[-2000:] + err[-2000:] for out, err in outputs)
        sys.exit(f"benchmark run failed ({[p.returncode for p in procs]}):\n{logs}")
    return seconds


def _setups(one: list[str], tmp: Path, one_worker: bool) -> dict:
    """name -> a function giving (argvs, envs) of a fresh run: one process with 2 workers; 2 ranks
    under mlx.launch; the same 2 ranks started directly (MLX_RANK, MLX_HOSTFILE: the ring backend
    needs nothing else), without mlx.launch's I/O loop, which polls its ranks' pipes without
    blocking and keeps about one core busy; optionally one process with 1 worker."""
    rank_env = _env(TRACER_WORKERS="1", **ONE_THREAD)
    launch = [str(BIN / "mlx.launch"), "--backend", "ring", "-n", "2", "--python", sys.executable]

    def direct():
        hostfile = tmp / "hosts.json"
        hostfile.write_text(json.dumps([[f"127.0.0.1:{_port()}"], [f"127.0.0.1:{_port()}"]]))
        return [one, one], [{**rank_env, "MLX_RANK": str(k), "MLX_HOSTFILE": str(hostfile)} for k in range(2)]

    setups = {
        "1 process x 2 workers": lambda: ([one], [_env(TRACER_WORKERS="2")]),
        "2 ranks (mlx.launch)": lambda: ([[*launch, "--starting-port", str(_port()), *one]], [rank_env]),
        "2 ranks (direct)": direct,
    }
    if one_worker:
        setups["1 process x 1 worker"] = lambda: ([one], [rank_env])
    return setups


def _runs(sweep: list[str], out: Path, facts: int, one_worker: bool) -> dict:
    """Fresh and finished-file seconds of every setup; facts per hour of the tracing."""
    one = [str(BIN / "tracer-tui"), *sweep, "-o", str(out)]
    results = {}
    for name, make in _setups(one, out.parent, one_worker).items():
        out.unlink(missing_ok=True)
        fresh = _timed(*make())
        again = _timed(*make())  # nothing left to do: the fixed cost
        tracing = max(fresh - again, 1e-9)
        results[name] = {"fresh_s": fresh, "fixed_s": again, "tracing_s": tracing, "facts_per_hour": facts * 3600 / tracing}
        print(f"{name:<24} fresh {fresh:6.1f} s, fixed (start-up, load{', agreement' if 'ranks' in name else ''}) "
              f"{again:5.1f} s -> tracing {tracing:6.1f} s = {facts * 3600 / tracing:8.0f} facts/hour", flush=True)
    return results


def _merge_cost(lines: list[bytes], copies: int, tmp: Path) -> tuple[float, int]:
    """Seconds to merge 2 part files holding `copies` x the run's lines (new known_ids)."""
    from tracer.inputs.facts import Fact
    from tracer.sweeps.distributed import merge_parts, part_path
    from tracer.sweeps.results import SweepConfig

    out = tmp / "merge.jsonl"
    facts, parts = [], [[], []]
    config = None
    for c in range(copies):
        for i, raw in enumerate(lines):
            rec = json.loads(raw)
            config = config or rec["config"]
            rec["known_id"] = f"{c}-{i}"
            facts.append(Fact(rec["known_id"], rec["subject"], rec["attribute"], rec["prompt"]))
            parts[len(facts) % 2].append(json.dumps(rec, separators=(",", ":")) + "\n")
    for k, part in enumerate(parts):
        Path(part_path(str(out), k)).write_text("".join(part))
    cfg = SweepConfig(**{k: v for k, v in config.items() if k not in ("sever",)},
                      sever=tuple(config.get("sever") or ()))
    started = time.perf_counter()
    merged = merge_parts(str(out), facts, cfg)
    seconds = time.perf_counter() - started
    assert merged == len(facts)
    return seconds, out.stat().st_size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--facts", type=int, default=6, help="facts in the sweep (default 6)")
    ap.add_argument("--samples", default="3")
    ap.add_argument("--kinds", default="mlp")
    ap.add_argument("--model", default=None, help="an mlx-lm model directory or .gguf (default: the embedded 135M)")
    ap.add_argument("--tiny", action="store_true", help="the tiny random llama of tests/tiny.py")
    ap.add_argument("--one-worker", action="store_true", help="also time one process with one worker and one BLAS "
                    "thread (one rank's setup alone: the ranks' scaling)")
    ap.add_argument("--merge-copies", type=int, default=50, help="the merge is timed on this many copies of the run")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="tracer-dist-bench-") as tmp_name:
        tmp = Path(tmp_name)
        model = args.model
        if args.tiny:
            sys.path.insert(0, str(ROOT / "tests"))
            from tiny import make_tiny_model

            model = str(make_tiny_model("llama", tmp / "tiny", seed=0))
        rows = [{"known_id": i, "subject": s, "attribute": "Paris", "prompt": p, "relation_id": "P0"}
                for i, (p, s) in zip(range(args.facts), PROMPTS * (args.facts // len(PROMPTS) + 1))]
        (tmp / "facts.json").write_text(json.dumps(rows))
        sweep = ["sweep", str(tmp / "facts.json"), *(["--model", model] if model else []), "--filter", "none",
                 "--kinds", args.kinds, "--samples", args.samples]
        print(f"model {model or 'embedded SmolLM2-135M'}; {args.facts} facts, kinds {args.kinds}, samples {args.samples}; {os.cpu_count()} cores "
              f"(shared machine: numbers under load)", flush=True)
        out = tmp / "r.jsonl"
        results = _runs(sweep, out, args.facts, args.one_worker)
        lines = out.read_bytes().splitlines()
        merge_s, merged_bytes = _merge_cost(lines, args.merge_copies, tmp)
        n_merged = len(lines) * args.merge_copies
        per_fact_bytes = merged_bytes / n_merged
        print(f"merge: {n_merged} lines ({merged_bytes / 1e6:.1f} MB) in {merge_s:.3f} s = "
              f"{merge_s / n_merged * 1e3:.3f} ms per fact, {per_fact_bytes / 1e3:.1f} kB per fact")
        one = results["1 process x 2 workers"]
        for name in ("2 ranks (mlx.launch)", "2 ranks (direct)"):
            print(f"{name} / 1 process: {results[name]['facts_per_hour'] / one['facts_per_hour']:.2f}x facts per hour")
        two = results["2 ranks (direct)"]
        if args.one_worker:
            alone = results["1 process x 1 worker"]
            print(f"2 ranks (direct) / 1 process of 1 worker: {two['facts_per_hour'] / alone['facts_per_hour']:.2f}x "
                  "(the ranks' scaling; 2.00x is perfect)")
        t_fact = one["tracing_s"] / args.facts * 1.0  # one 2-thread process per host
        print(f"\ncost model, one such process per host: T(N) = {two['fixed_s']:.0f} s start + facts x "
              f"{t_fact:.2f} s / N + merge ({merge_s / n_merged * 1e3:.2f} ms per fact); "
              f"{per_fact_bytes / 1e3:.1f} kB per fact to the shared directory")
        for name, n_facts in (("known_1000", 1209), ("counterfact", 21919)):
            cells = []
            for hosts in (1, 2, 4, 8):
                total = two["fixed_s"] + n_facts * t_fact / hosts + n_facts * merge_s / n_merged
                cells.append(f"{hosts} host{'s' if hosts > 1 else ''} {total / 3600:7.2f} h")
            print(f"  {name:<12} ({n_facts:>5} facts): " + ", ".join(cells))


if __name__ == "__main__":
    main()
