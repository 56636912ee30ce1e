"""tracer.robustness: the variants, their peaks against separate traces, the verdicts, the substitutes, the CLI."""

import json
import math
import textwrap
import threading

import tracer
from tracer.analyses.robustness import (
    LAYER_TOLERANCE,
    Peak,
    RobustnessResult,
    judge,
    overall_verdict,
    pick_substitutes,
)
from tracer.cli import run_cli
from tracer.inputs.facts import Fact
from tracer.inputs.prompts import tokenize

import numpy as np
import pytest

PROMPT = "The Eiffel Tower is located in the city of"
SUBJECT = "Eiffel Tower"
# with the tiny tokenizer " Eiffel Tower", " Louvre Museum", " Rome Museum", " Berlin Tower" and " Paris France" are
# two tokens each; " Space Needle" and " Tokyo Tower" are longer
FACTS = [
    Fact(0, "Eiffel Tower", "Paris", "The Eiffel Tower is in", "P131"),
    Fact(1, "Space Needle", "Seattle", "The Space Needle is in", "P131"),
    Fact(2, "Louvre Museum", "Paris", "The Louvre Museum is in", "P131"),
    Fact(3, "Berlin Tower", "Germany", "Berlin Tower is in", "P17"),
    Fact(4, "Rome Museum", "Rome", "The Rome Museum is in", "P131"),
    Fact(5, "Tokyo Tower", "Japan", "Tokyo Tower is in", "P17"),
    Fact(6, "EIFFEL TOWER", "Paris", "EIFFEL TOWER is in", "P131"),  # the subject itself (case aside): never drawn
    Fact(7, "Paris France", "Europe", "Paris France is in", "P30"),
    Fact(8, "Louvre Museum", "France", "The Louvre Museum is in the country", "P17"),  # a repeated subject
]
OPTIONS = dict(kinds=("mlp",), samples=2, window=3, seed=1, facts=FACTS)


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return tracer.load(str(tiny_model_dir))


@pytest.fixture(scope="module")
def result(model):
    return tracer.robustness(model, PROMPT, SUBJECT, substitutes=2, **OPTIONS)


def test_substitutes_keep_the_token_length_and_prefer_the_relation(model):
    tok = model.tokenizer
    clean = tokenize(tok, PROMPT)
    picked = pick_substitutes(tok, PROMPT, SUBJECT, FACTS, 10, seed=1)
    names = [s.subject for s in picked]
    assert sorted(names[:2]) == ["Louvre Museum", "Rome Museum"]  # the fact's relation (P131) first
    assert sorted(names[2:]) == ["Berlin Tower", "Paris France"]
    assert [s.same_relation for s in picked] == [True, True, False, False]
    for s in picked:
        ids = tokenize(tok, s.prompt).ids
        assert s.prompt == PROMPT.replace(SUBJECT, s.subject)
        assert len(ids) == len(clean) and ids[1:3] != clean.ids[1:3] and ids[3:] == clean.ids[3:]
    assert pick_substitutes(tok, PROMPT, SUBJECT, FACTS, 10, seed=1) == picked  # deterministic
    orders = {tuple(s.subject for s in pick_substitutes(tok, PROMPT, SUBJECT, FACTS, 10, seed=s)) for s in range(8)}
    assert len(orders) > 1  # the seed shuffles
    assert [s.subject for s in pick_substitutes(tok, PROMPT, SUBJECT, FACTS, 1, seed=1)] == names[:1]
    # a subject no fact has: any relation, none marked as the same
    prompt = "The Louvre Museum is located in the city of"
    other = pick_substitutes(tok, prompt, "Louvre Museum", [f for f in FACTS if f.subject != "Louvre Museum"], 10)
    assert {s.subject for s in other} == {"Eiffel Tower", "Berlin Tower", "Rome Museum", "Paris France"}
    assert not any(s.same_relation for s in other) or {f.relation_id for f in FACTS if f.subject == "Louvre Museum"}


def test_the_variants(model, result):
    names = [r.variant.name for r in result.runs]
    uniform = names[3]
    assert names[:3] == ["noise s3", "noise s1.5", "noise s6"] and names[4] == "replace s3"
    assert uniform.startswith("uniform u") and result.runs[3].variant.noise == uniform.split()[1]
    assert sorted(names[5:]) == ["substitute 'Louvre Museum'", "substitute 'Rome Museum'"]
    # the uniform noise has the std of s3: h / sqrt(3) = 3 sigma
    h = float(uniform.split()[1][1:])
    assert h / math.sqrt(3) == pytest.approx(3 * model.subject_sigma(), rel=1e-3)
    assert result.runs[4].variant.replace and not result.runs[0].variant.replace
    assert all(r.variant.corruption == "substitution" for r in result.runs[5:])
    # one target for all
    targets = {r.result.target_id for r in result.runs}
    assert len(targets) == 1 and result.target_text == result.runs[0].result.target_text
    assert len({r.clean_prob for r in result.runs}) == 1


def test_each_peak_equals_a_separate_trace(model, result):
    for run in result.runs:
        separate = tracer.trace(model, PROMPT, SUBJECT, kinds=("mlp",), samples=2, window=3, seed=1,
                                **run.variant.request_options())
        grid = separate.grid("mlp")
        # the subject site: rows restoring a subject token, cells whose 95% interval holds p_corrupted left out
        b, e = separate.subject_range
        p0 = separate.corrupted_prob
        allowed = np.ones(grid.shape, dtype=bool)
        if "prob_low" in separate.grids["mlp"]:  # noise variants (a substitution has no interval)
            allowed = ~((separate.grid("mlp", "prob_low") <= p0) & (p0 <= separate.grid("mlp", "prob_high")))
        allowed[:b], allowed[e:] = False, False
        peak = run.peaks["mlp"]
        if not allowed.any():
            assert peak is None, run.variant.name  # every subject cell within noise: no site
            continue
        row, layer = np.unravel_index(int(np.argmax(np.where(allowed, grid, -np.inf))), grid.shape)
        assert (peak.positions, peak.layer) == ((int(row),), int(layer)), run.variant.name
        assert peak.prob == pytest.approx(grid[row, layer], abs=1e-7)
        assert peak.token == separate.tokens[row]
        assert run.corrupted_prob == pytest.approx(separate.corrupted_prob, abs=1e-7)
        assert run.total_effect == pytest.approx(separate.clean_prob - separate.corrupted_prob, abs=1e-7)
        assert run.warnings == [w.code for w in separate.warnings if w.code != "slow-blas"]
        gap = separate.clean_prob - separate.corrupted_prob
        if gap >= 0.05:
            assert peak.recovery == pytest.approx(100 * (peak.prob - separate.corrupted_prob) / gap, rel=1e-6)
        else:
            assert peak.recovery is None
    verdict = result.verdicts["mlp"]
    assert verdict == judge("mlp", [r.peaks["mlp"] for r in result.runs])
    row = verdict.peak.positions[0]
    for run in result.runs:  # the curve: P(target) per layer at the modal peak's token
        assert run.curves["mlp"] == pytest.approx(list(run.result.grid("mlp")[row]), abs=1e-12)


def test_text_and_json(result):
    text = result.to_text()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 100
    assert lines[0].startswith("robustness: 'The Eiffel Tower is located in the city of' (subject 'Eiffel Tower')")
    assert any(line.startswith("noise s3 ") for line in lines) and any(line.startswith("replace s3") for line in lines)
    wrapped = [line for t in (result.verdicts["mlp"].text, result.verdict)
               for line in textwrap.wrap(t, 100, subsequent_indent="  ", break_on_hyphens=False)]
    assert lines[-len(wrapped):] == wrapped and wrapped[0].startswith("mlp: peak at ")
    plot = lines[lines.index(next(line for line in lines if line.startswith("mlp: peak layer"))) + 2:]
    for run, line in zip(result.runs, plot):  # the peak's layer marked on the axis (6 layers: one column each)
        axis = line[29:35]
        if run.peaks["mlp"] is None:  # every subject cell within noise
            assert axis == "······" and line.endswith("no site above the noise"), line
            continue
        assert axis[run.peaks["mlp"].layer] in "ox" and axis.count("·") == 5, line
    doc = json.loads(json.dumps(result.to_dict()))
    assert doc["kinds"] == ["mlp"] and doc["tolerance"] == LAYER_TOLERANCE and doc["verdict"] == result.verdict
    assert [v["name"] for v in doc["variants"]] == [r.variant.name for r in result.runs]
    first = doc["variants"][0]
    assert first["noise"] == "s3" and first["replace"] is False and first["peaks"]["mlp"] == (
        None if result.runs[0].peaks["mlp"] is None else json.loads(json.dumps(result.runs[0].peaks["mlp"].to_dict())))
    assert doc["variants"][-1]["corrupted_prompt"].endswith(" is located in the city of")
    assert doc["verdicts"]["mlp"]["n_variants"] == 7 and doc["verdicts"]["mlp"]["text"] == result.verdicts["mlp"].text


def _peak(pos, layer, prob=0.5):
    return Peak((pos,), f"t{pos}", layer, prob, None)


def test_verdict_logic_on_hand_built_peaks():
    v = judge("mlp", [_peak(3, 5)] * 6 + [_peak(3, 7)])
    assert (v.peak.layer, v.n_same, v.n_near, v.n_same_token, v.label) == (5, 6, 7, 7, "stable")
    assert v.text == "mlp: peak at 't3' layer 5 under 6 of 7 corruptions; same token, layer within ±2 under 7 of 7 (stable)"
    v = judge("attn", [_peak(3, 5), _peak(3, 5), _peak(5, 2), _peak(5, 2), _peak(3, 8), _peak(3, 6)])
    assert (v.peak.positions, v.peak.layer) == ((3,), 5)  # a tie: the earlier variant's peak
    assert (v.n_same, v.n_near, v.n_same_token, v.label) == (2, 3, 4, "moves")
    v = judge("hidden", [_peak(1, 1), _peak(1, 3), _peak(1, 2), _peak(2, 2), _peak(1, 1), None])
    assert (v.peak.layer, v.n_same, v.n_near, v.n_variants, v.label) == (1, 2, 4, 6, "mostly stable")
    assert judge("mlp", [None, None]).label == "no peak" and "no peak" in judge("mlp", [None]).text
    faint = judge("mlp", [Peak((3,), "t3", 5, 0.1, 8.2), Peak((3,), "t3", 5, 0.1, 3.0), _peak(3, 5)])
    assert faint.max_recovery == 8.2 and faint.weak and faint.text.endswith(
        "(stable); weak: at most 8% recovery, so where it lies means little")
    assert not judge("mlp", [Peak((3,), "t3", 5, 0.1, 10.0)]).weak and not judge("mlp", [_peak(3, 5)]).weak
    assert overall_verdict([faint], [type("R", (), {"weak": False})()]).endswith(
        "; no clear site (every peak under 10% recovery): mlp")
    assert judge("mlp", [_peak(3, 5), _peak(3, 8)], tolerance=3).label == "stable"

    class Run:  # what overall_verdict reads of a VariantRun
        def __init__(self, name, weak):
            self.variant, self.weak = type("V", (), {"name": name})(), weak

    runs = [Run("s3", False), Run("s6", False)]
    stable, moves = judge("mlp", [_peak(3, 5)] * 2), judge("attn", [_peak(3, 5), _peak(1, 1)])
    assert overall_verdict([stable], runs) == "verdict: the peak holds under all 2 corruptions for every kind (±2 layers)"
    assert overall_verdict([stable, moves], runs + [Run("u1", True)]) == (
        "verdict: the peak holds: mlp; moves: attn; 1 corruption(s) barely change the prediction (u1): "
        "their peaks mean little")


def test_bad_input(model):
    with pytest.raises(tracer.InputError, match="substitutes must be"):
        tracer.robustness(model, PROMPT, SUBJECT, substitutes=-1)
    with pytest.raises(tracer.InputError, match="not found in prompt"):
        tracer.robustness(model, PROMPT, "Louvre", **OPTIONS)
    with pytest.raises(tracer.InputError, match="unknown kind"):
        tracer.robustness(model, PROMPT, SUBJECT, kinds=("mlpp",))


def test_names_are_the_api_functions():
    import sys

    from tracer.analyses.robustness import robustness  # noqa: F401
    from tracer.core.inspection import inspect_cell  # noqa: F401  - importing the modules leaves the names the functions

    assert callable(tracer.robustness) and callable(tracer.inspect)
    assert "robustness" in tracer.__all__ and "Args:" in tracer.robustness.__doc__
    assert tracer.robustness.__module__ == tracer.inspect.__module__ == "tracer.api"
    assert sys.modules["tracer.analyses.robustness"].RobustnessResult is RobustnessResult


def test_engine_robustness_progress_and_cancel(tiny_model_dir):
    from tracer.engine import Engine
    from tracer.events import Cancelled, RobustnessProgress, RobustnessWork

    engine = Engine(str(tiny_model_dir))
    try:
        events = []
        done = engine.robustness(PROMPT, SUBJECT, on_event=events.append, positions="subject-last", substitutes=1,
                                 **{k: v for k, v in OPTIONS.items()}).result(timeout=600)
        assert [r.variant.name for r in done.runs][:3] == ["noise s3", "noise s1.5", "noise s6"] and len(done.runs) == 6
        progress = [e for e in events if isinstance(e, RobustnessProgress)]
        assert [(e.index, e.done) for e in progress[:2]] == [(0, False), (1, True)] and progress[-1].index == 6
        # the work: each corruption weighed by its predicted token-layers, counted within by its trace's events
        works = [e.work_done for e in events if isinstance(e, (RobustnessProgress, RobustnessWork))]
        total = progress[0].work_total
        assert works == sorted(works) and works[0] == 0 and progress[-1].work_done == total > 0
        shares = [b.work_done - a.work_done for a, b in zip(progress[::2], progress[1::2])]
        from tracer.core.tracing import predicted_work
        requests = [r.result.request for r in done.runs]
        assert shares == engine.submit(lambda: [predicted_work(engine._tracer, q) for q in requests]).result()
        assert any(isinstance(e, RobustnessWork) and e.index == 0 and 0 < e.work_done < shares[0] for e in events)
        peaks = [r.peaks["mlp"] for r in done.runs if r.peaks["mlp"] is not None]  # 2 samples: some within noise
        assert peaks and all(p.positions == (2,) for p in peaks)  # subject-last
        cancel, events = threading.Event(), []
        cancel.set()
        assert engine.robustness(PROMPT, SUBJECT, on_event=events.append, cancel=cancel).result(timeout=60) is None
        assert isinstance(events[-1], Cancelled)
    finally:
        engine.close()


def _cli(capsys, model_dir, *extra):
    code = run_cli(["robustness", "--model", str(model_dir), "--prompt", PROMPT, "--subject", SUBJECT, *extra])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_end_to_end(capsys, tiny_model_dir, tmp_path):
    facts = tmp_path / "facts.json"
    facts.write_text(json.dumps([{"known_id": f.known_id, "subject": f.subject, "attribute": f.attribute,
                                  "prompt": f.prompt, "relation_id": f.relation_id} for f in FACTS]))
    base = ["--kinds", "mlp", "--samples", "2", "--window", "3", "--facts", str(facts), "--quiet"]
    code, out, err = _cli(capsys, tiny_model_dir, *base, "--format", "json", "--substitutes", "1",
                          "--positions", "subject-last")
    assert code == 0, err
    doc = json.loads(out)
    assert len(doc["variants"]) == 6 and doc["variants"][5]["substitute"] in ("Louvre Museum", "Rome Museum")
    assert doc["positions"] == [2] and doc["verdict"].startswith("verdict: ")
    target = tmp_path / "out.txt"
    code, out, err = _cli(capsys, tiny_model_dir, *base, "--substitutes", "0", "--output", str(target))
    assert code == 0 and out == "" and f"wrote {target}" in err
    text = target.read_text()
    # 2 samples, noise only: every subject cell's interval holds p_corrupted, so no site to track
    assert "mlp: no peak (no subject cell above the noise" in text and "\nverdict: the peak " in text and text.endswith("their peaks mean little\n")
    for bad, message in ((["--samples", "x"], "--samples must be a whole number"),
                         (["--substitutes", "99"], "--substitutes must be from 0 to 20"),
                         (["--kinds", "nope"], "unknown kind"),
                         (["--positions", "1,a"], "positions"),
                         (["--format", "csv"], "invalid choice"),
                         (["--output", str(tmp_path / "missing" / "x.txt")], "cannot write output file"),
                         (["--facts", str(tmp_path / "none.json")], "facts file")):
        code, out, err = _cli(capsys, tiny_model_dir, *bad)
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and message in err, (bad, err)
    code, out, err = _cli(capsys, tiny_model_dir, "--subject", "Louvre")
    assert code == 2 and "not found in prompt" in err and "Traceback" not in err


def test_notes_say_when_substitutes_fall_short(model, result):
    assert result.notes == []
    facts = [f for f in FACTS if f.subject.casefold() != SUBJECT.casefold()]
    short = tracer.robustness(model, PROMPT, SUBJECT, kinds=("mlp",), positions="subject-last", samples=1, window=3,
                              substitutes=5, facts=facts)
    assert len(short.runs) == 5 + 4 and not any(r.variant.same_relation for r in short.runs[5:])
    assert short.notes[0].startswith("4 of 5 substitutes found")
    assert short.notes[1].startswith("substitutes of any relation: no fact has the subject 'Eiffel Tower'")
    assert "note: 4 of 5 substitutes found" in short.to_text()
