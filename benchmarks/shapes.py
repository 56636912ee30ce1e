"""Random-init models of the shapes of models people trace, for the benchmarks (progressive.py,
scale.py): mlx-lm's own initialisation (mx.random.seed(0)), float32, with the tests' tiny
tokenizer (vocabulary ~400: the logits' matmul at the last position is negligible in a trace either
way, and no download is needed).
"""

from __future__ import annotations

import importlib
import os
import sys

import tracer  # noqa: F401  (fast BLAS before mlx.core)
from tracer.models.load import LoadedModel

import mlx.core as mx
import mlx.nn as nn

_SMOLLM2 = {"rms_norm_eps": 1e-5, "rope_theta": 100000.0, "max_position_embeddings": 8192,
            "tie_word_embeddings": True, "head_dim": 64}

SHAPES = {  # mlx-lm model type and the config fields that give the shape
    "smollm2-135m": ("llama", {**_SMOLLM2, "hidden_size": 576, "num_hidden_layers": 30, "intermediate_size": 1536,
                               "num_attention_heads": 9, "num_key_value_heads": 3}),
    "smollm2-360m": ("llama", {**_SMOLLM2, "hidden_size": 960, "num_hidden_layers": 32, "intermediate_size": 2560,
                               "num_attention_heads": 15, "num_key_value_heads": 5}),
    "llama-1b": ("llama", {"hidden_size": 2048, "num_hidden_layers": 16, "intermediate_size": 8192,
                           "num_attention_heads": 32, "num_key_value_heads": 8, "rms_norm_eps": 1e-5,
                           "max_position_embeddings": 2048, "rope_theta": 500000.0, "tie_word_embeddings": True,
                           "head_dim": 64}),
    "gpt2-xl": ("gpt2", {"n_ctx": 1024, "n_embd": 1600, "n_head": 25, "n_layer": 48, "n_positions": 1024,
                         "layer_norm_epsilon": 1e-5}),
}


def block_weights(shape: str) -> int:
    """The weights of one block's matmuls (attention's projections and the MLP): 2 x this is the
    FLOP per token-layer, attention's scores and the norms aside."""
    _, f = SHAPES[shape]
    hidden = f.get("hidden_size", f.get("n_embd"))
    if "n_embd" in f:  # GPT-2: qkv and out projections, a 4x MLP of two matrices
        return 4 * hidden * hidden + 2 * hidden * 4 * hidden
    heads, kv, hd = f["num_attention_heads"], f["num_key_value_heads"], f["head_dim"]
    return hidden * hd * (2 * heads + 2 * kv) + 3 * hidden * f["intermediate_size"]


def tiny_tokenizer():
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
    from tiny import tiny_tokenizer as make

    return make()


def random_model(shape: str, *, quantize_bits: int = 0) -> LoadedModel:
    """A random-init model of the named shape (float32), with the tests' tiny tokenizer.

    Args:
        shape: a key of SHAPES.
        quantize_bits: 0 for float32; 4 or 8: mlx's nn.quantize (group size 64), as a
            --keep-quantized model keeps its weights.
    """
    model_type, fields = SHAPES[shape]
    tok = tiny_tokenizer()
    config = {"model_type": model_type, **fields, "vocab_size": tok.get_vocab_size()}
    module = importlib.import_module(f"mlx_lm.models.{model_type}")
    mx.random.seed(0)
    model = module.Model(module.ModelArgs.from_dict(config))
    if quantize_bits:
        nn.quantize(model, group_size=64, bits=quantize_bits)
    mx.eval(model.parameters())
    name = f"random {shape}" + (f" {quantize_bits}-bit" if quantize_bits else "")
    return LoadedModel(model, tok, name, "mlx-lm", quantized=bool(quantize_bits))
