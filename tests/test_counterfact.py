"""ROME's counterfact records as sweep facts, and the sweep report by relation."""

import json
import math

from tracer.errors import InputError
from tracer.inputs.facts import Fact
from tracer.inputs.facts_file import load_facts
from tracer.render.sweep_report import render_relations
from tracer.sweeps.aggregate import aggregate, load_relation_reports

import pytest
from test_sweep import TESTS, synthetic_records, write_json

SAMPLE = f"{TESTS}/counterfact_sample.json"


def test_counterfact_sample_reads_as_known_1000_facts():
    facts = load_facts(SAMPLE)
    assert facts == [
        Fact(0, "Danielle Darrieux", "French", "The mother tongue of Danielle Darrieux is", "P103"),
        Fact(1, "The Eiffel Tower", "Paris", "The Eiffel Tower is located in the city of", "P131"),
        Fact(2, "Michael Jordan", "basketball", "Michael Jordan plays the sport of", "P641"),
        Fact(3, "The Colosseum", "Rome", "The Colosseum is located in the city of", "P131"),
    ]
    assert {f.mode for f in facts} == {"noise"}  # traced with noise, as known_1000


@pytest.mark.parametrize("rewrite, message", [
    ({"prompt": "{} is in", "subject": "A"}, "requested_rewrite has no 'target_true.str'"),
    ({"prompt": "{} is in", "target_true": {"str": "B"}}, "requested_rewrite has no 'subject'"),
    ({"prompt": "{0} is in {}", "subject": "A", "target_true": {"str": "B"}}, "template must be a string with one {}"),
    ("A is in B", "requested_rewrite must be an object"),
])
def test_bad_counterfact_records_are_one_line_naming_the_row(tmp_path, rewrite, message):
    path = write_json(tmp_path / "cf.json", [{"case_id": 7, "requested_rewrite": rewrite}])
    with pytest.raises(InputError, match="fact #0") as info:
        load_facts(path)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_counterfact_facts_get_the_same_verdicts_as_their_known_1000_rows(tmp_path, tiny_lm):
    from tracer.core.tracing import Tracer
    from tracer.sweeps.run import TracerBackend, count_known

    tracer_ = Tracer(tiny_lm)
    prompt = "The capital of Germany is"
    top = tracer_.predict([prompt])[0][0].text  # the tiny model's answer: a fact it "knows"
    records = json.load(open(SAMPLE)) + [{"case_id": 9, "requested_rewrite": {
        "prompt": "The capital of {} is", "subject": "Germany", "relation_id": "P36",
        "target_true": {"str": top.strip()}, "target_new": {"str": "x"}}}]
    cf = load_facts(write_json(tmp_path / "cf.json", records))
    known = load_facts(write_json(tmp_path / "known.json", [
        {"known_id": f.known_id, "subject": f.subject, "attribute": f.attribute, "prompt": f.prompt,
         "relation_id": f.relation_id} for f in cf]))
    assert cf == known
    for rule in ("rome", "first-token", "none"):
        backend = TracerBackend(tracer_, rule)
        _, _, checks_cf = count_known(backend, cf)
        _, _, checks_known = count_known(backend, known)
        assert [c.ok for c in checks_cf] == [c.ok for c in checks_known]
        assert checks_cf[-1].ok  # ROME's rule: the stripped top token equals target_true's str
    assert [c.ok for c in count_known(TracerBackend(tracer_, "none"), cf)[2]] == [True] * 5


def _by_relation_records():
    a, b, c, skipped = synthetic_records()
    a["relation_id"], b["relation_id"], skipped["relation_id"] = "P17", "P17", "P103"
    return [a, b, c, skipped]  # c has no relation_id


def test_report_by_relation_aggregates_each_relation_alone(tmp_path):
    records = _by_relation_records()
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    reports = load_relation_reports(str(path), "per-fact")
    assert list(reports) == ["P103", "P17", "(none)"]
    assert (reports["P17"].kept, reports["P103"].kept, reports["P103"].skipped, reports["(none)"].kept) == (2, 0, 1, 1)
    # P17 holds A and B only: the same numbers as aggregating those two records
    alone = aggregate(records[:2], str(path), "per-fact")
    assert reports["P17"].curves["mlp"]["last_subject"].mean == alone.curves["mlp"]["last_subject"].mean
    # by hand: A's last subject row (3) and B's (0): [(0.1 + 0.3) / 2, (0.5 + 0.3) / 2, (0.1 + 0) / 2]
    assert all(math.isclose(x, e) for x, e in zip(reports["P17"].curves["mlp"]["last_subject"].mean, [0.2, 0.4, 0.05]))
    assert math.isclose(reports["P17"].total_effect, (0.8 + 0.3) / 2)
    text = render_relations(reports, "text")
    rows = {line.split()[0]: line.split() for line in text.splitlines()[3:]}
    assert rows["P17"][:3] == ["P17", "2", "0"] and rows["P17"][5] == "0.5500" and rows["P17"][6:] == ["0.4000", "(1)"]
    assert rows["P103"][:3] == ["P103", "0", "1"] and rows["P103"][-1] == "-"
    doc = json.loads(render_relations(reports, "json"))
    assert doc["by"] == "relation_id" and list(doc["relations"]) == ["P103", "P17", "(none)"]
    csv_rows = render_relations(reports, "csv").splitlines()
    assert csv_rows[0].startswith("relation,kind,group,layer,mean")
    assert sum(r.startswith("P17,mlp,last_subject,") for r in csv_rows) == 3


def test_sweep_report_cli_by_relation(tmp_path, capsys):
    from tracer.cli import run_cli

    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _by_relation_records()))
    assert run_cli(["sweep-report", str(path), "--by", "relation", "--aggregate", "per-fact"]) == 0
    out = capsys.readouterr().out
    assert "by relation: 3 relations" in out and out.splitlines()[3].split()[0] == "P103"
    assert run_cli(["sweep-report", str(path), "--by", "relation", "--plots", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == "tracer-tui: error: --by relation writes tables only; drop --plots"
