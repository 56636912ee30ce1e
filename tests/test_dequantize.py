"""Quantized weights are dequantized exactly: every GGUF Q4_0/Q4_1/Q8_0 tensor and
every mlx-lm affine-quantized layer equals an independent numpy float32
decoding of its raw data, bit for bit (tests/gguf_bytes.py decodes GGUF blocks
per llama.cpp's layout; mlx-lm packing is decoded here). The other GGUF types
are tested against llama.cpp's reference dequantizer in tests/test_gguf_models.py."""

import json

from tracer.models.gguf import read_gguf, tensor_f32
from tracer.models.gguf_header import validate_gguf
from tracer.models.load import embedded_model_path, load_model

import gguf_bytes as gb
import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

ROWS, COLS = 6, 128  # MLX shape; GGUF dims are (COLS, ROWS)


def _half_precision(packed, scales, biases, bits) -> np.ndarray:
    """What loading did before: mx.dequantize with the float16 scales as loaded."""
    return np.array(mx.dequantize(packed, scales, biases, group_size=32, bits=bits).astype(mx.float32))


@pytest.mark.parametrize("ggml_type", [gb.Q4_0, gb.Q4_1, gb.Q8_0], ids=["Q4_0", "Q4_1", "Q8_0"])
def test_gguf_blocks_dequantize_exactly(tmp_path, ggml_type):
    """The loader's dequantization (llama.cpp's gguf package) equals this file's own decoder."""
    rng = np.random.default_rng(ggml_type)
    raw = gb.BLOCKS[ggml_type](rng, ROWS * COLS // 32)
    path = tmp_path / "q.gguf"
    path.write_bytes(gb.gguf_file([gb.kv_str("general.architecture", "llama")], [("t.weight", (COLS, ROWS), ggml_type, raw)]))
    header = validate_gguf(str(path))
    assert [(t.name, t.dims, t.type_name, t.nbytes) for t in header.tensors] == [
        ("t.weight", (COLS, ROWS), {gb.Q4_0: "Q4_0", gb.Q4_1: "Q4_1", gb.Q8_0: "Q8_0"}[ggml_type], len(raw))
    ]
    ours = tensor_f32(read_gguf(str(path)).tensors[0])
    assert ours.dtype == np.float32 and ours.shape == (ROWS, COLS)
    assert np.array_equal(ours, gb.decode(raw, ggml_type).reshape(ROWS, COLS))


def test_decoder_follows_the_spec():
    """The numpy decoder itself, on hand-made blocks: Q4_0 d=0.5, byte j = j<<4 | j
    gives w[j] = 0.5 * (j - 8) and w[16 + j] = 0.5 * (j - 8) (high nibble = j too, mod 16)."""
    block = np.float16(0.5).tobytes() + bytes(((j & 15) << 4) | j for j in range(16))
    w = gb.decode(block, gb.Q4_0)
    assert w.tolist() == [0.5 * (j - 8) for j in range(16)] * 2
    block = np.float16(0.25).tobytes() + np.float16(-1.0).tobytes() + bytes([0x10 | 0x0F] + [0] * 15)
    w = gb.decode(block, gb.Q4_1)
    assert w[0] == 0.25 * 15 - 1 and w[16] == 0.25 * 1 - 1 and w[1] == -1.0
    block = np.float16(2.0).tobytes() + np.arange(-16, 16, dtype=np.int8).tobytes()
    assert gb.decode(block, gb.Q8_0).tolist() == [2.0 * q for q in range(-16, 16)]


@pytest.mark.parametrize(
    "gguf_name,param",
    [("token_embd.weight", "model.embed_tokens.weight"), ("blk.0.attn_q.weight", "model.layers.0.self_attn.q_proj.weight"),
     ("blk.29.ffn_down.weight", "model.layers.29.mlp.down_proj.weight")],
)
def test_embedded_model_weights_are_exact(embedded_model, gguf_name, param):
    path = embedded_model_path()
    info = next(t for t in validate_gguf(path).tensors if t.name == gguf_name)
    with open(path, "rb") as f:
        f.seek(info.offset)
        raw = f.read(info.nbytes)
    expected = gb.decode(raw, info.ggml_type).reshape(info.dims[::-1])
    ours = np.array(dict(tree_flatten(embedded_model.model.parameters()))[param])
    assert ours.dtype == np.float32 and ours.shape == expected.shape
    assert np.array_equal(ours, expected)


def _unpack(packed: np.ndarray, bits: int) -> np.ndarray:
    """mlx-lm packing: each uint32 holds 32/bits values, the first in the lowest bits."""
    shifts = np.arange(32 // bits, dtype=np.uint32) * bits
    q = (packed[..., None] >> shifts) & np.uint32(2**bits - 1)
    return q.reshape(*packed.shape[:-1], -1).astype(np.float32)


@pytest.mark.parametrize("bits", [4, 8])
def test_mlx_lm_quantized_weights_are_exact(tiny_model_dir, tmp_path, bits):
    """A float16 mlx-lm model quantized with float16 scales/biases: every layer the
    loader dequantizes equals scale * q + bias computed in float32 by numpy."""
    weights = {k: v.astype(mx.float16) for k, v in mx.load(str(tiny_model_dir / "model.safetensors")).items()}
    saved = {}
    for k, v in weights.items():
        if k.endswith(".weight") and v.ndim == 2:
            prefix = k[: -len(".weight")]
            saved[k], saved[prefix + ".scales"], saved[prefix + ".biases"] = mx.quantize(v, group_size=32, bits=bits)
        else:
            saved[k] = v
    d = tmp_path / f"q{bits}"
    d.mkdir()
    mx.save_safetensors(str(d / "model.safetensors"), saved)
    config = json.loads((tiny_model_dir / "config.json").read_text())
    config["quantization"] = {"group_size": 32, "bits": bits}
    (d / "config.json").write_text(json.dumps(config))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (d / name).write_bytes((tiny_model_dir / name).read_bytes())

    params = dict(tree_flatten(load_model(str(d)).model.parameters()))
    quantized = [k[: -len(".scales")] for k in saved if k.endswith(".scales")]
    assert len(quantized) == 6 * 7 + 2  # every projection, the embedding and lm_head
    differs = 0
    for prefix in quantized:
        packed, scales, biases = (np.array(saved[f"{prefix}.{n}"]) for n in ("weight", "scales", "biases"))
        assert scales.dtype == np.float16
        s = np.repeat(scales.astype(np.float32), 32, axis=-1)
        b = np.repeat(biases.astype(np.float32), 32, axis=-1)
        expected = s * _unpack(packed, bits) + b
        ours = np.array(params[prefix + ".weight"])
        assert ours.dtype == np.float32
        assert np.array_equal(ours, expected), prefix
        half = _half_precision(saved[prefix + ".weight"], saved[prefix + ".scales"], saved[prefix + ".biases"], bits)
        differs += not np.array_equal(half, expected)
    assert differs == len(quantized)  # float16 arithmetic would have rounded every layer
