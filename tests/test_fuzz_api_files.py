"""Issue 25, item 2: 2,400 generated hostile inputs to the Python API, the app's settings file and
the results file (tests/fuzz_cases.py) end in a result or an error of the project's own types:
0 tracebacks, 0 hangs. benchmarks/fuzz.py runs 10,000 the same way."""

from __future__ import annotations

from fuzz_cases import make_context, run_fuzz

N = 2400
SEED = 25




def test_generated_inputs_end_in_results_or_project_errors(tiny_tracer, tmp_path, monkeypatch):
    monkeypatch.setenv("TRACER_TUI_CONFIG_DIR", str(tmp_path / "config"))
    ctx = make_context(tiny_tracer, tmp_path / "work")
    out = run_fuzz(N, SEED, ctx, per_case_s=10.0)
    assert out.total == N
    assert out.tracebacks == [] and out.hangs == []
    assert out.results + sum(out.errors.values()) == N
    # every target was really exercised: errors of both kinds, some API calls that ran to a result
    # (real traces and predictions), settings files read, and the app built on some of them
    assert min(out.cases.values()) > 400
    assert out.errors["InputError"] > 500 and out.errors["ModelError"] > 20
    assert out.results_by["api"] > 30 and out.results_by["settings"] == out.cases["settings"]
    assert out.results_by["results"] > 20 and ctx.app_builds > 3
