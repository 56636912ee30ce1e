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
            on_block = getattr(_local, "on_block", None)
            if on_block is not None:
                on_block()
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

    def forward(self, ids: mx.array, *, embeds=None, plans=None, cache=None, cancel=None,
                on_block=None, eval_blocks: bool | None = None) -> mx.array:
        """Last-position logits [B, V]; embeds: [B, T, D] used instead of the embedding output;
        plans: {(kind, layer): TapPlan}; cache: one PrefixCache per layer;
        cancel: an Event checked after each block, raising TraceCancelled once set;
        on_block: called after each block is evaluated. Blocks are evaluated one by one on
        CPU (default) or when `eval_blocks` is True; otherwise neither is called."""
        table = {id(self.taps[kind][layer]): plan for (kind, layer), plan in (plans or {}).items()}
        if embeds is not None:
            table[id(self.embed)] = embeds
        _local.plans = table
        # on CPU, evaluate block by block: MLX's CPU stream thread idles a quarter of the
        # time when handed a whole forward's graph at once (see packed.py)
        if eval_blocks is None:
            eval_blocks = mx.default_device() == mx.cpu
        _local.eval_blocks, _local.cancel, _local.on_block = eval_blocks, cancel, on_block
        try:
            logits = self.model(ids, cache=cache) if cache is not None else self.model(ids)
        finally:
            _local.plans, _local.eval_blocks, _local.cancel, _local.on_block = None, False, None, None
        return logits[:, -1, :]

    def record(self, ids: mx.array, *, embeds=None, kinds=KIND_SLOTS, batch_rows: int | None = None,
               cancel=None, on_layer=None):
        """Run once, keeping the `kinds`' outputs at every layer and each layer's keys/values:
        ({kind: [L x [B, T, D]]}, logits [B, V], [L x (keys, values)] or None), all evaluated.

        The rows run in batches of at most `batch_rows` (all at once by default), so only one
        batch's activations are alive besides what is kept. Blocks are evaluated one by one:
        `cancel` (an Event) is checked after each, raising TraceCancelled once set, and
        `on_layer(batch, layer)` is called after each (batch from 0, layer from 1)."""
        B = ids.shape[0]
        size = B if not batch_rows else max(1, min(B, batch_rows))
        parts = []
        for b, r0 in enumerate(range(0, B, size)):
            rows = slice(r0, min(B, r0 + size))
            done = [0]

            def block_done(b=b, done=done):
                done[0] += 1
                if on_layer is not None:
                    on_layer(b, done[0])

            plans = {(k, i): TapPlan(record=True) for k in kinds for i in range(self.n_layers)}
            cache = [PrefixCache() for _ in range(self.n_layers)] if self.prefix_cache else None
            logits = self.forward(ids[rows], embeds=None if embeds is None else embeds[rows], plans=plans,
                                  cache=cache, cancel=cancel, on_block=block_done, eval_blocks=True)
            states = {k: [plans[(k, i)].recorded for i in range(self.n_layers)] for k in kinds}
            kv = [c.state for c in cache] if cache is not None else None
            mx.eval(logits, states, kv or [])
            check_cancel(cancel)
            parts.append((states, logits, kv))
            del plans, cache, states, logits, kv
        if len(parts) == 1:
            return parts[0]
        return _concatenate(parts, kinds, self.n_layers)


def _concatenate(parts: list, kinds, n_layers: int):
    """One recording from the batches' (states, logits, kv), joined along the rows one array at
    a time, each batch's piece dropped once joined (peak: the result and one layer's pieces)."""

    def join(pieces: list) -> mx.array:
        out = mx.concatenate(pieces, axis=0)
        mx.eval(out)
        pieces.clear()
        return out

    states = {}
    for k in kinds:
        states[k] = []
        for i in range(n_layers):
            pieces = []
            for part in parts:
                pieces.append(part[0][k][i])
                part[0][k][i] = None
            states[k].append(join(pieces))
    logits = join([part[1] for part in parts])
    kv = None
    if parts[0][2] is not None:
        kv = []
        for i in range(n_layers):
            joined = []
            for j in range(2):
                pieces = []
                for part in parts:
                    pieces.append(part[2][i][j])
                joined.append(join(pieces))
            for part in parts:
                part[2][i] = None
            kv.append(tuple(joined))
    return states, logits, kv
