"""Where things are inside an mlx-lm model, found by duck typing in one place.

mlx-lm's `model.layers` is the stable handle across architectures; the names
inside differ (`self_attn`/`attn`/`attention`, `mlp`/`feed_forward`,
`embed_tokens`/`wte`, `norm`/`ln_f`/`final_layernorm`). Anything not found is
an error naming what is missing, never a silent no-op.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn

from ..errors import ModelError

ATTENTION_NAMES = ("self_attn", "attn", "attention", "self_attention", "mixer")
MLP_NAMES = ("mlp", "feed_forward", "ffn", "block_sparse_moe")
EMBED_NAMES = ("embed_tokens", "wte", "tok_embeddings", "word_embeddings", "embedding")
NORM_NAMES = ("norm", "ln_f", "final_layernorm", "norm_f", "final_norm")
BACKBONE_NAMES = ("model", "transformer", "language_model", "backbone")


@dataclass
class Slot:
    """A child module held as `parent.<name>` (or `parent[name]` for lists), so it can be wrapped."""

    parent: object
    name: str | int

    def get(self):
        if isinstance(self.name, int):
            return self.parent[self.name]
        return getattr(self.parent, self.name)

    def set(self, module) -> None:
        if isinstance(self.name, int):
            self.parent[self.name] = module
        else:
            setattr(self.parent, self.name, module)


@dataclass
class Anatomy:
    embed: Slot
    final_norm: Slot | None
    layers: list
    attn: list[Slot]
    mlp: list[Slot]
    hidden_size: int

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    def block(self, i: int) -> Slot:
        return Slot(self.layers, i)

    def embed_weight(self) -> mx.array:
        emb = unwrap(self.embed.get())
        if isinstance(emb, nn.QuantizedEmbedding):
            return mx.dequantize(emb.weight, emb.scales, emb.biases, emb.group_size, emb.bits)
        return emb.weight

    def embed_weight_dtype(self):
        return unwrap(self.embed.get()).weight.dtype

    @property
    def vocab_size(self) -> int:
        """The embedding's rows (the LM head's, tied or not, in every architecture found)."""
        return unwrap(self.embed.get()).weight.shape[0]

    def block_weights(self) -> int:
        """The weights of block 0's matrices (attention's projections and the MLP; a quantized m x n
        matrix counts m * n): what one token through one block multiplies by (tracer.work's unit)."""
        total = 0
        for _, module in unwrap(self.layers[0]).named_modules():
            if isinstance(module, nn.QuantizedLinear):
                total += module.weight.shape[0] * module.weight.shape[1] * 32 // module.bits
            elif isinstance(module, nn.Linear):
                total += module.weight.size
        return total


def unwrap(module):
    """The module a chain of wrappers (each holding it as `.inner`) stands for."""
    while hasattr(module, "inner"):
        module = module.inner
    return module


def _child(module, names):
    for name in names:
        value = getattr(module, name, None) if name in _keys(module) else None
        if isinstance(value, nn.Module):
            return name, value
    return None, None


def _keys(module) -> set:
    keys = set(module.keys()) if isinstance(module, nn.Module) else set()
    return keys | {k for k in vars(module) if not k.startswith("_")}


def _backbone(model: nn.Module) -> nn.Module:
    """The module that owns the embedding: model.model, model.transformer, ... or the model."""
    current = model
    for _ in range(3):
        name, emb = _child(current, EMBED_NAMES)
        if emb is not None:
            return current
        name, inner = _child(current, BACKBONE_NAMES)
        if inner is None:
            break
        current = inner
    raise ModelError(f"cannot find the token embedding in {type(model).__module__}")


def _owned_layers(model, layers: list, owners) -> list:
    """The list object that really holds the blocks. `model.layers` is often a
    property returning a copy (e.g. qwen2's `pipeline_layers` slice); a block
    Slot on a copy would wrap nothing."""
    if model.layers is layers:  # a stored list, not a fresh copy
        return layers
    for owner in owners:
        for value in owner.values() if isinstance(owner, nn.Module) else ():
            if value is layers:
                return layers
            if (
                isinstance(value, list)
                and len(value) == len(layers)
                and all(a is b for a, b in zip(value, layers))
            ):
                return value
    raise ModelError(
        "cannot find the list that holds the blocks (`layers` is a copy of a subset of them)"
    )


def find_anatomy(model: nn.Module) -> Anatomy:
    try:
        layers = model.layers
    except AttributeError:
        raise ModelError(f"{type(model).__module__} has no `layers`") from None
    if not isinstance(layers, list) or not layers:
        raise ModelError(f"{type(model).__module__}: `layers` is not a non-empty list")
    backbone = _backbone(model)
    layers = _owned_layers(model, layers, (backbone, model))
    embed_name, embed = _child(backbone, EMBED_NAMES)
    norm_name, _ = _child(backbone, NORM_NAMES)
    attn, mlp = [], []
    for i, block in enumerate(layers):
        block = unwrap(block)
        a_name, _ = _child(block, ATTENTION_NAMES)
        m_name, _ = _child(block, MLP_NAMES)
        if a_name is None or m_name is None:
            missing = "attention" if a_name is None else "MLP"
            raise ModelError(
                f"block {i} of {type(model).__module__} has no {missing} submodule "
                f"(children: {', '.join(sorted(block.keys()))})"
            )
        attn.append(Slot(block, a_name))
        mlp.append(Slot(block, m_name))
    hidden = int(unwrap(embed).weight.shape[-1])
    if isinstance(unwrap(embed), nn.QuantizedEmbedding):
        hidden = hidden * 32 // unwrap(embed).bits
    return Anatomy(
        embed=Slot(backbone, embed_name),
        final_norm=Slot(backbone, norm_name) if norm_name else None,
        layers=layers,
        attn=attn,
        mlp=mlp,
        hidden_size=hidden,
    )
