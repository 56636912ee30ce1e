"""Raw GGUF bytes for tests, written from the GGUF spec without MLX or tracer code.

`gguf_file(kvs, tensors)` lays out a version-3 GGUF: the 24-byte header, the
metadata key/values (built with `kv_*`), the tensor infos and the tensor data,
each tensor aligned to 32 bytes. `*_blocks(rng, n)` make random raw blocks of
the quantized formats, and `decode(raw, type)` dequantizes raw blocks with
numpy in float32 the way llama.cpp's dequantize_row_* does:

- Q4_0 (18 bytes / 32 weights): fp16 d, 16 bytes of nibbles; w = d * (q - 8)
- Q4_1 (20 bytes / 32 weights): fp16 d, fp16 m, 16 bytes; w = d * q + m
- Q8_0 (34 bytes / 32 weights): fp16 d, 32 int8; w = d * q

In Q4_0/Q4_1 byte j holds element j in its low nibble and element j + 16 in
its high nibble.
"""

from __future__ import annotations

import struct

import numpy as np

F32, F16, Q4_0, Q4_1, Q8_0 = 0, 1, 2, 3, 8
# value types
U8, I8, U16, I16, U32, I32, F32V, BOOL, STRING, ARRAY, U64, I64, F64V = range(13)

_Q4_0 = np.dtype([("d", "<f2"), ("qs", "u1", 16)])
_Q4_1 = np.dtype([("d", "<f2"), ("m", "<f2"), ("qs", "u1", 16)])
_Q8_0 = np.dtype([("d", "<f2"), ("qs", "i1", 32)])
BLOCK_BYTES = {Q4_0: 18, Q4_1: 20, Q8_0: 34}


def s(text: str | bytes) -> bytes:
    """A GGUF string: uint64 length, then the bytes."""
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def kv(key: str, vtype: int, payload: bytes) -> bytes:
    return s(key) + struct.pack("<I", vtype) + payload


def kv_u32(key: str, value: int) -> bytes:
    return kv(key, U32, struct.pack("<I", value))


def kv_f32(key: str, value: float) -> bytes:
    return kv(key, F32V, struct.pack("<f", value))


def kv_str(key: str, value: str) -> bytes:
    return kv(key, STRING, s(value))


def kv_strs(key: str, values: list[str]) -> bytes:
    return kv(key, ARRAY, struct.pack("<IQ", STRING, len(values)) + b"".join(s(v) for v in values))


def kv_i32s(key: str, values: list[int]) -> bytes:
    return kv(key, ARRAY, struct.pack("<IQ", I32, len(values)) + struct.pack(f"<{len(values)}i", *values))


def tensor_info(name: str, dims: tuple[int, ...], ggml_type: int, offset: int) -> bytes:
    return s(name) + struct.pack("<I", len(dims)) + struct.pack(f"<{len(dims)}Q", *dims) + struct.pack("<IQ", ggml_type, offset)


def gguf_file(kvs: list[bytes], tensors: list[tuple[str, tuple[int, ...], int, bytes]], *, alignment: int = 32) -> bytes:
    """A version-3 GGUF with these key/values and (name, ggml dims, type, raw data) tensors."""
    infos, data = [], b""
    for name, dims, ggml_type, raw in tensors:
        data += b"\0" * (-len(data) % alignment)
        infos.append(tensor_info(name, dims, ggml_type, len(data)))
        data += raw
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs)) + b"".join(kvs) + b"".join(infos)
    return head + b"\0" * (-len(head) % alignment) + data


def q4_0_blocks(rng: np.random.Generator, n: int) -> bytes:
    b = np.zeros(n, _Q4_0)
    b["d"] = rng.normal(0, 0.02, n).astype(np.float16)
    b["qs"] = rng.integers(0, 256, (n, 16))
    return b.tobytes()


def q4_1_blocks(rng: np.random.Generator, n: int) -> bytes:
    b = np.zeros(n, _Q4_1)
    b["d"] = np.abs(rng.normal(0, 0.01, n)).astype(np.float16)
    b["m"] = rng.normal(0, 0.05, n).astype(np.float16)
    b["qs"] = rng.integers(0, 256, (n, 16))
    return b.tobytes()


def q8_0_blocks(rng: np.random.Generator, n: int) -> bytes:
    b = np.zeros(n, _Q8_0)
    b["d"] = np.abs(rng.normal(0, 0.001, n)).astype(np.float16)
    b["qs"] = rng.integers(-128, 128, (n, 32))
    return b.tobytes()


BLOCKS = {Q4_0: q4_0_blocks, Q4_1: q4_1_blocks, Q8_0: q8_0_blocks}


def _nibbles(qs: np.ndarray) -> np.ndarray:
    return np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32)


def decode(raw: bytes, ggml_type: int) -> np.ndarray:
    """The float32 weights of raw Q4_0/Q4_1/Q8_0 blocks, flat, in file order."""
    if ggml_type == Q4_0:
        b = np.frombuffer(raw, _Q4_0)
        return (b["d"].astype(np.float32)[:, None] * (_nibbles(b["qs"]) - np.float32(8))).reshape(-1)
    if ggml_type == Q4_1:
        b = np.frombuffer(raw, _Q4_1)
        d, m = b["d"].astype(np.float32)[:, None], b["m"].astype(np.float32)[:, None]
        return (d * _nibbles(b["qs"]) + m).reshape(-1)
    if ggml_type == Q8_0:
        b = np.frombuffer(raw, _Q8_0)
        return (b["d"].astype(np.float32)[:, None] * b["qs"].astype(np.float32)).reshape(-1)
    raise ValueError(f"no decoder for ggml type {ggml_type}")


def raw_gguf(kvs: list[bytes], infos: list[bytes], data: bytes = b"", *, n_tensors: int | None = None,
             n_kv: int | None = None, version: int = 3, alignment: int = 32) -> bytes:
    """A GGUF laid out from ready-made key/values and tensor infos, with any counts
    and version (for crafting bad headers); `data` follows the aligned header."""
    head = b"GGUF" + struct.pack("<IQQ", version, len(infos) if n_tensors is None else n_tensors,
                                 len(kvs) if n_kv is None else n_kv) + b"".join(kvs) + b"".join(infos)
    return head + b"\0" * (-len(head) % alignment) + data


def small_model_file() -> bytes:
    """A small valid GGUF with metadata of several value types and one tensor of
    each supported type (F32, F16, Q4_0, Q4_1, Q8_0)."""
    rng = np.random.default_rng(0)
    kvs = [
        kv_str("general.architecture", "llama"),
        kv_u32("general.alignment", 32),
        kv_f32("llama.attention.layer_norm_rms_epsilon", 1e-5),
        kv_strs("tokenizer.ggml.tokens", ["a", "b", "ab", "<s>"]),
        kv_i32s("tokenizer.ggml.token_type", [1, 1, 1, 3]),
        kv("general.flag", BOOL, b"\1"),
    ]
    tensors = [
        ("output_norm.weight", (64,), F32, rng.normal(size=64).astype("<f4").tobytes()),
        ("token_embd.weight", (32, 4), F16, rng.normal(size=128).astype("<f2").tobytes()),
        ("blk.0.attn_q.weight", (32, 2), Q4_0, q4_0_blocks(rng, 2)),
        ("blk.0.attn_k.weight", (64, 1), Q4_1, q4_1_blocks(rng, 2)),
        ("blk.0.attn_v.weight", (32, 3), Q8_0, q8_0_blocks(rng, 3)),
    ]
    return gguf_file(kvs, tensors)
