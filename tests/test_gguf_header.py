"""GGUF header validation: crafted headers that crash MLX's native loader give
one ModelError line instead (API and CLI), valid files still validate and load,
and 200 seeded mutations of a small GGUF each load or raise ModelError."""

import os
import struct
import subprocess
import sys
import time
from pathlib import Path

from tracer.errors import ModelError
from tracer.models.gguf import read_gguf, tensor_f32
from tracer.models.gguf_header import validate_gguf
from tracer.models.load import embedded_model_path

import gguf_bytes as gb
import numpy as np
import pytest
from gguf_bytes import kv, raw_gguf, s, tensor_info

SCRIPT = str(Path(sys.executable).with_name("tracer-tui"))
HERE = Path(__file__).parent

T = tensor_info("t.weight", (32,), gb.F32, 0)  # header 24 + info 40 bytes: data starts at 64
DATA = b"\0" * 128  # the file is 192 bytes


def _info(name: bytes | str, ndim: int, dims: tuple, ggml_type: int, offset: int) -> bytes:
    """A tensor info whose ndim need not match its dims."""
    return s(name) + struct.pack("<I", ndim) + b"".join(struct.pack("<Q", d) for d in dims) + struct.pack("<IQ", ggml_type, offset)


def _nested(depth: int) -> bytes:
    """`depth` arrays of arrays around an empty uint8 array."""
    value = struct.pack("<IQ", gb.U8, 0)
    for _ in range(depth):
        value = struct.pack("<IQ", gb.ARRAY, 1) + value
    return kv("x", gb.ARRAY, value)


_RANDOM = np.random.default_rng(14).integers(0, 256, 100_000, dtype=np.uint8).tobytes()
_PAST = "runs past the end of the file"

# name -> (file bytes, the message after "cannot read GGUF <path>: ")
VARIANTS = {
    "issue-repro": (b"GGUF" + struct.pack("<IQQQ", 3, 0, 1, 2**62) + b"abc",
                    "corrupt header: metadata count 1 exceeds what a 35-byte file can hold"),
    "key-length": (b"GGUF" + struct.pack("<IQQQ", 3, 0, 1, 2**62) + b"\0" * 40,
                   f"corrupt header: metadata key length {2**62} at byte 24 {_PAST} (72 bytes)"),
    "tensor-name-length": (b"GGUF" + struct.pack("<IQQQ", 3, 1, 0, 2**62) + b"\0" * 40,
                           f"corrupt header: tensor name length {2**62} at byte 24 {_PAST} (72 bytes)"),
    "tensor-count": (raw_gguf([], [T], DATA, n_tensors=2**60),
                     f"corrupt header: tensor count {2**60} exceeds what a 192-byte file can hold"),
    "ndim-99": (raw_gguf([], [_info("t.weight", 99, (32,) * 99, gb.F32, 0)], DATA),
                "corrupt header: tensor 't.weight' has 99 dimensions (1 to 4 allowed)"),
    "random-100k": (b"GGUF" + _RANDOM, "corrupt header: unsupported GGUF version 645418557 (2 and 3 are read)"),
    "v3-random-100k": (b"GGUF" + struct.pack("<I", 3) + _RANDOM,
                       "corrupt header: tensor count 15328936613069213245 exceeds what a 100008-byte file can hold"),
    "kv-count": (raw_gguf([], [T], DATA, n_kv=2**63),
                 f"corrupt header: metadata count {2**63} exceeds what a 192-byte file can hold"),
    "string-length": (raw_gguf([kv("general.name", gb.STRING, struct.pack("<Q", 10**6) + b"abc")], [T], DATA),
                      f"corrupt header: string value of 'general.name' length 1000000 at byte 48 {_PAST} (256 bytes)"),
    "string-in-array": (raw_gguf([kv("x", gb.ARRAY, struct.pack("<IQ", gb.STRING, 2) + s("a") + struct.pack("<Q", 2**50))], [T], DATA),
                        "corrupt header: string 1 of 'x' runs past the end of the file (256 bytes)"),
    "array-length-huge": (raw_gguf([kv("x", gb.ARRAY, struct.pack("<IQ", gb.U8, 2**61))], [T], DATA),
                          f"corrupt header: array length {2**61} of 'x' is too large"),
    "array-length": (raw_gguf([kv("x", gb.ARRAY, struct.pack("<IQ", gb.U32, 10**6))], [T], DATA),
                     "corrupt header: array length 1000000 of 'x' exceeds what a 224-byte file can hold"),
    "string-array-length": (raw_gguf([kv("x", gb.ARRAY, struct.pack("<IQ", gb.STRING, 10**6))], [T], DATA),
                            "corrupt header: array length 1000000 of 'x' exceeds what a 224-byte file can hold"),
    "value-type": (raw_gguf([kv("x", 13, b"\0" * 8)], [T], DATA), "corrupt header: metadata 'x' has unknown value type 13"),
    "array-type": (raw_gguf([kv("x", gb.ARRAY, struct.pack("<IQ", 99, 1) + b"\0" * 8)], [T], DATA),
                   "corrupt header: metadata 'x' is an array of unknown value type 99"),
    "nested-deep": (raw_gguf([_nested(9)], [T], DATA), "corrupt header: metadata 'x' nests arrays more than 8 deep"),
    "non-utf8-key": (raw_gguf([s(b"\xff\xfe") + struct.pack("<I", gb.U8) + b"\0"], [T], DATA),
                     "corrupt header: metadata key b'\\xff\\xfe' is not UTF-8"),
    "ggml-type": (raw_gguf([], [tensor_info("t.weight", (32,), 99, 0)], DATA), "corrupt header: tensor 't.weight' has unknown ggml type 99"),
    "q8_k": (raw_gguf([], [tensor_info("t.weight", (256,), 15, 0)], DATA),
             "tensor 't.weight' has type Q8_K, which is not a weight type llama.cpp's gguf package can dequantize"),
    "i32": (raw_gguf([], [tensor_info("t.weight", (32,), 26, 0)], DATA),
            "tensor 't.weight' has type I32, which is not a weight type llama.cpp's gguf package can dequantize"),
    # K- and I-quants: rows of whole 256-weight blocks, data inside the file
    "q4_k-row": (raw_gguf([], [tensor_info("t.weight", (128,), 12, 0)], DATA),
                 "corrupt header: tensor 't.weight' (Q4_K) has a row length 128 that is not a multiple of 256"),
    "q6_k-past-end": (raw_gguf([], [tensor_info("t.weight", (256, 4), 14, 0)], DATA),
                      "corrupt header: tensor 't.weight' data (bytes 96 to 936) extends past the end of the file (224 bytes)"),
    "iq2_xxs-past-end": (raw_gguf([], [tensor_info("t.weight", (256, 2**20), 16, 0)], DATA),
                         "corrupt header: tensor 't.weight' data (bytes 96 to 69206112) extends past the end of the file (224 bytes)"),
    "offset-past-end": (raw_gguf([], [tensor_info("t.weight", (32,), gb.F32, 4096)], DATA),
                        "corrupt header: tensor 't.weight' data (bytes 4160 to 4288) extends past the end of the file (192 bytes)"),
    "size-past-end": (raw_gguf([], [tensor_info("t.weight", (32, 2**20), gb.F32, 0)], DATA),
                      "corrupt header: tensor 't.weight' data (bytes 96 to 134217824) extends past the end of the file (224 bytes)"),
    "alignment-0": (raw_gguf([gb.kv_u32("general.alignment", 0)], [T], DATA), "corrupt header: general.alignment 0 is not a power of two"),
    "alignment-u64": (raw_gguf([kv("general.alignment", gb.U64, struct.pack("<Q", 32))], [T], DATA),
                      "corrupt header: general.alignment has value type 10, not uint32"),
    "misaligned": (raw_gguf([], [tensor_info("t.weight", (32,), gb.F32, 4)], DATA),
                   "corrupt header: tensor 't.weight' data offset 4 is not a multiple of the alignment 32"),
    "version-1": (raw_gguf([], [T], DATA, version=1), "corrupt header: unsupported GGUF version 1 (2 and 3 are read)"),
    "big-endian": (raw_gguf([], [T], DATA, version=0x03000000), "corrupt header: big-endian GGUF is not supported"),
    "duplicate": (raw_gguf([], [T, T], DATA), "corrupt header: tensor 't.weight' appears twice"),
    "dim-0": (raw_gguf([], [tensor_info("t.weight", (0,), gb.F32, 0)], DATA),
              "corrupt header: tensor 't.weight' has a dimension out of range: [0]"),
    "q8-row": (raw_gguf([], [tensor_info("t.weight", (16,), gb.Q8_0, 0)], DATA),
               "corrupt header: tensor 't.weight' (Q8_0) has a row length 16 that is not a multiple of 32"),
    "newline-name": (raw_gguf([], [_info("t\nx", 9, (), gb.F32, 0)], DATA),
                     "corrupt header: tensor 't\\nx' has 9 dimensions (1 to 4 allowed)"),
    "truncated": (gb.small_model_file()[:230],
                  "corrupt header: array length 4 of 'tokenizer.ggml.tokens' exceeds what a 230-byte file can hold"),
}
# the variants of issue #14, run through the real console script
CLI_VARIANTS = ["issue-repro", "key-length", "tensor-name-length", "tensor-count", "ndim-99", "random-100k", "v3-random-100k",
                "kv-count", "string-length", "array-length-huge", "value-type", "ggml-type", "offset-past-end", "size-past-end",
                "alignment-0", "q8_k", "q4_k-row"]


def _write(tmp_path, name) -> Path:
    path = tmp_path / f"{name}.gguf"
    path.write_bytes(VARIANTS[name][0])
    return path


@pytest.mark.parametrize("name", list(VARIANTS))
def test_bad_header_is_one_model_error(tmp_path, name):
    path = _write(tmp_path, name)
    expected = f"cannot read GGUF {path}: {VARIANTS[name][1]}"
    with pytest.raises(ModelError) as info:
        validate_gguf(str(path))
    assert str(info.value) == expected
    with pytest.raises(ModelError) as info:
        read_gguf(str(path))
    assert str(info.value) == expected


@pytest.mark.parametrize("name", CLI_VARIANTS)
def test_bad_header_cli_one_line_exit_2(tmp_path, name):
    path = _write(tmp_path, name)
    proc = subprocess.run([SCRIPT, "trace", "--prompt", "a b", "--subject", "a", "--model", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert proc.stderr.splitlines() == [f"tracer-tui: error: cannot read GGUF {path}: {VARIANTS[name][1]}"]
    assert "Traceback" not in proc.stdout + proc.stderr


def test_float64_metadata_is_refused_only_for_mlx_reader(tmp_path):
    """gguf's reader reads float64 values; MLX's (the --keep-quantized path) would misread the header."""
    path = tmp_path / "f64.gguf"
    path.write_bytes(raw_gguf([kv("x", gb.F64V, struct.pack("<d", 1.5))], [T], DATA))
    assert read_gguf(str(path)).meta["x"] == 1.5
    with pytest.raises(ModelError) as info:
        validate_gguf(str(path), for_mlx=True)
    assert str(info.value) == (f"cannot read GGUF {path}: metadata 'x' holds float64 values, "
                               "which MLX's GGUF reader (--keep-quantized) cannot read")


def test_embedded_model_header():
    path = embedded_model_path()
    start = time.perf_counter()
    header = validate_gguf(path)
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0  # only the header is parsed (about 25 ms here)
    assert (header.version, header.n_metadata, header.alignment, len(header.tensors)) == (3, 33, 32, 272)
    embd = next(t for t in header.tensors if t.name == "token_embd.weight")
    assert (embd.dims, embd.type_name, embd.offset, embd.nbytes) == ((576, 49152), "Q8_0", header.data_start, 576 * 49152 // 32 * 34)
    assert max(t.offset + t.nbytes for t in header.tensors) == os.path.getsize(path)
    assert {t.type_name for t in header.tensors} == {"F32", "Q4_1", "Q8_0"}


def test_small_files_validate_and_load(tmp_path):
    import mlx.core as mx

    path = tmp_path / "small.gguf"
    path.write_bytes(gb.small_model_file())
    header = validate_gguf(str(path))
    assert [(t.name, t.type_name) for t in header.tensors] == [
        ("output_norm.weight", "F32"), ("token_embd.weight", "F16"), ("blk.0.attn_q.weight", "Q4_0"),
        ("blk.0.attn_k.weight", "Q4_1"), ("blk.0.attn_v.weight", "Q8_0")]
    gfile = read_gguf(str(path))
    shapes = {t.name: tensor_f32(t).shape for t in gfile.tensors}
    assert shapes["token_embd.weight"] == (4, 32) and shapes["blk.0.attn_v.weight"] == (3, 32)
    assert gfile.meta["tokenizer.ggml.tokens"] == ["a", "b", "ab", "<s>"]
    # what mx.save_gguf writes (as the CLI error tests do) validates too
    saved = tmp_path / "saved.gguf"
    mx.save_gguf(str(saved), {"token_embd.weight": mx.zeros((4, 8))}, {"general.architecture": "llama", "x": ["a", "b"]})
    assert [t.dims for t in validate_gguf(str(saved)).tensors] == [(8, 4)]
    # an array of arrays parses, in the header check and in gguf's reader
    nested = tmp_path / "nested.gguf"
    nested.write_bytes(raw_gguf([_nested(2)], [T], DATA))
    assert validate_gguf(str(nested)).tensors[0].name == "t.weight"
    assert [t.name for t in read_gguf(str(nested)).tensors] == ["t.weight"]


def test_fuzzed_headers_load_or_raise_model_error(tmp_path):
    """200 seeded mutations, in one subprocess: a miss would crash MLX (before the
    header check, the second mutation of this seed was a SIGSEGV)."""
    proc = subprocess.run([sys.executable, str(HERE / "gguf_fuzz.py"), str(tmp_path), "200", "0"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    last = proc.stdout.splitlines()[-1]
    words = last.split()
    assert words[:3] == ["fuzz:", "200", "cases,"] and words[4:5] == ["loaded,"] and words[6] == "rejected", last
    loaded, rejected = int(words[3]), int(words[5])
    assert loaded + rejected == 200 and loaded >= 10 and rejected >= 100, last
