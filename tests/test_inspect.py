"""tracer.inspect / inspect_cell: one patched cell's distribution, against the trace's own grid cells."""

import tracer
from tracer.core.inspection import inspect_cell
from tracer.inputs.prompts import tokenize

import numpy as np
import pytest

PROMPT = "The Eiffel Tower is located in the city of"
SUBJECT = "Eiffel Tower"


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return tracer.load(str(tiny_model_dir))


def _same_length_prompt(model):
    n = len(tokenize(model.tokenizer, PROMPT))
    return next(c for c in (PROMPT.replace(SUBJECT, o) for o in ("Space Needle", "Louvre Museum", "Big Ben",
                                                                 "Colosseum", "quick brown fox"))
                if len(tokenize(model.tokenizer, c)) == n)


@pytest.fixture(scope="module")
def noise_result(model):
    return tracer.trace(model, PROMPT, SUBJECT, samples=3, window=3, seed=5, noise="s2")


@pytest.fixture(scope="module")
def substitution_result(model):
    return tracer.trace(model, PROMPT, SUBJECT, corrupted_prompt=_same_length_prompt(model), window=3)


CELLS = [("hidden", 0, 0), ("hidden", 2, 3), ("mlp", 2, 1), ("mlp", 3, 5), ("attn", 3, 2), ("attn", 8, 4),
         ("hidden", -1, 5)]


@pytest.mark.parametrize("which", ["noise", "substitution"])
def test_p_target_equals_the_grid_cell(model, noise_result, substitution_result, which):
    result = noise_result if which == "noise" else substitution_result
    T = len(result.tokens)
    for kind, token, layer in CELLS:
        run = tracer.inspect(model, result, kind, layer, token=token, k=4)
        expected = result.grid(kind)[token % T, layer]
        assert run.probs[result.target_id] == pytest.approx(expected, abs=1e-5), (kind, token, layer)
        assert run.probs.shape == (model.tokenizer.get_vocab_size(),)
        assert run.probs.sum() == pytest.approx(1.0, abs=1e-6)
        top = np.argsort(-run.probs)[:4]
        assert [p for _, p in run.top] == pytest.approx(run.probs[top].tolist(), abs=1e-12)
        assert run.restored["positions"] == [token % T]
        assert run.restored["target"] == {"ids": [result.target_id], "text": result.target_text,
                                          "prob": pytest.approx(expected, abs=1e-5)}
    assert run.restored["samples"] == (3 if which == "noise" else 1) and run.restored["severed"] is None
    assert run.restored["corruption"] == which


def test_window_and_default_token(model, noise_result):
    b, e = noise_result.subject_range
    run = tracer.inspect(model, noise_result.request, "mlp", 0)
    assert run.restored["positions"] == [e - 1]  # positions "all": the subject's last token
    assert run.restored["layers"] == [0, 1]  # window 3 around layer 0, clipped
    assert tracer.inspect(model, noise_result, "mlp", 3).restored["layers"] == [2, 3, 4]
    assert tracer.inspect(model, noise_result, "hidden", 3).restored["layers"] == [3]
    assert run.probs[noise_result.target_id] == pytest.approx(noise_result.grid("mlp")[e - 1, 0], abs=1e-5)


def test_chosen_positions_are_restored_together(model):
    result = tracer.trace(model, PROMPT, SUBJECT, kinds=("mlp", "attn"), positions=(2, 4), samples=2, window=2)
    for kind in ("mlp", "attn"):
        for layer in (1, 4):
            run = inspect_cell(model, result.request, kind, layer)
            assert run.restored["positions"] == [2, 4]
            assert run.probs[result.target_id] == pytest.approx(result.grid(kind)[0, layer], abs=1e-5)


def test_bad_input(model, noise_result):
    with pytest.raises(tracer.InputError, match="unknown kind"):
        tracer.inspect(model, noise_result, "mlpp", 1)
    with pytest.raises(tracer.InputError, match="layer must be in 0..5"):
        tracer.inspect(model, noise_result, "mlp", 6)
    with pytest.raises(tracer.InputError, match="token must be an index"):
        tracer.inspect(model, noise_result, "mlp", 1, token=99)
    with pytest.raises(tracer.InputError, match="k must be"):
        tracer.inspect(model, noise_result, "mlp", 1, k=0)
    with pytest.raises(tracer.InputError, match="TraceResult or a TraceRequest"):
        tracer.inspect(model, "a prompt", "mlp", 1)


def test_engine_inspect_runs_on_the_engine_thread(tiny_model_dir, noise_result):
    from tracer.engine import Engine

    engine = Engine(str(tiny_model_dir))
    try:
        run = engine.inspect(noise_result, "attn", 2, token=3, k=2).result(timeout=300)
        assert run.probs[noise_result.target_id] == pytest.approx(noise_result.grid("attn")[3, 2], abs=1e-5)
        assert len(run.top) == 2
        with pytest.raises(tracer.InputError, match="layer must be"):
            engine.inspect(noise_result.request, "attn", -1).result(timeout=300)
    finally:
        engine.close()


def test_a_given_target(model):
    target = " Paris"
    result = tracer.trace(model, PROMPT, SUBJECT, target=target, kinds=("attn",), samples=2, window=2)
    for token, layer in ((2, 1), (8, 3)):
        run = tracer.inspect(model, result, "attn", layer, token=token)
        assert run.restored["target"]["prob"] == pytest.approx(result.grid("attn")[token, layer], abs=1e-5)
        assert run.restored["target"]["text"] == result.target_text


def test_aligned_prompts_of_other_lengths(model):
    for other in ("The Space Needle is located in the city of", "The Tower is located in the city of"):
        result = tracer.trace(model, PROMPT, SUBJECT, corrupted_prompt=other, window=3, kinds=("mlp", "hidden"))
        mapping = result.alignment["clean_to_corrupted"]
        for kind, token, layer in (("mlp", 2, 1), ("hidden", 4, 3), ("mlp", 8, 5), ("hidden", 2, 0)):
            run = tracer.inspect(model, result, kind, layer, token=token)
            assert run.restored["target"]["prob"] == pytest.approx(result.grid(kind)[token, layer], abs=1e-5)
        missing = [t for t, q in enumerate(mapping) if q is None]
        if missing:
            with pytest.raises(tracer.InputError, match="no counterpart"):
                tracer.inspect(model, result, "mlp", 1, token=missing[0])


def test_a_target_of_several_tokens(model):
    for corrupted in (None, _same_length_prompt(model)):
        result = tracer.trace(model, PROMPT, SUBJECT, target="Paris France", corrupted_prompt=corrupted,
                              kinds=("mlp",), samples=3, window=3)
        assert len(result.target_tokens) > 1
        for token, layer in ((2, 1), (8, 4), (0, 0)):
            run = tracer.inspect(model, result, "mlp", layer, token=token)
            assert run.restored["target"]["prob"] == pytest.approx(result.grid("mlp")[token, layer], abs=1e-5)
            assert run.restored["target"]["ids"] == [t["id"] for t in result.target_tokens]


def test_severed_grids(model):
    for corrupted in (None, _same_length_prompt(model)):
        result = tracer.trace(model, PROMPT, SUBJECT, corrupted_prompt=corrupted, kinds=("hidden",),
                              sever=("mlp", "attn"), samples=2, positions=(2,))
        for name in ("hidden-severed-mlp", "hidden-severed-attn"):
            for layer in (0, 2, 5):
                run = tracer.inspect(model, result, name, layer)
                assert run.restored["severed"] == name.rsplit("-", 1)[1] and run.restored["kind"] == "hidden"
                assert run.restored["target"]["prob"] == pytest.approx(result.grid(name)[0, layer], abs=1e-5)
        # severing changes the cell: the plain hidden cell differs somewhere
        plain = [tracer.inspect(model, result, "hidden", layer).restored["target"]["prob"] for layer in range(5)]
        severed = [tracer.inspect(model, result, "hidden-severed-mlp", layer).restored["target"]["prob"]
                   for layer in range(5)]
        assert max(abs(a - b) for a, b in zip(plain, severed)) > 1e-6
