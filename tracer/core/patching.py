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

import sys
import threading
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ..errors import check_cancel
from ..models.anatomy import Anatomy, Slot, find_anatomy, unwrap
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
    add: mx.array | None = None  # [B, T, D] added to the output (zeros: the gradient's handle, core/estimate.py)
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
        if plan.add is not None:
            out = out + plan.add
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
    """Final norm on the last position only (the last k while a forward asks for k): logits are
    needed nowhere else."""

    def __call__(self, x):
        last = getattr(_local, "last", 1)
        return self.inner(x[:, -last:, :])


def _install(slot: Slot, cls) -> Tap:
    current = slot.get()
    if isinstance(current, cls):
        return current
    tap = cls(current)
    slot.set(tap)
    return tap


# Query rows per piece of a long causal attention while recording (see causal_attention).
ATTENTION_CHUNK = 256


def causal_attention(q, k, v, scale: float, cancel=None) -> mx.array:
    """Causal softmax attention of q [B, H, n, hd] over k, v [B, kv_heads, T, hd], T >= n (the
    queries are the last n positions; query head h reads kv head h // (H / kv_heads)), in pieces
    of ATTENTION_CHUNK queries. Each piece reads only the keys up to its last query, so a long
    prompt costs about half the full n x T scores (MLX's CPU attention computes them all: at
    T = 1,930 it was most of a recorded block), and each piece is evaluated alone, bounding its
    memory, with a cancel check after it."""
    B, H, n, hd = q.shape
    kv_heads, offset = k.shape[1], k.shape[2] - n
    group = H // kv_heads
    pieces = []
    for i0 in range(0, n, ATTENTION_CHUNK):
        i1 = min(n, i0 + ATTENTION_CHUNK)
        m, keys = i1 - i0, offset + i1
        qc = q[:, :, i0:i1].reshape(B, kv_heads, group * m, hd)
        scores = (qc @ k[:, :, :keys].swapaxes(-1, -2)) * scale  # [B, kv_heads, group * m, keys]
        mask = np.where(np.arange(keys)[None, :] <= offset + np.arange(i0, i1)[:, None], 0.0, -np.inf)
        scores = scores + mx.array(np.tile(mask.astype(np.float32), (group, 1)))
        weights = mx.softmax(scores.astype(mx.float32), axis=-1).astype(v.dtype)
        out = (weights @ v[:, :, :keys]).reshape(B, H, m, hd)
        mx.eval(out)
        check_cancel(cancel)
        pieces.append(out)
    return pieces[0] if len(pieces) == 1 else mx.concatenate(pieces, axis=2)


def _attention_wrapper(original):
    """mlx-lm's `scaled_dot_product_attention`, with long causal self-attention computed by
    causal_attention while a recording asks for it (thread-local; otherwise unchanged)."""

    def attention(queries, keys, values, cache, scale, mask, *args, **kwargs):
        if (getattr(_local, "chunk_attention", False) and isinstance(mask, str) and mask == "causal"
                and not args and kwargs.get("sinks") is None and not hasattr(cache, "bits")
                and keys.shape[2] >= queries.shape[2] >= 2 * ATTENTION_CHUNK):
            return causal_attention(queries, keys, values, scale, getattr(_local, "cancel", None))
        return original(queries, keys, values, cache, scale, mask, *args, **kwargs)

    attention.tracer_original = original
    return attention


def _install_attention(anatomy: Anatomy) -> bool:
    """Wrap `scaled_dot_product_attention` in the modules defining the model's attention
    classes (mlx-lm imports it into each model's module). True if any was wrapped."""
    done = False
    for slot in anatomy.attn:
        module = sys.modules.get(type(unwrap(slot.get())).__module__)
        current = getattr(module, "scaled_dot_product_attention", None)
        if current is None or not callable(current):
            continue
        if not hasattr(current, "tracer_original"):
            module.scaled_dot_product_attention = _attention_wrapper(current)
        done = True
    return done


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
        self.chunked_attention = _install_attention(anatomy)
        self.last_only = anatomy.final_norm is not None
        if self.last_only:
            _install(anatomy.final_norm, LastPosition)
        self.prefix_cache = supports_prefix_cache(model)
        # the packed forward (packed.py) for plain llama-style models; None: the generic one
        self.packed = PackedForward(model, anatomy) if self.prefix_cache and supports_packed(model, anatomy) else None

    def forward(self, ids: mx.array, *, embeds=None, plans=None, cache=None, cancel=None,
                on_block=None, eval_blocks: bool | None = None, chunk_attention: bool = False,
                last: int | None = None) -> mx.array:
        """Last-position logits [B, V], or with `last` the last positions' [B, last, V];
        embeds: [B, T, D] used instead of the embedding output; plans: {(kind, layer): TapPlan};
        cache: one PrefixCache per layer;
        cancel: an Event checked after each block, raising TraceCancelled once set;
        on_block: called after each block is evaluated. Blocks are evaluated one by one on
        CPU (default) or when `eval_blocks` is True; otherwise neither is called. chunk_attention:
        long causal self-attention by causal_attention (pieces, each evaluated, cancel between)."""
        table = {id(self.taps[kind][layer]): plan for (kind, layer), plan in (plans or {}).items()}
        if embeds is not None:
            table[id(self.embed)] = embeds
        _local.plans = table
        # on CPU, evaluate block by block: MLX's CPU stream thread idles a quarter of the
        # time when handed a whole forward's graph at once (see packed.py)
        if eval_blocks is None:
            eval_blocks = mx.default_device() == mx.cpu
        _local.eval_blocks, _local.cancel, _local.on_block = eval_blocks, cancel, on_block
        _local.chunk_attention, _local.last = chunk_attention, last or 1
        try:
            logits = self.model(ids, cache=cache) if cache is not None else self.model(ids)
        finally:
            _local.plans, _local.eval_blocks, _local.cancel, _local.on_block = None, False, None, None
            _local.chunk_attention, _local.last = False, 1
        return logits[:, -1, :] if last is None else logits[:, -last:, :]

    def record(self, ids: mx.array, *, embeds=None, kinds=KIND_SLOTS, batch_rows: int | None = None,
               cancel=None, on_layer=None, chunk_attention: bool = True, shared=None, last: int | None = None):
        """Run once, keeping the `kinds`' outputs at every layer and each layer's keys/values:
        ({kind: [L x [B, T, D]]}, logits [B, V] (with `last`: [B, last, V], the last positions'),
        [L x (keys, values)] or None), all evaluated.

        The rows run in batches of at most `batch_rows` (all at once by default), so only one
        batch's activations are alive besides what is kept. Blocks are evaluated one by one:
        `cancel` (an Event) is checked after each, raising TraceCancelled once set, and
        `on_layer(batch, layer)` is called after each (batch from 0, layer from 1). Long causal
        self-attention runs in pieces (causal_attention), also checking `cancel` between them.

        shared: (states, kv, t0), a one-row recording (the clean run's, every kind in `kinds`)
        whose first t0 positions equal these rows' (a corruption starting at t0): those positions
        are copied from it and only the later ones computed (needs the prefix cache)."""
        B = ids.shape[0]
        t0 = 0
        if shared is not None and self.prefix_cache and shared[1] is not None:
            shared_states, shared_kv, t0 = shared
            t0 = min(t0, ids.shape[1] - (last or 1))
        size = B if not batch_rows else max(1, min(B, batch_rows))
        parts = []
        for b, r0 in enumerate(range(0, B, size)):
            rows = slice(r0, min(B, r0 + size))
            done = [0]

            def block_done(b=b, done=done):
                done[0] += 1
                if on_layer is not None:
                    on_layer(b, done[0])

            n = rows.stop - rows.start
            plans = {(k, i): TapPlan(record=True) for k in kinds for i in range(self.n_layers)}
            cache = [PrefixCache() for _ in range(self.n_layers)] if self.prefix_cache else None
            if t0 > 0:
                cache = [PrefixCache(*(mx.broadcast_to(x[:, :, :t0], (n, *x.shape[1:2], t0, x.shape[3])) for x in kv))
                         for kv in shared_kv]
            logits = self.forward(ids[rows, t0:], embeds=None if embeds is None else embeds[rows, t0:], plans=plans,
                                  cache=cache, cancel=cancel, on_block=block_done, eval_blocks=True,
                                  chunk_attention=chunk_attention, last=last)
            states = {k: [plans[(k, i)].recorded for i in range(self.n_layers)] for k in kinds}
            if t0 > 0:
                states = {k: [mx.concatenate([mx.broadcast_to(shared_states[k][i][:, :t0], (n, t0, s.shape[2])), s],
                                             axis=1) for i, s in enumerate(states[k])] for k in kinds}
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
