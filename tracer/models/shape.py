"""A model's shape read before loading it: from an mlx-lm directory's config.json (and its
safetensors headers), or from a GGUF file's metadata through llama.cpp's `gguf` reader.

The memory plan (tracer/core/budget.py) turns a shape into bytes; nothing here loads weights.
"""

from __future__ import annotations

import json
import os
import stat
import struct
from dataclasses import dataclass

from ..errors import ModelError
from ..userfiles import MAX_SMALL_FILE, read_user_file

MAX_SAFETENSORS_HEADER = 100 << 20  # a header larger than this is not one we plan from


@dataclass(frozen=True)
class ModelShape:
    """What the memory plan needs to know of a model.

    `n_params` counts the weights as the model computes with them (a 4-bit matrix of m x n
    counts m * n); `stored_bytes` is what the file holds for them (packed, when quantized)."""

    arch: str
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    n_params: int
    stored_bytes: int
    quantized: bool = False
    kept_bytes: int | None = None  # the weights' bytes once loaded with --keep-quantized (None: stored_bytes)

    @property
    def kv_per_token(self) -> int:
        """Keys and values per token over all layers (elements)."""
        return self.layers * 2 * self.kv_heads * self.head_dim


def read_shape(spec: str | None) -> ModelShape | None:
    """The shape of the model `spec` names, without loading it.

    Args:
        spec: a GGUF file or an mlx-lm directory (the embedded model: its GGUF file).

    Returns:
        The shape, or None when it cannot be known before loading (a Hugging Face repo id,
        a file that is not a regular file, metadata without the sizes): the loader then reports
        what is wrong with the model, and the plan is skipped.
    """
    if spec is None:
        from .load import embedded_model_path

        spec = embedded_model_path()
    if not isinstance(spec, str):
        return None
    if os.path.isdir(spec):
        return _directory_shape(spec)
    if _regular_file(spec) and spec.lower().endswith(".gguf"):
        return gguf_shape(spec)
    return None


def _regular_file(path: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):  # ValueError: a name with surrogates or a NUL
        return False


def gguf_shape(path: str) -> ModelShape | None:
    """The shape from a GGUF file's metadata (`{arch}.block_count`, `.embedding_length`,
    `.feed_forward_length`, `.attention.head_count[_kv]`, the tokens) and its tensors' element
    counts. None when the metadata lacks a size."""
    import gguf

    from .gguf import read_gguf  # the one GGUF reading path: header check, then gguf.GGUFReader

    try:
        gfile = read_gguf(path)
    except ModelError:  # the loader says why
        return None
    value, tensors = gfile.meta.get, gfile.tensors

    arch = value("general.architecture")
    if not isinstance(arch, str):
        return None
    layers, hidden = value(f"{arch}.block_count"), value(f"{arch}.embedding_length")
    heads = value(f"{arch}.attention.head_count")
    if not all(isinstance(v, int) and v > 0 for v in (layers, hidden, heads)):
        return None
    kv_heads = value(f"{arch}.attention.head_count_kv") or heads
    head_dim = value(f"{arch}.attention.key_length") or hidden // heads
    vocab = value(f"{arch}.vocab_size") or len(value("tokenizer.ggml.tokens") or [])
    float_types = {gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.BF16}
    return ModelShape(
        arch=arch, layers=int(layers), hidden=int(hidden),
        intermediate=int(value(f"{arch}.feed_forward_length") or 4 * hidden),
        heads=int(heads), kv_heads=int(kv_heads), head_dim=int(head_dim), vocab=int(vocab),
        n_params=sum(int(t.n_elements) for t in tensors),
        stored_bytes=sum(int(t.n_bytes) for t in tensors),
        quantized=any(t.tensor_type not in float_types for t in tensors),
        kept_bytes=_kept_bytes(gfile, float_types),
    )


def _kept_bytes(gfile, float_types) -> int:
    """--keep-quantized (tracer/models/gguf.py): a file of Q4_0/Q4_1/Q8_0 stays as stored; in any other,
    every quantized tensor is re-quantized to 8 bits with a float32 scale and bias per 32 weights
    (10 bits a weight)."""
    from .gguf import requantizes

    if not requantizes(gfile):
        return sum(int(t.n_bytes) for t in gfile.tensors)
    return sum(int(t.n_bytes) if t.tensor_type in float_types else int(t.n_elements) * 10 // 8
               for t in gfile.tensors)


def _directory_shape(path: str) -> ModelShape | None:
    """The shape from config.json; the weights counted from the safetensors headers (packed
    quantized matrices counted as their unpacked sizes), or from the config when there are none."""
    from .load import check_config_sizes

    config_path = os.path.join(path, "config.json")
    if not _regular_file(config_path):
        return None
    try:
        config = json.loads(read_user_file(config_path, "model config", max_bytes=MAX_SMALL_FILE,
                                           error=ModelError).decode("utf-8"))
    except (ValueError, ModelError):
        return None  # the loader reports it
    if not isinstance(config, dict):
        return None
    check_config_sizes(config, config_path)
    sizes = config_sizes(config)
    if sizes is None:
        return None
    files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
    quant = config.get("quantization") if isinstance(config.get("quantization"), dict) else None
    counted = [_safetensors_count(os.path.join(path, f), quant) for f in files]
    if files and all(c is not None for c in counted):
        n_params, stored = sum(c[0] for c in counted), sum(c[1] for c in counted)
    else:
        n_params = config_params(sizes, tied=bool(config.get("tie_word_embeddings", True)))
        stored = 4 * n_params
    return ModelShape(config.get("model_type", "?"), *sizes, n_params=n_params, stored_bytes=stored,
                      quantized=quant is not None)


def config_sizes(config: dict) -> tuple[int, ...] | None:
    """(layers, hidden, intermediate, heads, kv heads, head_dim, vocab) from an HF/mlx-lm config
    (llama-style names, or GPT-2's n_layer/n_embd/n_head); None when one is missing."""
    def get(*names):
        return next((config[n] for n in names if isinstance(config.get(n), int) and config[n] > 0), None)

    layers, hidden = get("num_hidden_layers", "n_layer"), get("hidden_size", "n_embd")
    heads, vocab = get("num_attention_heads", "n_head"), get("vocab_size")
    if None in (layers, hidden, heads, vocab):
        return None
    intermediate = get("intermediate_size", "n_inner") or 4 * hidden
    return (layers, hidden, intermediate, heads, get("num_key_value_heads") or heads,
            get("head_dim") or hidden // heads, vocab)


def config_params(sizes: tuple[int, ...], tied: bool = True) -> int:
    """Weights of a llama-style model of these sizes: embeddings (twice when untied), per layer
    the attention's four projections, a gated MLP's three matrices and two norms, a final norm."""
    layers, hidden, intermediate, heads, kv_heads, head_dim, vocab = sizes
    attention = hidden * head_dim * (2 * heads + 2 * kv_heads)
    per_layer = attention + 3 * hidden * intermediate + 2 * hidden
    return vocab * hidden * (1 if tied else 2) + layers * per_layer + hidden


_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "U32": 4, "I16": 2, "U16": 2,
                "I8": 1, "U8": 1, "BOOL": 1}


def _safetensors_count(path: str, quant: dict | None) -> tuple[int, int] | None:
    """(weights, bytes) of one safetensors file from its header: a quantized matrix (uint32-packed,
    with `.scales`) counts 32 / bits weights per element, its scales and biases none."""
    if not _regular_file(path):
        return None
    try:
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if length > MAX_SAFETENSORS_HEADER:
                return None
            header = json.loads(f.read(length).decode("utf-8"))
    except (OSError, struct.error, ValueError):
        return None
    bits = int(quant.get("bits", 4)) if quant else 0
    n_params = n_bytes = 0
    for name, info in header.items():
        if name == "__metadata__" or not isinstance(info, dict):
            continue
        count = 1
        for dim in info.get("shape", []):
            count *= int(dim)
        n_bytes += count * _DTYPE_BYTES.get(info.get("dtype"), 4)
        if bits and name.endswith((".scales", ".biases")):
            continue
        n_params += count * 32 // bits if bits and info.get("dtype") == "U32" else count
    return n_params, n_bytes
