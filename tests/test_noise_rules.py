"""ROME's noise rules, draws and sigmas, each against an independent plain computation."""

import json
import os

from tracer.core import corruption
from tracer.core.tracing import Tracer, run_trace
from tracer.errors import InputError
from tracer.models.load import load_model
from tracer.settings import NoiseRule, TraceSettings
from tracer.types import TraceRequest

import numpy as np
import pytest
from oracle import oracle_trace

PROMPT = "The Eiffel Tower is located in the city of"
SUBJECT = "Eiffel Tower"
SHARED_KNOWN = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "known_1000.json")


@pytest.fixture(scope="module")
def tracer_and_oracle(tiny_model_dir):
    return Tracer(load_model(str(tiny_model_dir)), max_rows=7), load_model(str(tiny_model_dir))


@pytest.mark.parametrize("text, basis, value, canonical", [
    ("s3", "subject", 3.0, "s3"), ("s", "subject", 1.0, "s1"), ("0.1", "absolute", 0.1, "0.1"),
    (0.025, "absolute", 0.025, "0.025"), ("v3", "embedding", 3.0, "v3"), ("u0.3", "uniform", 0.3, "u0.3"),
    ("t3", "student-t", 3.0, "t3"), (" s2.5 ", "subject", 2.5, "s2.5"), ("1e-2", "absolute", 0.01, "0.01"),
])
def test_rule_grammar(text, basis, value, canonical):
    rule = NoiseRule.parse(text)
    assert (rule.basis, rule.value, rule.text) == (basis, value, canonical)


@pytest.mark.parametrize("bad", ["", "x3", "nan", "inf", "-1", "s-1", "u", "t", "t2", "t1.5", "1e39", "s3x", True])
def test_bad_rules_are_one_clear_error(bad):
    with pytest.raises(InputError, match="noise rule"):
        NoiseRule.parse(bad)


def test_settings_defaults_are_romes_and_validate():
    s = TraceSettings()
    assert (s.noise, s.seed, s.samples, s.window, s.replace, s.sever) == ("s3", 1, 10, 10, False, ())
    assert TraceSettings(kinds="mlp, hidden", sever="attn").grid_names == ("mlp", "hidden", "hidden-severed-attn")
    for bad, match in [({"seed": -1}, "seed"), ({"seed": 2**32}, "seed"), ({"samples": 0}, "samples"),
                       ({"samples": 10**9}, "samples"), ({"window": 0}, "window"), ({"kinds": ()}, "kind"),
                       ({"kinds": ("outptu",)}, "kind"), ({"kinds": ("mlp",), "sever": ("mlp",)}, "hidden"),
                       ({"sever": ("hidden",)}, "severed kind"), ({"samples": 2.5}, "integer")]:
        with pytest.raises(InputError, match=match):
            TraceSettings(**bad)


def test_draws_are_romes_randomstate():
    rule = NoiseRule.parse("s3")
    got = corruption.draws(rule, 1, 10, 3, 8, 0.35)
    np.testing.assert_array_equal(got, 0.35 * np.random.RandomState(1).randn(10, 3, 8))
    uniform = corruption.draws(NoiseRule.parse("u0.3"), 1, 4, 2, 5, 0.0)
    np.testing.assert_array_equal(uniform, 0.3 * np.random.RandomState(1).uniform(-1, 1, (4, 2, 5)))
    t = corruption.draws(NoiseRule.parse("t4"), 1, 4, 2, 5, 0.5)
    factors = np.sqrt(2 / np.random.RandomState(2).chisquare(4, 1000))[:8].reshape(4, 2, 1)
    np.testing.assert_array_equal(t, 0.5 * np.random.RandomState(1).randn(4, 2, 5) * factors)
    with pytest.raises(InputError, match="at most 1000"):
        corruption.draws(NoiseRule.parse("t4"), 1, 600, 2, 5, 0.5)


def test_corrupted_embeddings_round_once_from_float64():
    rng = np.random.RandomState(0)
    clean = rng.randn(5, 4).astype(np.float32)
    noise = 0.3 * np.random.RandomState(1).randn(2, 2, 4)
    got = corruption.corrupted_embeddings(clean, (1, 3), noise)
    assert got.dtype == np.float32 and got.shape == (2, 5, 4)
    for n in range(2):
        np.testing.assert_array_equal(got[n, [0, 3, 4]], clean[[0, 3, 4]])
        np.testing.assert_array_equal(got[n, 1:3], (clean[1:3].astype(np.float64) + noise[n]).astype(np.float32))
    replaced = corruption.corrupted_embeddings(clean, (1, 3), noise, replace=True)
    np.testing.assert_array_equal(replaced[:, 1:3], noise.astype(np.float32))


def test_noise_std_of_each_rule():
    def fail():
        raise AssertionError("sigma computed although the rule does not need it")

    assert corruption.noise_std(NoiseRule.parse("0.1"), fail, fail) == 0.1
    assert corruption.noise_std(NoiseRule.parse("s3"), lambda: 0.2, fail) == pytest.approx(0.6)
    assert corruption.noise_std(NoiseRule.parse("v2"), fail, lambda: 0.25) == 0.5
    assert corruption.noise_std(NoiseRule.parse("u0.3"), fail, fail) == pytest.approx(0.3 / 3**0.5)
    assert corruption.noise_std(NoiseRule.parse("t3"), lambda: 0.2, fail) == pytest.approx(0.6)


def test_subject_sigma_is_romes_collect_embedding_std(tracer_and_oracle):
    tracer, _ = tracer_and_oracle
    if not os.path.exists(SHARED_KNOWN):
        pytest.skip("../shared/data/known_1000.json is not beside this checkout")
    with open(SHARED_KNOWN, encoding="utf-8") as f:
        subjects = [fact["subject"] for fact in json.load(f)]
    assert corruption.known_subjects() == subjects and len(subjects) == 1209
    weight = np.array(tracer.patchable.anatomy.embed_weight(), dtype=np.float64)
    ids = [i for s in subjects for i in tracer.tokenizer.encode(s, add_special_tokens=False).ids]
    rows = weight[ids]
    expected = np.sqrt(((rows - rows.mean()) ** 2).sum() / (rows.size - 1))
    assert tracer.subject_sigma() == pytest.approx(expected, rel=1e-12)
    assert tracer.embedding_sigma() == pytest.approx(weight.std(ddof=1), rel=1e-12)
    assert tracer._sigmas["subject"] == tracer.subject_sigma()  # cached, not recomputed


@pytest.mark.parametrize("noise, replace", [("s3", True), ("0.4", False), ("u0.5", False), ("t5", False)])
def test_rules_traced_equal_oracle(tracer_and_oracle, noise, replace):
    """Every rule and replace mode: the engine's grid equals a plain loop fed the same noise."""
    tracer, oracle_lm = tracer_and_oracle
    req = TraceRequest(PROMPT, SUBJECT, kinds=("hidden", "mlp"), samples=3, window=3, noise=noise, replace=replace)
    result = run_trace(tracer, req)
    assert result.request.noise == NoiseRule.parse(noise).text
    expected, p_clean, p_corrupt, _ = oracle_trace(oracle_lm, PROMPT, SUBJECT, kinds=req.kinds, samples=3, window=3,
                                                   noise_std=1.0, seed=1, replace=replace,
                                                   noise_draws=_draws(tracer, req, result))
    assert result.corrupted_prob == pytest.approx(p_corrupt, abs=1e-6)
    for kind in req.kinds:
        np.testing.assert_allclose(result.grids[kind]["prob"], expected[kind]["prob"], atol=1e-5)


def _draws(tracer, req, result):
    """The rule's noise, built here from RandomState directly (not through tracer.core.corruption)."""
    b, e = result.subject_range
    D = tracer.patchable.anatomy.hidden_size
    rule = NoiseRule.parse(req.noise)
    if rule.basis == "uniform":
        return rule.value * np.random.RandomState(1).uniform(-1, 1, (req.samples, e - b, D))
    z = np.random.RandomState(1).randn(req.samples, e - b, D) * result.noise_std
    if rule.basis == "student-t":
        c = np.sqrt((rule.value - 2) / np.random.RandomState(2).chisquare(rule.value, 1000))
        z = z * c[: req.samples * (e - b)].reshape(req.samples, e - b, 1)
    return z
