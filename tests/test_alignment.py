"""Substitution by a corrupted prompt of another token length: the alignment, its errors, and the
engine's grids against a one-forward-per-cell oracle that restores each clean position's state at
its aligned corrupted position."""

from tracer.core.prepare import in_frame
from tracer.core.tracing import Tracer, run_trace
from tracer.errors import InputError
from tracer.inputs.prompts import Tokens, align_prompts, align_tokens, tokenize
from tracer.types import TraceRequest

import numpy as np
import pytest
from oracle import oracle_trace

PROMPT = "The Eiffel Tower is located in the city of"
SUBJECT = "Eiffel Tower"
LONGER = PROMPT.replace(SUBJECT, "Colosseum")  # 12 tokens for the tiny tokenizer's 9
SHORTER = PROMPT.replace(SUBJECT, "Louvre")  # 8


def _tokens(ids):
    return Tokens(list(ids), [f"t{i}" for i in ids], [(0, 0)] * len(ids), [False] * len(ids))


@pytest.mark.parametrize("clean, corrupted, mapping, prefix, suffix", [
    ([1, 2, 3, 4], [1, 9, 9, 9, 3, 4], [0, 3, 4, 5], 1, 2),  # longer block: last tokens together
    ([1, 2, 2, 3, 4], [1, 9, 3, 4], [0, None, 1, 2, 3], 1, 2),  # shorter block: the first clean one has none
    ([1, 2, 3], [1, 5, 3], [0, 1, 2], 1, 1),  # same length: position by position
    ([1, 2, 3], [1, 2, 3], [0, 1, 2], 3, 0),  # identical: all prefix
    ([7, 8, 3], [5, 6, 9, 3], [1, 2, 3], 0, 1),  # "Shakespeare wrote" / "Dickens wrote"
    ([1, 2, 3], [1, 2, 3, 4], [0, 1, 2], 3, 0),  # the corrupted prompt is longer at the end
    ([1, 1, 1], [1, 1], [0, 1, None], 2, 0),  # repeated tokens: the suffix never overlaps the prefix
])
def test_align_tokens_by_hand(clean, corrupted, mapping, prefix, suffix):
    assert align_tokens(clean, corrupted) == {"clean_to_corrupted": mapping, "prefix": prefix, "suffix": suffix}


def test_alignments_that_make_no_sense_say_what_to_do():
    # the prompts differ after the subject only: give the corrupted subject
    with pytest.raises(InputError, match="--corrupted-subject"):
        align_prompts(_tokens([1, 2, 3, 4]), _tokens([1, 2, 3, 9, 9]), (1, 2))
    # nothing shared at either end
    with pytest.raises(InputError, match="share none"):
        align_prompts(_tokens([1, 2, 3]), _tokens([4, 5, 6, 7]), (1, 2))
    # with the corrupted subject, the rest must have as many tokens before and after
    with pytest.raises(InputError, match="as many tokens"):
        align_prompts(_tokens([1, 2, 3, 4]), _tokens([1, 9, 9, 3, 4, 4]), (1, 2), (1, 3))


def test_corrupted_subject_aligns_the_subject_with_its_span():
    # the prompts differ in the subject (2 -> 9 9) and, with as many tokens, after it (4 -> 8)
    aligned = align_prompts(_tokens([1, 2, 3, 4]), _tokens([1, 9, 9, 3, 8]), (1, 2), (1, 3))
    assert aligned["clean_to_corrupted"] == [0, 2, 3, 4] and aligned["prefix"] == 1
    # a longer clean subject: its first token has no counterpart
    aligned = align_prompts(_tokens([1, 2, 2, 3]), _tokens([1, 9, 3]), (1, 3), (1, 2))
    assert aligned["clean_to_corrupted"] == [0, None, 1, 2]


def test_in_frame_moves_clean_states_to_aligned_positions():
    import mlx.core as mx

    states = mx.arange(12, dtype=mx.float32).reshape(4, 3)
    assert in_frame(states, [0, 1, 2, 3], 4) is states  # same length: the very array
    moved = np.array(in_frame(states, [0, None, 1, 3], 5))
    np.testing.assert_array_equal(moved[[0, 1, 3]], np.array(states)[[0, 2, 3]])


@pytest.mark.parametrize("arch", ["llama", "gpt2"])  # the packed forward and the generic one
@pytest.mark.parametrize("corrupted", [LONGER, SHORTER], ids=["longer", "shorter"])
@pytest.mark.parametrize("positions", ["all", "chosen"])
def test_aligned_substitution_equals_oracle(tracers, arch, corrupted, positions):
    tracer, oracle_lm = tracers(arch)
    tok = tracer.tokenizer
    n, m = len(tokenize(tok, PROMPT)), len(tokenize(tok, corrupted))
    assert n != m
    chosen = "all" if positions == "all" else (1, 2, n - 1)
    req = TraceRequest(PROMPT, SUBJECT, corrupted_prompt=corrupted, kinds=("hidden", "mlp", "attn"), window=3,
                       positions=chosen, sever=("mlp",))
    result = run_trace(tracer, req)
    mapping = align_tokens(tokenize(tok, PROMPT).ids, tokenize(tok, corrupted).ids)["clean_to_corrupted"]
    assert result.alignment == {"corrupted_tokens": tokenize(tok, corrupted).texts, "clean_to_corrupted": mapping,
                                "prefix": 1, "suffix": 6}
    expected, p_clean, p_corrupt, target = oracle_trace(
        oracle_lm, PROMPT, SUBJECT, kinds=req.kinds, window=3, corrupted_prompt=corrupted, mapping=mapping,
        positions="all" if positions == "all" else list(chosen), sever=("mlp",))
    assert result.target_id == target
    assert result.clean_prob == pytest.approx(p_clean, abs=1e-6)
    assert result.corrupted_prob == pytest.approx(p_corrupt, abs=1e-6)
    for kind in (*req.kinds, "hidden-severed-mlp"):
        got = result.grid(kind, "prob")
        np.testing.assert_allclose(got, expected[kind]["prob"], atol=1e-5, err_msg=f"{arch} {kind}")
        np.testing.assert_allclose(result.grid(kind, "logit_diff"), expected[kind]["logit_diff"], atol=1e-4)
        # rows without a counterpart have no value (the oracle's NaN), in every metric
        assert np.array_equal(np.isnan(got), np.isnan(expected[kind]["prob"]))
    if corrupted == SHORTER and positions == "all":
        assert mapping[1] is None and all(v is None for v in result.grids["hidden"]["prob"][1])
        assert "no-counterpart" in [w.code for w in result.warnings]
    # restoring the last position's block output at the last layer gives the clean run
    last = result.grids["hidden"]["prob"][-1][-1]
    assert last == pytest.approx(result.clean_prob, abs=1e-5)
    assert np.nanmax(np.abs(result.grid("mlp") - result.corrupted_prob)) > 1e-4  # cells move: the test could fail


def test_same_length_substitution_is_position_by_position(tracers):
    tracer, _ = tracers("llama")
    corrupted = PROMPT.replace(SUBJECT, "Louvre Museum")
    result = run_trace(tracer, TraceRequest(PROMPT, SUBJECT, corrupted_prompt=corrupted, kinds=("hidden",),
                                            positions="subject-last"))
    assert result.alignment["clean_to_corrupted"] == list(range(9))
    assert result.alignment["prefix"] == 1 and result.alignment["suffix"] == 6


def test_engine_refuses_what_cannot_be_aligned(tracers):
    tracer, _ = tracers("llama")
    with pytest.raises(InputError, match="--corrupted-subject"):
        run_trace(tracer, TraceRequest(PROMPT, SUBJECT, corrupted_prompt=PROMPT + " the", kinds=("hidden",)))
    with pytest.raises(InputError, match="corrupted subject 'Rome' not found in the corrupted prompt"):
        run_trace(tracer, TraceRequest(PROMPT, SUBJECT, corrupted_prompt=SHORTER, corrupted_subject="Rome",
                                       kinds=("hidden",)))


def test_corrupted_subject_names_the_span(tracers):
    """The prompts differ in the subject and elsewhere: --corrupted-subject aligns them."""
    tracer, oracle_lm = tracers("llama")
    clean = "The Eiffel Tower is located in the city of"
    corrupted = "The Louvre is located in a city of"  # 8 tokens; ' the' -> ' a' too
    req = TraceRequest(clean, SUBJECT, corrupted_prompt=corrupted, corrupted_subject="Louvre", kinds=("hidden",))
    result = run_trace(tracer, req)
    mapping = result.alignment["clean_to_corrupted"]
    assert mapping == [0, None, 1, 2, 3, 4, 5, 6, 7]
    expected, *_ = oracle_trace(oracle_lm, clean, SUBJECT, kinds=("hidden",), corrupted_prompt=corrupted,
                                mapping=mapping)
    np.testing.assert_allclose(result.grid("hidden"), expected["hidden"]["prob"], atol=1e-5)


@pytest.mark.slow
def test_embedded_model_shakespeare_and_dickens():
    """The seed tutorial's pair of different token lengths now traces, aligned at the last tokens,
    and shows ROME's two sites: the subject's last token early, the last token late."""
    from tracer.models.load import load_model

    # its own copy: a Tracer wraps the model's modules, and this file runs before tests that read
    # the session's embedded model's parameter names (test_dequantize)
    tracer = Tracer(load_model())
    result = run_trace(tracer, TraceRequest("Shakespeare wrote", "Shakespeare", corrupted_prompt="Dickens wrote",
                                            kinds=("hidden",), target="Romeo"))
    assert result.tokens == ["Sh", "akespeare", " wrote"]
    assert result.alignment == {"corrupted_tokens": ["D", "ick", "ens", " wrote"], "clean_to_corrupted": [1, 2, 3],
                                "prefix": 0, "suffix": 1}
    grid = result.grid("hidden")
    assert not np.isnan(grid).any()
    assert result.clean_prob > 100 * result.corrupted_prob  # ~0.0026 against ~5e-6
    # the last position's last block output restored: exactly the clean run
    assert grid[-1, -1] == pytest.approx(result.clean_prob, rel=1e-4)
    L = grid.shape[1]
    # the subject's last token ('akespeare', at 'ens') restored early carries the answer; the last token late
    assert np.argmax(grid[:, :3].max(axis=1)) == 1 and grid[1, :3].max() > 100 * result.corrupted_prob
    assert np.argmax(grid[:, 2 * L // 3:].max(axis=1)) == 2
