"""The engine thread owns MLX: load there, trace from other threads, events in order, cancel."""

import threading

from tracer.engine import Engine
from tracer.errors import InputError
from tracer.events import Cancelled, CellsDone, Failed, Finished, Recording, Started
from tracer.types import TraceRequest

import mlx.core as mx
import numpy as np
import pytest

PROMPT = "The Eiffel Tower is located in the city of"


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    eng = Engine(str(tiny_model_dir))
    info = eng.load().result(timeout=120)
    assert info.n_layers == 6
    yield eng
    eng.close()


def test_trace_from_a_worker_thread_with_its_own_stream(engine):
    """A TUI worker is a fresh thread with its own MLX stream: it must never need MLX."""
    events, outcome = [], {}

    def worker():
        mx.set_default_stream(mx.new_stream(mx.cpu))  # a thread mix-up would fail with "no Stream"
        req = TraceRequest(PROMPT, "Eiffel Tower", kinds=("hidden", "mlp"), samples=2, window=3)
        outcome["result"] = engine.trace(req, events.append).result(timeout=120)

    t = threading.Thread(target=worker)
    t.start()
    t.join(timeout=180)
    result = outcome["result"]
    recording = [e for e in events if isinstance(e, Recording)]  # the clean and corrupted runs, first
    assert events[:len(recording)] == recording and len(recording) == 2 * (6 + 1)
    events = events[len(recording):]
    assert isinstance(events[0], Started) and isinstance(events[-1], Finished)
    assert events[-1].result is result
    cells = [e for e in events if isinstance(e, CellsDone)]
    assert cells[-1].done == cells[-1].total == events[0].total_cells == 2 * 6 * len(result.tokens)
    # the streamed cells rebuild the final grids exactly
    for kind in ("hidden", "mlp"):
        grid = np.full((len(result.tokens), 6), np.nan)
        for e in cells:
            if e.kind == kind:
                for (r, c), p in zip(e.cells, e.prob):
                    grid[r, c] = p
        np.testing.assert_array_equal(grid, np.array(result.grids[kind]["prob"]))
    # results are plain Python values, safe on any thread
    assert isinstance(result.clean_prob, float) and isinstance(result.grids["hidden"]["prob"][0][0], float)


def test_cancel_stops_between_batches(engine):
    events = []
    cancel = threading.Event()

    def on_event(e):
        events.append(e)
        if isinstance(e, CellsDone) and e.done > 0:
            cancel.set()

    # force small batches so the trace has many of them
    engine.submit(lambda: setattr(engine._tracer, "max_rows", 4)).result()
    try:
        req = TraceRequest(PROMPT, "Eiffel Tower", samples=4, window=3)
        assert engine.trace(req, on_event, cancel).result(timeout=120) is None
    finally:
        engine.submit(lambda: setattr(engine._tracer, "max_rows", None)).result()
    assert isinstance(events[-1], Cancelled)
    started = next(e for e in events if isinstance(e, Started))
    assert events[-2].done < started.total_cells


def test_settle_reaches_the_adaptive_run_through_trace_and_call(engine):
    """Engine.trace(settle=) and Engine.call("trace", settle=): an adaptive trace settled before it
    starts finishes (Finished, a complete result) with every refined cell at its first 3 samples."""
    settle = threading.Event()
    settle.set()
    req = TraceRequest(PROMPT, "Eiffel Tower", kinds=("hidden",), samples=12, window=3, ci_width=0.001)
    events = []
    traced = engine.trace(req, events.append, settle=settle).result(timeout=120)
    called = engine.call("trace", req.prompt, req.subject, settle=settle, **req.options()).result(timeout=120)
    assert isinstance(events[-1], Finished) and events[-1].result is traced
    for result in (traced, called):
        counts = {n for row in result.grids["hidden"]["samples"] for n in row}
        assert counts == {3, 12}  # 12: the token before the subject, the corrupted run's samples
        assert "refining-stopped" in [w.code for w in result.warnings]
        assert all(v is not None for row in result.grids["hidden"]["prob"] for v in row)


def test_bad_request_fails_with_message_and_engine_survives(engine):
    events = []
    future = engine.trace(TraceRequest(PROMPT, "Louvre"), events.append)
    with pytest.raises(InputError):
        future.result(timeout=60)
    assert isinstance(events[-1], Failed) and "not found" in events[-1].message
    ok = engine.trace(TraceRequest(PROMPT, "Eiffel Tower", kinds=("attn",), samples=1)).result(timeout=60)
    assert ok.corruption == "noise"


def test_import_tracer_does_not_import_textual():
    import subprocess
    import sys

    code = "import tracer, tracer.engine, tracer.core.tracing, tracer.api, tracer.cli, sys; print('textual' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_engine_owns_sweeps_and_fact_checks(tmp_path, tiny_model_dir):
    """Engine.sweep and Engine.count_known load the model on first use and run on the engine thread."""
    import json

    from tracer.inputs.facts import Fact
    from tracer.sweeps.results import SweepConfig

    engine = Engine(str(tiny_model_dir))
    try:
        prompt = "The capital of Germany is"
        top = engine.submit(lambda: engine._loaded().predict([prompt])[0][0].text.strip()).result(timeout=60)
        facts = [Fact(0, "Germany", top, prompt), Fact(1, "Germany", top + "x", prompt)]
        known, reasons, checks = engine.count_known(facts, "rome").result(timeout=60)
        assert known == 1 and reasons == {"wrong-prediction": 1} and len(checks) == 2
        out = str(tmp_path / "r.jsonl")
        summary = engine.sweep(facts, out, SweepConfig(kinds=("mlp",), samples=2, window=2)).result(timeout=120)
        assert summary.kept == 1 and summary.skipped == 1
        assert sorted((json.loads(line)["known_id"], json.loads(line)["status"]) for line in open(out)) == [
            (0, "kept"), (1, "skipped")]
    finally:
        engine.close()
