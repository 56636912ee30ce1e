"""Issue 25, items 1: files are checked to be regular files before they are opened, every read
of a user file is bounded, and bad model configs, CSV headers and API arguments are one clear
message of the project's own error types."""

from __future__ import annotations

import json
import os
import shutil

import tracer
from tracer.cli import run_cli
from tracer.errors import InputError, ModelError
from tracer.inputs.facts_file import read_items
from tracer.models.load import load_model
from tracer.userfiles import check_regular_file, read_user_file

import pytest
from cli_helpers import one_error_line

# ---- the shared helper ------------------------------------------------------------------------


def test_read_user_file_reads_regular_files_and_refuses_the_rest(tmp_path):
    path = tmp_path / "f.txt"
    path.write_bytes(b"0123456789")
    assert read_user_file(path, "facts file") == b"0123456789"
    assert read_user_file(path, "facts file", offset=4) == b"456789"
    assert check_regular_file(path, "facts file") == 10
    with pytest.raises(InputError, match="more than the 0 MiB"):
        read_user_file(path, "facts file", max_bytes=5)
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    with pytest.raises(InputError, match=r"facts file is a named pipe, not a regular file: .*pipe"):
        read_user_file(pipe, "facts file")  # no writer: a plain open() would block forever
    with pytest.raises(InputError, match="is a device"):
        read_user_file("/dev/zero", "results file")  # an endless stream, never read
    with pytest.raises(InputError, match="is a directory"):
        read_user_file(tmp_path, "results file")
    with pytest.raises(InputError, match="not found"):
        read_user_file(tmp_path / "missing", "results file")
    with pytest.raises(ModelError, match="named pipe"):
        check_regular_file(pipe, "model file", error=ModelError)


# ---- the CLI: hangs and unbounded reads are one line, exit 2 ----------------------------------


@pytest.mark.parametrize("make", ["fifo", "zero", "dir"])
def test_sweep_report_on_a_pipe_device_or_directory_is_one_line(tmp_path, capsys, make):
    if make == "fifo":
        target = tmp_path / "results.jsonl"
        os.mkfifo(target)
        expected = "named pipe"
    elif make == "zero":
        target, expected = "/dev/zero", "is a device"
    else:
        target, expected = tmp_path, "no .npz"
    code = run_cli(["sweep-report", str(target)])
    message = one_error_line(code, capsys.readouterr().err)
    if make != "dir":
        assert expected in message


def test_trace_model_on_a_named_pipe_is_one_line(tmp_path, capsys):
    for name in ("model.gguf", "model"):
        pipe = tmp_path / name
        os.mkfifo(pipe)
        code = run_cli(["trace", "--model", str(pipe), "--prompt", "a b", "--subject", "a"])
        message = one_error_line(code, capsys.readouterr().err)
        assert str(pipe) in message and ("named pipe" in message or "neither a GGUF file" in message)


def test_a_pipe_inside_a_model_directory_is_refused(tmp_path, tiny_model_dir):
    model = tmp_path / "m"
    shutil.copytree(tiny_model_dir, model)
    os.remove(model / "tokenizer.json")
    os.mkfifo(model / "tokenizer.json")
    with pytest.raises(ModelError, match="model file is a named pipe, not a regular file: .*tokenizer.json"):
        load_model(str(model))


# ---- model configs ----------------------------------------------------------------------------


@pytest.mark.parametrize("field, value, message", [
    ("vocab_size", 0, "vocab_size must be from 1 to"),
    ("num_hidden_layers", -1, "num_hidden_layers must be from 1 to"),
    ("hidden_size", "64", "hidden_size must be a whole number, not '64'"),
    ("num_attention_heads", True, "num_attention_heads must be a whole number"),
    ("intermediate_size", 1.5, "intermediate_size must be a whole number"),
])
def test_bad_sizes_in_a_model_config_name_the_field(tmp_path, tiny_model_dir, field, value, message):
    model = tmp_path / "m"
    shutil.copytree(tiny_model_dir, model)
    config = json.loads((model / "config.json").read_text())
    config[field] = value
    (model / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError) as info:
        tracer.load(str(model))
    assert message in str(info.value) and str(model / "config.json") in str(info.value)


# ---- pairs CSV ------------------------------------------------------------------------------------


def test_csv_header_naming_a_column_twice_is_refused(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("prompt,corrupted_prompt,subject,prompt\na b,c b,a,x y\n")
    with pytest.raises(InputError, match="the CSV header names prompt more than once"):
        read_items(str(path))


# ---- the API raises the project's errors ----------------------------------------------------------


def test_api_wrong_types_are_project_errors(tiny_tracer):
    with pytest.raises(ModelError, match="not 123"):
        tracer.load(123)
    with pytest.raises(InputError, match="model must be what tracer.load\\(\\) returns, not NoneType"):
        tracer.trace(None, "The Eiffel Tower is in", "Eiffel Tower")
    with pytest.raises(InputError, match="the prompt must be text, not int"):
        tracer.trace(tiny_tracer, 5, None)
    with pytest.raises(InputError, match="the subject must be text, not NoneType"):
        tracer.trace(tiny_tracer, "The Eiffel Tower is in", None)
    with pytest.raises(InputError, match="layers must be whole numbers in 0..5"):
        tracer.patch(tiny_tracer, "The Eiffel Tower is in", subject="Eiffel", layers=["x"])
    with pytest.raises(InputError, match="k must be a whole number of at least 1"):
        tracer.predict(tiny_tracer, "The Eiffel Tower is in", k="3")
    with pytest.raises(InputError, match="the prompt must be text, not NoneType"):
        tracer.predict(tiny_tracer, None)
    with pytest.raises(InputError, match="results must be a file path"):
        tracer.report(5)
    with pytest.raises(InputError, match="limit must be a whole number"):
        tracer.sweep(tiny_tracer, limit=0)


def test_predict_and_patch_refuse_a_prompt_longer_than_the_context(tiny_tracer):
    long = "a" * (4 * tiny_tracer.context_length)
    tokens = len(tiny_tracer.tokenizer.encode(long).ids)
    assert tokens > tiny_tracer.context_length
    message = f"prompt is {tokens} tokens, longer than the model's context of {tiny_tracer.context_length}"
    with pytest.raises(InputError, match=message):
        tracer.predict(tiny_tracer, long)
    with pytest.raises(InputError, match=message):
        tracer.patch(tiny_tracer, long, subject="a", layers=[0])
