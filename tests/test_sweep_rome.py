"""ROME's sweep statistics (docs/method.md#d5-average-indirect-effect), its fact filter
(docs/method.md#d4-the-facts-and-the-filter) and the bundled known_1000.

The aggregation is checked on a hand-built results file against numbers computed here
independently: the rows of every group are listed by hand, not derived with token_groups.
"""

from __future__ import annotations

import json
import math

from tracer.errors import InputError
from tracer.inputs.facts import BUNDLED, Fact, passes_filter, resolve_facts
from tracer.inputs.facts_file import load_facts
from tracer.render.sweep_report import render_json, render_text
from tracer.sweeps.aggregate import aggregate, load_report
from tracer.sweeps.results import SweepConfig
from tracer.sweeps.run import TracerBackend

import numpy as np
import pytest

L = 4
KINDS = ("hidden", "mlp")
# (known_id, T, subject range) of each kept fact; the rows of each group, by hand
FACTS = [
    (0, 6, (1, 4)),  # 3-token subject
    (1, 4, (0, 3)),  # one token follows the subject: row 3 is first subsequent AND last
    (2, 5, (1, 2)),  # 1-token subject: row 1 is first AND last subject
    (3, 7, (0, 4)),  # 4-token subject: two middle rows
    (4, 3, (1, 3)),  # the subject ends the prompt: no first subsequent row
]
ROWS = {
    "first_subject": {0: [1], 1: [0], 2: [1], 3: [0], 4: [1]},
    "middle_subject": {0: [2], 1: [1], 2: [], 3: [1, 2], 4: []},
    "last_subject": {0: [3], 1: [2], 2: [1], 3: [3], 4: [2]},
    "first_subsequent": {0: [4], 1: [3], 2: [2], 3: [4], 4: []},
    "further": {0: [], 1: [], 2: [3], 3: [5], 4: []},
    "last": {0: [5], 1: [3], 2: [4], 3: [6], 4: [2]},
}
LOWS = [0.05, 0.20, 0.10, 0.30, 0.15]
HIGHS = [0.60, 0.50, 0.90, 0.40, 0.70]


def grids():
    rng = np.random.default_rng(7)
    return {(k, kind): rng.uniform(0.0, 0.6, size=(T, L)) for k, T, _ in FACTS for kind in KINDS}


def records(g=None):
    g = g or grids()
    config = {"model": "m", "kinds": list(KINDS), "samples": 2, "noise": 3.0, "window": 2, "seed": 0, "filter": "rome"}
    out = []
    for (k, T, (b, e)), low, high in zip(FACTS, LOWS, HIGHS):
        out.append({
            "v": 1, "status": "kept", "known_id": k, "prompt": "p", "subject": "s", "attribute": "a", "config": config,
            "tokens": [f"t{i}" for i in range(T)], "input_ids": list(range(10, 10 + T)), "subject_range": [b, e],
            "target": " a", "target_id": 1, "clean_prob": high, "corrupted_prob": low,
            "grids": {kind: {"prob": g[(k, kind)].tolist()} for kind in KINDS},
        })
    out.append({"v": 1, "status": "skipped", "known_id": 9, "prompt": "x", "subject": "x", "attribute": "y",
                "config": config, "skipped": "wrong-prediction", "detail": "predicts ' z'"})
    return out


def close(a, b):
    return np.allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float), rtol=0, atol=1e-12)


def test_rome_aggregation_pools_rows_with_one_baseline():
    g = grids()
    report = aggregate(records(g), "hand", "rome")
    lam = np.mean(LOWS)
    assert report.aggregate == "rome" and report.kept == 5 and report.skipped == 1
    assert math.isclose(report.corrupted_prob, lam) and math.isclose(report.clean_prob, np.mean(HIGHS))
    assert math.isclose(report.total_effect, np.mean(HIGHS) - np.mean(LOWS))
    for kind in KINDS:
        st = report.stats[kind]
        assert st.facts == 5 and math.isclose(st.baseline, lam) and st.no_first_subsequent == 1
        for group, rows in ROWS.items():
            pooled = np.array([g[(k, kind)][r] for k, _, _ in FACTS for r in rows[k]])  # each row one sample
            c = report.curves[kind][group]
            assert c.rows == len(pooled) and c.n == len(pooled)
            assert c.facts == sum(1 for k in rows if rows[k])
            assert close(c.score, pooled.mean(axis=0))
            assert close(c.mean, pooled.mean(axis=0) - lam)  # AIE = R - λ, the same λ for every group
            assert close(c.std, np.sqrt(((pooled - pooled.mean(axis=0)) ** 2).mean(axis=0)))  # ddof 0, raw scores
            assert close(c.heat, np.maximum(pooled.mean(axis=0) - lam, 0))
    # counts: G1/G3/G6 one row per fact; G2 4 rows from 3 facts; G4 4 (fact 4 has none)
    assert [report.curves["mlp"][g].rows for g in ROWS] == [5, 4, 5, 4, 2, 5]
    # the heatmap's shared scale: the hidden kind's max
    hidden_max = max(max(report.curves["hidden"][grp].heat) for grp in ROWS)
    assert report.vmax_kind == "hidden" and math.isclose(report.vmax, hidden_max)


def test_rome_and_per_fact_differ_only_where_they_should():
    g = grids()
    rome = aggregate(records(g), "hand", "rome")
    per = aggregate(records(g), "hand", "per-fact")
    for kind in KINDS:
        for group in ("first_subject", "last_subject", "last"):  # one row in every fact: equal means
            assert close(rome.curves[kind][group].mean, per.curves[kind][group].mean)
        # first subsequent: fact 4 has no row, so ROME's λ (all 5 facts) is not the mean low of the 4 others
        shift = np.mean(LOWS[:4]) - np.mean(LOWS)
        assert close(np.array(rome.curves[kind]["first_subsequent"].mean) - shift, per.curves[kind]["first_subsequent"].mean)
        # middle: per fact, mean of its rows minus its own low, then over the 3 facts having such rows
        expected = np.mean([g[(0, kind)][2] - LOWS[0], g[(1, kind)][1] - LOWS[1], g[(3, kind)][[1, 2]].mean(axis=0) - LOWS[3]], axis=0)
        assert close(per.curves[kind]["middle_subject"].mean, expected) and per.curves[kind]["middle_subject"].n == 3
        assert not close(rome.curves[kind]["middle_subject"].mean, expected)
        # per-fact std is over the per-fact effects
        effects = np.array([g[(k, kind)][ROWS["last"][k][0]] - low for (k, _, _), low in zip(FACTS, LOWS)])
        assert close(per.curves[kind]["last"].std, effects.std(axis=0))


def test_report_json_and_text_say_what_was_computed(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records()))
    report = load_report(str(path))
    data = json.loads(render_json(report))
    assert data["aggregate"] == "rome" and math.isclose(data["baseline"], np.mean(LOWS))
    assert math.isclose(data["total_effect"]["mean"], np.mean(HIGHS) - np.mean(LOWS))
    assert data["indirect_effect"]["mlp"]["middle_subject"]["rows"] == 4
    assert data["indirect_effect"]["mlp"]["middle_subject"]["facts"] == 3
    assert len(data["indirect_effect"]["hidden"]["last"]["mean"]) == L
    assert data["heatmap"]["vmin"] == 0.0 and data["heatmap"]["vmax_kind"] == "hidden"
    assert data["heatmap"]["values"]["mlp"][2] == report.curves["mlp"]["last_subject"].heat
    assert data["kind_stats"]["mlp"]["no_first_subsequent"] == 1 and data["kind_stats"]["mlp"]["facts"] == 5
    text = render_text(report, plots=False)
    assert "Aggregation: rome, ROME's pooled statistics" in text
    assert "1 fact(s) end with their subject" in text
    assert "Avg Indirect Effect of MLP over 5 prompts" in text and "Avg Indirect Effect of h_i^(l) over 5 prompts" in text
    per = render_text(load_report(str(path), "per-fact"), plots=False)
    assert "Aggregation: per-fact" in per and "not the reference's" in per


def test_sweep_report_cli_aggregate_option(tmp_path, capsys):
    from tracer.cli import run_cli

    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records()))
    assert run_cli(["sweep-report", str(path), "--format", "json", "--aggregate", "per-fact"]) == 0
    assert json.loads(capsys.readouterr().out)["aggregate"] == "per-fact"
    assert run_cli(["sweep-report", str(path), "--aggregate", "pooled"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "invalid choice" in err


# ---- the fact filter ---------------------------------------------------------------------------


def test_filter_rules_on_constructed_cases():
    assert passes_filter("rome", " Paris", "Paris") and passes_filter("rome", "Paris", "Paris")
    assert not passes_filter("rome", " paris", "Paris")  # case-sensitive
    assert not passes_filter("rome", " New", "New York")  # the whole attribute
    assert passes_filter("first-token", " New", "New York", top_id=5, first_token_id=5)
    assert not passes_filter("first-token", "Paris", "Paris", top_id=297, first_token_id=306)
    with pytest.raises(InputError, match="unknown filter"):
        passes_filter("loose", " Paris", "Paris")
    with pytest.raises(InputError, match="unknown filter"):
        SweepConfig(filter="loose")


class _FakeTracer:
    """Just enough of a Tracer for TracerBackend.check: the tiny BPE tokenizer, and a 'model'
    whose top next token is fixed per prompt."""

    def __init__(self, tops: dict[str, int]):
        from tiny import tiny_tokenizer

        self.tokenizer = tiny_tokenizer()
        self.lm = type("LM", (), {"name": "fake"})()
        self.n_layers = 2
        self.context_length = None
        vocab = self.tokenizer.get_vocab_size()
        by_ids = {tuple(self.tokenizer.encode(p).ids): top for p, top in tops.items()}

        class Patchable:
            def forward(self, ids):
                import mlx.core as mx

                rows = []
                for row in ids.tolist():
                    logits = np.zeros(vocab, dtype=np.float32)
                    logits[by_ids[tuple(row)]] = 10.0
                    rows.append(logits)
                return mx.array(np.stack(rows))

        self.patchable = Patchable()


def test_tracer_backend_check_applies_each_rule():
    # tiny BPE: " Paris" = 306, "Paris" = 297, " Parisville" = [306, ...], " Rome" = 330
    cases = [
        ("Its capital city is", "Paris", 306, True, True),  # " Paris": both keep
        ("The city of light is", "Paris", 297, True, False),  # "Paris" without the space: only rome
        ("The town on the river is", "paris", 306, False, False),  # case differs: neither
        ("The village is called", "Parisville", 306, False, True),  # first piece only: only first-token
        ("The eternal city is", "Paris", 330, False, False),  # another word
    ]
    facts = [Fact(i, p.split()[1], attr, p) for i, (p, attr, *_rest) in enumerate(cases)]
    tracer = _FakeTracer({p: top for p, _, top, _, _ in cases})
    for rule, col in (("rome", 3), ("first-token", 4)):
        checks = TracerBackend(tracer, rule).check(facts)
        assert [c.ok for c in checks] == [case[col] for case in cases], rule
        assert [c.rules for c in checks] == [{"rome": case[3], "first-token": case[4], "none": True} for case in cases]
        assert all(c.reason == "wrong-prediction" for c in checks if not c.ok)
    rome = TracerBackend(tracer, "rome").check(facts)
    assert rome[1].target_id == 297 and rome[1].target == "Paris"  # the traced target is the clean argmax
    assert "not 'paris'" in rome[2].detail


def test_old_results_without_a_filter_resume_only_with_first_token(tmp_path):
    from tracer.sweeps.results import prepare_output

    fact = Fact(0, "A", "B", "A is")
    old = {"model": "m", "kinds": ["mlp"], "samples": 2, "noise": "3", "window": 2, "seed": 0}  # no "filter"
    line = {"v": 1, "status": "skipped", "known_id": 0, "prompt": "A is", "subject": "A", "attribute": "B",
            "config": old, "skipped": "wrong-prediction", "detail": ""}
    path = tmp_path / "old.jsonl"
    path.write_text(json.dumps(line) + "\n")
    with pytest.raises(InputError, match=r"--filter first-token \(this run: rome\)"):
        prepare_output(str(path), [fact], SweepConfig(kinds=("mlp",), samples=2, noise="3.0", window=2, seed=0))
    state = prepare_output(str(path), [fact], SweepConfig(kinds=("mlp",), samples=2, noise="3.0", window=2, seed=0, filter="first-token"))
    assert state.config["filter"] == "first-token" and state.skipped == 1
    # lines from before the noise rules (noise k, default_rng draws) are never resumed with new draws
    path.write_text(json.dumps({**line, "config": {**old, "noise": 3.0, "filter": "first-token"}}) + "\n")
    with pytest.raises(InputError, match=r"--noise 3 x embedding std with default_rng draws .* \(this run: v3\)"):
        prepare_output(str(path), [fact], SweepConfig(kinds=("mlp",), noise="v3", samples=2, window=2, seed=0,
                                                      filter="first-token"))


# ---- known_1000 ships with the package ----------------------------------------------------------


def test_known_1000_resolves_by_bare_name_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    facts = load_facts("known_1000")
    assert len(facts) == 1209 and facts[0] == Fact(0, "Vinson Massif", "Antarctica", "Vinson Massif is located in the continent of", "P30")
    assert resolve_facts("known_1000.json") == BUNDLED["known_1000"]
    # a file of that name in the working directory wins
    (tmp_path / "known_1000").write_text(json.dumps([{"known_id": 5, "subject": "A", "attribute": "B", "prompt": "A is"}]))
    assert resolve_facts("known_1000") == "known_1000" and [f.known_id for f in load_facts("known_1000")] == [5]
    with pytest.raises(InputError, match="facts file not found: known_2000"):
        load_facts("known_2000")


def test_sweep_cli_takes_known_1000_by_name(tmp_path, monkeypatch, capsys, tiny_model_dir):
    from tracer.cli import run_cli

    monkeypatch.chdir(tmp_path)
    code = run_cli(["sweep", "known_1000", "--model", str(tiny_model_dir), "--check-only", "--limit", "3"])
    out = capsys.readouterr().out
    assert code == 0 and "of 3 facts predicted correctly (--filter rome:" in out and "under --filter first-token:" in out
