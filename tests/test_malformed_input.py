"""Malformed input gets one clear message (CLI: one stderr line
'tracer-tui: error: ...', exit 2; API: a TracerError), never a traceback; a sweep records a
bad fact as skipped and goes on."""

import json
import os
import subprocess
import sys
from pathlib import Path

import tracer
from tracer.cli import run_cli
from tracer.errors import InputError
from tracer.inputs.facts_file import load_facts
from tracer.sweeps.results import SweepConfig
from tracer.sweeps.run import TracerBackend, run_sweep

import pytest
from cli_helpers import one_error_line

SCRIPT = str(Path(sys.executable).with_name("tracer-tui"))
PROMPT = "The Eiffel Tower is located in the city of"






# ---- item 2: a fact the tokenizer cannot encode is skipped, the sweep goes on ---------------


def _facts_file(tmp_path, facts) -> str:
    path = tmp_path / "facts.json"
    path.write_text(json.dumps(facts))  # json escapes the lone surrogate as \ud800
    return str(path)


def test_lone_surrogate_fact_is_skipped_and_the_sweep_resumes(tmp_path, tiny_tracer):
    facts = [
        {"known_id": 0, "subject": "Eiffel Tower", "attribute": "Paris", "prompt": "A \ud800 b Eiffel Tower is in"},
        {"known_id": 1, "subject": "Louvre", "attribute": "Paris", "prompt": "The Louvre is in"},
        {"known_id": 2, "subject": "Col\udcffosseum", "attribute": "Rome", "prompt": "The Colosseum is in"},
    ]
    path = _facts_file(tmp_path, facts)
    assert "\\ud800" in Path(path).read_text()
    out = str(tmp_path / "results.jsonl")
    config = SweepConfig(kinds=("mlp",), samples=1, window=2, filter="first-token")
    summary = run_sweep(TracerBackend(tiny_tracer), load_facts(path), out, config)
    lines = [json.loads(line) for line in Path(out).read_text(encoding="utf-8").splitlines()]
    by_id = {line["known_id"]: line for line in lines}
    assert set(by_id) == {0, 1, 2}
    for k in (0, 2):
        assert by_id[k]["status"] == "skipped" and by_id[k]["skipped"] == "bad-input"
        assert "not valid Unicode text" in by_id[k]["detail"] and "\n" not in by_id[k]["detail"]
    assert by_id[0]["prompt"] == facts[0]["prompt"]  # the line holds the fact as given
    assert summary.skipped_by_reason.get("bad-input") == 2
    # resuming the same file does nothing more and does not die
    again = run_sweep(TracerBackend(tiny_tracer), load_facts(path), out, config)
    assert again.checked_now == 0 and again.traced_now == 0
    assert len(Path(out).read_text(encoding="utf-8").splitlines()) == 3


def test_a_fact_the_trace_refuses_is_skipped(tmp_path, tiny_tracer):
    """The trace path too: a backend whose check passes a fact that the trace refuses."""

    class PassAll(TracerBackend):
        def check(self, facts):
            from tracer.sweeps.results import Check

            return [Check(True, target_id=1, target="x", top=(1, "x", 0.5), target_prob=0.5) for _ in facts]

    facts = [{"known_id": 7, "subject": "b", "attribute": "Paris", "prompt": "a \ud800 b"}]
    out = str(tmp_path / "r.jsonl")
    run_sweep(PassAll(tiny_tracer), load_facts(_facts_file(tmp_path, facts)), out,
              SweepConfig(kinds=("mlp",), samples=1, window=2))
    (line,) = [json.loads(x) for x in Path(out).read_text(encoding="utf-8").splitlines()]
    assert line["status"] == "skipped" and line["skipped"] == "bad-input"
    assert line["detail"] == "the prompt is not valid Unicode text: '\\ud800' at character 2 (invalid UTF-8 or a lone surrogate)"


def test_api_trace_refuses_lone_surrogates(tiny_tracer):
    with pytest.raises(InputError, match="the prompt is not valid Unicode text"):
        tracer.trace(tiny_tracer, "A \ud800 b", "b", samples=1)
    with pytest.raises(InputError, match="the subject is not valid Unicode text"):
        tracer.trace(tiny_tracer, "A b", "\udcff", samples=1)


# ---- item 3: invalid UTF-8 on the command line ----------------------------------------------


@pytest.mark.parametrize("flag, what", [(b"--prompt", "the prompt"), (b"--target", "the target"),
                                        (b"--corrupted-prompt", "the corrupted prompt")])
def test_invalid_utf8_argv_is_one_line(tiny_model_dir, flag, what):
    args = {b"--prompt": PROMPT.encode(), b"--subject": b"Eiffel Tower"}
    args[flag] = b"a \xff b Eiffel Tower" if flag == b"--prompt" else b"a \xff b"
    argv = [os.fsencode(SCRIPT), b"trace", b"--model", os.fsencode(str(tiny_model_dir)), b"--samples", b"1"]
    for k, v in args.items():
        argv += [k, v]
    proc = subprocess.run(argv, capture_output=True, timeout=120)
    err = proc.stderr.decode("utf-8", "replace")
    message = one_error_line(proc.returncode, err)
    assert message == f"{what} is not valid Unicode text: '\\udcff' at character 2 (invalid UTF-8 or a lone surrogate)"


# ---- item 9: messages that name the right thing ----------------------------------------------


@pytest.mark.parametrize("flags, message", [
    (["--corrupted-prompt", ""], "the corrupted prompt is empty"),
    (["--corrupted-prompt", "  "], "the corrupted prompt is empty"),
    (["--target", ""], "the target is empty"),
    (["--target", " "], "the target is empty"),
])
def test_empty_corrupted_prompt_and_target(capsys, tiny_model_dir, flags, message):
    code = run_cli(["trace", "--model", str(tiny_model_dir), "--samples", "1", "--prompt", PROMPT,
                    "--subject", "Eiffel Tower", *flags])
    assert one_error_line(code, capsys.readouterr().err) == message


# ---- item 3: model files that are valid JSON/GGUF but not a usable model ---------------------


@pytest.fixture
def quick_doctor(monkeypatch):
    from tracer import blas

    monkeypatch.setattr(blas, "gemm_gflops", lambda *a, **k: 123.0)
    monkeypatch.setattr(blas, "load_fast_blas", lambda: blas.BlasInfo("openblas", "/x/libopenblas.so.0", True))


def doctor_error(capsys, model) -> str:
    code = run_cli(["doctor", "--model", str(model)])
    out, err = capsys.readouterr()
    assert "model:" not in out  # nothing was loaded
    return one_error_line(code, err)


def _copy_model(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("config, message", [
    ([1, 2], "must hold a JSON object, not a list"),
    ("llama", "must hold a JSON object, not a str"),
])
def test_config_json_not_an_object(quick_doctor, capsys, tmp_path, tiny_model_dir, config, message):
    d = _copy_model(tiny_model_dir, tmp_path / "m")
    (d / "config.json").write_text(json.dumps(config))
    assert doctor_error(capsys, d) == f"{d / 'config.json'} {message}"


@pytest.mark.parametrize("model_type", ["a.b", "../evil", "os.path", "llama.llama", 7, None, ""])
def test_model_type_must_be_a_plain_name(quick_doctor, capsys, tmp_path, tiny_model_dir, model_type, monkeypatch):
    import importlib

    imported = []
    real = importlib.import_module
    monkeypatch.setattr(importlib, "import_module", lambda name, *a: imported.append(name) or real(name, *a))
    d = _copy_model(tiny_model_dir, tmp_path / "m")
    config = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**config, "model_type": model_type}))
    assert doctor_error(capsys, d) == f"unsupported architecture {model_type!r} in {d / 'config.json'}"
    assert not any("evil" in n or n.startswith("mlx_lm.models.a") for n in imported)


def _llama_meta(**overrides):
    import mlx.core as mx

    u32 = lambda v: mx.array(v, dtype=mx.uint32)  # noqa: E731
    meta = {
        "general.architecture": "llama",
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.tokens": ["a", "b", "ab", "c"],
        "tokenizer.ggml.merges": ["a b"],
        "llama.embedding_length": u32(8),
        "llama.block_count": u32(1),
        "llama.feed_forward_length": u32(16),
        "llama.attention.head_count": u32(2),
    }
    meta.update({f"llama.{k.replace('__', '.')}": v for k, v in overrides.items()})
    return meta


@pytest.mark.parametrize("key, value, message", [
    ("attention__head_count", 0, "llama.attention.head_count must be a positive integer (got 0)"),
    ("attention__head_count_kv", 0, "llama.attention.head_count_kv must be a positive integer (got 0)"),
    ("block_count", 0, "llama.block_count must be a positive integer (got 0)"),
    ("embedding_length", -8, "llama.embedding_length must be a positive integer (got -8)"),
    ("attention__head_count", 3, "llama.embedding_length 8 is not a multiple of llama.attention.head_count 3"),
    ("attention__head_count_kv", 3, "llama.attention.head_count 2 is not a multiple of llama.attention.head_count_kv 3"),
])
def test_gguf_bad_hyperparameters(quick_doctor, capsys, tmp_path, key, value, message):
    import mlx.core as mx

    path = tmp_path / "bad.gguf"
    meta = _llama_meta(**{key: mx.array(value, dtype=mx.int32)})
    mx.save_gguf(str(path), {"token_embd.weight": mx.zeros((4, 8))}, meta)
    assert doctor_error(capsys, path) == f"GGUF metadata: {message}"


@pytest.mark.parametrize("template", ["{} and {x}", "{} {}", "{0.__class__}", "{} {:>999999999}", "{0}", "{} }", "{", 5])
def test_facts_template_with_other_fields(tmp_path, template):
    path = _facts_file(tmp_path, [{"known_id": 1, "subject": "S", "attribute": "A", "template": template}])
    with pytest.raises(InputError) as info:
        load_facts(path)
    assert str(info.value) == (f"facts file {path}: fact #0: template must be a string with one {{}} for the subject "
                               "and no other braces")


def test_facts_template_is_filled_once(tmp_path):
    path = _facts_file(tmp_path, [{"known_id": 1, "subject": "{x} {}", "attribute": "A", "template": "{} is in"}])
    (fact,) = load_facts(path)
    assert fact.prompt == "{x} {} is in"


# ---- item 4: JSON output is always strict JSON ------------------------------------------------


def strict_loads(text: str):
    def refuse(name):
        raise AssertionError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def _poisoned(result):
    """A result as a model with NaN/inf logits gives it."""
    import dataclasses

    grids = {kind: {m: [[float("nan")] + row[1:] for row in g] for m, g in grid.items()} for kind, grid in result.grids.items()}
    grids[next(iter(grids))]["logit_diff"][0][-1] = float("-inf")
    return dataclasses.replace(result, clean_prob=float("nan"), corrupted_prob=float("inf"), grids=grids)


@pytest.fixture
def nan_model(monkeypatch):
    import tracer.api
    import tracer.core.tracing

    real = tracer.core.tracing.run_trace
    for module in (tracer.core.tracing, tracer.api):  # the sweep's and the front door's (the CLI's trace)
        monkeypatch.setattr(module, "run_trace", lambda *a, **k: _poisoned(real(*a, **k)))


def test_trace_json_with_nan_logits_is_strict(capsys, tiny_model_dir, nan_model):
    code = run_cli(["trace", "--model", str(tiny_model_dir), "--samples", "1", "--kinds", "mlp", "--window", "2",
                    "--prompt", PROMPT, "--subject", "Eiffel Tower", "--format", "json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    doc = strict_loads(out)
    assert doc["clean_prob"] is None and doc["corrupted_prob"] is None
    assert doc["grids"]["mlp"]["prob"][0][0] is None and doc["grids"]["mlp"]["logit_diff"][0][-1] is None
    assert isinstance(doc["grids"]["mlp"]["prob"][0][1], float)


def test_sweep_line_and_report_with_nan_logits_are_strict(tmp_path, tiny_tracer, nan_model):
    from tracer.render.sweep_report import render_json
    from tracer.sweeps.aggregate import load_report
    from tracer.sweeps.results import Check

    class PassAll(TracerBackend):
        def check(self, facts):
            return [Check(True, target_id=1, target="x", top=(1, "x", float("nan")), target_prob=0.5) for _ in facts]

    facts = [{"known_id": 1, "subject": "Eiffel Tower", "attribute": "Paris", "prompt": PROMPT},
             {"known_id": 2, "subject": "Louvre", "attribute": "Paris", "prompt": "The Louvre is in the city of"}]
    path = _facts_file(tmp_path, facts)
    out = str(tmp_path / "r.jsonl")
    config = SweepConfig(kinds=("mlp",), samples=1, window=2)
    summary = run_sweep(PassAll(tiny_tracer), load_facts(path)[:1], out, config)
    assert summary.traced_now == 1
    (line,) = [strict_loads(x) for x in Path(out).read_text().splitlines()]
    assert line["clean_prob"] is None and line["grids"]["mlp"]["prob"][0][0] is None
    again = run_sweep(PassAll(tiny_tracer), load_facts(path), out, config)  # resumes its own file
    assert again.traced_now == 1 and len(Path(out).read_text().splitlines()) == 2
    doc = strict_loads(render_json(load_report(out)))  # every value strict JSON
    assert doc["clean_prob"] is None and doc["baseline"] is None  # nothing usable: means of no facts
    assert doc["warnings"] == ["known_id 1: incomplete result line, left out", "known_id 2: incomplete result line, left out"]


# ---- item 7: sweep-report refuses a file of several settings ---------------------------------


def _config(**changes) -> dict:
    return {**SweepConfig(kinds=("mlp",), samples=1, window=2, model="tiny").to_dict(), **changes}


def _results_file(tmp_path, configs) -> Path:
    path = tmp_path / "results.jsonl"
    lines = [json.dumps({"v": 1, "status": "skipped", "known_id": i, "skipped": "wrong-prediction", "config": c})
             for i, c in enumerate(configs)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("change, said", [
    ({"seed": 2}, "--seed 2 (line 1: --seed 1)"),
    ({"model": "other"}, "--model other (line 1: --model tiny)"),
    ({"kinds": ["mlp", "attn"]}, "--kinds mlp,attn (line 1: --kinds mlp)"),
    ({"noise": "s2"}, "--noise s2 (line 1: --noise s3)"),
])
def test_sweep_report_refuses_mixed_settings(capsys, tmp_path, change, said):
    path = _results_file(tmp_path, [_config()] * 11 + [_config(**change)] + [_config()] * 3)
    code = run_cli(["sweep-report", str(path)])
    assert one_error_line(code, capsys.readouterr().err) == (
        f"{path}: line 12 was written with {said}: report each setting separately")


def test_sweep_report_of_one_setting_still_reads(capsys, tmp_path):
    path = _results_file(tmp_path, [_config()] * 3)
    from tracer.sweeps.results import read_results

    records, warnings = read_results(str(path))
    assert [r["known_id"] for r in records] == [0, 1, 2] and warnings == []


# ---- item 10: control characters never reach a terminal raw ----------------------------------

CONTROLS = ["\x1b[31m", "\r", "\x07", "\x7f", "\x85", "\x9b", "\x00", "\x08"]


def _raw_controls(text: str) -> list[str]:
    return [c for c in text if c != "\n" and (ord(c) < 0x20 or 0x7f <= ord(c) < 0xa0)]


def test_text_export_escapes_control_characters(tiny_tracer):
    import dataclasses

    from tracer.render import trace_text

    result = tracer.trace(tiny_tracer, PROMPT, "Eiffel Tower", kinds=("mlp",), samples=1, window=2)
    tokens = list(result.tokens)
    for i, c in enumerate(CONTROLS):
        tokens[i] = "a" + c + "b"
    result = dataclasses.replace(result, tokens=tokens, model="m\x1b]0;title\x07", target_text="\r\x1b")
    text = trace_text.to_text(result)
    assert _raw_controls(text) == []
    table = trace_text.grid_table(result, "mlp").splitlines()
    assert len(table) == 2 + len(tokens)  # title, layers, one line per token: no row broken
    labels = [line[1:].split(" ")[0] for line in table[2:10]]  # after the subject mark
    assert labels == ["a␛[31mb", "a␍b", "a␇b", "a␡b", "a\\x85b", "a\\x9bb", "a␀b", "a␈b"]
    assert "model: m␛]0;title␇" in text


def test_show_token_and_the_apps_labels_agree():
    from tracer.render.terminal_plot import row_label, visible
    from tracer.render.tokens import show_token

    assert show_token(" Tower\n\t\r\x1b\x7f\x9b") == "␣Tower⏎⇥␍␛␡\\x9b"
    assert visible("\x1b[2J") == "␛[2J" and row_label("\x07", True) == "␇*"
    assert show_token("") == "∅" and show_token("é✓") == "é✓"
