"""Taps around the model's submodules, and the batched patched forward.

A `Tap` wraps a block, an attention or an MLP module. Per forward it is given a
`TapPlan`: record the output, replay a cached output instead of computing
(layers below a row group's first restored layer), and/or overwrite selected
(row, position) entries with clean values: `h = where(mask, clean, h)`.
With no plan a tap is transparent.

Plans live in thread-local storage, so several engine workers (each on its own
thread and MLX stream) can run forwards through the same model at once.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn

from .anatomy import Anatomy, Slot, find_anatomy
from .errors import check_cancel
from .fastops import install_fast_mlp
from .packed import PackedForward, supports_packed

_local = threading.local()


def _plans() -> dict:
    return getattr(_local, "plans", None) or {}


@dataclass
class TapPlan:
    replay: mx.array | None = None  # [B, T, D] used instead of computing
    mask: mx.array | None = None  # [B, T, 1] bool: where to restore
    clean: mx.array | None = None  # [T, D] (or [B, T, D]) clean values
    freeze: mx.array | None = None  # [B, T, 1] bool: where to hold the corrupted run's value
    frozen: mx.array | None = None  # [B, T, D] the corrupted run's values (severed paths)
    record: bool = False
    recorded: mx.array | None = None


class Tap(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def __getattr__(self, name):  # transparent to code reading the wrapped module's attributes
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "inner" or "inner" not in self:
                raise
            return getattr(self["inner"], name)

    def __call__(self, *args, **kwargs):
        plan = _plans().get(id(self))
        if plan is None:
            return self.inner(*args, **kwargs)
        out = plan.replay if plan.replay is not None else self.inner(*args, **kwargs)
        if plan.mask is not None:
            out = mx.where(plan.mask, plan.clean, out)
        if plan.freeze is not None:
            out = mx.where(plan.freeze, plan.frozen, out)
        if plan.record:
            plan.recorded = out
        return out


class BlockTap(Tap):
    """A block's tap; on CPU it also evaluates the block's output (see `forward`)."""

    def __call__(self, *args, **kwargs):
        out = super().__call__(*args, **kwargs)
        if getattr(_local, "eval_blocks", False) and isinstance(out, mx.array):
            mx.eval(out)
            check_cancel(getattr(_local, "cancel", None))
        return out


class EmbedTap(Tap):
    """The embedding output, or given per-row embeddings instead (the noised subject,
    computed exactly in corruption.py)."""

    def __call__(self, ids):
        embeds = _plans().get(id(self))
        # a new array object: some models add position embeddings in place (`h += wpe(...)`),
        # which in MLX rewrites the very array object they were handed
        return self.inner(ids) if embeds is None else mx.array(embeds)

    def as_linear(self, x):
        return self.inner.as_linear(x)


class LastPosition(Tap):
    """Final norm on the last position only: logits are needed nowhere else."""

    def __call__(self, x):
        return self.inner(x[:, -1:, :])


def _install(slot: Slot, cls) -> Tap:
    current = slot.get()
    if isinstance(current, cls):
        return current
    tap = cls(current)
    slot.set(tap)
    return tap


class PrefixCache:
    """A KV cache holding given keys/values for the first `offset` positions (the
    corrupted run's), so a forward can compute only the later positions. With no
    prefix it records the keys/values it sees."""

    def __init__(self, keys=None, values=None):
        self.keys, self.values = keys, values
        self.offset = 0 if keys is None else keys.shape[2]

    def update_and_fetch(self, keys, values):
        if self.keys is None:
            self.keys, self.values = keys, values
        else:
            self.keys = mx.concatenate([self.keys, keys], axis=2)
            self.values = mx.concatenate([self.values, values], axis=2)
        self.offset += keys.shape[2]
        return self.keys, self.values

    @property
    def state(self):
        return self.keys, self.values

    def make_mask(self, n, **kwargs):
        from mlx_lm.models.cache import create_attention_mask

        return create_attention_mask(n, offset=self.offset, **kwargs)

    def empty(self):
        return self.keys is None


def supports_prefix_cache(model) -> bool:
    """True when every layer uses a plain (non-rotating, non-quantized) KV cache."""
    from mlx_lm.models.cache import KVCache, make_prompt_cache

    try:
        caches = make_prompt_cache(model)
    except Exception:  # a model without cache support: compute every position
        return False
    return len(caches) == len(model.layers) and all(type(c) is KVCache for c in caches)


class PatchableModel:
    """A model with taps installed on every block, attention and MLP output."""

    KIND_SLOTS = ("hidden", "attn", "mlp")

    def __init__(self, model: nn.Module, *, fast_activation: bool = True):
        self.model = model
        anatomy: Anatomy = find_anatomy(model)
        self.anatomy = anatomy
        self.n_layers = anatomy.n_layers
        self.fast_mlp = install_fast_mlp(model, anatomy) if fast_activation else False
        self.embed = _install(anatomy.embed, EmbedTap)
        self.taps = {
            "hidden": [_install(anatomy.block(i), BlockTap) for i in range(self.n_layers)],
            "attn": [_install(s, Tap) for s in anatomy.attn],
            "mlp": [_install(s, Tap) for s in anatomy.mlp],
        }
        self.last_only = anatomy.final_norm is not None
        if self.last_only:
            _install(anatomy.final_norm, LastPosition)
        self.prefix_cache = supports_prefix_cache(model)
        # the packed forward (packed.py) for plain llama-style models; None: the generic one
        self.packed = PackedForward(model, anatomy) if self.prefix_cache and supports_packed(model, anatomy) else None

    def forward(self, ids: mx.array, *, embeds=None, plans=None, cache=None, cancel=None) -> mx.array:
        """Last-position logits [B, V]; embeds: [B, T, D] used instead of the embedding output;
        plans: {(kind, layer): TapPlan}; cache: one PrefixCache per layer;
        cancel: an Event checked after each block (on CPU), raising TraceCancelled once set."""
        table = {id(self.taps[kind][layer]): plan for (kind, layer), plan in (plans or {}).items()}
        if embeds is not None:
            table[id(self.embed)] = embeds
        _local.plans = table
        # on CPU, evaluate block by block: MLX's CPU stream thread idles a quarter of the
        # time when handed a whole forward's graph at once (see packed.py)
        _local.eval_blocks, _local.cancel = mx.default_device() == mx.cpu, cancel
        try:
            logits = self.model(ids, cache=cache) if cache is not None else self.model(ids)
        finally:
            _local.plans, _local.eval_blocks, _local.cancel = None, False, None
        return logits[:, -1, :]

    def record(self, ids: mx.array, *, embeds=None):
        """Run once, keeping every block/attn/MLP output and each layer's keys/values:
        ({kind: [L x [B, T, D]]}, logits [B, V], [L x (keys, values)] or None)."""
        plans = {(k, i): TapPlan(record=True) for k in self.KIND_SLOTS for i in range(self.n_layers)}
        cache = [PrefixCache() for _ in range(self.n_layers)] if self.prefix_cache else None
        logits = self.forward(ids, embeds=embeds, plans=plans, cache=cache)
        states = {k: [plans[(k, i)].recorded for i in range(self.n_layers)] for k in self.KIND_SLOTS}
        kv = [c.state for c in cache] if cache is not None else None
        return states, logits, kv
