"""Severed paths (the paper's Figure 3): the engine's batched series against a one-forward-per-cell loop."""

from tracer.core.tracing import run_trace
from tracer.inputs.prompts import tokenize
from tracer.types import TraceRequest

import numpy as np
import pytest
from oracle import oracle_trace
from test_trace import check_recovery

PROMPT = "The Eiffel Tower is located in the city of"
SUBJECT = "Eiffel Tower"
SEVERED = ("hidden-severed-mlp", "hidden-severed-attn")



@pytest.mark.parametrize("arch", ["llama", "gpt2"])  # the packed forward, and the generic one
@pytest.mark.parametrize("positions", ["all", "subject-last", "chosen"])
def test_severed_series_equal_oracle(tracers, arch, positions):
    tracer, oracle_lm = tracers(arch)
    n = len(tokenize(tracer.tokenizer, PROMPT))
    chosen = {"all": "all", "subject-last": "subject-last", "chosen": (2, n - 1)}[positions]
    req = TraceRequest(PROMPT, SUBJECT, kinds=("hidden",), sever=("mlp", "attn"), samples=3, positions=chosen)
    result = run_trace(tracer, req)
    assert set(result.grids) == {"hidden", *SEVERED}
    oracle_positions = {"all": "all", "subject-last": [result.subject_range[1] - 1], "chosen": [2, n - 1]}[positions]
    expected, p_clean, p_corrupt, _ = oracle_trace(oracle_lm, PROMPT, SUBJECT, kinds=("hidden",), samples=3,
                                                   noise_std=result.noise_std, positions=oracle_positions,
                                                   sever=("mlp", "attn"))
    for name in ("hidden", *SEVERED):
        np.testing.assert_allclose(result.grids[name]["prob"], expected[name]["prob"], atol=1e-5, err_msg=name)
        np.testing.assert_allclose(result.grids[name]["logit_diff"], expected[name]["logit_diff"], atol=1e-4)
        check_recovery(result, name, expected[name]["prob"], p_clean, p_corrupt)
    # severing changes something (the test could fail), and never at the last layer: nothing is above it
    change = np.abs(np.array(result.grids["hidden"]["prob"]) - result.grids["hidden-severed-mlp"]["prob"])
    assert change.max() > 1e-5
    for name in SEVERED:
        np.testing.assert_allclose(np.array(result.grids[name]["prob"])[:, -1],
                                   np.array(result.grids["hidden"]["prob"])[:, -1], atol=1e-6)


def test_severed_in_substitution_mode_equals_oracle(tracers):
    tracer, oracle_lm = tracers("llama")
    n = len(tokenize(tracer.tokenizer, PROMPT))
    corrupted = next(PROMPT.replace(SUBJECT, o) for o in ("Louvre Museum", "Space Needle", "Big Ben", "Colosseum")
                     if len(tokenize(tracer.tokenizer, PROMPT.replace(SUBJECT, o))) == n)
    req = TraceRequest(PROMPT, SUBJECT, corrupted_prompt=corrupted, kinds=("hidden",), sever=("mlp",))
    result = run_trace(tracer, req)
    expected, *_ = oracle_trace(oracle_lm, PROMPT, SUBJECT, kinds=("hidden",), corrupted_prompt=corrupted,
                                sever=("mlp",))
    np.testing.assert_allclose(result.grids["hidden-severed-mlp"]["prob"], expected["hidden-severed-mlp"]["prob"],
                               atol=1e-5)


def test_sweep_with_sever_reports_figure_3(tmp_path, tracers, capsys):
    """sweep --sever stores the severed grids; the report's Figure 3 series are the mean over kept
    facts of each grid's last-subject-token row minus the mean corrupted probability."""
    import json

    from tracer.cli import run_cli
    from tracer.inputs.facts import Fact
    from tracer.sweeps.aggregate import load_report
    from tracer.sweeps.results import SweepConfig
    from tracer.sweeps.run import TracerBackend, run_sweep

    tracer, _ = tracers("llama")
    prompts = [("The capital of Germany is", "Germany"), ("The Eiffel Tower is located in", "Eiffel Tower"),
               ("Paris is the capital of", "Paris")]
    facts = [Fact(i, subject, tracer.predict([p])[0][0].text.strip(), p) for i, (p, subject) in enumerate(prompts)]
    out = str(tmp_path / "r.jsonl")
    config = SweepConfig(kinds=("hidden",), sever=("mlp", "attn"), samples=2)
    assert run_sweep(TracerBackend(tracer), facts, out, config).kept == 3
    lines = [json.loads(line) for line in open(out)]
    assert lines[0]["config"]["sever"] == ["mlp", "attn"]
    assert set(lines[0]["grids"]) == {"hidden", *SEVERED}
    report = load_report(out)
    low = np.mean([r["corrupted_prob"] for r in lines])
    for name in ("hidden", *SEVERED):
        rows = [r["grids"][name]["prob"][r["subject_range"][1] - 1] for r in lines]
        np.testing.assert_allclose(report.severed_paths[name], np.mean(rows, axis=0) - low, atol=1e-12)
    assert run_cli(["sweep-report", out, "--no-plots"]) == 0
    text = capsys.readouterr().out
    assert "Severed paths (the paper's Figure 3)" in text and "mlp severed" in text and "attn severed" in text
