"""The first-order estimate (tracer/core/estimate.py) against finite differences and exact traces,
and the progressive schedule against today's (the same grids bit for bit)."""

import threading

from tracer.cli import run_cli
from tracer.core.estimate import differentiable_prob, importance, order_chunks, state_terms
from tracer.core.fastops import exact_activations
from tracer.core.patching import TapPlan
from tracer.core.schedule import Cell, Chunk, Corrupted
from tracer.core.tracing import run_trace
from tracer.errors import InputError
from tracer.events import CellsDone, Estimate, Started
from tracer.inputs.prompts import subject_span, tokenize
from tracer.settings import window_layers
from tracer.types import TraceRequest

import mlx.core as mx
import numpy as np
import pytest
from tiny import ARCHS

PROMPT = "The Eiffel Tower is located in the city of"
SUBJECT = "Eiffel Tower"
OTHER = "The Louvre Museum is located in the city of"  # same token count for the tiny tokenizer


def _run(tracer, mode: str, samples: int = 3) -> tuple[Corrupted, int]:
    """The clean and corrupted runs as core/estimate.py reads them, and the first corrupted position."""
    pm, tok = tracer.patchable, tracer.tokenizer
    clean = tokenize(tok, PROMPT)
    span = subject_span(PROMPT, SUBJECT, clean)
    states, logits, _ = pm.record(mx.array([clean.ids]))
    target = int(np.argmax(np.array(logits[0].astype(mx.float32))))
    clean_states = {k: [s[0] for s in v] for k, v in states.items()}
    if mode == "noise":
        embeds, _ = tracer.noised_embeddings(clean.ids, span, TraceRequest(PROMPT, SUBJECT, samples=samples))
        ids, first = clean.ids, span[0]
    else:
        other = tokenize(tok, OTHER)
        assert len(other) == len(clean)
        embeds, ids, samples = None, other.ids, 1
        first = next(i for i, (a, b) in enumerate(zip(clean.ids, other.ids)) if a != b)
    run = Corrupted(ids=list(ids), n_samples=samples, embeds=embeds, states={}, kv=None, clean=clean_states,
                    target_id=target, top_id=target)
    return run, first


def _f(pm, run, added) -> np.ndarray:
    """P(target) per sample with `added` ({(kind, layer): [N, T, D]}) added to those outputs."""
    ids = mx.array([run.ids] * run.n_samples)
    plans = {key: TapPlan(add=value) for key, value in added.items()}
    with exact_activations():
        p = differentiable_prob(pm.forward(ids, embeds=run.embeds, plans=plans), run.targets)
    return np.array(p, dtype=np.float64)


@pytest.fixture(scope="module")
def float64_tracer(tiny_model_dir):
    """The tiny llama in float64 (MLX's CPU runs it; its attention and RoPE keep float32 steps),
    so that finite differences are not lost in float32 rounding."""
    from tracer.core.tracing import Tracer
    from tracer.models.load import load_model

    lm = load_model(str(tiny_model_dir))
    lm.model.set_dtype(mx.float64)
    return Tracer(lm)


@pytest.mark.parametrize("mode", ["noise", "substitution"])
def test_linear_terms_equal_finite_differences(float64_tracer, mode):
    """Per kind, a cell's linear term (its terms summed over the window's layers and its position)
    equals the central difference of P(target) along delta = clean - corrupted added to those outputs."""
    tracer = float64_tracer
    pm = tracer.patchable
    run, first = _run(tracer, mode)
    base, terms = state_terms(pm, run, first_corrupt=first)
    assert np.allclose(base, _f(pm, run, {}), rtol=1e-5, atol=1e-9)
    states, _, _ = pm.record(mx.array([run.ids] * run.n_samples), embeds=run.embeds)
    T, L = len(run.ids), pm.n_layers
    eps = 1e-2
    checked = 0
    for kind in ("hidden", "mlp", "attn"):
        for layer in (1, L - 2):
            for position in (first + 1, T - 1):
                l0, l1 = window_layers(kind, layer, 3, L)
                delta = {}
                for i in range(l0, l1):
                    d = np.zeros((run.n_samples, T, 1))
                    d[:, position] = 1.0
                    delta[(kind, i)] = mx.array(d) * (run.clean[kind][i][None] - states[kind][i])
                plus = _f(pm, run, {key: eps * v for key, v in delta.items()})
                minus = _f(pm, run, {key: -eps * v for key, v in delta.items()})
                numeric = (plus - minus) / (2 * eps)
                linear = terms[kind][l0:l1, :, position].sum(axis=0)
                assert np.abs(numeric).max() > 1e-7  # the terms checked are not all zero
                # a wrong gradient is off by its own size; these agree to ~1% of the kind's largest term
                assert np.allclose(linear, numeric, rtol=2e-2, atol=2e-2 * np.abs(terms[kind]).max()), \
                    (kind, layer, position, linear, numeric)
                checked += 1
    assert checked == 12
    assert np.all(terms["hidden"][:, :, :first] == 0)  # positions before the corruption: no term


def test_estimate_is_exact_in_the_linear_limit(tracers, monkeypatch):
    """With a tiny noise and one-layer windows every cell's change is first order: the estimate
    agrees with the exact patched runs to far better than the effects themselves."""
    tracer, _ = tracers("llama")
    req = TraceRequest(PROMPT, SUBJECT, samples=2, noise="0.001", window=1, estimate="progressive")
    result = run_trace(tracer, req)
    for kind in ("hidden", "mlp", "attn"):
        exact = result.grid(kind)
        est = np.array(result.estimate[kind]["prob"], dtype=np.float64)
        effect = np.abs(exact - result.corrupted_prob).max()
        assert effect > 1e-7
        assert np.abs(est - exact).max() < 0.02 * effect, kind
        assert result.estimate_error[kind]["correlation"] > 0.99


@pytest.mark.parametrize(("arch", "corrupted"), [(arch, None) for arch in ARCHS] + [("llama", OTHER), ("gpt2", OTHER)])
def test_progressive_grids_equal_todays_bit_for_bit(tracers, arch, corrupted):
    """The progressive schedule runs the same forwards in another order: every grid and metric
    is identical; the Estimate events come after Started and before any patched cell."""
    tracer, _ = tracers(arch)
    if corrupted is not None and len(tokenize(tracer.tokenizer, corrupted)) != len(tokenize(tracer.tokenizer, PROMPT)):
        pytest.skip("no same-length substitution for this tokenizer")
    base = dict(corrupted_prompt=corrupted, samples=3, window=3)
    today = run_trace(tracer, TraceRequest(PROMPT, SUBJECT, **base))
    events = []
    progressive = run_trace(tracer, TraceRequest(PROMPT, SUBJECT, estimate="progressive", **base),
                            on_event=events.append)
    for kind, grid in today.grids.items():
        for metric, values in grid.items():
            assert progressive.grids[kind][metric] == values, (kind, metric)
    kinds = [type(e) for e in events if type(e) in (Started, Estimate, CellsDone)]
    first_estimate = kinds.index(Estimate)
    assert kinds[0] is Started and Estimate not in kinds[first_estimate + 3:]
    assert sum(k is Estimate for k in kinds) == 3
    est_cells = {e.kind: set(e.cells) for e in events if isinstance(e, Estimate)}
    before = {(e.kind, c) for e in events[:events.index(next(e for e in events if isinstance(e, Estimate)))]
              if isinstance(e, CellsDone) for c in e.cells}
    shape = np.array(today.grids["hidden"]["prob"]).shape
    for kind, cells in est_cells.items():  # every cell: estimated, or exact before the estimate
        assert len(cells) + sum(k == kind for k, _ in before) == shape[0] * shape[1]
    assert set(progressive.estimate_error) == {"hidden", "mlp", "attn"}
    for kind in ("hidden", "mlp", "attn"):  # gradients reach every kind's taps on this architecture
        est = np.array(progressive.estimate[kind]["prob"], dtype=np.float64)
        assert np.nanmax(np.abs(est - progressive.corrupted_prob)) > 1e-7, kind
    # the previews (the most important cells ahead) come first, each cell again later; their values
    # are the final ones up to float rounding
    after = events[events.index(next(e for e in events if isinstance(e, Estimate))):]
    done = [e for e in after if isinstance(e, CellsDone) and not e.preview]
    previews = [e for e in after if isinstance(e, CellsDone) and e.preview]
    arrived = [e for e in after if isinstance(e, CellsDone)]
    assert previews and (arrived[0].preview or arrived[1].preview)  # submitted first; two workers
    for e in previews:
        final = np.array(progressive.grids[e.kind]["prob"], dtype=np.float64)
        assert np.allclose(e.prob, [final[r, c] for r, c in e.cells], rtol=1e-5, atol=1e-7)
        assert all(any((e.kind, cell) in {(d.kind, x) for x in d.cells} for d in done) for cell in e.cells)
    assert sum(len(e.cells) for e in events if isinstance(e, CellsDone) and not e.preview) == shape[0] * shape[1] * 3


def test_estimate_on_the_workers_overlapping_the_recording(tiny_model_dir):
    """With two workers the estimate runs on them and starts before the corrupted run is recorded:
    the estimate equals one thread's (to float32 rounding), the exact grids equal one thread's bit
    for bit, and a cancel while the two overlap stops the trace and leaves the workers usable."""
    from tracer.core.tracing import Tracer
    from tracer.errors import TraceCancelled
    from tracer.events import Recording
    from tracer.models.load import load_model

    one, two = Tracer(load_model(str(tiny_model_dir)), workers=1), Tracer(load_model(str(tiny_model_dir)), workers=2)
    req = TraceRequest(PROMPT, SUBJECT, samples=5, window=3, estimate="progressive")
    a, b = run_trace(one, req), run_trace(two, req)
    for kind in ("hidden", "mlp", "attn"):
        assert a.grids[kind] == b.grids[kind]
        est_a, est_b = (np.array(r.estimate[kind]["prob"], dtype=np.float64) for r in (a, b))
        assert np.allclose(est_a, est_b, rtol=1e-5, atol=1e-6, equal_nan=True)
        assert np.nanmax(np.abs(est_a - a.corrupted_prob)) > 1e-5  # an estimate, not the corrupted run (P ~ 0.006 here)
    cancel = threading.Event()

    def on_event(event):  # cancel once the corrupted run's recording has begun: the estimate is in flight
        if isinstance(event, Recording) and event.phase == "corrupted":
            cancel.set()

    with pytest.raises(TraceCancelled):
        run_trace(two, req, on_event=on_event, cancel=cancel)
    again = run_trace(two, req)
    assert again.grids["mlp"] == b.grids["mlp"]
    one.workers.close(), two.workers.close()


def test_chunks_run_in_order_of_their_most_important_cell():
    cells = [Cell("hidden", r, 0, (0, 1), (r,)) for r in range(5)]
    chunks = [Chunk(1, 0, cells[:2]), Chunk(1, 2, cells[2:4]), Chunk(1, 4, cells[4:])]
    priority = {id(cells[0]): 0.1, id(cells[1]): 0.3, id(cells[2]): 0.05, id(cells[3]): 1.0, id(cells[4]): 0.2}
    # the important ones (>= 0.25) largest first, then the others in the given order
    assert order_chunks(chunks, priority) == [chunks[1], chunks[0], chunks[2]]
    priority[id(cells[1])] = 0.2
    assert order_chunks(chunks, priority) == [chunks[1], chunks[0], chunks[2]]
    priority[id(cells[3])] = 0.1
    assert order_chunks(chunks, priority) == chunks


def test_importance_brings_the_estimated_peaks_neighbourhood():
    cells = [Cell("mlp", 0, layer, (layer, layer + 1), (0,)) for layer in range(8)]
    cells += [Cell("attn", 0, layer, (layer, layer + 1), (0,)) for layer in range(2)]
    probs = np.array([0.1, 0.1, 0.1, 0.5, 0.1, 0.1, 0.1, 0.3, 0.2, 0.15])
    got = importance(cells, probs, p_corrupt=0.1)
    # mlp: the peak (layer 3) 1, layers 1..5 at least 0.9, layer 7 its own 0.2 / 0.4; attn on its own
    # scale, its layer 1 (0.05 / 0.1 of the peak's effect) in the neighbourhood: 0.9 + 0.1 * 0.5
    assert np.allclose(got, [0, 0.9, 0.9, 1, 0.9, 0.9, 0, 0.5, 1, 0.95])
    # a window of 10 layers: half of it either side (the first order misplaces a window's plateau)
    wide = [Cell("mlp", 0, layer, window_layers("mlp", layer, 10, 16), (0,)) for layer in range(16)]
    probs = np.full(16, 0.1)
    probs[8] = 0.5
    got = importance(wide, probs, p_corrupt=0.1)
    assert np.allclose(got, [0.9 if 3 <= layer <= 13 and layer != 8 else float(layer == 8) for layer in range(16)])


def test_estimate_only_from_the_api_and_the_cli(tracers, tiny_model_dir, capsys):
    import json

    import tracer as front

    model, _ = tracers("llama")
    result = front.estimate(model, PROMPT, SUBJECT, samples=2, window=3)
    assert not result.exact and result.estimate is not None
    progressive = run_trace(model, TraceRequest(PROMPT, SUBJECT, samples=2, window=3, estimate="progressive"))
    for kind in ("hidden", "mlp", "attn"):  # the same estimate either way
        assert np.array_equal(result.grid(kind), np.array(progressive.estimate[kind]["prob"], dtype=np.float64))
    with pytest.raises(InputError, match="severed"):
        front.estimate(model, PROMPT, SUBJECT, sever=("mlp",))
    with pytest.raises(InputError, match="estimate must be one of"):
        TraceRequest(PROMPT, SUBJECT, estimate="sometimes")
    code = run_cli(["trace", "--model", str(tiny_model_dir), "--prompt", PROMPT, "--subject", SUBJECT,
                    "--samples", "2", "--window", "3", "--estimate-only", "--format", "json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["exact"] is False
    assert out["grids"]["mlp"]["prob"] == out["estimate"]["mlp"]["prob"]
    assert "estimate-only" in [w["code"] for w in out["warnings"]]


def test_float32_terms_with_the_fast_mlp_match_float64(tracers, float64_tracer):
    """The engine's float32 model (its SwiGLU on the fast polynomial exp, whose exponent bits carry
    no gradient) gives the float64 model's terms: the estimate differentiates MLX's own SiLU."""
    tracer, _ = tracers("llama")
    assert tracer.patchable.fast_mlp
    run32, first = _run(tracer, "noise")
    run64, _ = _run(float64_tracer, "noise")
    base32, terms32 = state_terms(tracer.patchable, run32, first_corrupt=first)
    base64, terms64 = state_terms(float64_tracer.patchable, run64, first_corrupt=first)
    assert np.allclose(base32, base64, rtol=1e-4)
    for kind in terms32:
        scale = np.abs(terms64[kind]).max()
        assert np.allclose(terms32[kind], terms64[kind], rtol=1e-2, atol=1e-3 * scale), kind


@pytest.mark.parametrize("extra", [
    {"corrupted_prompt": "The Statue of Liberty is located in the city of", "target": " Paris, the"},
    {"target": " Paris, the", "samples": 2},
    {"positions": "subject", "samples": 2},
])
def test_progressive_with_aligned_prompts_long_targets_and_chosen_positions(tracers, extra):
    """A corrupted prompt of another length (aligned), a target of several tokens (teacher-forced)
    and positions restored together: the same grids bit for bit, and an estimate that follows the
    exact cells (these effects are small: well inside the first order)."""
    tracer, _ = tracers("llama")
    today = run_trace(tracer, TraceRequest(PROMPT, SUBJECT, window=3, **extra))
    progressive = run_trace(tracer, TraceRequest(PROMPT, SUBJECT, window=3, estimate="progressive", **extra))
    assert all(today.grids[k] == progressive.grids[k] for k in today.grids)
    if "target" in extra:
        assert len(today.target_tokens) > 1
    for kind, error in progressive.estimate_error.items():
        assert error["correlation"] > 0.7, kind


def test_cell_estimates_sum_windows_and_positions_and_stay_probabilities():
    """A cell's estimate is the base plus its terms over layers l0..l1 and its positions, per sample,
    clipped to [0, 1]; a severed cell has none."""
    from tracer.core.estimate import cell_estimates

    base = np.array([0.2, 0.5])
    terms = {"mlp": np.arange(2 * 2 * 3, dtype=np.float64).reshape(2, 2, 3) / 100}  # [L=2, N=2, T=3]
    cells = [Cell("mlp", 0, 0, (0, 2), (1,)), Cell("mlp", 0, 1, (1, 2), (0, 2)),
             Cell("hidden", 0, 0, (0, 1), (0,), "mlp")]
    terms["hidden"] = np.full((2, 2, 3), 0.3)
    got = cell_estimates(cells, base, terms)
    assert np.allclose(got[0], [0.2 + 0.01 + 0.07, 0.5 + 0.04 + 0.10])
    assert np.allclose(got[1], [0.2 + 0.06 + 0.08, min(1.0, 0.5 + 0.09 + 0.11)])
    assert np.isnan(got[2]).all()
    assert np.array_equal(cell_estimates(cells[:1], base, {"mlp": terms["mlp"] * 100}), [[1.0, 1.0]])


@pytest.mark.parametrize("peak_row", [0, 8])
def test_previews_hold_each_grids_peak_and_stay_within_their_share(tiny_tracer, peak_row):
    """Every cell important enough to preview: each grid's peak comes whatever it costs, the others
    in order of importance while all of them stay within PREVIEW_SHARE of the trace's forwards'
    work. Peaks at row 0 (each grid's costliest cells) fill the share alone; at row 8 (the last
    token) they leave room for others."""
    from tracer.core import schedule
    from tracer.core.schedule import make_cells
    from tracer.core.tracing import PREVIEW_SHARE, plan_chunks, plan_previews

    T, L, n = 9, tiny_tracer.n_layers, 3
    cells = make_cells(("hidden", "mlp", "attn"), "all", T, L, window=3)
    chunks, packed = plan_chunks(tiny_tracer, cells, n, T, use_prefix=True)
    rng = np.random.default_rng(0)
    priority = {id(c): float(rng.uniform(0.9, 0.99)) for c in cells}
    peaks = [next(c for c in cells if c.grid == grid and c.row == peak_row and c.layer == 0)
             for grid in ("hidden", "mlp", "attn")]
    priority.update({id(c): 1.0 for c in peaks})
    total = sum(schedule.token_layers(c, n, T, L, packed, tiny_tracer.head_layers) for c in chunks)
    previews = plan_previews(tiny_tracer, cells, total, priority, n, T, True)
    chosen = [c for chunk in previews for c in chunk.cells]

    def work(cell):
        return schedule.cell_token_layers(schedule.Chunk(cell.start, min(cell.positions), [cell]), cell, n, T, L, packed,
                                          tiny_tracer.head_layers)

    budget = PREVIEW_SHARE * total
    assert all(any(c is p for c in chosen) for p in peaks)
    others = [c for c in chosen if all(c is not p for p in peaks)]
    if peak_row == 0:
        assert sum(map(work, peaks)) > budget and not others
        return
    assert others and sum(map(work, chosen)) <= budget
    left = [c for c in cells if all(c is not x for x in chosen)]  # none left out was more important and fit
    room = budget - sum(map(work, chosen))
    assert not [c for c in left if priority[id(c)] > min(priority[id(x)] for x in others) and work(c) <= room]


def test_progressive_text_output_summarises_the_estimates_error(tiny_model_dir, capsys):
    """`trace --progressive` text ends its summary with the estimate's correlation per kind
    (np.corrcoef of the JSON's estimate and exact grids) and each kind's largest error."""
    import json
    import re

    args = ["trace", "--model", str(tiny_model_dir), "--prompt", PROMPT, "--subject", SUBJECT, "--samples", "2",
            "--window", "3", "--progressive"]
    assert run_cli([*args, "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert run_cli(args) == 0
    text = capsys.readouterr().out
    line = next(x for x in text.splitlines() if x.startswith("first-order estimate vs exact P(target)"))
    printed = dict(re.findall(r"(hidden|mlp|attn) (-?[0-9.]+)", line))
    for kind in ("hidden", "mlp", "attn"):
        est = np.array(out["estimate"][kind]["prob"], dtype=np.float64).ravel()
        ref = np.array(out["grids"][kind]["prob"], dtype=np.float64).ravel()
        both = ~np.isnan(est) & ~np.isnan(ref)
        assert float(printed[kind]) == pytest.approx(np.corrcoef(est[both], ref[both])[0, 1], abs=6e-4)
        worst = int(np.argmax(np.where(both, np.abs(est - ref), -1)))
        assert f"  {kind}: " in text and f"exact {ref[worst]:.3f}" in text


def test_a_trace_that_fails_before_its_estimate_waits_for_it(tiny_model_dir, monkeypatch):
    """An error after the recording (here the caller's own event handler) ends the trace only once the
    estimate's batches, started before the corrupted run, are done: no worker still reads its arrays."""
    import time

    from tracer.core import estimate as est
    from tracer.core import tracing
    from tracer.core.tracing import Tracer
    from tracer.models.load import load_model

    slow, started = est._terms_batch, []

    def slow_batch(*args):
        time.sleep(0.3)
        return slow(*args)

    def spy(*args, **kwargs):
        started.append(est.start_terms(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(est, "_terms_batch", slow_batch)
    monkeypatch.setattr(tracing, "start_terms", spy)
    two = Tracer(load_model(str(tiny_model_dir)), workers=2)

    def on_event(event):
        if isinstance(event, Started):
            raise RuntimeError("the caller's handler failed")

    with pytest.raises(RuntimeError, match="handler failed"):
        run_trace(two, TraceRequest(PROMPT, SUBJECT, samples=4, window=3, estimate="progressive"), on_event=on_event)
    assert started and all(f.done() for f in started[0].futures)
    two.workers.close()


def test_a_preview_that_ends_after_its_cells_own_forward_is_dropped(tiny_model_dir, monkeypatch):
    """The workers yield forwards as they end: a slow preview can end after the forward that runs
    its cells for the grid. Its values are then dropped (not stored, not sent): the grids stay
    today's bit for bit and no cell's exact value is replaced by its preview."""
    import time

    from tracer.core import tracing
    from tracer.core.tracing import Tracer
    from tracer.models.load import load_model

    planned, run_chunk = [], tracing.run_chunk_samples

    def spy(*args, **kwargs):
        planned.append(plan_previews(*args, **kwargs))
        return planned[-1]

    def slow_first_preview(pm, chunk, run):
        if planned and chunk is planned[0][0]:
            time.sleep(1.0)
        return run_chunk(pm, chunk, run)

    plan_previews = tracing.plan_previews
    monkeypatch.setattr(tracing, "plan_previews", spy)
    monkeypatch.setattr(tracing, "run_chunk_samples", slow_first_preview)
    two = Tracer(load_model(str(tiny_model_dir)), workers=2)
    base = dict(samples=3, window=3)
    today = run_trace(two, TraceRequest(PROMPT, SUBJECT, **base))
    events = []
    progressive = run_trace(two, TraceRequest(PROMPT, SUBJECT, estimate="progressive", **base), on_event=events.append)
    assert progressive.grids == today.grids
    final = set()
    late = planned[0][0].cells
    for e in (e for e in events if isinstance(e, CellsDone)):
        cells = {(e.kind, c) for c in e.cells}
        if e.preview:
            assert not cells & final  # never after the cell's own value
        else:
            final |= cells
    assert all((c.grid, (c.row, c.layer)) in final for c in late)
    two.workers.close()
