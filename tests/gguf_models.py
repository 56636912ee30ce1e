"""GGUF files written from the tests' tiny mlx-lm models with llama.cpp's own `gguf.GGUFWriter`,
following the conventions of llama.cpp's converters (written here from their documented
behaviour, not from tracer code):

- tensor names `token_embd`, `blk.N.attn_q`, ... and `<arch>.*` metadata keys;
- llama: the Q and K rows of each head reordered from "halves" RoPE to interleaved pairs;
- gemma2/gemma3: RMSNorm weights stored as 1 + w;
- the tokenizer as `tokenizer.ggml.*` arrays (byte-level BPE, pre-tokenizer "gpt-2").

`write_tiny_gguf(arch, path, qtype=...)` returns the mlx-lm model the file was written from.
"""

from __future__ import annotations

import importlib
import json

import gguf
import mlx.core as mx
import numpy as np
import tiny
from gguf import GGMLQuantizationType as Q
from mlx.utils import tree_flatten

# GGUF architecture -> the tiny mlx-lm model type it is written from
TINY_ARCH = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "gemma2": "gemma2",
             "gemma3": "gemma3_text", "phi3": "phi3", "gpt2": "gpt2"}

_LAYER = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
          "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
          "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
          "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
          "self_attn.qkv_proj": "attn_qkv", "mlp.gate_up_proj": "ffn_up"}
_GEMMA = {"post_attention_layernorm": "post_attention_norm", "pre_feedforward_layernorm": "ffn_norm",
          "post_feedforward_layernorm": "post_ffw_norm"}
_GPT2 = {"ln_1": "attn_norm", "attn.c_attn": "attn_qkv", "attn.c_proj": "attn_output", "ln_2": "ffn_norm",
         "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down"}
_TOP = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output",
        "model.wte": "token_embd", "model.wpe": "position_embd", "model.ln_f": "output_norm"}


def gguf_name(arch: str, name: str) -> str:
    base, leaf = name.rsplit(".", 1)
    for prefix in ("model.layers.", "model.h."):
        if base.startswith(prefix):
            layer, rest = base[len(prefix):].split(".", 1)
            table = _GPT2 if arch == "gpt2" else {**_LAYER, **(_GEMMA if arch.startswith("gemma") else {})}
            return f"blk.{layer}.{table[rest]}.{leaf}"
    return f"{_TOP[base]}.{leaf}"


def interleave_rope_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Per head, rows [x0..x(d/2-1), y0..y(d/2-1)] become [x0, y0, x1, y1, ...]."""
    rows = w.shape[0]
    return w.reshape(n_heads, 2, rows // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _metadata(writer: gguf.GGUFWriter, arch: str, config: dict) -> None:
    if arch == "gpt2":
        for key, value in (("block_count", config["n_layer"]), ("embedding_length", config["n_embd"]),
                           ("attention.head_count", config["n_head"]), ("context_length", config["n_ctx"]),
                           ("feed_forward_length", 4 * config["n_embd"])):
            writer.add_uint32(f"{arch}.{key}", value)
        writer.add_float32(f"{arch}.attention.layer_norm_epsilon", config["layer_norm_epsilon"])
        return
    for key, value in (("block_count", config["num_hidden_layers"]), ("embedding_length", config["hidden_size"]),
                       ("feed_forward_length", config["intermediate_size"]),
                       ("attention.head_count", config["num_attention_heads"]),
                       ("attention.head_count_kv", config["num_key_value_heads"]),
                       ("context_length", config.get("max_position_embeddings", 256))):
        writer.add_uint32(f"{arch}.{key}", value)
    writer.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", config["rms_norm_eps"])
    if "head_dim" in config:
        writer.add_uint32(f"{arch}.attention.key_length", config["head_dim"])
    if "rope_theta" in config:
        writer.add_float32(f"{arch}.rope.freq_base", config["rope_theta"])
    if arch == "gemma2":
        writer.add_float32(f"{arch}.attn_logit_softcapping", 50.0)
        writer.add_float32(f"{arch}.final_logit_softcapping", 30.0)
    if arch == "gemma3":
        writer.add_uint32(f"{arch}.attention.sliding_window", config["sliding_window"])
        writer.add_uint32(f"{arch}.attention.sliding_window_pattern", config["sliding_window_pattern"])


def _tokenizer(writer: gguf.GGUFWriter) -> None:
    spec = json.loads(tiny._tokenizer_json())
    vocab = spec["model"]["vocab"]
    tokens = sorted(vocab, key=vocab.get)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    writer.add_token_merges(merges)
    writer.add_token_types([3 if t in tiny.SPECIAL_TOKENS else 1 for t in tokens])
    writer.add_bos_token_id(vocab[tiny.EOS])
    writer.add_eos_token_id(vocab[tiny.EOS])
    writer.add_add_bos_token(False)


def stored(name: str, values: np.ndarray, qtype: Q, rng) -> tuple[np.ndarray, Q]:
    """The bytes (or floats) a tensor is written as. 2-D weights take `qtype` where their rows
    fit its blocks; types the library cannot quantize get random blocks with small float16 words."""
    if values.ndim != 2 or name.endswith("norm.weight") or qtype == Q.F32:
        return values.astype(np.float32), Q.F32
    if qtype == Q.F16:
        return values.astype(np.float16), Q.F16
    per_block, block_bytes = gguf.constants.GGML_QUANT_SIZES[qtype]
    if values.shape[1] % per_block:
        return values.astype(np.float32), Q.F32
    try:
        return gguf.quants.quantize(values, qtype), qtype
    except NotImplementedError:
        n_bytes = values.shape[0] * values.shape[1] // per_block * block_bytes
        words = rng.uniform(-0.02, 0.02, (n_bytes + 1) // 2).astype(np.float16).view(np.uint8)[:n_bytes]
        return words.reshape(values.shape[0], -1).copy(), qtype


def write_tiny_gguf(arch: str, path, *, qtype: Q = Q.F32, seed: int = 0, config: dict | None = None):
    """Write a tiny random `arch` model as GGUF at `path`; returns the mlx-lm model it came from."""
    model_type = TINY_ARCH[arch]
    config = config or tiny.config_for(model_type)
    module = importlib.import_module(f"mlx_lm.models.{model_type}")
    mx.random.seed(seed)
    model = module.Model(module.ModelArgs.from_dict(config))
    if arch.startswith("gemma") or arch in ("qwen3",):  # norms at 1 are uninformative: give them values
        params = [(k, mx.random.normal(v.shape) * 0.1) for k, v in tree_flatten(model.parameters()) if "norm" in k]
        model.load_weights(params, strict=False)
    mx.eval(model.parameters())
    writer = gguf.GGUFWriter(str(path), arch)
    _metadata(writer, arch, config)
    _tokenizer(writer)
    rng = np.random.default_rng(seed)
    for name, value in tree_flatten(model.parameters()):
        values = np.array(value, dtype=np.float32)
        if arch in ("llama", "mistral") and name.endswith(("q_proj.weight", "k_proj.weight")):
            heads = config["num_attention_heads"] if "q_proj" in name else config["num_key_value_heads"]
            values = interleave_rope_rows(values, heads)
        if arch.startswith("gemma") and name.endswith("norm.weight"):
            values = values + np.float32(1.0)
        data, dtype = stored(name, values, qtype, rng)
        writer.add_tensor(gguf_name(arch, name), data, raw_dtype=dtype)
    if (config.get("rope_scaling") or {}).get("rope_type") == "llama3":
        # llama.cpp stores Llama 3's frequency scaling as per-dimension factors on the RoPE periods
        dims = config["hidden_size"] // config["num_attention_heads"]
        plain = config["rope_theta"] ** (np.arange(0, dims, 2, dtype=np.float64) / dims)
        scaled = np.array(model.layers[0].self_attn.rope._freqs, dtype=np.float64)
        writer.add_tensor("rope_freqs.weight", (scaled / plain).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return model
