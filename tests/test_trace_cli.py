"""`tracer-tui trace`: the documented JSON schema, CSV, text, and one-line errors with exit 2."""

import csv
import io
import json
import subprocess
import sys

from tracer.cli import run_cli
from tracer.core.tracing import Tracer, run_trace
from tracer.models.load import load_model
from tracer.types import TraceRequest

import numpy as np
import pytest

PROMPT = "The Eiffel Tower is located in the city of"


def _trace(capsys, model_dir, *extra):
    code = run_cli(["trace", "--model", str(model_dir), "--prompt", PROMPT, "--subject", "Eiffel Tower", *extra])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_json_schema_and_values(capsys, tiny_model_dir):
    code, out, err = _trace(capsys, tiny_model_dir, "--format", "json", "--samples", "2", "--window", "3",
                            "--kinds", "hidden,mlp", "--seed", "5")
    assert code == 0, err
    doc = json.loads(out)
    assert set(doc) == {"model", "tokens", "subject_range", "target", "target_tokens", "clean_prob", "corrupted_prob",
                        "recovery_available", "clean_top", "corrupted_top", "alignment", "config", "grids", "summary",
                        "warnings", "timing"}
    assert doc["config"] == {"kinds": ["hidden", "mlp"], "samples": 2, "noise": "s3", "noise_std": doc["config"]["noise_std"],
                             "replace": False, "window": 3, "positions": "all", "seed": 5, "sever": [],
                             "corruption": "noise", "top_k": 5, "ci_width": None}
    assert set(doc["target"]) == {"id", "text"} and set(doc["grids"]) == {"hidden", "mlp"}
    T = len(doc["tokens"])
    for grid in doc["grids"].values():
        assert {"prob", "recovery", "logit_diff"} <= set(grid)
        assert np.array(grid["prob"]).shape == (T, 6)
    # same numbers as the engine called directly
    tracer = Tracer(load_model(str(tiny_model_dir)))
    direct = run_trace(tracer, TraceRequest(PROMPT, "Eiffel Tower", kinds=("hidden", "mlp"), samples=2, window=3, seed=5))
    np.testing.assert_allclose(doc["grids"]["mlp"]["prob"], direct.grids["mlp"]["prob"], atol=1e-7)
    assert doc["config"]["noise_std"] == pytest.approx(direct.noise_std)
    assert direct.noise_std == pytest.approx(3 * tracer.subject_sigma())
    assert doc["subject_range"] == list(direct.subject_range)


def test_csv_is_long_format(capsys, tiny_model_dir):
    code, out, _ = _trace(capsys, tiny_model_dir, "--format", "csv", "--samples", "1", "--kinds", "attn")
    assert code == 0
    assert out.startswith("# model: ")
    rows = list(csv.DictReader(line for line in io.StringIO(out) if not line.startswith("#")))
    assert list(rows[0])[:7] == ["kind", "token_index", "token", "layer", "prob", "recovery", "logit_diff"]
    n_tokens = len({r["token_index"] for r in rows})
    assert len(rows) == n_tokens * 6 and {r["kind"] for r in rows} == {"attn"}


def test_text_output_to_file_with_chosen_positions(capsys, tiny_model_dir, tmp_path):
    target = tmp_path / "grid.txt"
    code, out, err = _trace(capsys, tiny_model_dir, "--positions", "subject-last", "--samples", "1", "--output", str(target),
                            "--metric", "prob")
    assert code == 0 and out == "" and "wrote" in err
    text = target.read_text()
    assert "clean P(target)" in text and "hidden - P(target)" in text and "mlp - P(target)" in text


@pytest.mark.parametrize(
    "args, message",
    [
        (["--prompt", "", "--subject", "x"], "prompt is empty"),
        (["--prompt", PROMPT, "--subject", "Louvre"], "not found"),
        (["--prompt", PROMPT, "--subject", ""], "subject is empty"),
        (["--prompt", PROMPT, "--subject", "Eiffel Tower", "--corrupted-prompt", "Hello"], "tokens"),
        (["--prompt", PROMPT, "--subject", "Eiffel Tower", "--window", "0"], "window"),
        (["--prompt", PROMPT, "--subject", "Eiffel Tower", "--samples", "0"], "samples"),
        (["--prompt", PROMPT, "--subject", "Eiffel Tower", "--kinds", "resdi"], "unknown kind 'resdi' (did you mean 'resid'"),
        (["--prompt", PROMPT, "--subject", "Eiffel Tower", "--kinds", "zzz"], "aliases: output, resid, residual, block = hidden"),
        (["--prompt", PROMPT, "--subject", "Eiffel Tower", "--positions", "4-2"], "runs backwards"),
        (["--prompt", PROMPT, "--subject", "Eiffel Tower", "--positions", "0-40"], "positions 9..40 out of range"),
        (["--prompt", PROMPT, "--subject", "Eiffel Tower", "--top-k", "0"], "top_k must be a whole number from 1 to 100"),
        (["--prompt", PROMPT, "--subject", "Eiffel Tower", "--top-k", "x"], "invalid int value"),
        (["--prompt", PROMPT, "--subject", "Eiffel Tower", "--top", "0"], "--top must be between 1 and 1000"),
        (["--prompt", PROMPT, "--subject", "Eiffel Tower", "--inspect", "mlp"], "--inspect takes KIND:LAYER"),
        (["--prompt", PROMPT, "--subject", "Eiffel Tower", "--inspect", "mlp:x"], "must be integers"),
        (["--prompt", PROMPT, "--subject", "Eiffel Tower", "--inspect", "ffm:1"], "unknown kind 'ffm'"),
        (["--prompt", PROMPT, "--subject", "Eiffel Tower", "--layout", "sideways"], "invalid choice"),
        (["--prompt", PROMPT, "--subject", "Eiffel Tower", "--positions", "40"], "out of range"),
        (["--prompt", PROMPT, "--subject", "Eiffel Tower", "--output", "/nonexistent/dir/x.json"], "cannot write"),
        (["--prompt", "word " * 300, "--subject", "word"], "context"),
        (["--prompt", PROMPT, "--subject", "Eiffel Tower", "--ci-width", "x"], "--ci-width must be a number (got 'x')"),
        (["--prompt", PROMPT, "--subject", "Eiffel Tower", "--ci-width", "2"], "ci_width must be a number between 0 and 1"),
        (["--prompt", PROMPT, "--subject", "Eiffel Tower", "--samples", "auto", "--corrupted-prompt",
          "The Louvre is located in the city of"], "noise corruption only"),
    ],
)
def test_bad_input_is_one_line_exit_2(capsys, tiny_model_dir, args, message):
    code = run_cli(["trace", "--model", str(tiny_model_dir), "--samples", "1", *args])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tracer-tui: error:") and message in lines[0], err


def test_console_script_trace_subprocess(tiny_model_dir):
    proc = subprocess.run(
        [sys.executable, "-m", "tui", "trace", "--model", str(tiny_model_dir), "--prompt", PROMPT,
         "--subject", "Nowhere"], capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == f"tracer-tui: error: subject 'Nowhere' not found in prompt {PROMPT!r}"


@pytest.mark.slow
def test_slow_blas_is_said_plainly(tiny_model_dir):
    import os

    env = dict(os.environ, TRACER_BLAS="none")
    proc = subprocess.run(
        [sys.executable, "-m", "tui", "trace", "--model", str(tiny_model_dir), "--prompt", PROMPT,
         "--subject", "Eiffel Tower", "--samples", "1", "--kinds", "hidden", "--format", "csv"],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "warning: slow BLAS" in proc.stderr and "TRACER_BLAS" in proc.stderr
    assert proc.stdout.startswith("# model: ") and "\nkind,token_index," in proc.stdout


def test_noise_rule_replace_and_sever_flags(capsys, tiny_model_dir):
    code, out, err = _trace(capsys, tiny_model_dir, "--format", "json", "--samples", "2", "--kinds", "hidden",
                            "--positions", "subject-last", "--noise", "0.25", "--replace", "--sever", "mlp,attn")
    assert code == 0, err
    doc = json.loads(out)
    assert (doc["config"]["noise"], doc["config"]["noise_std"], doc["config"]["replace"]) == ("0.25", 0.25, True)
    assert doc["config"]["sever"] == ["mlp", "attn"]
    assert set(doc["grids"]) == {"hidden", "hidden-severed-mlp", "hidden-severed-attn"}
    code, out, _ = _trace(capsys, tiny_model_dir, "--samples", "2", "--kinds", "hidden", "--noise", "u0.3",
                          "--positions", "subject-last")
    assert code == 0 and "corruption: noise u0.3 (uniform on +-0.3, std 0.1732), added" in out


@pytest.mark.parametrize("flags, message", [
    (["--noise", "nan"], "bad noise rule"), (["--noise", "1e39"], "out of range"), (["--seed", "-1"], "seed"),
    (["--samples", "1000000000"], "samples must be between 1 and 10000"), (["--sever", "mlp", "--kinds", "mlp"],
                                                                            "include hidden"),
    (["--noise", "t3", "--samples", "800"], "at most 1000"),
])
def test_bad_settings_are_one_line_exit_2(capsys, tiny_model_dir, flags, message):
    code, out, err = _trace(capsys, tiny_model_dir, *flags)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err, err


def test_npz_option_writes_romes_case_files(capsys, tiny_model_dir, tmp_path):
    out = tmp_path / "cases"
    code, _, err = _trace(capsys, tiny_model_dir, "--samples", "2", "--kinds", "hidden,mlp", "--sever", "attn",
                          "--format", "json", "--npz", str(out))
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["knowledge_0.npz", "knowledge_0_mlp.npz"]
    z = np.load(out / "knowledge_0_mlp.npz", allow_pickle=False)
    tracer = Tracer(load_model(str(tiny_model_dir)))
    direct = run_trace(tracer, TraceRequest(PROMPT, "Eiffel Tower", kinds=("hidden", "mlp"), samples=2))
    np.testing.assert_allclose(z["scores"], direct.grid("mlp"), atol=1e-7)
    assert z["input_ids"].tolist() == direct.token_ids and float(z["low_score"]) == pytest.approx(direct.corrupted_prob)
    code, _, err = _trace(capsys, tiny_model_dir, "--positions", "subject-last", "--npz", str(tmp_path / "x"))
    assert code == 2 and "--npz needs the full grid" in err


def test_top_k_predictions_in_json_csv_and_text(capsys, tiny_model_dir):
    tracer = Tracer(load_model(str(tiny_model_dir)))
    direct = run_trace(tracer, TraceRequest(PROMPT, "Eiffel Tower", kinds=("hidden",), samples=2, top_k=3,
                                            positions="subject-last"))
    flags = ("--kinds", "hidden", "--samples", "2", "--top-k", "3", "--positions", "subject-last")
    code, out, err = _trace(capsys, tiny_model_dir, "--format", "json", *flags)
    assert code == 0, err
    doc = json.loads(out)
    for key, top in (("clean_top", direct.clean_top), ("corrupted_top", direct.corrupted_top)):
        assert [(p["id"], p["text"]) for p in doc[key]] == [(p.token_id, p.text) for p in top]
        assert [p["prob"] for p in doc[key]] == pytest.approx([p.prob for p in top], abs=1e-7)
    assert len(doc["clean_top"]) == 3 and doc["config"]["top_k"] == 3
    assert doc["summary"]["grids"]["hidden"]["peak"]["tokens"] == [direct.subject_range[1] - 1]
    code, out, _ = _trace(capsys, tiny_model_dir, "--format", "csv", *flags)
    clean_line = next(line for line in out.splitlines() if line.startswith("# clean_top: "))
    assert clean_line == "# clean_top: " + "; ".join(f"{json.dumps(p.text)} {p.prob:.6g}" for p in direct.clean_top)
    code, out, _ = _trace(capsys, tiny_model_dir, *flags)
    lines = out.splitlines()
    i = lines.index("top-3 predictions   clean                     corrupted")
    assert lines[i + 1].split()[-1] == f"{direct.corrupted_top[0].prob:.4f}"
    flagged = any(getattr(w, "code", "") in ("small-total-effect", "negative-total-effect", "corruption-kept-target")
                  for w in direct.warnings)
    assert "summary - " in out and ("hidden: largest " if flagged else "hidden: peak ") in out


def test_positions_and_kind_aliases_from_the_command_line(capsys, tiny_model_dir):
    code, out, err = _trace(capsys, tiny_model_dir, "--format", "json", "--samples", "1", "--kinds", "output,self_attn",
                            "--positions", "-3--1")
    assert code == 0, err
    doc = json.loads(out)
    T = len(doc["tokens"])
    assert doc["config"]["kinds"] == ["hidden", "attn"] and doc["config"]["positions"] == [T - 3, T - 2, T - 1]
    code, out, err = _trace(capsys, tiny_model_dir, "--format", "json", "--samples", "1", "--kinds", "mlp",
                            "--positions", "whole")
    assert code == 0 and json.loads(out)["config"]["positions"] == list(range(T))


def test_layers_down_layout_from_the_command_line(capsys, tiny_model_dir):
    code, out, err = _trace(capsys, tiny_model_dir, "--samples", "1", "--kinds", "mlp,attn", "--layout", "layers-down",
                            "--metric", "prob")
    assert code == 0, err
    lines = out.splitlines()
    i = lines.index("P(target) by layer (rows: layers; columns: kinds, each along its peak's row)")
    assert lines[i + 1].startswith("  mlp: token ") and lines[i + 2].split() == ["layer", "mlp", "attn"]
    assert [line.split()[0] for line in lines[i + 3:i + 9]] == ["0", "1", "2", "3", "4", "5"]
    assert max(len(line) for line in lines[i:]) <= 100


def test_inspect_reports_one_patched_cell(capsys, tiny_model_dir):
    code, out, err = _trace(capsys, tiny_model_dir, "--samples", "2", "--kinds", "mlp", "--format", "json",
                            "--inspect", "ffn:2:3", "--top-k", "4")
    from tracer.core.inspection import inspect_cell

    assert code == 0, err
    doc = json.loads(out)
    assert (doc["inspect"]["kind"], doc["inspect"]["layer"], doc["inspect"]["token"]) == ("mlp", 2, 3)
    tracer = Tracer(load_model(str(tiny_model_dir)))
    request = TraceRequest(PROMPT, "Eiffel Tower", kinds=("mlp",), samples=2, top_k=4)
    run = inspect_cell(tracer, request, "mlp", 2, token=3, k=4)
    assert [t["text"] for t in doc["inspect"]["top"]] == [t for t, _ in run.top]
    assert [t["prob"] for t in doc["inspect"]["top"]] == pytest.approx([p for _, p in run.top], abs=1e-6)
    code, out, err = _trace(capsys, tiny_model_dir, "--samples", "2", "--kinds", "mlp", "--format", "csv",
                            "--inspect", "ffn:2:3", "--top-k", "4")
    assert code == 0 and f"\n# inspect mlp:2:3: {json.dumps(run.top[0][0])} " in out
    code, out, err = _trace(capsys, tiny_model_dir, "--samples", "1", "--kinds", "mlp", "--inspect", "mlp:99")
    assert code == 2 and "layer 99 out of range" in err
    code, out, err = _trace(capsys, tiny_model_dir, "--samples", "1", "--kinds", "mlp", "--inspect", "mlp:1:9")
    assert code == 2 and err.strip() == "tracer-tui: error: --inspect token 9 out of range: the prompt has 9 tokens (0..8)"


@pytest.mark.slow
def test_the_tutorials_names_on_the_embedded_model(capsys):
    """Issue 15's failing tutorial commands, as they now behave: `--kinds output,self_attn` and
    `--positions 0-9` (every token restored together), with the predictions shown."""
    code = run_cli(["trace", "--prompt", PROMPT, "--subject", "Eiffel Tower", "--kinds", "output,self_attn",
                    "--positions", "0-9", "--samples", "1", "--top-k", "3", "--format", "json", "--quiet"])
    out, err = capsys.readouterr()
    assert code == 0, err
    doc = json.loads(out)
    assert doc["config"]["kinds"] == ["hidden", "attn"] and doc["config"]["positions"] == list(range(10))
    assert [p["text"] for p in doc["clean_top"]] == [" Paris", " Mont", " Mar"]
    assert doc["clean_top"][0]["prob"] == pytest.approx(0.70154, abs=1e-5) == doc["clean_prob"]
    # restoring the whole residual stream at any layer gives back the clean run
    peak = doc["summary"]["grids"]["hidden"]["peak"]
    assert peak["tokens"] == list(range(10)) and peak["value"] == pytest.approx(100.0, abs=0.01)
    assert doc["summary"]["grids"]["hidden"]["thirds"]["middle"]["mean"] == pytest.approx(100.0, abs=0.01)


def test_samples_auto(capsys, tiny_model_dir):
    """--samples auto: up to 40 samples per cell, run to a 0.02-wide interval; each cell's count in the JSON."""
    code, out, err = _trace(capsys, tiny_model_dir, "--format", "json", "--samples", "auto", "--kinds", "hidden",
                            "--quiet")
    assert code == 0, err
    doc = json.loads(out)
    assert (doc["config"]["samples"], doc["config"]["ci_width"]) == (40, 0.02)
    counts = np.array(doc["grids"]["hidden"]["samples"])
    assert counts.shape == np.array(doc["grids"]["hidden"]["prob"]).shape
    assert set(counts.ravel().tolist()) <= {3, 6, 12, 24, 40}
    low, high = np.array(doc["grids"]["hidden"]["prob_low"]), np.array(doc["grids"]["hidden"]["prob_high"])
    early = counts < 40
    assert np.all(high[early] - low[early] <= 0.02 + 1e-9)


class _InterruptedOnce:
    """A future whose first wait is interrupted (Ctrl-C on the main thread), then the real one."""

    def __init__(self, future):
        self.future, self.interrupted = future, 0

    def result(self, timeout=None):
        if not self.interrupted:
            self.interrupted += 1
            raise KeyboardInterrupt
        return self.future.result(timeout)


def test_ctrl_c_settles_samples_auto_and_exits_0(capsys, tiny_model_dir, monkeypatch):
    """--samples auto: the first Ctrl-C stops refining (every cell keeps its first 3 samples), the
    trace finishes, the output is written and the exit code is 0."""
    from tracer.cli import trace as trace_cli

    real_wait, settles = trace_cli.wait, []

    def interrupted_wait(future, cancel=None, **options):
        if options.get("settle") is None:  # loading the model
            return real_wait(future, cancel, **options)
        settles.append(options["settle"])
        return real_wait(_InterruptedOnce(future), cancel, **options)

    monkeypatch.setattr(trace_cli, "wait", interrupted_wait)
    code, out, err = _trace(capsys, tiny_model_dir, "--format", "json", "--samples", "auto", "--ci-width", "0.001",
                            "--kinds", "hidden", "--quiet")
    assert code == 0, err
    assert len(settles) == 1 and settles[0].is_set()
    assert "interrupted: no more samples; every cell keeps the ones it has (Ctrl-C again to cancel)" in err
    doc = json.loads(out)
    assert set(np.array(doc["grids"]["hidden"]["samples"]).ravel().tolist()) == {3, 40}
    assert "refining-stopped" in [w["code"] for w in doc["warnings"]]
    assert "warning: refining stopped at the user's word: " in err


def test_a_second_ctrl_c_cancels_a_settled_wait():
    import threading
    from concurrent.futures import Future

    from tracer.cli.common import wait

    class Interrupted:
        calls = 0

        def result(self, timeout=None):
            self.calls += 1
            if self.calls <= 2:
                raise KeyboardInterrupt
            return None  # the engine's answer once cancelled

    settle, cancel = threading.Event(), threading.Event()
    with pytest.raises(KeyboardInterrupt):
        wait(Interrupted(), cancel, settle=settle)
    assert settle.is_set() and cancel.is_set()
    done, untouched = Future(), threading.Event()
    done.set_result("result")
    assert wait(done, cancel, settle=untouched) == "result" and not untouched.is_set()  # no Ctrl-C
