"""Targets of several tokens, traced as P(whole target) by teacher forcing: the engine (packed and
dense forwards, noise and substitution, aligned prompts) against the one-forward-per-cell oracle,
and the reported per-token probabilities against a plain forward of prompt + target."""

import math

from tracer.core.tracing import Tracer, run_trace
from tracer.inputs.prompts import align_tokens, target_ids, tokenize
from tracer.types import TraceRequest

import mlx.core as mx
import numpy as np
import pytest
from oracle import oracle_trace

PROMPT = "The Eiffel Tower is located in the city of"
SUBJECT = "Eiffel Tower"
TARGET = "Paris, the capital"
SAME_LENGTH = PROMPT.replace(SUBJECT, "Louvre Museum")
SHORTER = PROMPT.replace(SUBJECT, "Louvre")


def _plain_probs(lm, ids: list[int], targets: list[int]) -> list[float]:
    """Each target token's probability, one plain forward per token (the prompt and the target's
    earlier tokens in, the next token's softmax at the last position out)."""
    out = []
    for j, t in enumerate(targets):
        row = np.array(lm.model(mx.array([ids + targets[:j]]))[0, -1].astype(mx.float32), dtype=np.float64)
        p = np.exp(row - row.max())
        out.append(float(p[t] / p.sum()))
    return out


@pytest.mark.parametrize("arch, path", [("llama", "packed"), ("llama", "dense"), ("gpt2", "dense")])
@pytest.mark.parametrize("corrupted", [None, SAME_LENGTH, SHORTER], ids=["noise", "substitution", "aligned"])
@pytest.mark.parametrize("positions", ["all", "chosen"])
def test_multi_token_target_equals_oracle(tracers, arch, path, corrupted, positions):
    tracer, oracle_lm = tracers(arch)
    packed = tracer.patchable.packed
    assert (packed is not None) == (arch == "llama")
    tracer.patchable.packed = packed if path == "packed" else None
    try:
        tok = tracer.tokenizer
        ids = tokenize(tok, PROMPT).ids
        targets = target_ids(tok, TARGET, PROMPT, ids)
        assert len(targets) >= 3
        n = len(ids)
        chosen = "all" if positions == "all" else (2, n - 1)
        req = TraceRequest(PROMPT, SUBJECT, corrupted_prompt=corrupted, target=TARGET, kinds=("hidden", "mlp"),
                           samples=3, window=3, seed=2, positions=chosen)
        result = run_trace(tracer, req)
        mapping = align_tokens(ids, tokenize(tok, corrupted).ids)["clean_to_corrupted"] if corrupted else None
        expected, p_clean, p_corrupt, target = oracle_trace(
            oracle_lm, PROMPT, SUBJECT, kinds=req.kinds, samples=3, window=3, seed=2, corrupted_prompt=corrupted,
            noise_std=result.noise_std, positions="all" if positions == "all" else list(chosen),
            target_id=targets[0], targets=targets, mapping=mapping)
        assert result.target_id == targets[0] and result.target_text == tok.decode(targets)
        assert "multi-token-target" not in [w.code for w in result.warnings]
        assert result.clean_prob == pytest.approx(p_clean, rel=1e-4)
        assert result.corrupted_prob == pytest.approx(p_corrupt, rel=1e-4)
        for kind in req.kinds:
            # P(target) is a product of small probabilities: compare relative to the grid's scale
            scale = np.nanmax(expected[kind]["prob"])
            np.testing.assert_allclose(result.grid(kind), expected[kind]["prob"], atol=1e-4 * scale, rtol=1e-4,
                                       err_msg=f"{arch} {path} {kind}")
            np.testing.assert_allclose(result.grid(kind, "logit_diff"), expected[kind]["logit_diff"], atol=1e-4)
            if corrupted is None:
                np.testing.assert_allclose(result.grid(kind, "prob_std"),
                                           expected[kind]["prob_samples"].std(axis=2, ddof=1), atol=1e-4 * scale)
        assert np.nanmax(result.grid("hidden")) > 1.05 * np.nanmin(result.grid("hidden"))  # cells differ
    finally:
        tracer.patchable.packed = packed


def test_target_tokens_each_reported(tracers):
    tracer, oracle_lm = tracers("llama")
    tok = tracer.tokenizer
    ids = tokenize(tok, PROMPT).ids
    targets = target_ids(tok, TARGET, PROMPT, ids)
    result = run_trace(tracer, TraceRequest(PROMPT, SUBJECT, target=TARGET, kinds=("hidden",), samples=2,
                                            positions="subject-last"))
    plain = _plain_probs(oracle_lm, ids, targets)
    assert [t["id"] for t in result.target_tokens] == targets
    assert [t["text"] for t in result.target_tokens] == [tok.decode([t]) for t in targets]
    np.testing.assert_allclose([t["clean_prob"] for t in result.target_tokens], plain, rtol=1e-4)
    assert result.clean_prob == pytest.approx(math.prod(plain), rel=1e-4)
    assert all(0 < t["corrupted_prob"] < 1 for t in result.target_tokens)


def test_one_token_target_is_unchanged(tracers):
    tracer, _ = tracers("llama")
    result = run_trace(tracer, TraceRequest(PROMPT, SUBJECT, kinds=("hidden",), samples=2))
    (only,) = result.target_tokens
    assert only["id"] == result.target_id and only["clean_prob"] == pytest.approx(result.clean_prob, rel=1e-5)


def test_a_bare_space_first_token_follows_the_prompts_tokenization(embedded_model):
    """SmolLM2 writes ' 0' as a bare space and '0': the target is whatever follows the prompt's tokens."""
    tok = embedded_model.tokenizer
    ids = tokenize(tok, "Water freezes at").ids
    got = target_ids(tok, "0", "Water freezes at", ids)
    whole = tok.encode("Water freezes at 0").ids
    assert whole[:len(ids)] == ids and got == whole[len(ids):]
    assert [tok.decode([i]) for i in got] == [" ", "0"]


def test_embedded_model_new_york(embedded_model):
    """P(' New York') is P(' New') x P(' York' | ... ' New'), from one teacher-forced trace."""
    tracer = Tracer(embedded_model)
    prompt = "The Statue of Liberty is located in"
    result = run_trace(tracer, TraceRequest(prompt, "Statue of Liberty", target="New York", kinds=("hidden",),
                                            samples=3, positions="subject-last"))
    ids = tokenize(embedded_model.tokenizer, prompt).ids
    targets = [t["id"] for t in result.target_tokens]
    assert [t["text"] for t in result.target_tokens] == [" New", " York"]
    plain = _plain_probs(embedded_model, ids, targets)
    np.testing.assert_allclose([t["clean_prob"] for t in result.target_tokens], plain, rtol=2e-4)
    assert result.clean_prob == pytest.approx(plain[0] * plain[1], rel=2e-4)
    assert result.target_tokens[1]["clean_prob"] > 0.5  # ' York' follows ' New'
    assert result.corrupted_prob < result.clean_prob
