"""Sweeps sharded over the ranks of an mx.distributed group (tracer.sweeps.distributed).

The fast tests check the pieces (the dealing, the merge, the refusal); the slow ones launch real
ranks on loopback with the tiny llama: two ranks under `mlx.launch` against one process, and a
rank killed mid-run (ranks started by hand, as a launcher on another host would) then resumed.
Every process runs with TRACER_WORKERS=1: the engine batches rows by its worker count, and the
last float32 bits of a grid follow the batching, so equal grids need equal workers.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tracer.errors import InputError, ModelError
from tracer.inputs.facts import Fact
from tracer.sweeps.distributed import (
    INPUT_FAILED,
    MODEL_FAILED,
    OK,
    PartCounter,
    RankLock,
    _refuse,
    balance,
    lock_path,
    merge_parts,
    part_path,
)
from tracer.sweeps.results import SweepConfig

import pytest

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
CONFIG = SweepConfig(kinds=("mlp",), samples=2, window=2, filter="none", model="fake")


# ---- the pieces ----------------------------------------------------------------------------------


def test_balance_is_greedy_longest_first_and_deterministic():
    # by hand: 9 -> r0, 7 -> r1, 6 -> r1 (7 < 9), 5 -> r0 (9 < 13), 2 -> r1 (13 < 14)
    costs = [5, 9, 2, 7, 6]
    assert balance(costs, 2) == [[0, 1], [2, 3, 4]]  # loads 14 and 15
    assert balance(costs, 2) == balance(list(costs), 2)
    assert balance([3, 3, 3, 3], 3) == [[0, 3], [1], [2]]  # ties: the earlier item, the lower rank
    assert balance([], 2) == [[], []]
    bins = balance(list(range(1, 101)), 4)
    assert sorted(i for b in bins for i in b) == list(range(100))  # each item once
    # costs 100..1 dealt in rounds of 4: a round down (100..97 to r0..r3) and one back up (96 to r3 ...
    # 93 to r0) leave all four equal; after 12 such pairs (96 items, 1260 each) 4, 3, 2, 1 go to r0..r3
    assert [sum(i + 1 for i in b) for b in bins] == [1264, 1263, 1262, 1261]


def _fact(i):
    return Fact(known_id=i, subject=f"S{i}", attribute="A", prompt=f"S{i} is in")


def _line(i, status, config=CONFIG):
    rec = {"v": 1, "status": status, "known_id": i, "relation_id": None, "prompt": f"S{i} is in",
           "subject": f"S{i}", "attribute": "A", "config": config.to_dict()}
    if status == "skipped":
        rec["skipped"] = "wrong-prediction"
    return json.dumps(rec)


def test_merge_appends_skipped_then_kept_in_fact_order_once_and_removes_parts(tmp_path):
    out = str(tmp_path / "r.jsonl")
    facts = [_fact(i) for i in range(6)]
    Path(out).write_text(_line(0, "kept") + "\n")
    # rank 0 did 3 (kept) and 1 (skipped); rank 1 did 4 (kept), 2 (kept), repeats 0 (a merge cut
    # short before) and was killed while writing 5 (a torn last line)
    Path(part_path(out, 0)).write_text(_line(3, "kept") + "\n" + _line(1, "skipped") + "\n")
    Path(part_path(out, 1)).write_text(_line(4, "kept") + "\n" + _line(2, "kept") + "\n" + _line(0, "kept") + "\n"
                                       + _line(5, "kept")[:30])
    assert merge_parts(out, facts, CONFIG) == 4
    ids = [json.loads(line)["known_id"] for line in Path(out).read_text().splitlines()]
    assert ids == [0, 1, 2, 3, 4]  # the old line, the skipped one, then the kept ones in fact order
    assert not list(tmp_path.glob("*.part"))
    assert merge_parts(out, facts, CONFIG) == 0  # nothing left to merge


def test_merge_refuses_a_part_written_with_other_settings(tmp_path):
    out = str(tmp_path / "r.jsonl")
    other = SweepConfig(kinds=("mlp",), samples=3, window=2, filter="none", model="fake")
    Path(part_path(out, 1)).write_text(_line(0, "kept", other) + "\n")
    with pytest.raises(InputError, match=r"rank-1\.part was written with --samples 3 \(this run: 2\)"):
        merge_parts(out, [_fact(0)], CONFIG)
    assert Path(part_path(out, 1)).exists()  # nothing removed


def test_part_counter_counts_only_the_rank_s_share_and_complete_lines(tmp_path):
    out = str(tmp_path / "r.jsonl")
    counter = PartCounter(out, [{0, 1}, {2, 3}])
    assert counter.done() == [0, 0]
    Path(part_path(out, 1)).write_text(_line(2, "kept") + "\n" + _line(9, "kept") + "\n" + _line(3, "kept")[:20])
    assert counter.done() == [0, 1]
    with open(part_path(out, 1), "a") as f:
        f.write(_line(3, "kept")[20:] + "\n")
    assert counter.done() == [0, 2]


def test_rank_lock_is_exclusive_and_free_once_released(tmp_path):
    path = lock_path(str(tmp_path / "r.jsonl"), 1)
    lock = RankLock(path)
    assert not RankLock.free(path)
    with pytest.raises(InputError, match="held by another sweep"):
        RankLock(path)
    lock.release()
    assert RankLock.free(path)


def test_refusals_name_the_rank_and_what_differs():
    same = [b"a" * 8, b"b" * 8, b"c" * 8]
    rows = [(OK, same, "nonce"), (OK, same, "")]
    _refuse(rows, ["settings", "model", "facts"])  # agreement: nothing raised
    with pytest.raises(InputError, match="^rank 1 of 2 has other model than rank 0"):
        _refuse([rows[0], (OK, [b"a" * 8, b"x" * 8, b"c" * 8], "")], ["settings", "model", "facts"])
    with pytest.raises(ModelError, match="^rank 1 of 3 failed: model not found: /nope$"):
        _refuse([rows[0], (MODEL_FAILED, [], "model not found: /nope"), (INPUT_FAILED, [], "x")], [])


# ---- real ranks on loopback ---------------------------------------------------------------------------


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLX_", "OMPI_", "PMI_"))}
    return {**env, "TRACER_WORKERS": "1", "PYTHONUNBUFFERED": "1", **extra}


def _sweep_argv(facts, model, out, samples="2"):
    return [str(VENV_BIN / "tracer-tui"), "sweep", str(facts), "--model", str(model), "--filter", "none",
            "--kinds", "mlp", "--samples", samples, "--window", "2", "-o", str(out)]


def _launch(argv, timeout=240):
    cmd = [str(VENV_BIN / "mlx.launch"), "--backend", "ring", "-n", "2", "--starting-port", str(_free_ports(1)[0]),
           "--python", sys.executable, *argv[0:]]
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def _lines(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def _without_seconds(records):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


@pytest.fixture(scope="module")
def sweep_case(tmp_path_factory, tiny_model_dir):
    """A facts file (11 facts, the last one unusable) and a single-process sweep of it."""
    from test_sweep import CANDIDATES

    root = tmp_path_factory.mktemp("dist")
    rows = [{"known_id": i, "subject": s, "attribute": "Paris", "prompt": p, "relation_id": f"P{i % 3}"}
            for i, (p, s) in enumerate(CANDIDATES + [("The capital of Italy is", "Nowhere")])]
    facts = root / "facts.json"
    facts.write_text(json.dumps(rows))
    single = root / "single.jsonl"
    proc = subprocess.run(_sweep_argv(facts, tiny_model_dir, single), env=_env(), capture_output=True, text=True,
                          timeout=240, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return facts, single


@pytest.mark.slow
def test_two_ranks_under_mlx_launch_equal_one_process(tmp_path, tiny_model_dir, sweep_case):
    facts, single = sweep_case
    out = tmp_path / "r.jsonl"
    proc = _launch(_sweep_argv(facts, tiny_model_dir, out))
    assert "sweep done (--filter none): 10 of 11 facts traced, 1 skipped" in proc.stdout, proc.stdout + proc.stderr
    log = proc.stdout + proc.stderr  # results on stdout, progress on stderr
    assert "rank 1 of 2: 5 traced, 1 skipped of its 6 facts" in log
    assert "rank 0: 11 facts to do over 2 ranks (rank 0 5, rank 1 6)" in log
    assert "all ranks 11/11 (rank 0 5/5, rank 1 6/6)" in log  # rank 0 shows every rank's share and the whole  # rank 0 shows every rank's share and the whole
    assert _without_seconds(_lines(out)) == _without_seconds(_lines(single))  # same lines, same order, same bits
    assert sorted(os.listdir(tmp_path)) == ["r.jsonl"]  # no part, lock or probe file left


@pytest.mark.slow
def test_a_killed_rank_leaves_its_facts_missing_and_a_rerun_finishes_them(tmp_path, tiny_model_dir, sweep_case):
    facts, single = sweep_case
    out = tmp_path / "r.jsonl"
    hostfile = tmp_path / "hosts.json"
    hostfile.write_text(json.dumps([[f"127.0.0.1:{p}"] for p in _free_ports(2)]))
    argv = _sweep_argv(facts, tiny_model_dir, out)
    ranks = [subprocess.Popen(argv, env=_env(MLX_RANK=str(k), MLX_HOSTFILE=str(hostfile)), cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for k in range(2)]
    part = Path(part_path(str(out), 1))
    deadline = time.monotonic() + 240
    while not (part.exists() and part.read_text().count("\n") >= 2) and time.monotonic() < deadline:
        assert ranks[1].poll() is None, ranks[1].communicate()
        time.sleep(0.05)
    ranks[1].send_signal(signal.SIGKILL)  # mid-run: it has written 2 of its 6 facts
    stdout, stderr = ranks[0].communicate(timeout=240)
    ranks[1].wait()
    assert ranks[0].returncode == 1, stdout + stderr
    written = [r["known_id"] for r in _lines(out)]
    assert len(written) == len(set(written)) and 2 <= len(written) < 11  # rank 0's share and rank 1's two
    missing = sorted(set(range(11)) - set(written))
    assert f"{len(missing)} facts missing" in stdout and f"known_id {', '.join(map(str, missing))};" in stdout
    assert sorted(os.listdir(tmp_path)) == ["hosts.json", "r.jsonl"]

    proc = _launch(argv)  # the same command resumes: only the missing facts are dealt
    assert f"rank 0: {len(missing)} facts to do over 2 ranks" in proc.stderr, proc.stdout + proc.stderr
    assert "10 of 11 facts traced" in proc.stdout
    merged = {r["known_id"]: r for r in _without_seconds(_lines(out))}
    assert len(merged) == 11 and merged == {r["known_id"]: r for r in _without_seconds(_lines(single))}


@pytest.mark.slow
def test_ranks_with_other_settings_or_a_missing_model_are_refused(tmp_path, tiny_model_dir, sweep_case):
    facts, _ = sweep_case
    out = tmp_path / "r.jsonl"
    hostfile = tmp_path / "hosts.json"
    hostfile.write_text(json.dumps([[f"127.0.0.1:{p}"] for p in _free_ports(2)]))

    def run_pair(argv0, argv1):
        procs = [subprocess.Popen(a, env=_env(MLX_RANK=str(k), MLX_HOSTFILE=str(hostfile)), cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for k, a in enumerate([argv0, argv1])]
        return [(p.wait(timeout=240), p.communicate()[1]) for p in procs]

    results = run_pair(_sweep_argv(facts, tiny_model_dir, out), _sweep_argv(facts, tiny_model_dir, out, samples="3"))
    for code, stderr in results:
        assert code == 2 and stderr.strip().splitlines()[-1] == (
            "tracer-tui: error: rank 1 of 2 has other settings than rank 0; start every rank with the same "
            "command, model files and facts file"), stderr
    results = run_pair(_sweep_argv(facts, tiny_model_dir, out), _sweep_argv(facts, tmp_path / "no-model", out))
    for code, stderr in results:
        assert code == 2 and stderr.strip().splitlines()[-1].startswith("tracer-tui: error: rank 1 of 2 failed: "), stderr
    assert sorted(os.listdir(tmp_path)) == ["hosts.json"]  # no results, part, lock or probe file


API_SCRIPT = """
import json, sys
import tracer
model = tracer.load(sys.argv[1], workers=1)
summary = tracer.sweep(model, sys.argv[2], sys.argv[3], filter="none", kinds=("mlp",), samples=2, window=2)
print("summary", json.dumps([summary.rank, summary.ranks, summary.facts, summary.kept, summary.missing]), flush=True)
"""


@pytest.mark.slow
def test_the_python_api_shards_under_mlx_launch_too(tmp_path, tiny_model_dir, sweep_case):
    facts, single = sweep_case
    script = tmp_path / "api_sweep.py"
    script.write_text(API_SCRIPT)
    out = tmp_path / "r.jsonl"
    proc = _launch([str(script), str(tiny_model_dir), str(facts), str(out)])
    summaries = sorted(json.loads(line.split(" ", 1)[1]) for line in proc.stdout.splitlines() if line.startswith("summary "))
    assert summaries == [[0, 2, 11, 10, []], [1, 2, 6, 5, []]], proc.stdout + proc.stderr  # rank 0: the whole run
    assert _without_seconds(_lines(out)) == _without_seconds(_lines(single))


def _rank_pid(rank: int, marker: str) -> int | None:
    """The pid of this user's process running as `rank` with `marker` on its command line."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker.encode() in cmdline and f"MLX_RANK={rank}".encode() in environ:
            return int(entry)
    return None


@pytest.mark.slow
def test_under_mlx_launch_a_dead_rank_stops_the_others_cleanly_and_a_rerun_finishes(tmp_path, tiny_model_dir, sweep_case):
    # mlx.launch sends SIGTERM to every rank once one has died: they stop like Ctrl-C (the fact in
    # hand is dropped) and rank 0 still merges what every rank wrote
    facts, single = sweep_case
    out = tmp_path / "r.jsonl"
    argv = _sweep_argv(facts, tiny_model_dir, out)
    cmd = [str(VENV_BIN / "mlx.launch"), "--backend", "ring", "-n", "2", "--starting-port", str(_free_ports(1)[0]),
           "--python", sys.executable, *argv]
    launcher = subprocess.Popen(cmd, env=_env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    part = Path(part_path(str(out), 1))
    deadline = time.monotonic() + 240
    while not (part.exists() and part.read_text().count("\n") >= 2) and time.monotonic() < deadline:
        assert launcher.poll() is None, launcher.communicate()
        time.sleep(0.05)
    os.kill(_rank_pid(1, str(out)), signal.SIGKILL)
    stdout, stderr = launcher.communicate(timeout=240)
    assert "Node with rank 0 exited with code 1" in stderr, stdout + stderr
    written = [r["known_id"] for r in _lines(out)]
    assert len(written) == len(set(written)) and 2 <= len(written) < 11
    missing = sorted(set(range(11)) - set(written))
    assert f"{len(missing)} facts missing" in stdout and f"known_id {', '.join(map(str, missing))};" in stdout
    assert sorted(os.listdir(tmp_path)) == ["r.jsonl"]

    proc = _launch(argv)
    assert "10 of 11 facts traced" in proc.stdout, proc.stdout + proc.stderr
    merged = {r["known_id"]: r for r in _without_seconds(_lines(out))}
    assert merged == {r["known_id"]: r for r in _without_seconds(_lines(single))}
