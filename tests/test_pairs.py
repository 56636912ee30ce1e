"""Prompt pairs: the facts file formats (JSONL, CSV, JSON list), sweeps over pairs (substitution,
resumable), the report's 95% intervals and per-fact peak-layer histograms against hand-computed
numbers (with empty cells, as aligned prompts of different lengths give), `trace --batch`
end to end on the tiny model, and the Python API with a pairs file."""

from __future__ import annotations

import json
import math

from tracer.errors import InputError
from tracer.inputs.facts import Fact, pair_passes
from tracer.inputs.facts_file import load_facts, read_rows
from tracer.render.sweep_report import render_csv, render_json, render_text
from tracer.sweeps.aggregate import aggregate, load_report
from tracer.sweeps.results import SweepConfig
from tracer.sweeps.run import TracerBackend, run_sweep

import numpy as np
import pytest
from test_sweep import FakeBackend, lines_of

PAIRS = [
    {"prompt": "The Eiffel Tower is located in the city of", "corrupted_prompt": "The Louvre Museum is located in the city of",
     "subject": "Eiffel Tower"},
    {"prompt": "The capital of France is", "corrupted_prompt": "The capital of Germany is", "subject": "France",
     "target": "Paris"},
]


def write_jsonl(path, rows) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return str(path)


# ---- reading the files ----------------------------------------------------------------------


def test_jsonl_pairs_are_substitution_facts(tmp_path):
    facts = load_facts(write_jsonl(tmp_path / "p.jsonl", PAIRS + [{**PAIRS[0], "id": "x", "corrupted_subject": "Louvre Museum"}]))
    assert [f.known_id for f in facts] == [0, 1, "x"]  # no id: the row's index
    assert facts[0] == Fact(0, "Eiffel Tower", "", PAIRS[0]["prompt"], corrupted_prompt=PAIRS[0]["corrupted_prompt"])
    assert facts[1].target == "Paris" and facts[0].target is None and facts[2].corrupted_subject == "Louvre Museum"
    assert {f.mode for f in facts} == {"substitution"}
    # a JSON list of pairs, and a .json file holding JSON Lines, read the same
    (tmp_path / "p.json").write_text(json.dumps(PAIRS))
    assert load_facts(str(tmp_path / "p.json")) == facts[:2]
    assert load_facts(write_jsonl(tmp_path / "lines.json", PAIRS)) == facts[:2]


def test_csv_pairs_with_a_header_row(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text(
        "prompt,corrupted_prompt,subject,target,known_id\n"
        '"Paris, the city, is in",\"Rome, the city, is in\",Paris,,7\n'
        "\n"
        "The capital of France is,The capital of Germany is,France,Paris,8\n", encoding="utf-8")
    facts = load_facts(str(path))
    assert facts == [Fact(7, "Paris", "", "Paris, the city, is in", corrupted_prompt="Rome, the city, is in"),
                     Fact(8, "France", "", "The capital of France is", corrupted_prompt="The capital of Germany is",
                          target="Paris")]


def test_known_1000_rows_in_jsonl_are_noise_facts(tmp_path):
    facts = load_facts(write_jsonl(tmp_path / "k.jsonl", [
        {"known_id": 3, "subject": "Paris", "attribute": "France", "prompt": "Paris is the capital of"},
        {"subject": "Rome", "attribute": "Italy", "template": "{} is the capital of"}]))
    assert facts == [Fact(3, "Paris", "France", "Paris is the capital of"), Fact(1, "Rome", "Italy", "Rome is the capital of")]
    assert facts[0].mode == "noise"


@pytest.mark.parametrize("name, content, message", [
    ("p.jsonl", [PAIRS[0], PAIRS[1], "{oops"], r"p.jsonl line 3 is not valid JSON"),
    ("p.jsonl", [PAIRS[0], {"prompt": "A b", "corrupted_prompt": "C b"}], r"p.jsonl line 2 has no 'subject'"),
    ("p.jsonl", [PAIRS[0], "", {**PAIRS[1], "prompt": 5}], r"p.jsonl line 3: prompt must be a string"),
    ("p.jsonl", [PAIRS[0], "[1, 2]"], r"line 2 is a JSON list, not an object"),
    ("p.jsonl", [PAIRS[0], {"prompt": "A b", "subject": "A"}], r"line 2 has no 'attribute'"),
    ("p.jsonl", [PAIRS[0], {"known_id": 1, "subject": "A", "attribute": "b", "prompt": "A is"}], r"line 2 is a known_1000 fact .* split the file"),
    ("p.jsonl", [{**PAIRS[0], "id": 1}, {**PAIRS[1], "id": 1}], r"line 2: known_id 1 appears twice"),
    ("p.jsonl", [{**PAIRS[0], "prompt": "  "}], r"line 1: prompt is empty"),
    ("p.csv", ["prompt,corrupted_prompt,subject", "A b,C b,A", "A b,C b"], r"p.csv line 3 has 2 fields but the header has 3"),
    ("p.csv", ["question,answer", "A,b"], r"needs a header row naming at least prompt and subject"),
])
def test_malformed_rows_are_one_line_errors_naming_the_line(tmp_path, name, content, message):
    path = tmp_path / name
    write_jsonl(path, content)
    with pytest.raises(InputError, match=message) as info:
        load_facts(str(path))
    assert "\n" not in str(info.value)


def test_read_rows_keeps_going_past_bad_rows(tmp_path):
    rows = read_rows(write_jsonl(tmp_path / "b.jsonl", [PAIRS[0], "nope", {"prompt": "A b", "subject": "A"}, {"prompt": "x"}]))
    assert [r.label for r in rows] == ["line 1", "line 2", "line 3", "line 4"]
    assert isinstance(rows[0].fact, Fact) and rows[0].fact.mode == "substitution"
    assert isinstance(rows[1].fact, str) and "line 2 is not valid JSON" in rows[1].fact
    assert rows[2].fact == Fact(2, "A", "", "A b")  # a plain row: a noise trace (batch only)
    assert "line 4 has no 'subject'" in rows[3].fact


# ---- sweeping pairs ---------------------------------------------------------------------------


CONFIG = SweepConfig(kinds=("mlp",), samples=2, noise="3.0", window=2)


def test_pair_sweep_records_the_corrupted_prompt_and_mode_and_resumes(tmp_path):
    facts = load_facts(write_jsonl(tmp_path / "p.jsonl", PAIRS))
    out = str(tmp_path / "r.jsonl")
    backend = FakeBackend()
    summary = run_sweep(backend, facts, out, CONFIG)
    assert summary.kept == 2 and len(backend.traced) == 2
    lines = lines_of(out)
    assert [r["corrupted_prompt"] for r in lines] == [p["corrupted_prompt"] for p in PAIRS]
    assert [r["attribute"] for r in lines] == ["", "Paris"]
    assert {r["config"]["mode"] for r in lines} == {"substitution"}
    again = FakeBackend()
    assert run_sweep(again, facts, out, CONFIG).traced_now == 0 and again.checked == []
    # the same prompt with another corrupted prompt is another fact
    moved = [Fact(0, "Eiffel Tower", "", PAIRS[0]["prompt"], corrupted_prompt="The Space Needle is located in the city of")]
    with pytest.raises(InputError, match="different fact"):
        run_sweep(FakeBackend(), moved, out, CONFIG)
    # noise facts into a pairs file: refused, naming the corruption
    noise = [Fact(0, "Eiffel Tower", "Paris", PAIRS[0]["prompt"])]
    with pytest.raises(InputError, match=r"the corruption substitution \(this run: noise\)"):
        run_sweep(FakeBackend(), noise, out, CONFIG)


def test_requests_of_pairs_use_substitution_and_their_target():
    pair = Fact(0, "France", "", "The capital of France is", corrupted_prompt="The capital of Germany is", target="Paris")
    req = CONFIG.with_mode([pair]).request(pair)
    assert req.corrupted_prompt == "The capital of Germany is" and req.target == "Paris" and req.positions == "all"
    assert CONFIG.request(Fact(1, "France", "", pair.prompt, corrupted_prompt=pair.corrupted_prompt)).target is None
    noise = Fact(2, "France", "Paris", pair.prompt)
    assert SweepConfig(filter="none").request(noise).target is None and SweepConfig(filter="first-token").request(noise).target == "Paris"


def test_pair_filter_rule():
    assert pair_passes("rome", 5, None) and pair_passes("first-token", 5, None)  # no target: no filter
    assert pair_passes("rome", 5, 5) and not pair_passes("rome", 5, 6) and not pair_passes("first-token", 5, 6)
    assert pair_passes("none", 5, 6)


def test_tracer_backend_checks_pairs_against_the_targets_first_token():
    from test_sweep_rome import _FakeTracer

    # the tiny BPE: " Paris" = 306, " Rome" = 330
    prompts = ["The capital of France is", "The city of love is"]
    tracer = _FakeTracer({prompts[0]: 306, prompts[1]: 330})
    facts = [Fact(0, "France", "", prompts[0], corrupted_prompt="The capital of Germany is", target="Paris"),
             Fact(1, "love", "", prompts[1], corrupted_prompt="The city of hate is", target="Paris"),
             Fact(2, "love", "", prompts[1], corrupted_prompt="The city of hate is")]
    checks = TracerBackend(tracer).check(facts)
    assert [c.ok for c in checks] == [True, False, True]
    assert checks[1].reason == "wrong-prediction" and "not the target's first token ' Paris'" in checks[1].detail
    assert checks[2].target_id == 330  # no target: the clean argmax is traced
    assert all(c.ok for c in TracerBackend(tracer, "none").check(facts))
    bad = Fact(3, "Berlin", "", prompts[0], corrupted_prompt="The capital of Germany is")
    assert TracerBackend(tracer).check([bad])[0].reason == "bad-input"


# ---- the report: intervals and peak layers, by hand ---------------------------------------------


def _line(known_id, tokens, subject_range, high, low, grid, warnings=()):
    return {"v": 1, "status": "kept", "known_id": known_id, "prompt": " ".join(tokens), "subject": "s", "attribute": "",
            "corrupted_prompt": "c", "config": {"model": "m", "kinds": ["mlp"], "samples": 10, "noise": "s3", "window": 2,
                                                "seed": 1, "filter": "rome", "mode": "substitution"},
            "tokens": tokens, "subject_range": subject_range, "target": " a", "target_id": 1, "clean_prob": high,
            "corrupted_prob": low, "grids": {"mlp": {"prob": grid}}, "warnings": list(warnings)}


def hand_records():
    a = _line(0, list("abcde"), [1, 3], 0.6, 0.1, [
        [0.1, 0.1, 0.1],
        [0.2, 0.4, 0.3],  # first subject
        [0.5, 0.3, 0.2],  # last subject
        [0.1, 0.2, 0.4],  # first subsequent
        [0.1, 0.1, 0.6],  # last
    ], [{"code": "small-total-effect", "message": "m"}])
    b = _line(1, list("wxyz"), [0, 1], 0.5, 0.2, [
        [0.4, None, 0.2],  # first = last subject; layer 1: no counterpart in the corrupted prompt
        [0.3, 0.2, 0.2],  # first subsequent
        [0.2, 0.5, 0.2],  # further
        [0.2, 0.3, 0.5],  # last
    ])
    return [a, b]


def close(a, b):
    return all(math.isclose(x, y, abs_tol=1e-12) for x, y in zip(a, b, strict=True))


def test_report_intervals_and_peak_layers_match_a_hand_computation(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in hand_records()))
    report = load_report(str(path))
    lam = (0.1 + 0.2) / 2
    last = report.curves["mlp"]["last_subject"]
    # pooled rows: A row 2 [0.5, 0.3, 0.2], B row 0 [0.4, -, 0.2]; the empty cell is left out
    assert close(last.score, [0.45, 0.3, 0.2]) and close(last.mean, [0.45 - lam, 0.3 - lam, 0.2 - lam])
    assert last.count == [2, 1, 2] and last.n == 2
    assert close(last.std, [0.05, 0.0, 0.0])
    half = 1.96 * 0.05 / math.sqrt(2)
    assert close(last.low, [0.30 - half, 0.15, 0.05]) and close(last.high, [0.30 + half, 0.15, 0.05])
    assert last.peak_layer == 0
    # per-fact peak layers: argmax of each fact's own curve in the group
    curves = report.curves["mlp"]
    assert curves["first_subject"].peak_counts == [1, 1, 0]
    assert curves["last_subject"].peak_counts == [2, 0, 0]
    assert curves["first_subsequent"].peak_counts == [1, 0, 1]
    assert curves["further"].peak_counts == [0, 1, 0]
    assert curves["last"].peak_counts == [0, 0, 2]
    assert curves["middle_subject"].peak_counts == [0, 0, 0] and curves["middle_subject"].n == 0
    assert math.isclose(report.stats["mlp"].best_fixed, (0.6 + 0.5) / 2)
    assert report.guard_counts == {"small-total-effect": 1}

    data = json.loads(render_json(report))
    assert data["peak_layers"]["mlp"]["last_subject"] == {"counts": [2, 0, 0], "facts": 2, "mode": 0}
    assert data["peak_layers"]["mlp"]["middle_subject"] == {"counts": [0, 0, 0], "facts": 0, "mode": None}
    assert data["indirect_effect"]["mlp"]["last_subject"]["count"] == [2, 1, 2]
    assert close(data["indirect_effect"]["mlp"]["last_subject"]["low"], last.low)
    assert data["indirect_effect"]["mlp"]["middle_subject"]["low"] == [None, None, None]
    assert data["interval"]["z"] == 1.96 and data["guards"] == {"small-total-effect": 1}

    text = render_text(report, plots=False)
    assert f"mlp: last subject token peaks at layer 0 (AIE 0.3000, 95% interval [{0.3 - half:.4f}, {0.3 + half:.4f}])" in text
    assert "Guards (kept facts whose trace warned, by code; see tracer/guards.py): small-total-effect 1" in text
    hist = text[text.index("per-fact peak layers"):].split("\n\n")[0].splitlines()
    assert hist[3].split() == ["0", "1", "##########", "-", "2", "##########", "1", "##########", "0", "0"]
    assert hist[-2].split() == ["facts", "2", "0", "2", "2", "1", "2"] and hist[-1].split()[:4] == ["mode", "L0", "-", "L0"]
    assert f"{0.3:7.4f} ± {half:6.4f}" in text  # the table: AIE ± the interval's half-width

    rows = {tuple(r.split(",")[:3]): r.split(",") for r in render_csv(report).splitlines()[1:]}
    row = rows[("mlp", "last_subject", "1")]
    assert row[10] == "1" and row[8] == row[9] and float(row[8]) == pytest.approx(0.15)
    assert rows[("mlp", "last_subject", "0")][11] == "2"


def test_per_fact_intervals_skip_empty_cells():
    report = aggregate(hand_records(), "h", "per-fact")
    last = report.curves["mlp"]["last_subject"]
    # per-fact effects: A [0.4, 0.2, 0.1], B [0.2, -, 0.0]
    assert close(last.mean, [0.3, 0.2, 0.05]) and last.count == [2, 1, 2]
    half = 1.96 * 0.1 / math.sqrt(2)
    assert close(last.low, [0.3 - half, 0.2, 0.05 - 1.96 * 0.05 / math.sqrt(2)])


# ---- the tiny model: a pairs sweep, the API, trace --batch ------------------------------------




def test_api_sweeps_a_pairs_file_like_single_traces(tmp_path, tiny_tracer):
    import tracer
    from tracer.core.tracing import run_trace

    pairs = write_jsonl(tmp_path / "pairs.jsonl", PAIRS + [{**PAIRS[1], "subject": "Spain"}])
    out = str(tmp_path / "r.jsonl")
    summary = tracer.sweep(tiny_tracer, pairs, out, filter="none", kinds=("mlp",), window=2)
    assert summary.kept == 2 and summary.skipped_by_reason == {"bad-input": 1}  # the third pair's subject is not in it
    lines = sorted(lines_of(out), key=lambda r: r["known_id"])
    assert lines[2]["skipped"] == "bad-input" and "not found" in lines[2]["detail"]
    facts = load_facts(pairs)
    config = SweepConfig(filter="none", kinds=("mlp",), window=2).with_mode(facts)
    for rec, fact in zip(lines[:2], facts):
        direct = run_trace(tiny_tracer, config.request(fact))
        assert direct.corruption == "substitution" and rec["config"]["mode"] == "substitution"
        assert rec["grids"]["mlp"]["prob"] == direct.grids["mlp"]["prob"] and rec["target"] == direct.target_text
        assert math.isclose(rec["corrupted_prob"], direct.corrupted_prob)
    assert lines[1]["target"] == " Paris"
    report = tracer.report(out)
    assert report.kept == 2 and report.config["mode"] == "substitution"
    codes: dict[str, int] = {}
    for rec in lines[:2]:
        for code in {w["code"] for w in rec["warnings"]}:
            codes[code] = codes.get(code, 0) + 1
    assert codes and report.guard_counts == codes  # the guards' counts work for pairs
    # resuming traces nothing more
    assert tracer.sweep(tiny_tracer, pairs, out, filter="none", kinds=("mlp",), window=2).traced_now == 0


def cli(argv, capsys):
    from tracer.cli import run_cli

    code = run_cli(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_trace_batch_end_to_end(tmp_path, capsys, tiny_model_dir, tiny_tracer):
    from tracer.core.tracing import run_trace
    from tracer.types import TraceRequest

    rows = [PAIRS[1], {"prompt": "The capital of France is", "subject": "Nowhere"}, "not json",
            {"prompt": "The capital of France is", "subject": "France"}]
    batch = write_jsonl(tmp_path / "b.jsonl", rows)
    out = tmp_path / "out.jsonl"
    base = ["trace", "--model", str(tiny_model_dir), "--kinds", "mlp", "--samples", "2", "--window", "2"]
    code, stdout, stderr = cli(base + ["--batch", batch, "--output", str(out)], capsys)
    assert code == 2 and stdout == ""
    errors = [line for line in stderr.splitlines() if line.startswith("tracer-tui: error:")]
    assert len(errors) == 2 and "b.jsonl line 2: subject 'Nowhere' not found" in errors[0] and "line 3 is not valid JSON" in errors[1]
    lines = lines_of(out)
    assert [line["line"] for line in lines] == ["line 1", "line 2", "line 3", "line 4"]
    assert set(lines[1]) == {"line", "error"} and set(lines[2]) == {"line", "error"}
    pair = run_trace(tiny_tracer, TraceRequest(PAIRS[1]["prompt"], "France", corrupted_prompt=PAIRS[1]["corrupted_prompt"],
                                               target="Paris", kinds=("mlp",), samples=2, window=2))
    assert lines[0]["corrupted_prompt"] == PAIRS[1]["corrupted_prompt"] and lines[0]["config"]["corruption"] == "substitution"
    assert lines[0]["grids"]["mlp"]["prob"] == pair.grids["mlp"]["prob"] and lines[0]["target"]["text"] == " Paris"
    noise = run_trace(tiny_tracer, TraceRequest("The capital of France is", "France", kinds=("mlp",), samples=2, window=2))
    assert lines[3]["config"]["corruption"] == "noise" and lines[3]["grids"]["mlp"]["prob"] == noise.grids["mlp"]["prob"]

    csv_path = tmp_path / "b.csv"
    csv_path.write_text("prompt,corrupted_prompt,subject,target\n" + ",".join(PAIRS[1][k] for k in ("prompt", "corrupted_prompt", "subject", "target")) + "\n")
    code, stdout, stderr = cli(base + ["--batch", str(csv_path), "--quiet"], capsys)
    assert code == 0, stderr
    (only,) = [json.loads(line) for line in stdout.splitlines()]
    assert only["line"] == "line 2" and only["grids"]["mlp"]["prob"] == pair.grids["mlp"]["prob"]


@pytest.mark.parametrize("argv, message", [
    (["trace", "--subject", "A"], "trace needs --prompt (or --batch FILE)"),
    (["trace", "--batch", "{batch}", "--prompt", "A b"], "drop --prompt"),
    (["trace", "--batch", "{batch}", "--format", "csv"], "--format csv does not apply"),
    (["trace", "--batch", "{tmp}/missing.jsonl"], "batch file not found"),
    (["trace", "--batch", "{batch}", "--samples", "0"], "samples must be between 1"),
])
def test_trace_batch_bad_usage_is_one_line_exit_2(tmp_path, capsys, argv, message):
    batch = write_jsonl(tmp_path / "b.jsonl", PAIRS)
    code, _, err = cli([a.format(batch=batch, tmp=tmp_path) for a in argv], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err


def test_sweep_cli_reads_a_csv_of_pairs(tmp_path, capsys, tiny_model_dir):
    path = tmp_path / "p.csv"
    path.write_text("prompt,corrupted_prompt,subject\n" + f"{PAIRS[1]['prompt']},{PAIRS[1]['corrupted_prompt']},France\n")
    out = str(tmp_path / "r.jsonl")
    argv = ["sweep", str(path), "--model", str(tiny_model_dir), "--kinds", "mlp", "--window", "2", "-o", out]
    code, stdout, stderr = cli(argv, capsys)
    assert code == 0, stderr
    assert "1 of 1 facts traced" in stdout and lines_of(out)[0]["config"]["mode"] == "substitution"
    code, stdout, _ = cli(["sweep-report", out, "--format", "json"], capsys)
    data = json.loads(stdout)
    assert code == 0 and data["facts"]["kept"] == 1 and sum(data["peak_layers"]["mlp"]["last"]["counts"]) == 1
    assert np.isfinite(data["indirect_effect"]["mlp"]["last"]["low"]).all()
    code, stdout, _ = cli(["sweep-report", out], capsys)  # the text names the corruption, not noise settings
    first = stdout.splitlines()[0]
    assert code == 0 and first.endswith("kinds mlp, window 2, filter rome, corruption: substitution (prompt pairs)")
    code, stdout, _ = cli(["sweep", str(path), "--model", str(tiny_model_dir), "--check-only"], capsys)
    assert code == 0 and "1 of 1 prompt pairs kept (--filter rome: the clean top token is the first token of the pair's target" in stdout
