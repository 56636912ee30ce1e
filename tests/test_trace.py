"""The engine's grids against the one-forward-per-cell oracle, exact identities, and the real model."""

from tracer import guards
from tracer.core.schedule import make_cells, make_chunks, token_layers
from tracer.core.tracing import Tracer, run_trace
from tracer.errors import InputError
from tracer.inputs.prompts import tokenize
from tracer.settings import window_layers
from tracer.types import TraceRequest

import numpy as np
import pytest
from oracle import oracle_trace

PROMPT = "The Eiffel Tower is located in the city of"
SUBJECT = "Eiffel Tower"
ORACLE_ARCHS = ["llama", "qwen2", "gemma2", "gpt2", "phi3", "olmo2"]


def _substitute(tok, prompt=PROMPT):
    """A corrupted prompt with another subject that tokenizes to the same length."""
    n = len(tokenize(tok, prompt))
    for other in ("Louvre Museum", "Space Needle", "Colosseum", "Big Ben", "Statue of Liberty", "quick brown fox"):
        candidate = prompt.replace(SUBJECT, other)
        if len(tokenize(tok, candidate)) == n:
            return candidate
    pytest.skip("no same-length substitution for this tokenizer")


def check_recovery(result, kind, oracle_prob, p_clean, p_corrupt):
    """Recovery against the oracle's probabilities where it is available; every cell None where the
    total effect is below guards.MIN_TOTAL_EFFECT."""
    gap = p_clean - p_corrupt
    assert result.recovery_available == (gap >= guards.MIN_TOTAL_EFFECT)
    cells = result.grids[kind]["recovery"]
    if not result.recovery_available:
        assert all(v is None for row in cells for v in row)
        assert np.isnan(result.grid(kind, "recovery")).all()
        return
    recovery = 100 * (np.asarray(oracle_prob) - p_corrupt) / gap
    # recovery divides by the clean-corrupted gap: prob's 1e-5 becomes 100 * 2e-5 / gap
    np.testing.assert_allclose(np.array(cells, dtype=float), recovery, atol=100 * 2e-5 / abs(gap))


@pytest.fixture
def recovery_always(monkeypatch):
    """Recovery computed whatever the total effect (the tiny random models' effects are small)."""
    monkeypatch.setattr(guards, "MIN_TOTAL_EFFECT", -np.inf)


@pytest.mark.parametrize("arch", ORACLE_ARCHS)
@pytest.mark.parametrize("mode", ["noise", "substitution"])
@pytest.mark.parametrize("threshold", ["as-is", "recovery-always"])
def test_engine_equals_oracle(tracers, arch, mode, threshold, monkeypatch):
    if threshold == "recovery-always":
        monkeypatch.setattr(guards, "MIN_TOTAL_EFFECT", -np.inf)
    tracer, oracle_lm = tracers(arch)
    corrupted = _substitute(tracer.tokenizer) if mode == "substitution" else None
    kinds = ("hidden", "mlp", "attn")
    req = TraceRequest(PROMPT, SUBJECT, corrupted_prompt=corrupted, kinds=kinds, samples=3, noise="s3", window=3,
                       seed=7)
    result = run_trace(tracer, req)
    expected, p_clean, p_corrupt, target = oracle_trace(
        oracle_lm, PROMPT, SUBJECT, kinds=kinds, samples=3, window=3, seed=7, corrupted_prompt=corrupted,
        noise_std=result.noise_std,
    )
    assert result.target_id == target
    assert result.clean_prob == pytest.approx(p_clean, abs=1e-5)
    assert result.corrupted_prob == pytest.approx(p_corrupt, abs=1e-5)
    for kind in kinds:
        got = np.array(result.grids[kind]["prob"])
        np.testing.assert_allclose(got, expected[kind]["prob"], atol=1e-5, err_msg=f"{arch} {mode} {kind}")
        np.testing.assert_allclose(np.array(result.grids[kind]["logit_diff"]), expected[kind]["logit_diff"], atol=1e-4)
        check_recovery(result, kind, expected[kind]["prob"], p_clean, p_corrupt)
    # the grid is not trivially flat: some cell moves the probability
    assert np.ptp(np.array(result.grids["hidden"]["prob"])) > 1e-4


@pytest.mark.parametrize("mode", ["noise", "substitution"])
def test_chosen_positions_equal_oracle(tracers, mode):
    tracer, oracle_lm = tracers("llama")
    corrupted = _substitute(tracer.tokenizer) if mode == "substitution" else None
    n = len(tokenize(tracer.tokenizer, PROMPT))
    positions = (2, n - 1)
    req = TraceRequest(PROMPT, SUBJECT, corrupted_prompt=corrupted, kinds=("hidden", "mlp", "attn"),
                       samples=4, window=4, positions=positions, seed=3)
    result = run_trace(tracer, req)
    expected, *_ = oracle_trace(oracle_lm, PROMPT, SUBJECT, kinds=req.kinds, samples=4, window=4, seed=3,
                                corrupted_prompt=corrupted, positions=list(positions), noise_std=result.noise_std)
    assert result.positions == list(positions)
    for kind in req.kinds:
        assert len(result.grids[kind]["prob"]) == 1
        np.testing.assert_allclose(np.array(result.grids[kind]["prob"]), expected[kind]["prob"], atol=1e-5)


def test_restoring_every_position_gives_clean(tracers, recovery_always):
    tracer, _ = tracers("llama")
    corrupted = _substitute(tracer.tokenizer)
    n = len(tokenize(tracer.tokenizer, PROMPT))
    req = TraceRequest(PROMPT, SUBJECT, corrupted_prompt=corrupted, kinds=("hidden",), positions=tuple(range(n)))
    result = run_trace(tracer, req)
    np.testing.assert_allclose(result.grids["hidden"]["prob"][0], [result.clean_prob] * tracer.n_layers, atol=1e-5)
    np.testing.assert_allclose(result.grids["hidden"]["recovery"][0], [100.0] * tracer.n_layers, atol=1e-2)


def test_positions_before_corruption_change_nothing(tracers, recovery_always):
    tracer, _ = tracers("llama")
    req = TraceRequest(PROMPT, SUBJECT, kinds=("hidden", "mlp", "attn"), samples=3, window=3)
    result = run_trace(tracer, req)
    assert result.subject_range[0] >= 1
    for kind in req.kinds:
        row = np.array(result.grids[kind]["recovery"][0])  # "The", before the subject
        np.testing.assert_allclose(row, 0.0, atol=1e-9)
        np.testing.assert_allclose(result.grids[kind]["prob"][0], result.corrupted_prob, atol=1e-9)


def test_window_layers_follow_the_paper():
    assert window_layers("mlp", 0, 10, 30) == (0, 5)
    assert window_layers("mlp", 12, 10, 30) == (7, 17)
    assert window_layers("attn", 29, 10, 30) == (24, 30)
    assert window_layers("mlp", 5, 3, 30) == (4, 7)
    assert window_layers("hidden", 5, 10, 30) == (5, 6)


def test_noise_is_seeded_and_reported(tracers):
    tracer, _ = tracers("llama")
    a = run_trace(tracer, TraceRequest(PROMPT, SUBJECT, kinds=("hidden",), samples=2, seed=1))
    b = run_trace(tracer, TraceRequest(PROMPT, SUBJECT, kinds=("hidden",), samples=2, seed=1))
    c = run_trace(tracer, TraceRequest(PROMPT, SUBJECT, kinds=("hidden",), samples=2, seed=2))
    assert a.grids == b.grids
    assert a.corrupted_prob != c.corrupted_prob
    assert a.noise_std == pytest.approx(3.0 * tracer.subject_sigma())


def test_target_option_traces_every_token_without_warning(tracers):
    tracer, _ = tracers("llama")
    result = run_trace(tracer, TraceRequest(PROMPT, SUBJECT, kinds=("hidden",), samples=1, target="Paris is a city"))
    ids = tracer.tokenizer.encode(" Paris is a city", add_special_tokens=False).ids
    assert len(ids) > 1 and result.target_id == ids[0]
    assert [t["id"] for t in result.target_tokens] == ids
    assert result.clean_prob == pytest.approx(np.prod([t["clean_prob"] for t in result.target_tokens]), rel=1e-5)
    assert not any("tokens" in w for w in result.warnings)


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(prompt=""), "prompt is empty"),
        (dict(subject="Louvre"), "not found"),
        (dict(subject=""), "subject is empty"),
        (dict(corrupted_prompt="A much longer prompt than the original one, really much longer"), "share none"),
        (dict(corrupted_prompt=PROMPT + " the"), "--corrupted-subject"),
        (dict(window=0), "window"),
        (dict(samples=0), "samples"),
        (dict(kinds=("resdi",)), "unknown kind"),
        (dict(positions=(99,)), "out of range"),
    ],
)
def test_bad_requests_raise_one_clear_error(tracers, changes, message):
    tracer, _ = tracers("llama")
    fields = dict(prompt=PROMPT, subject=SUBJECT, kinds=("hidden",), samples=1)
    fields.update(changes)
    with pytest.raises(InputError, match=message):
        run_trace(tracer, TraceRequest(**fields))


def test_embedded_model_eiffel(embedded_model):
    tracer = Tracer(embedded_model)
    result = run_trace(tracer, TraceRequest(PROMPT, SUBJECT, kinds=("hidden",), samples=5))
    assert result.target_text == " Paris"
    assert result.clean_prob == pytest.approx(0.70, abs=0.02)
    assert result.corrupted_prob < 0.1
    grid = np.array(result.grids["hidden"]["recovery"])
    b, e = result.subject_range
    L = grid.shape[1]
    early = grid[:, : L // 2]
    late = grid[:, 2 * L // 3 :]
    row, _ = np.unravel_index(np.argmax(early), early.shape)
    assert b <= row < e, f"early/middle peak on token {row}, subject is {b}..{e - 1}"
    row, _ = np.unravel_index(np.argmax(late), late.shape)
    assert row == grid.shape[0] - 1


def test_chunks_cover_every_cell_once_cheapest_first_then_costliest():
    cells = make_cells(("hidden", "mlp", "attn"), "all", 10, 30, 10)
    for packed in (True, False):
        chunks = make_chunks(cells, 10, 10, max_rows=10**6, target_tokens=768, use_prefix=True, packed=packed)
        assert sorted(id(c) for ch in chunks for c in ch.cells) == sorted(id(c) for c in cells)
        assert all(c.start == ch.start and min(c.positions) >= ch.tmin for ch in chunks for c in ch.cells)
        cost = [token_layers(ch, 10, 10, 30, packed) for ch in chunks]
        assert cost[0] == min(cost)  # the first cells arrive at once
        rest = [(ch.start, ch.tmin) for ch in chunks[1:]]
        assert rest == sorted(rest) and chunks[1].start == 0  # then the most layers first
