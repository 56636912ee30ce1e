"""ROME's per-case .npz files: results file -> directory -> the same report; no pickle anywhere."""

from __future__ import annotations

import json
import os

from tracer.errors import InputError
from tracer.sweeps.aggregate import load_report
from tracer.sweeps.npz import export_results, read_npz_dir, trace_to_npz

import numpy as np
import pytest
from test_sweep_rome import FACTS, KINDS, records

FIELDS = {"scores", "low_score", "high_score", "input_ids", "input_tokens", "subject_range", "answer", "window",
          "correct_prediction", "kind"}


def results_file(tmp_path) -> str:
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records()))
    return str(path)


def load_plain(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def test_export_writes_rome_files_without_pickle(tmp_path):
    out = tmp_path / "cases"
    files, kept, skipped, warnings = export_results(results_file(tmp_path), str(out))
    assert (files, kept, skipped, warnings) == (2 * 5 + 2, 5, 1, [])
    names = sorted(os.listdir(out))
    assert "knowledge_0.npz" in names and "knowledge_0_mlp.npz" in names and "knowledge_9_mlp.npz" in names
    assert not any(n.endswith("_attn.npz") for n in names) and len(names) == files
    for name in names:
        z = load_plain(out / name)  # every file reads with allow_pickle=False
        assert all(a.dtype != object for a in z.values())
    z = load_plain(out / "knowledge_1_mlp.npz")
    assert set(z) == FIELDS
    rec = records()[1]
    assert z["scores"].shape == (4, 4) and np.array_equal(z["scores"], np.array(rec["grids"]["mlp"]["prob"]))
    assert float(z["low_score"]) == 0.20 and float(z["high_score"]) == 0.50
    assert z["input_ids"].tolist() == [10, 11, 12, 13] and z["input_tokens"].tolist() == ["t0", "t1", "t2", "t3"]
    assert z["subject_range"].tolist() == [0, 3] and str(z["answer"]) == " a" and int(z["window"]) == 2
    assert bool(z["correct_prediction"]) and str(z["kind"]) == "mlp"
    assert str(load_plain(out / "knowledge_1.npz")["kind"]) == ""  # hidden
    skipped_file = load_plain(out / "knowledge_9.npz")  # a skipped fact: only correct_prediction=False
    assert set(skipped_file) == {"correct_prediction"} and not bool(skipped_file["correct_prediction"])


@pytest.mark.parametrize("mode", ["rome", "per-fact"])
def test_npz_directory_reports_the_same_numbers_as_its_results_file(tmp_path, mode):
    src = results_file(tmp_path)
    export_results(src, str(tmp_path / "cases"))
    a, b = load_report(src, mode), load_report(str(tmp_path / "cases"), mode)
    assert (b.kept, b.skipped, b.kinds, b.n_layers) == (a.kept, a.skipped, a.kinds, a.n_layers) == (5, 1, list(KINDS), 4)
    assert np.isclose(b.total_effect, a.total_effect, rtol=1e-13) and np.isclose(b.corrupted_prob, a.corrupted_prob, rtol=1e-13)
    assert np.isclose(b.vmax, a.vmax, rtol=1e-13)
    for kind in KINDS:
        for group, c in a.curves[kind].items():
            d = b.curves[kind][group]
            assert (d.rows, d.facts, d.n) == (c.rows, c.facts, c.n)
            for field in ("mean", "std", "score", "heat"):
                assert np.allclose(getattr(d, field), getattr(c, field), rtol=1e-13, atol=0), (kind, group, field)
    assert b.config["window"] == 2


def test_cli_export_then_report_a_directory(tmp_path, capsys):
    from tracer.cli import run_cli

    src, out = results_file(tmp_path), str(tmp_path / "cases")
    assert run_cli(["sweep-export-npz", src, out]) == 0
    assert "12 files in" in capsys.readouterr().out
    assert run_cli(["sweep-report", out, "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["facts"]["kept"] == 5 and data["aggregate"] == "rome"
    # a second export into the same directory is refused, as one line
    assert run_cli(["sweep-export-npz", src, out]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "already holds 12 knowledge_*.npz files" in err


def test_bad_npz_input_is_one_clear_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="holds no knowledge_"):
        read_npz_dir(str(empty))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "knowledge_0.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not a readable .npz"):
        read_npz_dir(str(bad))
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    np.savez(pickled / "knowledge_0.npz", correct_prediction=np.array(True), kind=np.array(None, dtype=object))
    with pytest.raises(InputError, match="pickled objects"):
        read_npz_dir(str(pickled))
    with pytest.raises(InputError, match="is a file"):
        export_results(results_file(tmp_path), str(tmp_path / "r.jsonl"))


def test_a_single_trace_to_npz(tmp_path):
    from tracer.types import TraceRequest

    from test_sweep import FakeBackend

    result = FakeBackend().trace(TraceRequest("The Big Ben is in", "Big Ben", kinds=("hidden", "attn"), window=4), None, None)


    paths = trace_to_npz(result, str(tmp_path / "one"), known_id=7, input_ids=[1, 2, 3, 4, 5])
    assert sorted(os.path.basename(p) for p in paths) == ["knowledge_7.npz", "knowledge_7_attn.npz"]
    z = load_plain(paths[1])
    assert z["scores"].tolist() == result.grids["attn"]["prob"] and z["subject_range"].tolist() == [1, 3]
    assert int(z["window"]) == 4 and str(z["kind"]) == "attn" and z["input_ids"].tolist() == [1, 2, 3, 4, 5]
    with pytest.raises(InputError, match="cannot name a file"):
        trace_to_npz(result, str(tmp_path / "two"), known_id="../x")


def test_sweep_lines_store_input_ids_for_the_npz_files(tmp_path, tiny_model_dir):
    from tracer.core.tracing import Tracer
    from tracer.inputs.facts import Fact
    from tracer.inputs.prompts import tokenize
    from tracer.models.load import load_model
    from tracer.sweeps.results import SweepConfig
    from tracer.sweeps.run import TracerBackend, run_sweep

    tracer = Tracer(load_model(str(tiny_model_dir)))
    prompt = "The capital of Germany is"
    top = tracer.predict([prompt])[0][0]
    facts = [Fact(0, "Germany", top.text.strip(), prompt)]
    out = str(tmp_path / "r.jsonl")
    summary = run_sweep(TracerBackend(tracer), facts, out, SweepConfig(kinds=("mlp",), samples=2, window=2))
    assert summary.kept == 1
    export_results(out, str(tmp_path / "cases"))
    z = load_plain(tmp_path / "cases" / "knowledge_0_mlp.npz")
    assert z["input_ids"].tolist() == tokenize(tracer.tokenizer, prompt).ids
    assert str(z["answer"]) == top.text and z["scores"].shape == (len(z["input_ids"]), tracer.n_layers)


assert FACTS  # the hand-built facts come from test_sweep_rome
