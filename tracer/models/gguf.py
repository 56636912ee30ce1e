"""GGUF (llama family) -> mlx-lm llama model + `tokenizers` tokenizer.

The header is checked in pure Python first (tracer.models.gguf_header: MLX's native
parser crashes on crafted headers). Tensors come from `mx.load` (Q4_0/Q4_1/Q8_0
stay packed as weight/scales/biases with group size 32, the scales and biases
in float16; the biases of Q4_0/Q8_0 are -8*scale and -128*scale, which float16
holds exactly unless |scale| exceeds 8188 or 511, far beyond real weights). llama.cpp permutes Q/K rows for interleaved RoPE,
so the model is built with `rope_traditional=True`.
"""

from __future__ import annotations

import math
import os

import mlx.core as mx
import mlx.nn as nn
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

from ..errors import ModelError
from .dequant import dequantize_f32
from .gguf_header import validate_gguf

GGUF_GROUP_SIZE = 32
SUPPORTED_ARCHS = ("llama",)

_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_TOP_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's message as one line (MLX puts the parameter names it
    complains about on the following lines), capped at `limit` characters."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_gguf(path: str) -> tuple[dict, dict]:
    if not os.path.exists(path):
        raise ModelError(f"model file not found: {path}")
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc.strerror}") from None
    if magic != b"GGUF":
        raise ModelError(f"{path} is not a GGUF file (bad magic {magic!r})")
    validate_gguf(path)
    try:
        return mx.load(path, return_metadata=True)
    except Exception as exc:  # mlx raises RuntimeError/ValueError for bad files
        raise ModelError(f"cannot read GGUF {path}: {one_line(exc)}") from None


def _scalar(value):
    if isinstance(value, mx.array):
        return value.item()
    return value


def model_args(meta: dict) -> dict:
    arch = str(meta.get("general.architecture", "?"))
    if arch not in SUPPORTED_ARCHS:
        raise ModelError(
            f"unsupported GGUF architecture '{arch}' (supported: {', '.join(SUPPORTED_ARCHS)})"
        )

    def get(key, default=None):
        full = f"{arch}.{key}"
        if full not in meta:
            if default is None:
                raise ModelError(f"GGUF metadata lacks {full}")
            return default
        return _scalar(meta[full])

    def positive(key, default=None) -> int:
        value = get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < 1:
            raise ModelError(f"GGUF metadata: {arch}.{key} must be a positive integer (got {value!r})")
        return int(value)

    def positive_float(key, default) -> float:
        value = get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ModelError(f"GGUF metadata: {arch}.{key} must be a positive number (got {value!r})")
        return float(value)

    n_vocab = len(meta.get("tokenizer.ggml.tokens", []))
    hidden = positive("embedding_length")
    heads = positive("attention.head_count")
    kv_heads = positive("attention.head_count_kv", heads)
    if hidden % heads:
        raise ModelError(f"GGUF metadata: {arch}.embedding_length {hidden} is not a multiple of {arch}.attention.head_count {heads}")
    if heads % kv_heads:
        raise ModelError(f"GGUF metadata: {arch}.attention.head_count {heads} is not a multiple of {arch}.attention.head_count_kv {kv_heads}")
    return {
        "model_type": "llama",
        "hidden_size": hidden,
        "num_hidden_layers": positive("block_count"),
        "intermediate_size": positive("feed_forward_length"),
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "rms_norm_eps": positive_float("attention.layer_norm_rms_epsilon", 1e-5),
        "vocab_size": positive("vocab_size", n_vocab or None),
        "rope_theta": positive_float("rope.freq_base", 10000.0),
        "max_position_embeddings": positive("context_length", 2048),
        "rope_traditional": True,
        "tie_word_embeddings": True,
    }


def _mlx_name(gguf_name: str) -> str:
    parts = gguf_name.split(".")
    if parts[0] == "blk":
        layer, base, leaf = parts[1], parts[2], parts[3]
        if base not in _LAYER_NAMES:
            raise ModelError(f"unexpected GGUF tensor {gguf_name}")
        return f"model.layers.{layer}.{_LAYER_NAMES[base]}.{leaf}"
    base, leaf = ".".join(parts[:-1]), parts[-1]
    if base not in _TOP_NAMES:
        raise ModelError(f"unexpected GGUF tensor {gguf_name}")
    return f"{_TOP_NAMES[base]}.{leaf}"


def _bits(weights: dict, prefix: str) -> int:
    packed, scales = weights[prefix + ".weight"], weights[prefix + ".scales"]
    return packed.shape[-1] * 32 // (scales.shape[-1] * GGUF_GROUP_SIZE)


def build_model(weights: dict, meta: dict, *, dequantize: bool, dtype=mx.float32):
    """A ready mlx-lm llama model from GGUF tensors. With `dequantize`, quantized
    tensors become exact float32 weights (see tracer.models.dequant); otherwise their
    layers are quantized MLX layers."""
    from mlx_lm.models import llama

    args = model_args(meta)
    mapped = {_mlx_name(k): v for k, v in weights.items()}
    if "lm_head.weight" in mapped:
        args["tie_word_embeddings"] = False
    model = llama.Model(llama.ModelArgs.from_dict(args))
    quantized = {k[: -len(".scales")] for k in mapped if k.endswith(".scales")}
    bits_of = {p: _bits(mapped, p) for p in quantized}
    if dequantize:
        for prefix in quantized:
            mapped[prefix + ".weight"] = dequantize_f32(
                mapped.pop(prefix + ".weight"),
                mapped.pop(prefix + ".scales"),
                mapped.pop(prefix + ".biases"),
                group_size=GGUF_GROUP_SIZE,
                bits=bits_of[prefix],
            )
    elif quantized:
        nn.quantize(
            model,
            class_predicate=lambda path, module: (
                {"group_size": GGUF_GROUP_SIZE, "bits": bits_of[path]}
                if path in bits_of
                else False
            ),
        )
    mapped = {
        k: (v.astype(dtype) if mx.issubdtype(v.dtype, mx.floating) and not k.endswith((".scales", ".biases")) else v)
        for k, v in mapped.items()
    }
    try:
        model.load_weights(list(mapped.items()), strict=True)
    except ValueError as exc:
        raise ModelError(f"GGUF tensors do not fit a llama model: {one_line(exc)}") from None
    mx.eval(model.parameters())
    return model


def build_tokenizer(meta: dict) -> Tokenizer:
    """A byte-level BPE from the GGUF vocabulary and merges."""
    model_kind = str(meta.get("tokenizer.ggml.model", ""))
    if model_kind != "gpt2":
        raise ModelError(
            f"unsupported GGUF tokenizer '{model_kind or 'missing'}' (only byte-level BPE 'gpt2' is supported)"
        )
    tokens = list(meta.get("tokenizer.ggml.tokens", []))
    merges = list(meta.get("tokenizer.ggml.merges", []))
    if not tokens or not merges:
        raise ModelError("GGUF file has no tokenizer vocabulary/merges")
    vocab = {tok: i for i, tok in enumerate(tokens)}
    pairs = [tuple(m.split(" ", 1)) for m in merges]
    tok = Tokenizer(models.BPE(vocab, pairs, fuse_unk=False))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if str(meta.get("tokenizer.ggml.pre", "")) == "smollm":
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), byte_level]
        )
    else:
        tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel()
    types = meta.get("tokenizer.ggml.token_type")
    if types is not None:
        types = types.tolist()
        special = [t for t, kind in zip(tokens, types) if kind == 3]
        tok.add_special_tokens(special)
    if _scalar(meta.get("tokenizer.ggml.add_bos_token", False)):
        bos_id = int(_scalar(meta["tokenizer.ggml.bos_token_id"]))
        bos = tokens[bos_id]
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", special_tokens=[(bos, bos_id)]
        )
    return tok
