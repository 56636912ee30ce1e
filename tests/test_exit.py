"""Exiting after MLX work on the engine's threads: no abort (issue #11 item 6).

A thread's C-level MLX state (its mx.random key, compile cache, streams) used to be freed
by thread-local destructors after Thread.join() had returned; the key's destructor takes the
GIL and, with the interpreter finalising, aborted the process ("terminate called without an
active exception", exit code 134). workers.release_thread_state frees it while the thread
still runs, and join_thread waits for the OS thread to be gone."""

import os
import subprocess
import sys
import threading
from pathlib import Path

from tracer.core import workers
from tracer.core.workers import Workers, join_thread, release_thread_state
from tracer.engine import Engine
from tracer.types import TraceRequest

import mlx.core as mx
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import sys
import tracer
import mlx.core as mx
from tracer.engine import Engine
from tracer.core.fastops import fused_silu_mul
from tracer.core.workers import Workers

def job():
    # what loading a model and tracing leave on the engine's threads: each one's mx.random key
    # (nn.Linear initialises its weights with it), compiled functions, arrays and streams
    x = mx.random.normal((64,))
    mx.eval(x)
    pool = Workers(2)
    work = lambda i: fused_silu_mul(x + i, mx.random.normal((64,))).shape[0] + i
    return sorted(r for _, r in pool.map(work, range(4)))  # pool: closed when collected

engine = Engine()
print(engine.submit(job).result(timeout=60))
if sys.argv[1] == "close":
    engine.close()  # otherwise the engine is closed at exit
"""


@pytest.mark.slow
def test_engine_processes_exit_cleanly(tmp_path):
    """Sixteen processes (four at a time: a busy machine widens the race) use MLX on the
    engine thread and two workers, then exit, half after close(), half leaving the engine to
    the exit hook. Before the fix, about one such process in three aborted."""
    script = tmp_path / "engine_exit.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    runs = ["close" if i % 2 == 0 else "exit" for i in range(16)]
    results = []
    for start in range(0, len(runs), 4):
        procs = [
            subprocess.Popen([sys.executable, str(script), mode], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for mode in runs[start:start + 4]
        ]
        for p in procs:
            out, err = p.communicate(timeout=120)
            results.append((p.returncode, out, err))
    for code, out, err in results:
        assert "terminate called" not in err, err
        assert code == 0, err
        assert out.strip() == "[64, 65, 66, 67]"  # the work really ran


def test_release_thread_state_drops_the_threads_random_key():
    """The state whose destructor aborted: after release, the thread's key is a fresh one."""
    keys = {}

    def work():
        mx.random.seed(7)
        keys["seeded"] = np.array(mx.random.state[0])
        release_thread_state()
        keys["after"] = np.array(mx.random.state[0])  # re-created lazily (time-seeded)
        release_thread_state()

    t = threading.Thread(target=work)
    t.start()
    assert join_thread(t, 30)
    assert keys["seeded"].tolist() == [0, 7]
    assert keys["after"].tolist() != [0, 7]


def _spy(monkeypatch):
    released = []
    real = workers.release_thread_state

    def spy():
        released.append(threading.current_thread().name)
        real()

    monkeypatch.setattr(workers, "release_thread_state", spy)
    return released


def test_workers_release_their_state_and_are_gone_after_close(monkeypatch):
    released = _spy(monkeypatch)
    pool = Workers(2)
    threads = list(pool._threads)
    out = dict(pool.map(lambda i: mx.sum(mx.arange(i)).item(), [3, 4, 5]))
    assert out == {3: 3, 4: 6, 5: 10}
    pool.close()
    assert sorted(released) == ["tracer-worker-0", "tracer-worker-1"]
    for t in threads:
        assert not t.is_alive()
        assert not os.path.exists(f"/proc/self/task/{t.native_id}") or sys.platform != "linux"
    pool.close()  # idempotent
    assert len(released) == 2


def test_engine_close_releases_engine_and_worker_threads(monkeypatch, tiny_model_dir):
    released = _spy(monkeypatch)
    monkeypatch.setenv("TRACER_WORKERS", "2")
    engine = Engine(str(tiny_model_dir))
    engine.load().result(timeout=120)
    first = list(engine._tracer.workers._threads)
    engine.load().result(timeout=120)  # a reload closes the first model's workers
    assert first and not any(t.is_alive() for t in first)
    assert sorted(released) == sorted(t.name for t in first)
    released.clear()
    request = TraceRequest("The Eiffel Tower is located in the city of", "Eiffel Tower",
                           kinds=("mlp",), samples=1, window=3, positions="subject-last")
    assert engine.trace(request).result(timeout=120) is not None
    engine.close()
    assert released[-1] == "tracer-engine"  # last, after its workers
    assert sorted(released[:-1]) == sorted(t.name for t in engine._tracer.workers._threads)
    assert not engine._thread.is_alive()
