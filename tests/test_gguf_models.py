"""GGUF models of every supported architecture and tensor type, written with llama.cpp's
`gguf.GGUFWriter` from tiny random mlx-lm models (tests/gguf_models.py): the loaded model's
logits equal the mlx-lm model's, and every dequantized weight equals llama.cpp's reference
dequantizer's float32 result, bit for bit."""

from tracer.errors import ModelError
from tracer.models.gguf import ARCHS, read_gguf
from tracer.models.gguf_header import readable_types
from tracer.models.load import load_model

import gguf
import mlx.core as mx
import numpy as np
import pytest
import tiny
from gguf import GGMLQuantizationType as Q
from gguf_models import TINY_ARCH, gguf_name, write_tiny_gguf
from mlx.utils import tree_flatten

PROMPT = "The Eiffel Tower is located in the city of Paris."


def _logits(model, ids) -> np.ndarray:
    return np.array(model(mx.array([ids]))[0].astype(mx.float32))


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_each_architecture_matches_mlx_lm(tmp_path, arch):
    path = tmp_path / f"{arch}.gguf"
    reference = write_tiny_gguf(arch, path)
    loaded = load_model(str(path))
    assert loaded.source == "gguf" and loaded.n_layers == tiny.n_layers(TINY_ARCH[arch])
    ids = loaded.tokenizer.encode(PROMPT).ids
    assert ids == tiny.tiny_tokenizer().encode(PROMPT).ids  # the tokenizer from the GGUF metadata
    ours, expected = _logits(loaded.model, ids), _logits(reference, ids)
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=2e-5)


def test_an_unknown_architecture_is_one_clear_error(tmp_path):
    path = tmp_path / "x.gguf"
    writer = gguf.GGUFWriter(str(path), "mamba")
    writer.add_tensor("token_embd.weight", np.zeros((4, 32), np.float32))
    writer.write_header_to_file(), writer.write_kv_data_to_file(), writer.write_tensors_to_file(), writer.close()
    with pytest.raises(ModelError, match=r"^unsupported GGUF architecture 'mamba' \(supported: llama, mistral, qwen2, qwen3, gemma2, gemma3, phi3, gpt2\)$"):
        load_model(str(path))


# a llama whose every matrix row is a whole number of 256-weight blocks (K- and I-quants)
_WIDE = {**tiny.config_for("llama"), "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2}
QUANT_TYPES = sorted((Q(t) for t in readable_types() if Q(t) not in (Q.F32,)), key=lambda t: t.name)


@pytest.mark.parametrize("qtype", QUANT_TYPES, ids=lambda t: t.name)
def test_every_tensor_type_dequantizes_as_llama_cpp_does(tmp_path, qtype):
    path = tmp_path / f"{qtype.name}.gguf"
    write_tiny_gguf("llama", path, qtype=qtype, config=_WIDE, seed=3)
    gfile = read_gguf(str(path))
    assert qtype.name in gfile.type_names()
    reference = {t.name: gguf.quants.dequantize(t.data, t.tensor_type) for t in gfile.tensors}
    loaded = load_model(str(path))
    params = dict(tree_flatten(loaded.model.parameters()))
    for name, value in params.items():
        ours = np.array(value)
        assert ours.dtype == np.float32
        assert np.array_equal(ours.ravel(), np.asarray(reference[gguf_name("llama", name)], np.float32).ravel(), equal_nan=True), name


@pytest.mark.parametrize("qtype", [Q.Q8_0, Q.Q4_K, Q.Q6_K], ids=lambda t: t.name)
def test_keep_quantized(tmp_path, qtype):
    """--keep-quantized: Q8_0 is kept packed by MLX's loader and exact; K-quants are
    re-quantized to 8 bits, close to the exact model and labelled approximate."""
    path = tmp_path / f"{qtype.name}.gguf"
    write_tiny_gguf("llama", path, qtype=qtype, config=_WIDE, seed=3)
    exact, kept = load_model(str(path)), load_model(str(path), keep_quantized=True)
    assert kept.quantized and not exact.quantized
    assert kept.requantized == (qtype != Q.Q8_0)
    assert ("re-quantized to 8 bits (approximate)" in kept.summary()) == kept.requantized
    exact_params = dict(tree_flatten(exact.model.parameters()))
    layer = kept.model.model.layers[0].mlp.down_proj
    w = np.array(mx.dequantize(layer.weight, layer.scales.astype(mx.float32), layer.biases.astype(mx.float32),
                               group_size=layer.group_size, bits=layer.bits))
    true = np.array(exact_params["model.layers.0.mlp.down_proj.weight"])
    groups = true.reshape(-1, 32)
    step = (groups.max(axis=1) - groups.min(axis=1)) / 255  # an 8-bit affine level
    error = np.abs(w - true).reshape(-1, 32).max(axis=1)
    if kept.requantized:
        assert layer.bits == 8 and np.all(error <= step + 1e-6)  # within one 8-bit level of its group
    else:
        assert np.array_equal(w, true)
