"""Guards: each fires on a constructed case, stays silent on a sound trace, and the seed tutorial's
meaningless traces now say so."""

import json

from tracer.core.tracing import Tracer, run_trace
from tracer.guards import (
    MIN_TOTAL_EFFECT,
    TraceWarning,
    is_weak_target,
    position_guards,
    substitution_guards,
    trace_guards,
    warning_dict,
)
from tracer.types import TraceRequest

import numpy as np
import pytest

SOUND = dict(target_text=" Paris", p_clean=0.70, p_corrupted=0.02, corrupted_top_id=5, target_id=7,
             clean_top_id=7, clean_top_text=" Paris", target_given=False)


def codes(warnings):
    return [w.code for w in warnings]


def test_a_sound_trace_has_no_guard():
    assert trace_guards(**SOUND) == []


@pytest.mark.parametrize("change, expected", [
    ({"corrupted_top_id": 7}, ["corruption-kept-target"]),
    ({"p_corrupted": 0.71}, ["negative-total-effect"]),
    ({"p_corrupted": 0.70}, ["negative-total-effect"]),
    ({"p_corrupted": 0.70 - MIN_TOTAL_EFFECT / 2}, ["small-total-effect"]),
    ({"p_corrupted": 0.60}, ["small-total-effect"]),  # 0.10 > 0.05 but below 20% of p_clean (0.14)
    ({"target_text": " the"}, ["weak-target"]),
    ({"target_text": " "}, ["weak-target"]),
    ({"target_text": "."}, ["weak-target"]),
    ({"target_given": True, "clean_top_id": 3, "clean_top_text": " Rome"}, ["target-not-predicted"]),
])
def test_each_guard_fires_on_its_case(change, expected):
    warnings = trace_guards(**{**SOUND, **change})
    assert codes(warnings) == expected
    assert all(isinstance(w, str) and "\n" not in w for w in warnings)


def test_recovery_threshold_is_named_only_below_the_absolute_minimum():
    (small,) = trace_guards(**{**SOUND, "p_corrupted": 0.69})
    assert "recovery % is not available" in small
    (relative,) = trace_guards(**{**SOUND, "p_corrupted": 0.60})
    assert "recovery % is not available" not in relative


def test_weak_targets():
    assert is_weak_target(" ") and is_weak_target(" a") and is_weak_target("!") and is_weak_target(" The")
    assert not is_weak_target(" Paris") and not is_weak_target(" 0") and not is_weak_target(" relativity")


def test_substitution_and_position_guards():
    assert codes(substitution_guards([1, 2, 3], [1, 2, 3], (1, 2))) == ["nothing-corrupted"]
    assert codes(substitution_guards([1, 2, 3], [1, 2, 4], (1, 2))) == ["subject-unchanged"]
    assert substitution_guards([1, 2, 3], [1, 5, 3], (1, 2)) == []
    (early,) = position_guards([0, 4], 2, ["The", " E", " T", " is", " in"])
    assert early.code == "position-before-corruption" and "0 'The'" in early and "4" not in early.split("(s)")[1][:3]
    assert position_guards("all", 2, []) == [] and position_guards([2, 3], 2, ["a"] * 4) == []


def test_warnings_export_with_their_codes():
    w = TraceWarning("weak-target", "the target ' ' is whitespace")
    assert warning_dict(w) == {"code": "weak-target", "message": "the target ' ' is whitespace"}
    assert warning_dict("an older plain warning") == {"code": "note", "message": "an older plain warning"}
    assert json.loads(json.dumps(warning_dict(w)))["code"] == "weak-target"


@pytest.fixture(scope="module")
def smollm(embedded_model):
    return Tracer(embedded_model)


@pytest.mark.parametrize("prompt, subject, corrupted, expected", [
    ("The Eiffel Tower is located in the city of", "Eiffel Tower", None, []),
    ("The Eiffel Tower is located in the city of", "Eiffel Tower", "The Louvre Museum is located in the city of",
     ["corruption-kept-target", "small-total-effect"]),
    ("Water freezes at", "freezes", "Water boils at", ["corruption-kept-target", "small-total-effect", "weak-target"]),
])
def test_the_seed_tutorials_cases_on_the_embedded_model(smollm, prompt, subject, corrupted, expected):
    result = run_trace(smollm, TraceRequest(prompt, subject, corrupted_prompt=corrupted, kinds=("hidden",),
                                            positions="subject-last", samples=2))
    assert codes(result.warnings) == expected
    if corrupted is not None:  # the logit difference is against another token, so never identically 0
        assert result.corrupted_top_id != result.target_id
        assert any(abs(v) > 1e-3 for v in result.grids["hidden"]["logit_diff"][0])


def test_recovery_not_available_below_the_minimum_total_effect(tracers, monkeypatch):
    """The tiny model's total effect is small: every recovery cell and every CellsDone recovery is None,
    the probabilities are all there; with the threshold lowered, recovery is computed."""
    from tracer import guards
    from tracer.events import CellsDone

    tracer, _ = tracers("llama")
    req = TraceRequest("The Eiffel Tower is located in the city of", "Eiffel Tower", kinds=("hidden", "mlp"),
                       samples=2)
    events = []
    result = run_trace(tracer, req, on_event=events.append)
    gap = result.clean_prob - result.corrupted_prob
    assert gap < MIN_TOTAL_EFFECT and not result.recovery_available
    assert "small-total-effect" in codes(result.warnings) or "negative-total-effect" in codes(result.warnings)
    done = [e for e in events if isinstance(e, CellsDone)]
    assert done and all(r is None for e in done for r in e.recovery)
    assert all(isinstance(p, float) for e in done for p in e.prob)
    for kind in req.kinds:
        assert all(v is None for row in result.grids[kind]["recovery"] for v in row)
        assert all(isinstance(v, float) for row in result.grids[kind]["prob"] for v in row)
    monkeypatch.setattr(guards, "MIN_TOTAL_EFFECT", -1.0)
    forced = run_trace(tracer, req)
    assert forced.recovery_available
    prob = np.array(forced.grids["mlp"]["prob"])
    np.testing.assert_allclose(forced.grids["mlp"]["recovery"], 100 * (prob - forced.corrupted_prob) / gap,
                               rtol=1e-9)


def test_unaligned_positions_are_named():
    from tracer.guards import unaligned_guards

    (w,) = unaligned_guards("all", [0, None, 1, 2], ["The", " E", "iffel", " is"])
    assert w.code == "no-counterpart" and "1 ' E'" in w and "iffel" not in w
    assert unaligned_guards([0, 2], [0, None, 1, 2], ["a"] * 4) == []
    assert unaligned_guards("all", [0, 1], ["a", "b"]) == []


def test_a_target_of_several_tokens_is_kept_only_when_the_run_would_write_all_of_it():
    """The ids are tuples along the target (teacher-forced top tokens): the first token alone on top
    (' ' of ' 0') is not 'kept the target'."""
    several = {**SOUND, "target_text": " 0", "target_id": (7, 8), "clean_top_id": (7, 8)}
    assert trace_guards(**{**several, "corrupted_top_id": (7, 9)}) == []
    assert codes(trace_guards(**{**several, "corrupted_top_id": (7, 8)})) == ["corruption-kept-target"]
    (w,) = trace_guards(**{**several, "corrupted_top_id": (5, 8), "target_given": True,
                           "clean_top_id": (7, 3), "clean_top_text": " 1"})
    assert w.code == "target-not-predicted" and "' 1'" in w


def test_water_freezes_at_0_on_the_embedded_model(smollm):
    """The tutorial's "0/100" case with the answer as the target: ' 0' is two tokens here (' ', '0');
    the corrupted run still puts ' ' first but does not write ' 0', and restoring every position
    together names no position before the corruption."""
    result = run_trace(smollm, TraceRequest("Water freezes at", "freezes", corrupted_prompt="Water boils at",
                                            target="0", kinds=("mlp",), positions="whole", window=1))
    assert [t["text"] for t in result.target_tokens] == [" ", "0"]
    assert "corruption-kept-target" not in codes(result.warnings)
    assert "position-before-corruption" not in codes(result.warnings)
    assert result.clean_prob == pytest.approx(np.prod([t["clean_prob"] for t in result.target_tokens]), rel=1e-5)
