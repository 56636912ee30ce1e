"""GGUF files -> an mlx-lm model and a `tokenizers` tokenizer, through llama.cpp's `gguf` package.

Reading: the header is first checked in pure Python (tracer.models.gguf_header:
a crafted header gets one clear error, never a crash or a hang), then
`gguf.GGUFReader` reads the metadata and maps the tensors.

Weights: by default every tensor becomes float32 through `gguf.quants.dequantize`,
llama.cpp's own reference dequantizer for each type (F16, BF16, Q4_0..Q8_0, the
K-quants, the IQ types, ...): the model computes with exactly the weights the
file describes. With `--keep-quantized` (`dequantize=False`), a file whose
quantized tensors are all Q4_0, Q4_1 or Q8_0 is read by MLX's own loader, which
keeps them packed and exact (4/8-bit affine, group 32); any other quantized type
is dequantized as above and re-quantized by MLX to 8 bits (group 32), which is
*not* exact: `LoadedModel.summary()` says so.

Architectures: llama, mistral, qwen2, qwen3, gemma2, gemma3, phi3 and gpt2 are
mapped onto mlx-lm's model classes (ARCHS). Two llama.cpp conventions are undone
here: llama/mistral Q and K rows are permuted for interleaved RoPE (so the model
is built with `rope_traditional=True`, which is the same computation), and the
Gemma converters store RMSNorm weights as 1 + w (mlx-lm's Gemma norms add the 1
themselves, so it is subtracted).

Tokenizers: byte-level BPE (`tokenizer.ggml.model = gpt2`, with the file's
pre-tokenizer) and SentencePiece vocabularies (`llama`: merges in the order of the
pieces' scores, byte fallback, the leading-space rule from the metadata).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from functools import lru_cache

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize as gguf_dequantize
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from ..errors import ModelError
from .gguf_header import GGML_TYPE_NAMES, validate_gguf

GGUF_GROUP_SIZE = 32
MLX_PACKED_TYPES = {"Q4_0": 4, "Q4_1": 4, "Q8_0": 8}  # what MLX's loader keeps packed, exactly, and at how many bits
REQUANTIZE_BITS = 8  # --keep-quantized for the other quantized types (approximate)
UNQUANTIZED_TYPES = ("F32", "F16", "BF16")


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's message as one line (MLX puts the parameter names it
    complains about on the following lines), capped at `limit` characters."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------- reading


@dataclass
class GGUFFile:
    """A checked GGUF file: its metadata as plain Python values and its tensors (memory-mapped)."""

    path: str
    meta: dict
    tensors: list  # gguf.ReaderTensor: name, tensor_type, shape, data (numpy view)

    @property
    def arch(self) -> str:
        return str(self.meta.get("general.architecture", "?"))

    def type_names(self) -> set[str]:
        return {GGML_TYPE_NAMES[int(t.tensor_type)] for t in self.tensors}


def read_gguf(path: str) -> GGUFFile:
    """Check and open the GGUF file at `path`.

    Returns:
        A GGUFFile; any problem is one ModelError.
    """
    if not os.path.exists(path):
        raise ModelError(f"model file not found: {path}")
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc.strerror}") from None
    if magic != b"GGUF":
        raise ModelError(f"{path} is not a GGUF file (bad magic {magic!r})")
    stat = os.stat(path)
    return read_checked(path, stat.st_mtime_ns, stat.st_size, stat.st_ino)


@lru_cache(maxsize=1)
def read_checked(path: str, mtime_ns: int, size: int, inode: int) -> GGUFFile:
    """The file read once for the memory plan and the loader (gguf.GGUFReader walks every metadata
    string, ~2.7 s for a 49k-token vocabulary); a changed file (time, size, inode) is read again.
    (A file rewritten in place within one timestamp tick would not be: `read_checked.cache_clear()`.)"""
    validate_gguf(path)
    try:
        reader = GGUFReader(path)
        meta = {name: f.contents() for name, f in reader.fields.items() if not name.startswith("GGUF.")}
    except Exception as exc:  # the library raises ValueError, UnicodeDecodeError, ... for bad content
        raise ModelError(f"cannot read GGUF {path}: {one_line(exc)}") from None
    return GGUFFile(path, meta, list(reader.tensors))


def tensor_f32(tensor) -> np.ndarray:
    """One GGUF tensor as float32, in numpy's (row-major) shape, by llama.cpp's reference dequantizer."""
    values = gguf_dequantize(tensor.data, tensor.tensor_type)
    shape = tuple(int(d) for d in reversed(tensor.shape.tolist()))
    return np.ascontiguousarray(values, dtype=np.float32).reshape(shape)


# --------------------------------------------------------------------------- metadata -> mlx-lm config


class _Meta:
    """Typed reads of `<arch>.<key>` metadata, each failure one ModelError naming the key."""

    def __init__(self, meta: dict, arch: str):
        self.meta, self.arch = meta, arch

    def get(self, key: str, default=None):
        full = f"{self.arch}.{key}"
        if full not in self.meta:
            if default is None:
                raise ModelError(f"GGUF metadata lacks {full}")
            return default
        return self.meta[full]

    def whole(self, key: str, default=None) -> int:
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < 1:
            raise ModelError(f"GGUF metadata: {self.arch}.{key} must be a positive integer (got {value!r:.40})")
        return int(value)

    def number(self, key: str, default=None) -> float:
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ModelError(f"GGUF metadata: {self.arch}.{key} must be a positive number (got {value!r:.40})")
        return float(value)


def _attention_shape(m: _Meta) -> dict:
    hidden = m.whole("embedding_length")
    heads = m.whole("attention.head_count")
    kv_heads = m.whole("attention.head_count_kv", heads)
    if heads % kv_heads:
        raise ModelError(
            f"GGUF metadata: {m.arch}.attention.head_count {heads} is not a multiple of "
            f"{m.arch}.attention.head_count_kv {kv_heads}"
        )
    if hidden % heads and f"{m.arch}.attention.key_length" not in m.meta:
        raise ModelError(
            f"GGUF metadata: {m.arch}.embedding_length {hidden} is not a multiple of {m.arch}.attention.head_count {heads}"
        )
    head_dim = m.whole("attention.key_length", hidden // heads)
    return {"hidden_size": hidden, "num_attention_heads": heads, "num_key_value_heads": kv_heads, "head_dim": head_dim}


def _decoder_config(m: _Meta, vocab: int, *, eps_default: float = 1e-5) -> dict:
    """The fields every RMSNorm decoder (llama, qwen, gemma, phi3) shares."""
    return {
        **_attention_shape(m),
        "num_hidden_layers": m.whole("block_count"),
        "intermediate_size": m.whole("feed_forward_length"),
        "rms_norm_eps": m.number("attention.layer_norm_rms_epsilon", eps_default),
        "vocab_size": m.whole("vocab_size", vocab or None),
        "max_position_embeddings": m.whole("context_length", 2048),
    }


def _llama_config(m: _Meta, vocab: int) -> dict:
    return {**_decoder_config(m, vocab), "rope_theta": m.number("rope.freq_base", 10000.0), "rope_traditional": True}


def _qwen_config(m: _Meta, vocab: int) -> dict:
    return {**_decoder_config(m, vocab, eps_default=1e-6), "rope_theta": m.number("rope.freq_base", 1000000.0)}


def _gemma_scalar(config: dict) -> float:
    """Gemma's query scale: 1/sqrt(head_dim), except the 27B models (46 or 62 layers), which
    scale by 1/sqrt(hidden/heads): the rule llama.cpp applies, as GGUF has no key for it."""
    if config["num_hidden_layers"] in (46, 62):
        return config["hidden_size"] / config["num_attention_heads"]
    return config["head_dim"]


def _gemma2_config(m: _Meta, vocab: int) -> dict:
    config = {**_decoder_config(m, vocab, eps_default=1e-6), "rope_theta": m.number("rope.freq_base", 10000.0)}
    config["attn_logit_softcapping"] = m.number("attn_logit_softcapping", 50.0)
    config["final_logit_softcapping"] = m.number("final_logit_softcapping", 30.0)
    config["query_pre_attn_scalar"] = _gemma_scalar(config)
    return config


def _gemma3_config(m: _Meta, vocab: int) -> dict:
    config = {**_decoder_config(m, vocab, eps_default=1e-6), "rope_theta": m.number("rope.freq_base", 1000000.0)}
    config["sliding_window"] = m.whole("attention.sliding_window", 512)
    # every 6th layer global, as llama.cpp assumes when the file does not say
    config["sliding_window_pattern"] = m.whole("attention.sliding_window_pattern", 6)
    config["query_pre_attn_scalar"] = _gemma_scalar(config)
    if str(m.meta.get(f"{m.arch}.rope.scaling.type", "")) == "linear":
        config["rope_scaling"] = {"rope_type": "linear", "factor": m.number("rope.scaling.factor")}
    return config


def _phi3_config(m: _Meta, vocab: int) -> dict:
    config = {**_decoder_config(m, vocab), "rope_theta": m.number("rope.freq_base", 10000.0)}
    rotary = m.whole("rope.dimension_count", config["head_dim"])
    config["partial_rotary_factor"] = rotary / config["head_dim"]
    config["original_max_position_embeddings"] = m.whole(
        "rope.scaling.original_context_length", config["max_position_embeddings"]
    )
    return config


def _gpt2_config(m: _Meta, vocab: int) -> dict:
    hidden, heads = m.whole("embedding_length"), m.whole("attention.head_count")
    if hidden % heads:
        raise ModelError(f"GGUF metadata: {m.arch}.embedding_length {hidden} is not a multiple of {m.arch}.attention.head_count {heads}")
    context = m.whole("context_length", 1024)
    return {
        "n_embd": hidden, "n_head": heads, "n_layer": m.whole("block_count"), "n_ctx": context,
        "n_positions": context, "layer_norm_epsilon": m.number("attention.layer_norm_epsilon", 1e-5),
        "vocab_size": m.whole("vocab_size", vocab or None),
    }


_DECODER_LAYER = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
}
_DECODER_TOP = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_QK_NORMS = {"attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm"}
_GEMMA_LAYER = {
    **_DECODER_LAYER, **_QK_NORMS, "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm", "post_ffw_norm": "post_feedforward_layernorm",
}
_PHI3_LAYER = {
    "attn_qkv": "self_attn.qkv_proj", "attn_output": "self_attn.o_proj", "ffn_up": "mlp.gate_up_proj",
    "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
}
_GPT2_LAYER = {
    "attn_norm": "ln_1", "attn_qkv": "attn.c_attn", "attn_output": "attn.c_proj",
    "ffn_norm": "ln_2", "ffn_up": "mlp.c_fc", "ffn_down": "mlp.c_proj",
}
_GPT2_TOP = {"token_embd": "model.wte", "position_embd": "model.wpe", "output_norm": "model.ln_f", "output": "lm_head"}


@dataclass(frozen=True)
class ArchSpec:
    """How one GGUF architecture maps onto an mlx-lm model class.

    model_type: the mlx-lm module; config: metadata -> ModelArgs fields; layer/top:
    GGUF tensor base names -> mlx-lm parameter paths; norm_offset: what the converter
    added to RMSNorm weights (Gemma: 1); tied_only: the class has no separate lm_head;
    sanitize: run the class's own sanitize (it decides about tying)."""

    model_type: str
    config: object
    layer: dict
    top: dict = field(default_factory=lambda: dict(_DECODER_TOP))
    layer_prefix: str = "model.layers"
    norm_offset: float = 0.0
    tied_only: bool = False
    sanitize: bool = False


ARCHS = {
    "llama": ArchSpec("llama", _llama_config, _DECODER_LAYER),
    "mistral": ArchSpec("llama", _llama_config, _DECODER_LAYER),
    "qwen2": ArchSpec("qwen2", _qwen_config, _DECODER_LAYER),
    "qwen3": ArchSpec("qwen3", _qwen_config, {**_DECODER_LAYER, **_QK_NORMS}),
    "gemma2": ArchSpec("gemma2", _gemma2_config, _GEMMA_LAYER, norm_offset=1.0, tied_only=True),
    "gemma3": ArchSpec("gemma3_text", _gemma3_config, _GEMMA_LAYER, norm_offset=1.0, sanitize=True),
    "phi3": ArchSpec("phi3", _phi3_config, _PHI3_LAYER),
    "gpt2": ArchSpec("gpt2", _gpt2_config, _GPT2_LAYER, top=_GPT2_TOP, layer_prefix="model.h", tied_only=True),
}
SUPPORTED_ARCHS = tuple(ARCHS)


def arch_spec(meta: dict) -> ArchSpec:
    arch = str(meta.get("general.architecture", "?"))
    if arch not in ARCHS:
        raise ModelError(f"unsupported GGUF architecture '{arch:.40}' (supported: {', '.join(SUPPORTED_ARCHS)})")
    return ARCHS[arch]


def model_args(meta: dict, tensor_names=()) -> dict:
    """The mlx-lm config (ModelArgs fields, model_type included) a GGUF file's metadata describes.

    Args:
        meta: the file's metadata.
        tensor_names: the file's tensor names (decides about tied embeddings, phi3's long RoPE).
    """
    spec = arch_spec(meta)
    arch = str(meta["general.architecture"])
    n_vocab = len(meta.get("tokenizer.ggml.tokens", []))
    config = {"model_type": spec.model_type, **spec.config(_Meta(meta, arch), n_vocab)}
    if not spec.tied_only:
        config["tie_word_embeddings"] = "output.weight" not in tensor_names
    return config


def _mlx_name(spec: ArchSpec, gguf_name: str) -> str:
    parts = gguf_name.split(".")
    if parts[0] == "blk" and len(parts) == 4 and parts[1].isdigit() and parts[2] in spec.layer:
        return f"{spec.layer_prefix}.{parts[1]}.{spec.layer[parts[2]]}.{parts[3]}"
    base = ".".join(parts[:-1])
    if parts[0] != "blk" and base in spec.top:
        return f"{spec.top[base]}.{parts[-1]}"
    raise ModelError(f"unexpected GGUF tensor {gguf_name!r:.80} for a {spec.model_type} model")


# --------------------------------------------------------------------------- weights -> model


_ROPE_FACTOR_TENSORS = ("rope_freqs.weight", "rope_factors_long.weight", "rope_factors_short.weight")


def requantizes(gfile: GGUFFile) -> bool:
    """Does --keep-quantized re-quantize this file's quantized tensors (some is of a type MLX's own
    loader does not keep packed), rather than read them packed and exact?"""
    return bool(gfile.type_names() - set(UNQUANTIZED_TYPES) - set(MLX_PACKED_TYPES))


def _float_weights(gfile: GGUFFile, spec: ArchSpec, dtype, *, requantize: bool = False) -> tuple[dict, dict, dict]:
    """Every tensor dequantized under its mlx-lm name, the RoPE frequency tensors apart; with
    `requantize`, each quantized matrix re-quantized to REQUANTIZE_BITS as soon as it is read, so
    that the float32 weights of the whole model are never held at once.

    Returns:
        (weights, bits per re-quantized layer, rope tensors).
    """
    weights, bits, rope = {}, {}, {}
    for tensor in gfile.tensors:
        values = tensor_f32(tensor)
        if tensor.name in _ROPE_FACTOR_TENSORS:
            rope[tensor.name] = values
            continue
        if spec.norm_offset and tensor.name.endswith("norm.weight"):
            values = values - np.float32(spec.norm_offset)
        name, array = _mlx_name(spec, tensor.name), mx.array(values)
        quantized = GGML_TYPE_NAMES[int(tensor.tensor_type)] not in UNQUANTIZED_TYPES
        if requantize and quantized and name.endswith(".weight") and array.ndim == 2:
            prefix = name[: -len(".weight")]
            packed = mx.quantize(array, group_size=GGUF_GROUP_SIZE, bits=REQUANTIZE_BITS)
            mx.eval(packed)  # the float32 matrix is freed here
            weights[name], weights[prefix + ".scales"], weights[prefix + ".biases"] = packed
            bits[prefix] = REQUANTIZE_BITS
        else:
            weights[name] = array.astype(dtype)
    return weights, bits, rope


def _packed_weights(gfile: GGUFFile, spec: ArchSpec, dtype) -> tuple[dict, dict, dict]:
    """--keep-quantized: MLX's loader for Q4_0/Q4_1/Q8_0 (packed, exact); other quantized
    types re-quantized to REQUANTIZE_BITS. Returns (weights, bits per quantized layer, rope tensors)."""
    if requantizes(gfile) or not gfile.type_names() - set(UNQUANTIZED_TYPES):  # nothing packed to keep
        return _float_weights(gfile, spec, dtype, requantize=True)
    validate_gguf(gfile.path, for_mlx=True)
    try:
        raw = mx.load(gfile.path)
    except Exception as exc:  # mlx raises RuntimeError/ValueError for bad files
        raise ModelError(f"cannot read GGUF {gfile.path}: {one_line(exc)}") from None
    types = {t.name: GGML_TYPE_NAMES[int(t.tensor_type)] for t in gfile.tensors}
    rope = {k: np.array(v, dtype=np.float32) for k, v in raw.items() if k in _ROPE_FACTOR_TENSORS}
    weights = {_mlx_name(spec, k): v for k, v in raw.items() if k not in _ROPE_FACTOR_TENSORS}
    bits = {}
    for key in raw:
        if key.endswith(".scales"):
            matrix = key[: -len(".scales")] + ".weight"
            bits[_mlx_name(spec, matrix)[: -len(".weight")]] = MLX_PACKED_TYPES[types[matrix]]
    return _cast(weights, dtype), bits, rope


def _cast(weights: dict, dtype) -> dict:
    return {
        k: (v.astype(dtype) if mx.issubdtype(v.dtype, mx.floating) and not k.endswith((".scales", ".biases")) else v)
        for k, v in weights.items()
    }


def build_model(gfile: GGUFFile, *, dequantize: bool, dtype=mx.float32):
    """A ready mlx-lm model from a GGUF file.

    Args:
        gfile: the file, from read_gguf.
        dequantize: every tensor float (exact, by llama.cpp's dequantizer); otherwise
            quantized tensors stay quantized MLX layers (see the module docstring).
        dtype: the float type of the weights.
    """
    import importlib

    spec = arch_spec(gfile.meta)
    config = model_args(gfile.meta, {t.name for t in gfile.tensors})
    if dequantize:
        weights, bits, rope = _float_weights(gfile, spec, dtype)
    else:
        weights, bits, rope = _packed_weights(gfile, spec, dtype)
    if spec.tied_only and "lm_head.weight" in weights:
        weights.pop("lm_head.weight")
        weights.pop("lm_head.scales", None), weights.pop("lm_head.biases", None)
    if "rope_factors_long.weight" in rope:
        config["rope_scaling"] = {
            "type": "longrope",
            "long_factor": rope["rope_factors_long.weight"].tolist(),
            "short_factor": rope.get("rope_factors_short.weight", rope["rope_factors_long.weight"]).tolist(),
        }
    module = importlib.import_module(f"mlx_lm.models.{spec.model_type}")
    try:
        model = module.Model(module.ModelArgs.from_dict(config))
    except (ValueError, TypeError, AssertionError) as exc:
        raise ModelError(f"GGUF metadata does not describe a {spec.model_type} model: {one_line(exc)}") from None
    if spec.sanitize:
        weights = model.sanitize(weights)
    if bits:
        nn.quantize(model, class_predicate=lambda path, m: {"group_size": GGUF_GROUP_SIZE, "bits": bits[path]} if path in bits else False)
    try:
        model.load_weights(list(weights.items()), strict=True)
    except ValueError as exc:
        raise ModelError(f"GGUF tensors do not fit a {spec.model_type} model: {one_line(exc)}") from None
    if "rope_freqs.weight" in rope:
        _scale_rope(model, config, rope["rope_freqs.weight"])
    mx.eval(model.parameters())
    return model


class FactorRoPE(nn.Module):
    """RoPE whose frequencies are divided by per-dimension factors (llama.cpp's `rope_freqs`
    tensor, how GGUF stores Llama 3's frequency scaling): period_i = base^(2i/d) * factor_i."""

    def __init__(self, dims: int, traditional: bool, base: float, factors: np.ndarray):
        super().__init__()
        self.dims, self.traditional = dims, traditional
        periods = base ** (np.arange(0, dims, 2, dtype=np.float64) / dims)
        self._freqs = mx.array((periods * factors.astype(np.float64)).astype(np.float32))

    def __call__(self, x, offset: int = 0):
        return mx.fast.rope(x, self.dims, traditional=self.traditional, base=None, scale=1.0, offset=offset, freqs=self._freqs)


def _scale_rope(model, config: dict, factors: np.ndarray) -> None:
    dims = config["head_dim"]
    if factors.shape != (dims // 2,):
        raise ModelError(f"GGUF tensor rope_freqs.weight has shape {factors.shape}, not ({dims // 2},)")
    for layer in model.layers:
        layer.self_attn.rope = FactorRoPE(dims, config.get("rope_traditional", False), config["rope_theta"], factors)


# --------------------------------------------------------------------------- tokenizers

_GPT2_SPLIT = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
_LLAMA3_SPLIT = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
_QWEN2_SPLIT = _LLAMA3_SPLIT.replace(r"\p{N}{1,3}", r"\p{N}")
# tokenizer.ggml.pre -> (the split regex, digits one by one first)
BPE_PRE_TOKENIZERS = {
    "default": (_GPT2_SPLIT, False), "gpt-2": (_GPT2_SPLIT, False), "smollm": (_GPT2_SPLIT, True),
    "llama-bpe": (_LLAMA3_SPLIT, False), "llama3": (_LLAMA3_SPLIT, False), "qwen2": (_QWEN2_SPLIT, False),
}
_CONTROL, _USER_DEFINED = 3, 4  # tokenizer.ggml.token_type values


def build_tokenizer(meta: dict) -> Tokenizer:
    """The tokenizer a GGUF file's metadata describes (byte-level BPE or SentencePiece).

    Returns:
        A `tokenizers` Tokenizer whose encode() adds BOS where the file asks for it.
    """
    kind = str(meta.get("tokenizer.ggml.model", ""))
    tokens = list(meta.get("tokenizer.ggml.tokens", []))
    if not tokens:
        raise ModelError("GGUF file has no tokenizer vocabulary")
    if kind == "gpt2":
        tok = _byte_level_bpe(meta, tokens)
        add_bos_default = False
    elif kind == "llama":
        tok = _sentencepiece(meta, tokens)
        add_bos_default = True
    else:
        raise ModelError(
            f"unsupported GGUF tokenizer '{kind or 'missing'}' (supported: byte-level BPE 'gpt2', SentencePiece 'llama')"
        )
    types = list(meta.get("tokenizer.ggml.token_type", []))
    special = [t for t, kind in zip(tokens, types) if kind in (_CONTROL, _USER_DEFINED)]
    tok.add_special_tokens(special)
    if meta.get("tokenizer.ggml.add_bos_token", add_bos_default) and "tokenizer.ggml.bos_token_id" in meta:
        bos_id = meta["tokenizer.ggml.bos_token_id"]
        if not isinstance(bos_id, int) or not 0 <= bos_id < len(tokens):
            raise ModelError(f"GGUF metadata: tokenizer.ggml.bos_token_id {bos_id!r:.20} is not a token id")
        bos = tokens[bos_id]
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, bos_id)])
    return tok


def _byte_level_bpe(meta: dict, tokens: list) -> Tokenizer:
    merges = list(meta.get("tokenizer.ggml.merges", []))
    if not merges:
        raise ModelError("GGUF file has no tokenizer merges")
    pre = str(meta.get("tokenizer.ggml.pre", "default"))
    if pre not in BPE_PRE_TOKENIZERS:
        raise ModelError(f"unsupported GGUF pre-tokenizer '{pre:.40}' (supported: {', '.join(BPE_PRE_TOKENIZERS)})")
    pattern, digits = BPE_PRE_TOKENIZERS[pre]
    pairs = [tuple(m.split(" ", 1)) for m in merges]
    vocab = {t: i for i, t in enumerate(tokens)}
    for pair in pairs:  # `tokenizers` panics (not an Exception) on a merge outside the vocabulary
        if len(pair) != 2 or pair[0] not in vocab or pair[1] not in vocab or pair[0] + pair[1] not in vocab:
            raise ModelError(f"GGUF tokenizer: merge {' '.join(pair)!r:.60} is not two tokens of the vocabulary")
    tok = Tokenizer(_bpe(vocab, pairs, fuse_unk=False))
    steps = [pre_tokenizers.Digits(individual_digits=True)] if digits else []
    if pattern == _GPT2_SPLIT:  # ByteLevel's own split is GPT-2's
        steps.append(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True))
    else:
        steps.append(pre_tokenizers.Split(Regex(pattern), behavior="isolated"))
        steps.append(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False))
    tok.pre_tokenizer = steps[0] if len(steps) == 1 else pre_tokenizers.Sequence(steps)
    tok.decoder = decoders.ByteLevel()
    return tok


def _bpe(vocab: dict, merges: list, **options):
    try:
        return models.BPE(vocab, merges, **options)
    except Exception as exc:  # tokenizers raises a bare Exception for a merge outside the vocabulary
        raise ModelError(f"GGUF tokenizer: {one_line(exc)}") from None


def _sentencepiece(meta: dict, tokens: list) -> Tokenizer:
    """SentencePiece as llama.cpp runs it: spaces become U+2581, then the adjacent pair whose
    merged piece scores highest is merged until none is in the vocabulary; characters with
    no piece fall back to <0xXX> byte pieces. Written as a BPE whose merge ranks follow the
    merged pieces' scores."""
    scores = list(meta.get("tokenizer.ggml.scores", []))
    if len(scores) != len(tokens):
        raise ModelError("GGUF SentencePiece vocabulary has no score for every token")
    types = list(meta.get("tokenizer.ggml.token_type", [1] * len(tokens)))
    vocab = {t: i for i, t in enumerate(tokens)}
    mergeable = {t for t, kind in zip(tokens, types) if kind == 1}
    ranked = []
    for piece in mergeable:
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in vocab and right in vocab:
                ranked.append((-scores[vocab[piece]], vocab[piece], left, right))
    ranked.sort()
    unk_id = meta.get("tokenizer.ggml.unknown_token_id")
    unk = tokens[unk_id] if isinstance(unk_id, int) and 0 <= unk_id < len(tokens) else None
    tok = Tokenizer(_bpe(vocab, [(a, b) for *_, a, b in ranked], unk_token=unk, fuse_unk=True, byte_fallback=True))
    steps = [normalizers.Replace(" ", "\u2581")]
    if meta.get("tokenizer.ggml.add_space_prefix", True):
        steps.insert(0, normalizers.Prepend("\u2581"))
    tok.normalizer = normalizers.Sequence(steps)
    strip = [decoders.Strip(" ", 1, 0)] if meta.get("tokenizer.ggml.add_space_prefix", True) else []
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(), *strip])
    return tok
