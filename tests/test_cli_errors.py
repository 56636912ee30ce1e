"""Every unusable --model gives one line on stderr, 'tracer-tui: error: ...'
naming the problem, exit code 2 and no traceback.

Most cases call `run_cli(["doctor", "--model", X])` in-process with the GEMM
timing stubbed out (and the BLAS reported fast, so the doctor's slow-BLAS
warning cannot add a stderr line on machines without OpenBLAS); a few run the
real console script in a subprocess.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tracer import blas
from tracer.cli import run_cli
from tracer.cli.common import EXIT_USAGE
from tracer.models.load import embedded_model_path

import mlx.core as mx
import pytest

SCRIPT = str(Path(sys.executable).with_name("tracer-tui"))
PREFIX = "tracer-tui: error: "


@pytest.fixture
def quick_doctor(monkeypatch):
    monkeypatch.setattr(blas, "gemm_gflops", lambda *a, **k: 123.0)
    monkeypatch.setattr(blas, "load_fast_blas", lambda: blas.BlasInfo("openblas", "/x/libopenblas.so.0", True))


def doctor_error(capsys, model: str) -> str:
    """Run `doctor --model model`; check the error contract; return the message."""
    code = run_cli(["doctor", "--model", str(model)])
    out, err = capsys.readouterr()
    assert code == EXIT_USAGE == 2, (out, err)
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(PREFIX), err
    assert "Traceback" not in out + err
    assert "model:" not in out  # nothing was loaded
    return lines[0][len(PREFIX):]


def copy_dir(src: Path, dst: Path, skip=()) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        if f.name not in skip:
            shutil.copy(f, dst / f.name)
    return dst


# --- paths and files ---------------------------------------------------------


def test_missing_gguf_path(quick_doctor, capsys, tmp_path):
    path = tmp_path / "nope.gguf"
    assert doctor_error(capsys, path) == f"model file not found: {path}"


def test_missing_path(quick_doctor, capsys, tmp_path):
    path = tmp_path / "no-such-model"
    msg = doctor_error(capsys, path)
    assert msg.startswith(f"model not found: {path} ")


def test_truncated_gguf(quick_doctor, capsys, tmp_path):
    path = tmp_path / "truncated.gguf"
    with open(embedded_model_path(), "rb") as f:
        path.write_bytes(f.read(1000))
    msg = doctor_error(capsys, path)
    assert msg == f"cannot read GGUF {path}: corrupt header: tensor count 272 exceeds what a 1000-byte file can hold"


def test_not_a_gguf_with_gguf_suffix(quick_doctor, capsys, tmp_path):
    path = tmp_path / "fake.gguf"
    path.write_text("hello, I am a text file\n")
    assert doctor_error(capsys, path) == f"{path} is not a GGUF file (bad magic b'hell')"


def test_plain_file_is_neither(quick_doctor, capsys, tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"\0" * 64)
    assert doctor_error(capsys, path) == f"{path} is neither a GGUF file nor a model directory"


# --- GGUF files that are valid GGUF but not a usable model -----------------------

_BPE_META = {
    "tokenizer.ggml.model": "gpt2",
    "tokenizer.ggml.tokens": ["a", "b", "ab", "c"],
    "tokenizer.ggml.merges": ["a b"],
}


def _gguf(path: Path, meta: dict, tensors=None) -> Path:
    mx.save_gguf(str(path), tensors or {"token_embd.weight": mx.zeros((4, 8))}, meta)
    return path


def test_gguf_unsupported_architecture(quick_doctor, capsys, tmp_path):
    path = _gguf(tmp_path / "g.gguf", {"general.architecture": "mamba", **_BPE_META})
    assert doctor_error(capsys, path) == ("unsupported GGUF architecture 'mamba' (supported: llama, mistral, qwen2, "
                                          "qwen3, gemma2, gemma3, phi3, gpt2)")


def test_gguf_unknown_tokenizer(quick_doctor, capsys, tmp_path):
    meta = {"general.architecture": "llama", "tokenizer.ggml.model": "rwkv", "tokenizer.ggml.tokens": ["a", "b"]}
    path = _gguf(tmp_path / "rwkv.gguf", meta)
    assert doctor_error(capsys, path) == ("unsupported GGUF tokenizer 'rwkv' (supported: byte-level BPE 'gpt2', "
                                          "SentencePiece 'llama')")


def test_gguf_sentencepiece_without_scores(quick_doctor, capsys, tmp_path):
    meta = {"general.architecture": "llama", "tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": ["a", "b"]}
    path = _gguf(tmp_path / "spm.gguf", meta)
    assert doctor_error(capsys, path) == "GGUF SentencePiece vocabulary has no score for every token"


def test_gguf_missing_hyperparameters(quick_doctor, capsys, tmp_path):
    path = _gguf(tmp_path / "nometa.gguf", {"general.architecture": "llama", **_BPE_META})
    assert doctor_error(capsys, path) == "GGUF metadata lacks llama.embedding_length"


def _llama_meta():
    u32 = lambda v: mx.array(v, dtype=mx.uint32)  # noqa: E731
    return {
        "general.architecture": "llama",
        **_BPE_META,
        "llama.embedding_length": u32(8),
        "llama.block_count": u32(1),
        "llama.feed_forward_length": u32(16),
        "llama.attention.head_count": u32(2),
    }


def test_gguf_tensors_do_not_fit(quick_doctor, capsys, tmp_path):
    path = _gguf(tmp_path / "few.gguf", _llama_meta())
    msg = doctor_error(capsys, path)
    assert msg.startswith("GGUF tensors do not fit a llama model: Missing 10 parameters: ")
    assert "model.layers.0.input_layernorm.weight" in msg  # names them, on the same line
    assert msg.endswith("...") and len(msg) < 400


def test_gguf_unexpected_tensor(quick_doctor, capsys, tmp_path):
    tensors = {"token_embd.weight": mx.zeros((4, 8)), "blk.0.attn_qkv.weight": mx.zeros((8, 8))}
    path = _gguf(tmp_path / "odd.gguf", _llama_meta(), tensors)
    assert doctor_error(capsys, path) == "unexpected GGUF tensor 'blk.0.attn_qkv.weight' for a llama model"


# --- mlx-lm directories --------------------------------------------------------


def test_dir_without_config(quick_doctor, capsys, tmp_path, tiny_model_dir):
    d = copy_dir(tiny_model_dir, tmp_path / "m", skip={"config.json"})
    assert doctor_error(capsys, d) == f"{d} has no config.json: not an mlx-lm/HF model directory"


def test_dir_with_unsupported_model_type(quick_doctor, capsys, tmp_path, tiny_model_dir):
    d = copy_dir(tiny_model_dir, tmp_path / "m")
    config = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**config, "model_type": "frobnicator"}))
    assert doctor_error(capsys, d) == f"unsupported architecture 'frobnicator' in {d / 'config.json'}"


def test_dir_with_broken_config(quick_doctor, capsys, tmp_path, tiny_model_dir):
    d = copy_dir(tiny_model_dir, tmp_path / "m")
    (d / "config.json").write_text('{"model_type": "llama",')
    assert doctor_error(capsys, d).startswith(f"cannot read {d / 'config.json'}: ")


def test_dir_without_tokenizer(quick_doctor, capsys, tmp_path, tiny_model_dir):
    d = copy_dir(tiny_model_dir, tmp_path / "m", skip={"tokenizer.json"})
    assert doctor_error(capsys, d) == f"{d} has no tokenizer (tokenizer.json or tokenizer.model)"


def test_dir_without_weights(quick_doctor, capsys, tmp_path, tiny_model_dir):
    d = copy_dir(tiny_model_dir, tmp_path / "m", skip={"model.safetensors"})
    assert doctor_error(capsys, d) == f"cannot load model {d}: No safetensors found in {d}"


def test_dir_weights_do_not_match_config(quick_doctor, capsys, tmp_path, tiny_model_dir):
    d = copy_dir(tiny_model_dir, tmp_path / "m")
    config = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 8}))
    msg = doctor_error(capsys, d)
    assert msg.startswith(f"cannot load model {d}: Missing 18 parameters: ")
    assert "model.layers.6.input_layernorm.weight" in msg


def test_good_dir_loads(quick_doctor, capsys, tiny_model_dir):
    """The control: the same doctor call on an intact directory succeeds."""
    code = run_cli(["doctor", "--model", str(tiny_model_dir)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert err == ""
    assert "float32 GEMM on CPU: 123.0 GFLOP/s" in out
    assert f"model: {tiny_model_dir.name} (mlx-lm): 6 layers, hidden 64, vocab 400, float32" in out


def test_unknown_option_is_one_line(capsys):
    code = run_cli(["doctor", "--bogus"])
    out, err = capsys.readouterr()
    assert code == 2
    assert err == "tracer-tui: error: unrecognized arguments: --bogus\n"


# --- the real console script ---------------------------------------------------


def _script(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SCRIPT, *args], capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})}
    )


def _error_lines(stderr: str) -> list[str]:
    # the doctor's BLAS warnings (no fast BLAS; a fast BLAS measured slow on a busy machine) are not errors
    return [l for l in stderr.splitlines() if not l.startswith("warning: ")]


def test_console_script_truncated_gguf(tmp_path):
    path = tmp_path / "truncated.gguf"
    with open(embedded_model_path(), "rb") as f:
        path.write_bytes(f.read(1000))
    proc = _script("doctor", "--model", str(path))
    assert proc.returncode == 2
    lines = _error_lines(proc.stderr)
    assert len(lines) == 1 and lines[0].startswith(f"{PREFIX}cannot read GGUF {path}: "), proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


def test_console_script_hf_repo_offline():
    """An HF repo id that is not cached, with the hub offline: one line, no traceback."""
    proc = _script("doctor", "--model", "nobody-here/no-such-model", env={"HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2
    lines = _error_lines(proc.stderr)
    assert len(lines) == 1 and lines[0].startswith(f"{PREFIX}cannot load model nobody-here/no-such-model: "), proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


def test_console_script_no_model_doctor():
    proc = _script("doctor", "--no-model")
    assert proc.returncode == 0, proc.stderr
    assert "BLAS: " in proc.stdout and "GFLOP/s" in proc.stdout
    assert "model:" not in proc.stdout
