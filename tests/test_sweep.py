"""Sweeps: facts -> resumable JSONL, the average indirect effect report, and the CLI.

Resume/durability tests use a fake backend (fast, counts calls); the kept/skipped
path and the CLI run the tiny random llama for real.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

from tracer.errors import InputError
from tracer.inputs.facts import Fact
from tracer.inputs.facts_file import load_facts
from tracer.render.sweep_report import render_csv, render_json, render_text
from tracer.sweeps.aggregate import aggregate, load_report
from tracer.sweeps.results import Check, SweepConfig, read_results, scan_results
from tracer.sweeps.run import FactDone, TracerBackend, run_sweep
from tracer.sweeps.stats import token_groups
from tracer.types import Prediction, TraceRequest, TraceResult

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.dirname(os.path.abspath(__file__))


# ---- a fake backend: the model side without a model ------------------------------------------


class FakeBackend:
    """Knows the facts whose attribute is not "wrong"; every trace is a fixed small grid."""

    name = "fake-model"
    n_layers = 3

    def __init__(self, delay: float = 0.0, cancel_after: int | None = None):
        self.checked: list = []
        self.traced: list = []
        self.delay = delay

    def check(self, facts):
        self.checked += [f.known_id for f in facts]
        return [
            Check(True, None, "", 7, " x", (7, " x", 0.5), 0.5)
            if f.attribute != "wrong"
            else Check(False, "wrong-prediction", "predicts ' y'", 7, " x", (8, " y", 0.6), 0.1)
            for f in facts
        ]

    def trace(self, request: TraceRequest, on_event, cancel):
        self.traced.append(request.prompt)
        if self.delay:
            time.sleep(self.delay)
        tokens = request.prompt.split(" ")
        b = tokens.index(request.subject.split(" ")[0])
        e = b + len(request.subject.split(" "))
        grid = [[0.1 + 0.01 * t + 0.1 * layer for layer in range(self.n_layers)] for t in range(len(tokens))]
        return TraceResult(
            model=self.name,
            tokens=tokens,
            subject_range=(b, e),
            target_id=7,
            target_text=" x",
            clean_prob=0.5,
            corrupted_prob=0.1,
            clean_top=[Prediction(7, " x", 0.5)],
            corrupted_top=[Prediction(8, " y", 0.3)],
            corrupted_top_id=8,
            noise_std=1.0,
            corruption="noise",
            positions="all",
            request=request,
            grids={k: {"prob": grid, "recovery": grid, "logit_diff": grid} for k in request.kinds},
            seconds=0.01,
        )


def fake_facts(n: int, wrong=()) -> list[Fact]:
    return [
        Fact(i, f"Subject{i} Name", "wrong" if i in wrong else "x", f"The Subject{i} Name is in the place of", "P1")
        for i in range(n)
    ]


CONFIG = SweepConfig(kinds=("mlp",), samples=2, noise="3.0", window=2)


def lines_of(path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


# ---- facts files ----------------------------------------------------------------------------


def write_json(path, data) -> str:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f)
    return str(path)


def test_load_facts_reads_known_1000_format(tmp_path):
    facts = load_facts(
        write_json(
            tmp_path / "f.json",
            [
                {"known_id": 0, "subject": "Vinson Massif", "attribute": "Antarctica", "template": "{} is located in the continent",
                 "prediction": " of Antarctica.", "prompt": "Vinson Massif is located in the continent of", "relation_id": "P30"},
                {"known_id": 1, "subject": "Paris", "attribute": "France", "template": "{} is the capital of"},
            ],
        )
    )
    assert facts[0] == Fact(0, "Vinson Massif", "Antarctica", "Vinson Massif is located in the continent of", "P30")
    assert facts[1].prompt == "Paris is the capital of"  # no prompt: the template filled with the subject


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "not found"),
        ("{not json", "not valid JSON"),
        ('{"a": 1}', "JSON list"),
        ('[{"known_id": 0, "subject": "A"}]', "'attribute'"),
        ('[{"known_id": 0, "subject": "A", "attribute": "B"}]', "'prompt'"),
        ('[{"known_id": 0, "subject": 3, "attribute": "B", "prompt": "x"}]', "subject must be a string"),
        ('[{"known_id": 0, "subject": "A", "attribute": "B", "prompt": "A x"}, {"known_id": 0, "subject": "A", "attribute": "B", "prompt": "A y"}]', "twice"),
    ],
)
def test_load_facts_errors(tmp_path, content, message):
    path = tmp_path / "facts.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(InputError, match=message):
        load_facts(str(path))


# ---- the sweep loop, with the fake backend ------------------------------------------------------


def test_sweep_writes_one_line_per_fact_and_skips_wrong_predictions(tmp_path):
    out = str(tmp_path / "r.jsonl")
    backend = FakeBackend()
    summary = run_sweep(backend, fake_facts(5, wrong={1, 3}), out, CONFIG)
    lines = lines_of(out)
    assert len(lines) == 5 and sorted(r["known_id"] for r in lines) == [0, 1, 2, 3, 4]
    assert summary.kept == 3 and summary.skipped == 2 and summary.skipped_by_reason == {"wrong-prediction": 2}
    assert not summary.cancelled and summary.traced_now == 3
    assert len(backend.traced) == 3
    skipped = [r for r in lines if r["status"] == "skipped"]
    assert {r["known_id"] for r in skipped} == {1, 3}
    assert skipped[0]["skipped"] == "wrong-prediction" and skipped[0]["top"][1] == " y"
    kept = next(r for r in lines if r["known_id"] == 0)
    assert kept["config"] == {"model": "fake-model", "kinds": ["mlp"], "samples": 2, "noise": "3", "replace": False,
                              "window": 2, "seed": 1, "sever": [], "filter": "rome", "mode": "noise"}
    assert kept["subject_range"] == [1, 3] and len(kept["grids"]["mlp"]["prob"]) == len(kept["tokens"])
    assert kept["clean_prob"] == 0.5 and kept["corrupted_prob"] == 0.1 and kept["target"] == " x"


def test_resume_skips_done_facts(tmp_path):
    out = str(tmp_path / "r.jsonl")
    facts = fake_facts(6, wrong={4})
    cancel = threading.Event()

    def stop_after_two(event):
        if isinstance(event, FactDone) and event.index == 1:
            cancel.set()

    first = FakeBackend()
    summary = run_sweep(first, facts, out, CONFIG, on_event=stop_after_two, cancel=cancel)
    assert summary.cancelled and summary.traced_now == 2
    assert len(lines_of(out)) == 3  # two traced + the skipped one (checked before tracing)

    second = FakeBackend()
    summary = run_sweep(second, facts, out, CONFIG)
    assert not summary.cancelled and summary.kept == 5 and summary.skipped == 1
    assert second.checked == [2, 3, 5] and len(second.traced) == 3  # nothing done is checked or traced again
    assert sorted(r["known_id"] for r in lines_of(out)) == [0, 1, 2, 3, 4, 5]

    third = FakeBackend()
    run_sweep(third, facts, out, CONFIG)
    assert third.checked == [] and third.traced == []


def test_torn_last_line_is_cut_and_redone(tmp_path):
    out = str(tmp_path / "r.jsonl")
    facts = fake_facts(3)
    run_sweep(FakeBackend(), facts[:2], out, CONFIG)
    good = open(out, "rb").read()
    # a run killed while writing fact 2's line: part of the line, no newline
    partial = json.dumps({"v": 1, "status": "kept", "known_id": 2, "config": {}})[:25].encode()
    with open(out, "ab") as f:
        f.write(partial)
    state = scan_results(out)
    assert state.dropped_tail == len(partial) and set(state.records) == {0, 1}
    backend = FakeBackend()
    summary = run_sweep(backend, facts, out, CONFIG)
    assert summary.dropped_tail and len(backend.traced) == 1
    data = open(out, "rb").read()
    assert data.startswith(good) and data.endswith(b"\n")
    assert [r["known_id"] for r in lines_of(out)] == [0, 1, 2]


def test_garbled_complete_last_line_is_redone_but_a_bad_middle_line_is_an_error(tmp_path):
    out = str(tmp_path / "r.jsonl")
    facts = fake_facts(3)
    run_sweep(FakeBackend(), facts[:2], out, CONFIG)
    lines = open(out, "rb").read().split(b"\n")
    with open(out, "wb") as f:
        f.write(lines[0] + b"\n" + lines[1][:-7] + b"\n")  # last line cut short but ends in a newline
    backend = FakeBackend()
    run_sweep(backend, facts, out, CONFIG)
    assert len(backend.traced) == 2
    assert sorted(r["known_id"] for r in lines_of(out)) == [0, 1, 2]

    text = open(out, "rb").read().split(b"\n")
    text[1] = b"{oops"
    open(out, "wb").write(b"\n".join(text))
    with pytest.raises(InputError, match="line 2 is not a sweep result line"):
        run_sweep(FakeBackend(), facts, out, CONFIG)


def test_different_settings_or_facts_refuse_to_resume(tmp_path):
    out = str(tmp_path / "r.jsonl")
    facts = fake_facts(2)
    run_sweep(FakeBackend(), facts, out, CONFIG)
    with pytest.raises(InputError, match=r"--samples 2 \(this run: 3\)"):
        run_sweep(FakeBackend(), facts, out, SweepConfig(kinds=("mlp",), samples=3, window=2))
    with pytest.raises(InputError, match=r"--kinds mlp \(this run: mlp,attn\)"):
        run_sweep(FakeBackend(), facts, out, SweepConfig(kinds=("mlp", "attn"), samples=2, window=2))
    other = FakeBackend()
    other.name = "other-model"
    with pytest.raises(InputError, match="--model fake-model"):
        run_sweep(other, facts, out, CONFIG)
    moved = [Fact(0, "Another Thing", "x", "The Another Thing is here")]
    with pytest.raises(InputError, match="different fact"):
        run_sweep(FakeBackend(), moved, out, CONFIG)


def test_sigkill_mid_fact_loses_only_that_fact(tmp_path):
    out = str(tmp_path / "r.jsonl")
    facts_path = write_json(
        tmp_path / "facts.json",
        [{"known_id": f.known_id, "subject": f.subject, "attribute": f.attribute, "prompt": f.prompt} for f in fake_facts(8)],
    )
    child = textwrap.dedent(
        f"""
        import sys
        sys.path[:0] = [{REPO!r}, {TESTS!r}]
        from test_sweep import FakeBackend, CONFIG
        from tracer.inputs.facts_file import load_facts; from tracer.sweeps.run import run_sweep
        run_sweep(FakeBackend(delay=0.4), load_facts({facts_path!r}), {out!r}, CONFIG)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", child])
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            if os.path.exists(out) and open(out, "rb").read().count(b"\n") >= 2:
                break
            time.sleep(0.02)
        time.sleep(0.1)  # well inside the next fact's 0.4 s trace
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    done = lines_of(out)  # every line complete and valid
    assert 2 <= len(done) < 8
    backend = FakeBackend()
    summary = run_sweep(backend, load_facts(facts_path), out, CONFIG)
    assert len(backend.traced) == 8 - len(done) and summary.kept == 8
    assert sorted(r["known_id"] for r in lines_of(out)) == list(range(8))


# ---- the real model: the tiny llama -------------------------------------------------------




CANDIDATES = [
    ("The capital of Germany is", "Germany"),
    ("Big Ben is located in the city of", "Big Ben"),
    ("The Eiffel Tower is located in the city of", "Eiffel Tower"),
    ("Michael Jordan plays the sport of", "Michael Jordan"),
    ("Steve Jobs was the founder of", "Steve Jobs"),
    ("The Louvre Museum is located in", "Louvre Museum"),
    ("The Space Needle is located in", "Space Needle"),
    ("The capital of Japan is", "Japan"),
    ("Lionel Messi plays the sport of", "Lionel Messi"),
    ("The Colosseum is located in the city of", "Colosseum"),
]


@pytest.fixture(scope="module")
def tiny_facts(tiny_tracer):
    """Facts the tiny model 'knows' (attribute = its prediction) and facts it does not."""
    from tracer.inputs.prompts import target_token

    known, unknown = [], []
    for (prompt, subject), preds in zip(CANDIDATES, tiny_tracer.predict([p for p, _ in CANDIDATES])):
        top = preds[0]
        attribute = top.text.strip()
        if top.text.startswith(" ") and attribute and target_token(tiny_tracer.tokenizer, attribute)[0] == top.token_id:
            known.append((prompt, subject, attribute))
        else:
            unknown.append((prompt, subject, "Paris" if top.text.strip() != "Paris" else "Rome"))
    assert len(known) >= 2 and len(unknown) >= 1, "the tiny model's predictions changed: pick other candidates"
    rows = [(p, s, a) for p, s, a in known[:2]] + unknown[:1] + [("The capital of Italy is", "Nowhere", "Rome")]
    return [{"known_id": 10 + i, "subject": s, "attribute": a, "prompt": p, "relation_id": "P0"} for i, (p, s, a) in enumerate(rows)]


def test_tiny_model_sweep_keeps_known_facts_and_matches_a_single_trace(tmp_path, tiny_tracer, tiny_facts):
    from tracer.core.tracing import run_trace

    out = str(tmp_path / "r.jsonl")
    facts = load_facts(write_json(tmp_path / "facts.json", tiny_facts))
    config = SweepConfig(kinds=("mlp", "hidden"), samples=2, window=2)
    summary = run_sweep(TracerBackend(tiny_tracer), facts, out, config)
    assert (summary.kept, summary.skipped) == (2, 2)
    assert summary.skipped_by_reason == {"wrong-prediction": 1, "bad-input": 1}
    lines = {r["known_id"]: r for r in lines_of(out)}
    assert lines[12]["skipped"] == "wrong-prediction" and "predicts" in lines[12]["detail"]
    assert lines[13]["skipped"] == "bad-input" and "not found" in lines[13]["detail"]
    rec = lines[10]
    assert rec["config"]["model"] == tiny_tracer.lm.name
    direct = run_trace(tiny_tracer, config.request(facts[0]))
    assert rec["tokens"] == direct.tokens and rec["subject_range"] == list(direct.subject_range)
    assert rec["target_id"] == direct.target_id and rec["target"].strip() == tiny_facts[0]["attribute"]
    assert rec["clean_top"][0][0] == rec["target_id"]  # kept: the clean top token is the target
    for kind in ("mlp", "hidden"):
        assert rec["grids"][kind]["prob"] == direct.grids[kind]["prob"]
        assert len(rec["grids"][kind]["prob"][0]) == tiny_tracer.n_layers
    assert math.isclose(rec["clean_prob"], direct.clean_prob) and math.isclose(rec["corrupted_prob"], direct.corrupted_prob)
    report = load_report(out)
    assert report.kept == 2 and report.n_layers == tiny_tracer.n_layers


def test_tiny_model_sweep_reports_the_work_of_its_traces(tmp_path, tiny_tracer, tiny_facts):
    from tracer.core.tracing import run_trace
    from tracer.events import Started
    from tracer.sweeps.run import FactDone, FactProgress, TracingStarted

    facts = load_facts(write_json(tmp_path / "facts.json", tiny_facts))
    config = SweepConfig(kinds=("mlp", "hidden"), samples=2, window=2)
    events = []
    run_sweep(TracerBackend(tiny_tracer), facts, str(tmp_path / "r.jsonl"), config, on_event=events.append)
    # the work each kept fact's trace reports when traced alone
    alone = []
    for fact in facts[:2]:
        traced = []
        run_trace(tiny_tracer, config.request(fact), on_event=traced.append)
        alone.append(next(e for e in traced if isinstance(e, Started)).work_total)
    started = next(e for e in events if isinstance(e, TracingStarted))
    assert started.total == 2 and started.work_total == sum(alone)
    done = [e for e in events if isinstance(e, FactDone)]
    assert [e.work_done for e in done] == [alone[0], sum(alone)] and {e.work_total for e in done} == {sum(alone)}
    progress = [e.work_done for e in events if isinstance(e, FactProgress)]
    assert progress == sorted(progress) and progress[-1] == sum(alone)
    assert any(0 < w < alone[0] for w in progress)  # counted within the first fact's trace


def test_batched_check_agrees_with_one_forward_per_prompt(tiny_tracer):
    prompts = [p for p, _ in CANDIDATES]
    facts = [Fact(i, s, "Paris", p) for i, (p, s) in enumerate(CANDIDATES)]
    checks = TracerBackend(tiny_tracer).check(facts)
    for check, preds in zip(checks, tiny_tracer.predict(prompts, k=1)):
        assert check.top[0] == preds[0].token_id
        assert math.isclose(check.top[2], preds[0].prob, rel_tol=1e-4)


# ---- the report: aggregation against hand-computed numbers ------------------------------


def _kept(known_id, tokens, subject_range, p_clean, p_corrupt, effects):
    """A kept line whose mlp grid is p_corrupt + effects (rows = tokens, columns = 3 layers)."""
    return {
        "v": 1, "status": "kept", "known_id": known_id, "prompt": " ".join(tokens), "subject": "s", "attribute": "a",
        "config": {"model": "m", "kinds": ["mlp"], "samples": 2, "noise": 3.0, "window": 2, "seed": 0},
        "tokens": tokens, "subject_range": subject_range, "target": " a", "target_id": 1,
        "clean_prob": p_clean, "corrupted_prob": p_corrupt,
        "grids": {"mlp": {"prob": [[p_corrupt + x for x in row] for row in effects]}},
    }


def synthetic_records():
    # A: 7 tokens, subject [1, 4): first 1, middle [2], last subj 3, first subsequent 4, further [5], last 6
    a = _kept(0, list("abcdefg"), [1, 4], 0.9, 0.1, [
        [0.0, 0.0, 0.0],
        [0.1, 0.2, 0.3],  # first subject
        [0.2, 0.2, 0.2],  # middle
        [0.1, 0.5, 0.1],  # last subject
        [0.0, 0.1, 0.0],  # first subsequent
        [0.3, 0.0, 0.0],  # further
        [0.0, 0.0, 0.4],  # last
    ])
    # B: 5 tokens, one-token subject [0, 1): first = last subject = 0, no middle; next 1, further [2, 3], last 4
    b = _kept(1, list("vwxyz"), [0, 1], 0.5, 0.2, [
        [0.3, 0.3, 0.0],  # first and last subject
        [0.1, 0.1, 0.1],  # first subsequent
        [0.2, 0.0, 0.0],  # further
        [0.4, 0.2, 0.0],  # further
        [0.0, 0.1, 0.2],  # last
    ])
    # C: subject ends just before the last token: no first subsequent token, no further
    c = _kept(2, list("pqr"), [0, 2], 0.4, 0.1, [
        [0.1, 0.1, 0.1],
        [0.3, 0.1, 0.2],
        [0.2, 0.2, 0.2],
    ])
    skipped = {"v": 1, "status": "skipped", "known_id": 3, "prompt": "x", "subject": "x", "attribute": "y",
               "config": a["config"], "skipped": "wrong-prediction", "detail": "predicts ' z'"}
    return [a, b, c, skipped]


def test_token_groups_rules():
    assert token_groups(7, (1, 4)) == {"first_subject": [1], "middle_subject": [2], "last_subject": [3],
                                       "first_subsequent": [4], "further": [5], "last": [6]}
    assert token_groups(5, (0, 1))["middle_subject"] == [] and token_groups(5, (0, 1))["last_subject"] == [0]
    # ROME: the first subsequent token is always the one right after the subject, even when it is the last
    assert token_groups(3, (0, 2))["first_subsequent"] == [2] and token_groups(3, (0, 2))["further"] == []
    assert token_groups(3, (1, 3))["first_subsequent"] == []  # the subject ends the prompt
    assert token_groups(4, (1, 4))["last_subject"] == [3] and token_groups(4, (1, 4))["last"] == [3]


def approx(values, expected):
    return all(math.isclose(v, e, abs_tol=1e-9) for v, e in zip(values, expected, strict=True))


def test_per_fact_aggregate_matches_hand_computed_averages():
    report = aggregate(synthetic_records(), "synthetic", "per-fact")
    assert report.aggregate == "per-fact"
    assert (report.kept, report.skipped, report.skipped_by_reason) == (3, 1, {"wrong-prediction": 1})
    assert report.n_layers == 3 and report.thirds == [(0, 1), (1, 2), (2, 3)]
    # total effect: (0.8, 0.3, 0.3) -> mean 1.4/3, population std
    assert math.isclose(report.total_effect, 1.4 / 3)
    assert math.isclose(report.total_effect_std, math.sqrt(((0.8 - 1.4 / 3) ** 2 + 2 * (0.3 - 1.4 / 3) ** 2) / 3))
    mlp = report.curves["mlp"]
    # last subject: A row 3, B row 0, C row 1
    last = mlp["last_subject"]
    assert last.n == 3
    assert approx(last.mean, [(0.1 + 0.3 + 0.3) / 3, (0.5 + 0.3 + 0.1) / 3, (0.1 + 0.0 + 0.2) / 3])
    assert math.isclose(last.std[1], math.sqrt(((0.5 - 0.3) ** 2 + 0 + (0.1 - 0.3) ** 2) / 3))
    assert last.peak_layer == 1 and math.isclose(last.peak, 0.3)
    assert approx(last.thirds, last.mean)  # one layer per third
    # first subject: A row 1, B row 0, C row 0
    assert approx(mlp["first_subject"].mean, [(0.1 + 0.3 + 0.1) / 3, (0.2 + 0.3 + 0.1) / 3, (0.3 + 0.0 + 0.1) / 3])
    # middle: A only
    assert mlp["middle_subject"].n == 1 and approx(mlp["middle_subject"].mean, [0.2, 0.2, 0.2])
    assert approx(mlp["middle_subject"].std, [0, 0, 0])
    # first subsequent: A row 4, B row 1, C row 2 (also its last token)
    assert mlp["first_subsequent"].n == 3 and approx(mlp["first_subsequent"].mean, [0.1, 0.4 / 3, 0.1])
    # further: A row 5; B mean of rows 2, 3 = [0.3, 0.1, 0.0]
    assert approx(mlp["further"].mean, [0.3, 0.05, 0.0])
    # last token: A row 6, B row 4, C row 2
    assert approx(mlp["last"].mean, [0.2 / 3, 0.3 / 3, 0.8 / 3]) and mlp["last"].peak_layer == 2


def test_read_results_leaves_out_a_torn_last_line(tmp_path):
    path = tmp_path / "r.jsonl"
    recs = synthetic_records()
    path.write_text("\n".join(json.dumps(r) for r in recs) + "\n" + json.dumps(recs[0])[:40])
    records, warnings = read_results(str(path))
    assert len(records) == 4 and "incomplete" in warnings[0]


def test_report_formats(tmp_path):
    report = aggregate(synthetic_records(), "synthetic")
    text = render_text(report)
    assert "Facts: 3 traced, 1 skipped (1 wrong-prediction)" in text
    assert "mlp: last subject token peaks at layer 1" in text
    assert "last subject" in text and "peak" in text and "early" in text
    assert "average indirect effect over 3 facts" in text  # the plotext plot's title
    assert "\x1b[" not in text  # no colour codes unless asked
    rows = render_csv(report).splitlines()
    assert rows[0] == "kind,group,layer,mean,std,n,score,heatmap,low,high,count,peak_facts" and len(rows) == 1 + 6 * 3
    assert rows[1].startswith("mlp,first_subject,0,")
    data = json.loads(render_json(report))
    assert data["facts"]["kept"] == 3 and data["indirect_effect"]["mlp"]["last_subject"]["peak_layer"] == 1
    assert math.isclose(data["total_effect"]["mean"], 1.4 / 3)
    assert data["thirds"] == {"early": [0, 1], "middle": [1, 2], "late": [2, 3]}


# ---- the command line -------------------------------------------------------------------------


def cli(argv, capsys):
    from tracer.cli import run_cli

    code = run_cli(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_sweep_report_cli_formats_and_output(tmp_path, capsys):
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in synthetic_records()))
    code, out, _ = cli(["sweep-report", str(path)], capsys)
    assert code == 0 and "mlp: average indirect effect" in out
    code, out, _ = cli(["sweep-report", str(path), "--format", "csv"], capsys)
    assert code == 0 and out.startswith("kind,group,layer,mean,std,n,score,heatmap,low,high,count,peak_facts")
    dest = tmp_path / "report.json"
    code, out, err = cli(["sweep-report", str(path), "--format", "json", "--output", str(dest)], capsys)
    assert code == 0 and out == "" and json.loads(dest.read_text())["facts"]["kept"] == 3


@pytest.mark.parametrize(
    "argv, message",
    [
        (["sweep", "{missing}", "-o", "{out}"], "facts file not found"),
        (["sweep", "{bad}", "-o", "{out}"], "not valid JSON"),
        (["sweep", "{fields}", "-o", "{out}"], "has no 'attribute'"),
        (["sweep", "{good}", "-o", "{tmp}/no/such/dir/r.jsonl"], "does not exist"),
        (["sweep", "{good}", "-o", "{tmp}"], "is a directory"),
        (["sweep", "{good}"], "needs --output"),
        (["sweep", "{good}", "-o", "{out}", "--kinds", "neurons"], "unknown kind"),
        (["sweep", "{good}", "-o", "{out}", "--samples", "0"], "samples must be between 1"),
        (["sweep", "{good}", "-o", "{out}", "--limit", "0"], "--limit must be at least 1"),
        (["sweep", "{good}", "-o", "{out}", "--samples", "x"], "--samples must be a whole number"),
        (["sweep-report", "{missing}"], "results file not found"),
        (["sweep-report", "{bad}"], "not a sweep result line"),
        (["sweep-report", "{results}", "-o", "{tmp}/no/such/dir/x.txt"], "cannot write"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, message):
    (tmp_path / "bad.json").write_text("{not json\nmore\n")
    write_json(tmp_path / "fields.json", [{"known_id": 0, "subject": "A", "prompt": "A b"}])
    write_json(tmp_path / "good.json", [{"known_id": 0, "subject": "A", "attribute": "B", "prompt": "A b"}])
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in synthetic_records()))
    names = {"missing": tmp_path / "missing.json", "bad": tmp_path / "bad.json", "fields": tmp_path / "fields.json",
             "good": tmp_path / "good.json", "out": tmp_path / "r.jsonl", "results": tmp_path / "results.jsonl", "tmp": tmp_path}
    code, out, err = cli([a.format(**{k: str(v) for k, v in names.items()}) for a in argv], capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and message in err and err.startswith("tracer-tui: error:")


def test_sweep_cli_end_to_end_with_tiny_model_and_resume(tmp_path, capsys, tiny_model_dir, tiny_facts):
    facts = write_json(tmp_path / "facts.json", tiny_facts)
    out = str(tmp_path / "r.jsonl")
    argv = ["sweep", facts, "--model", str(tiny_model_dir), "--kinds", "mlp", "--samples", "2", "--window", "2", "-o", out]
    code, stdout, stderr = cli(argv, capsys)
    assert code == 0, stderr
    assert "2 of 4 facts traced, 2 skipped (1 bad-input, 1 wrong-prediction)" in stdout
    assert len(lines_of(out)) == 4
    code, stdout, stderr = cli(argv, capsys)
    assert code == 0 and "0 traced in this run" in stdout and "4 of 4 facts already done" in stderr
    code, _, stderr = cli([("3" if a == "2" and argv[i - 1] == "--samples" else a) for i, a in enumerate(argv)], capsys)
    assert code == 2 and "--samples 2 (this run: 3)" in stderr
    code, stdout, _ = cli(["sweep", facts, "--model", str(tiny_model_dir), "--check-only"], capsys)
    assert code == 0 and "2 of 4 facts predicted correctly" in stdout


# ---- the TUI screen ------------------------------------------------------------------------------


def _host(screen):
    from textual.app import App

    class Host(App):
        def on_mount(self):
            self.push_screen(screen)

    return Host()


async def test_sweep_screen_shows_a_results_file_and_follows_it(tmp_path):
    from textual.widgets import DataTable, Static

    from tui.screens.sweep import SweepScreen
    from tui.widgets.sweep_plot import SweepPlot

    path = tmp_path / "r.jsonl"
    records = synthetic_records()
    path.write_text("".join(json.dumps(r) + "\n" for r in records[:2]))
    screen = SweepScreen(results=str(path))
    async with _host(screen).run_test(size=(140, 48)) as pilot:
        await pilot.pause()
        summary = str(screen.query_one("#sweep-summary", Static).render())
        assert "Facts: 2 traced, 0 skipped" in summary
        table = screen.query_one("#sweep-table", DataTable)
        assert table.row_count == 3 + 1 + 1 + 3  # layers, n, peak, thirds
        assert screen.query_one(SweepPlot).report.kept == 2 and screen.kind == "mlp"
        with open(path, "a") as f:  # a sweep elsewhere appends two more facts, the last one torn
            f.write(json.dumps(records[2]) + "\n" + json.dumps(records[3]) + "\n" + json.dumps(records[0])[:30])
        screen.poll()
        await pilot.pause()
        assert "Facts: 3 traced, 1 skipped (1 wrong-prediction)" in str(screen.query_one("#sweep-summary", Static).render())
        assert math.isclose(screen.report.curves["mlp"]["last_subject"].mean[1], 0.3)


async def test_sweep_screen_runs_a_sweep_on_the_engine_thread(tmp_path, tiny_model_dir, tiny_facts):
    from tracer.engine import Engine

    from textual.widgets import Static

    from tui.screens.sweep import ConfirmSweep, SweepScreen

    facts = write_json(tmp_path / "facts.json", tiny_facts)
    out = str(tmp_path / "r.jsonl")
    engine = Engine(str(tiny_model_dir))
    try:
        screen = SweepScreen(engine=engine, results=out, facts=facts, config=SweepConfig(kinds=("mlp",), samples=2, window=2))
        host = _host(screen)
        async with host.run_test(size=(140, 48)) as pilot:
            await pilot.pause(0.3)
            assert screen.running is None  # the screen opens idle and asks before a sweep
            await pilot.press("ctrl+r")
            for _ in range(100):
                await pilot.pause(0.1)
                if isinstance(host.screen, ConfirmSweep):
                    break
            await pilot.press("enter")
            for _ in range(300):
                await pilot.pause(0.1)
                if screen.running is None and os.path.exists(out) and len(lines_of(out)) == 4:
                    break
            await pilot.pause()
            status = str(screen.query_one("#sweep-status", Static).render())
            assert "sweep done: 2 of 4 traced, 2 skipped" in status, status
            assert screen.report is not None and screen.report.kept == 2
    finally:
        engine.close()
