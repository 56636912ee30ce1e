"""Issue 25, item 4: one meaning per position keyword. "all" is the per-token grid (CLI, app, trace,
robustness); restoring every position at once is "whole", in trace and patch alike. patch's old
"all" still works, as "whole", with a deprecation warning."""

from __future__ import annotations

import warnings

import tracer
from tracer.core.tracing import Tracer
from tracer.inputs.positions import positions_together
from tracer.models.load import load_model

import numpy as np
import pytest

PROMPT = "The Eiffel Tower is located in the city of"
SUBJECT = "Eiffel Tower"


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return Tracer(load_model(str(tiny_model_dir)))


def test_patch_whole_is_trace_whole_and_old_all_warns(model):
    layer = 2
    result = tracer.trace(model, PROMPT, SUBJECT, kinds=("hidden",), positions="whole", samples=3, seed=4)
    assert result.positions == list(range(len(result.tokens)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new spelling and the default do not warn
        whole = tracer.patch(model, PROMPT, subject=SUBJECT, kind="hidden", layers=[layer], samples=3, seed=4)
        explicit = tracer.patch(model, PROMPT, subject=SUBJECT, kind="hidden", layers=[layer], positions="whole",
                                samples=3, seed=4)
    with pytest.warns(FutureWarning, match='positions="all" in tracer.patch is deprecated.*"whole"'):
        old = tracer.patch(model, PROMPT, subject=SUBJECT, kind="hidden", layers=[layer], positions="all",
                           samples=3, seed=4)
    assert whole.restored["positions"] == list(range(len(result.tokens)))
    np.testing.assert_array_equal(whole.probs, explicit.probs)
    np.testing.assert_array_equal(whole.probs, old.probs)
    # the same restoration: the trace's one "whole" row at that layer is patch's P(target)
    assert whole.probs[result.target_id] == pytest.approx(result.grid("hidden")[0, layer], abs=1e-5)


def test_trace_all_is_one_row_per_token(model):
    result = tracer.trace(model, PROMPT, SUBJECT, kinds=("hidden",), positions="all", samples=2)
    assert result.positions == "all" and result.grid("hidden").shape == (len(result.tokens), model.n_layers)


def test_positions_together_never_returns_the_grid_keyword():
    with pytest.warns(FutureWarning):
        assert positions_together(" ALL ") == "whole"
    assert positions_together("subject-last") == "subject-last"
    assert positions_together("0-2") == (0, 1, 2)
    with pytest.raises(tracer.InputError, match="bad positions"):
        positions_together("everything")
