"""The recording phase (clean and corrupted runs before any cell): bounded memory (batches of
samples, an estimate that refuses what cannot fit), progress events, cancel, superseded requests."""

import json
import shutil
import threading
import time

from tracer.core import schedule, tracing
from tracer.core.patching import PatchableModel
from tracer.core.schedule import recording_bytes
from tracer.core.tracing import Tracer, run_trace
from tracer.engine import Engine
from tracer.errors import InputError, TraceCancelled
from tracer.events import Cancelled, CellsDone, Recording, Started
from tracer.inputs.prompts import tokenize
from tracer.models.load import load_model
from tracer.types import TraceRequest

import mlx.core as mx
import numpy as np
import pytest
from oracle import oracle_trace

PROMPT = "The Eiffel Tower is located in the city of"
SUBJECT = "Eiffel Tower"
LONG_CONTEXT = 2048


@pytest.fixture(scope="module")
def tracer(tiny_lm):
    return Tracer(tiny_lm, max_rows=7)


@pytest.fixture(scope="module")
def long_tracer(tiny_model_dir, tmp_path_factory):
    """The tiny llama with a context of 2,048 tokens (its RoPE has no limit; only the config's 256 does)."""
    path = tmp_path_factory.mktemp("tiny-long") / "llama"
    shutil.copytree(tiny_model_dir, path)
    config = json.loads((path / "config.json").read_text())
    config["max_position_embeddings"] = LONG_CONTEXT
    (path / "config.json").write_text(json.dumps(config))
    return Tracer(load_model(str(path)))


def long_prompt(tok, n_tokens: int, subject_first: bool = False) -> str:
    """A prompt of about n_tokens tokens (at least), ending with the Eiffel sentence (or starting
    with it: then almost every position of the corrupted run differs from the clean run)."""
    filler = "Tokyo is a city in Japan. Berlin is a city in Germany. "
    text = PROMPT
    while len(tokenize(tok, text)) < n_tokens:
        text = (PROMPT + ". " + filler + text[len(PROMPT) + 2:]) if subject_first else filler + text
    return text


def count_calls(monkeypatch, name: str) -> list:
    """Replace PatchableModel.<name> by a wrapper logging each call's row and token counts."""
    calls = []
    original = getattr(PatchableModel, name)

    def counted(self, ids, *args, **kwargs):
        calls.append(tuple(ids.shape))
        return original(self, ids, *args, **kwargs)

    monkeypatch.setattr(PatchableModel, name, counted)
    return calls


# ---- memory --------------------------------------------------------------------------------

def test_recording_bytes_by_hand():
    # SmolLM2-135M: 30 layers, hidden 576, 3 KV heads of 64: keys+values 30 x 2 x 192 = 11,520 per token
    states = 2000 * 10 * 30 * 576 * 4  # hidden states, [N, T, D] float32 per layer
    kv = 2000 * 10 * 11520 * 4
    embeds = 2000 * 10 * 576 * 4
    assert states == 1_382_400_000 and kv == 921_600_000 and embeds == 46_080_000
    assert recording_bytes(2000, 10, 30, 576, 11520) == states + kv + embeds == 2_350_080_000
    assert recording_bytes(2000, 10, 30, 576, 11520, packed=True) == states + 2 * kv + embeds
    assert recording_bytes(2000, 10, 30, 576, 11520, n_kinds=3) == 3 * states + kv + embeds


def test_recording_shapes_of_the_tiny_model(tracer):
    # 6 layers, hidden 64, 2 KV heads of 16: keys+values 6 x 2 x 2 x 16 = 384 elements per token
    assert tracer.recording_shapes() == (64, 384, 4)
    packed = tracer.patchable.packed is not None
    assert packed
    expected = 300 * 9 * (1 * 6 * 64 + 2 * 384 + 64) * 4
    assert tracing.check_recording_memory(tracer, 300, 9, ("hidden",), packed) == expected == 13_132_800


def test_a_trace_that_cannot_fit_is_refused_before_any_forward(tracer, monkeypatch):
    tracer.recording_shapes()  # its one-token probe is not a trace's forward
    monkeypatch.setattr(schedule, "free_memory_bytes", lambda: 100 << 20)
    forwards = count_calls(monkeypatch, "forward")
    T = len(tokenize(tracer.tokenizer, PROMPT))
    need = 3_000 * T * (6 * 64 + 2 * 384 + 64) * 4
    with pytest.raises(InputError) as err:
        run_trace(tracer, TraceRequest(PROMPT, SUBJECT, samples=3_000))
    assert str(err.value) == (f"3000 samples x {T} tokens need ~{need / 2**30:.1f} GiB for the recorded corrupted "
                              "run; 0.1 GiB is available: use fewer samples")
    assert forwards == []
    # the same request with the memory it needs runs
    monkeypatch.setattr(schedule, "free_memory_bytes", lambda: need + (64 << 20))
    result = run_trace(tracer, TraceRequest(PROMPT, SUBJECT, samples=3_000, kinds=("hidden",), positions="subject-last"))
    assert 0 <= result.corrupted_prob < result.clean_prob


def test_batched_record_equals_one_batch(tracer):
    # states ~1 in size: equal up to float32 rounding of differently shaped GEMMs
    pm = tracer.patchable
    ids = tokenize(tracer.tokenizer, PROMPT).ids
    embeds, _ = tracer.noised_embeddings(ids, (1, 4), TraceRequest(PROMPT, SUBJECT, samples=5))
    batch = mx.array([ids] * 5)
    states, logits, kv = pm.record(batch, embeds=embeds)
    b_states, b_logits, b_kv = pm.record(batch, embeds=embeds, kinds=("hidden", "mlp"), batch_rows=2)
    assert set(b_states) == {"hidden", "mlp"}
    for kind in b_states:
        for layer in range(pm.n_layers):
            assert b_states[kind][layer].shape == (5, len(ids), 64)
            np.testing.assert_allclose(np.array(b_states[kind][layer]), np.array(states[kind][layer]), atol=1e-5)
    np.testing.assert_allclose(np.array(b_logits), np.array(logits), atol=1e-5)
    for (k, v), (bk, bv) in zip(kv, b_kv):
        assert bk.shape == k.shape == (5, 2, len(ids), 16)
        np.testing.assert_allclose(np.array(bk), np.array(k), atol=1e-5)
        np.testing.assert_allclose(np.array(bv), np.array(v), atol=1e-5)
    # positions before the corruption (1) copied from the clean run's recording, the rest computed
    clean = pm.record(mx.array([ids]))
    s_states, s_logits, s_kv = pm.record(batch, embeds=embeds, batch_rows=2, shared=(clean[0], clean[2], 1))
    for kind in states:
        for layer in range(pm.n_layers):
            assert s_states[kind][layer].shape == (5, len(ids), 64)
            np.testing.assert_allclose(np.array(s_states[kind][layer]), np.array(states[kind][layer]), atol=1e-5)
    np.testing.assert_allclose(np.array(s_logits), np.array(logits), atol=1e-5)
    for (k, v), (sk, sv) in zip(kv, s_kv):
        np.testing.assert_allclose(np.array(sk), np.array(k), atol=1e-5)
        np.testing.assert_allclose(np.array(sv), np.array(v), atol=1e-5)


def test_causal_attention_in_pieces_equals_mlx_attention():
    from tracer.core.patching import ATTENTION_CHUNK, causal_attention

    T = 2 * ATTENTION_CHUNK + 37  # two whole pieces and a part
    rng = np.random.default_rng(0)
    q, k, v = (mx.array(rng.standard_normal(shape).astype(np.float32))
               for shape in ((2, 4, T, 16), (2, 2, T, 16), (2, 2, T, 16)))
    expected = mx.fast.scaled_dot_product_attention(q, k, v, scale=0.25, mask="causal")
    got = causal_attention(q, k, v, 0.25)
    assert got.shape == (2, 4, T, 16)
    np.testing.assert_allclose(np.array(got), np.array(expected), atol=2e-6)
    # the queries being the last positions (keys cached before them): causal aligned at the end
    expected = mx.fast.scaled_dot_product_attention(q[:, :, 5:], k, v, scale=0.25, mask="causal")
    got = causal_attention(q[:, :, 5:], k, v, 0.25)
    np.testing.assert_allclose(np.array(got), np.array(expected), atol=2e-6)
    np.testing.assert_allclose(np.array(got[:, :, -40:]), np.array(causal_attention(q, k, v, 0.25)[:, :, -40:]), atol=2e-6)


def test_long_recording_with_attention_in_pieces_equals_without(long_tracer, monkeypatch):
    import tracer.core.patching as patching

    pm = long_tracer.patchable
    ids = mx.array([tokenize(long_tracer.tokenizer, long_prompt(long_tracer.tokenizer, 600)).ids])
    pieces = []
    original = patching.causal_attention
    monkeypatch.setattr(patching, "causal_attention", lambda *a: pieces.append(a[0].shape) or original(*a))
    states, logits, kv = pm.record(ids)
    assert len(pieces) == pm.n_layers and pieces[0][2] == ids.shape[1]
    f_states, f_logits, f_kv = pm.record(ids, chunk_attention=False)
    assert len(pieces) == pm.n_layers
    for layer in range(pm.n_layers):
        np.testing.assert_allclose(np.array(states["hidden"][layer]), np.array(f_states["hidden"][layer]), atol=1e-5)
    np.testing.assert_allclose(np.array(logits), np.array(f_logits), atol=1e-5)


@pytest.mark.parametrize("sever", [(), ("mlp", "attn")])
def test_batched_trace_equals_unbatched_and_the_oracle(tracer, tiny_lm, monkeypatch, sever):
    req = TraceRequest(PROMPT, SUBJECT, kinds=("hidden", "mlp", "attn"), samples=5, window=3, seed=7, sever=sever)
    whole = run_trace(tracer, req)
    records = count_calls(monkeypatch, "forward")
    monkeypatch.setattr(tracing, "record_batch_rows", lambda n_tokens: 2)
    events = []
    batched = run_trace(tracer, req, on_event=events.append)
    T, b = len(whole.tokens), whole.subject_range[0]
    assert b > 0
    # the clean run, then 3 batches of the corrupted run from its first corrupted position
    assert records[:4] == [(1, T), (2, T - b), (2, T - b), (1, T - b)]
    assert {e.n_batches for e in events if isinstance(e, Recording) and e.phase == "corrupted"} == {3}
    expected, p_clean, p_corrupt, _ = oracle_trace(tiny_lm, PROMPT, SUBJECT, kinds=req.kinds, samples=5, window=3,
                                                   seed=7, noise_std=whole.noise_std, sever=sever)
    assert batched.corrupted_prob == pytest.approx(whole.corrupted_prob, abs=1e-6)
    assert batched.corrupted_prob == pytest.approx(p_corrupt, abs=1e-5)
    for grid in req.grid_names:
        got, ref = np.array(batched.grids[grid]["prob"]), np.array(whole.grids[grid]["prob"])
        assert np.abs(got - ref).max() <= 1e-6
        assert np.abs(got - np.array(expected[grid]["prob"])).max() <= 1e-5
        assert np.abs(np.array(batched.grids[grid]["logit_diff"]) - np.array(whole.grids[grid]["logit_diff"])).max() <= 1e-5


# ---- progress and cancel ---------------------------------------------------------------------

@pytest.mark.slow
def test_recording_progress_arrives_in_order_before_started(long_tracer):
    prompt = long_prompt(long_tracer.tokenizer, 400, subject_first=True)
    tokens, subject = long_tracer.tokenize(prompt, SUBJECT)
    T = len(tokens)
    assert 400 <= T < 450 and subject[0] == 1
    events, times = [], []

    def on_event(e):
        events.append(e)
        times.append(time.perf_counter())

    samples = 25
    run_trace(long_tracer, TraceRequest(prompt, SUBJECT, samples=samples, kinds=("hidden",), positions="subject-last"),
              on_event=on_event)
    started = next(i for i, e in enumerate(events) if isinstance(e, Started))
    recording = [e for e in events if isinstance(e, Recording)]
    assert all(isinstance(e, Recording) for e in events[:started])
    assert not any(isinstance(e, Recording) for e in events[started:])
    L = long_tracer.n_layers
    batches = -(-samples // schedule.record_batch_rows(T - 1))
    assert batches == 13  # 1024 // 4xx = 2 rows per batch
    expected = [("clean", layer, 1) for layer in range(L + 1)] + [("corrupted", 0, 1)] + [
        ("corrupted", layer, b) for b in range(1, batches + 1) for layer in range(1, L + 1)]
    assert [(e.phase, e.layer, e.batch) for e in recording] == expected
    assert {(e.n_layers, e.n_batches) for e in recording if e.phase == "corrupted"} == {(L, batches)}
    fractions = [e.fraction for e in recording if e.phase == "corrupted"]
    assert fractions == sorted(fractions) and fractions[0] == 0 and fractions[-1] == 1
    assert times[0] <= times[1] < times[started]  # the first block's event came before the trace began
    assert recording[-1].describe() == f"recording corrupted run: layer {L}/{L} (batch 13/13)"
    assert any(isinstance(e, CellsDone) for e in events[started:])


@pytest.mark.parametrize("phase", ["clean", "corrupted"])
def test_cancel_during_recording_stops_within_half_a_second(long_tracer, phase):
    prompt = long_prompt(long_tracer.tokenizer, 1500, subject_first=True)
    tokens, subject = long_tracer.tokenize(prompt, SUBJECT)
    assert len(tokens) >= 1500 and subject[0] == 1  # the corruption starts at token 1
    events, cancel, set_at = [], threading.Event(), []
    recording = threading.Event()

    def on_event(e):
        events.append(e)
        if isinstance(e, Recording) and e.phase == phase and e.layer > 0:
            recording.set()

    def cancel_soon():  # a timer thread: cancel 0.1 s after the phase's first block
        if recording.wait(120):
            time.sleep(0.1)
            set_at.append(time.perf_counter())
            cancel.set()

    timer = threading.Thread(target=cancel_soon)
    timer.start()
    try:
        with pytest.raises(TraceCancelled):
            run_trace(long_tracer, TraceRequest(prompt, SUBJECT, samples=20, kinds=("hidden",)), on_event=on_event,
                      cancel=cancel)
        raised_at = time.perf_counter()
    finally:
        recording.set()
        timer.join()
    assert set_at, "the recording never started"
    assert not any(isinstance(e, Started) for e in events)  # it was cancelled while recording
    last = [e for e in events if isinstance(e, Recording)][-1]
    assert last.phase == phase and last.fraction < 1  # ... with that phase unfinished
    assert raised_at - set_at[0] < 0.5


def test_a_cancelled_request_never_records(tracer, monkeypatch):
    forwards = count_calls(monkeypatch, "forward")
    cancel = threading.Event()
    cancel.set()
    events = []
    with pytest.raises(TraceCancelled):
        run_trace(tracer, TraceRequest(PROMPT, SUBJECT), on_event=events.append, cancel=cancel)
    assert forwards == [] and events == []


def test_the_engine_drops_a_request_cancelled_while_queued(tiny_model_dir, monkeypatch):
    forwards = count_calls(monkeypatch, "forward")
    engine = Engine(str(tiny_model_dir))
    try:
        gate = threading.Event()
        engine.submit(gate.wait, 30)  # the engine is busy while the request is queued and superseded
        cancel, events = threading.Event(), []
        future = engine.trace(TraceRequest(PROMPT, SUBJECT), on_event=events.append, cancel=cancel)
        cancel.set()
        gate.set()
        assert future.result(timeout=60) is None
        assert events == [Cancelled()]
        assert engine._tracer is None and forwards == []  # not even loaded
        # a later request runs
        result = engine.trace(TraceRequest(PROMPT, SUBJECT, kinds=("hidden",), positions="subject-last")).result(60)
        assert result is not None and len(forwards) > 0
    finally:
        engine.close()


def test_cli_progress_shows_the_recording(monkeypatch):
    from tracer.cli.trace import _Progress

    progress = _Progress(enabled=True)
    with progress:
        task = progress._bar.tasks[0]
        progress.on_event(Recording("clean", 0, 30))
        progress.on_event(Recording("clean", 12, 30))
        assert (task.description, task.completed, task.total) == ("recording clean run: layer 12/30", 12, 30)
        progress.on_event(Recording("corrupted", 0, 30, 1, 2))
        progress.on_event(Recording("corrupted", 6, 30, 2, 2))
        assert task.description == "recording corrupted run: layer 6/30 (batch 2/2)"
        assert (task.completed, task.total) == (36, 60)
        progress.on_event(Started(["a"], (0, 1), 0.7, 0.1, (1, 30), ("hidden",), " Paris", 30))
        progress.on_event(CellsDone("hidden", [(0, 0)], [0.5], [50.0], [1.0], 1, 30))
        assert (task.description, task.completed, task.total) == ("tracing", 1, 30)
        assert task.fields["count"] == "1/30 cells"
