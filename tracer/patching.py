"""Taps around the model's submodules, and the batched patched forward.

A `Tap` wraps a block, an attention or an MLP module. Per forward it is given a
`TapPlan`: record the output, replay a cached output instead of computing
(layers below a row group's first restored layer), and/or overwrite selected
(row, position) entries with clean values: `h = where(mask, clean, h)`.
With no plan a tap is transparent.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn

from .anatomy import Anatomy, Slot, find_anatomy


@dataclass
class TapPlan:
    replay: mx.array | None = None  # [B, T, D] used instead of computing
    mask: mx.array | None = None  # [B, T, 1] bool: where to restore
    clean: mx.array | None = None  # [T, D] (or [B, T, D]) clean values
    record: bool = False
    recorded: mx.array | None = None


class Tap(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        object.__setattr__(self, "plan", None)

    def __getattr__(self, name):  # transparent to code reading the wrapped module's attributes
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "inner" or "inner" not in self:
                raise
            return getattr(self["inner"], name)

    def __call__(self, *args, **kwargs):
        plan = self.plan
        if plan is None:
            return self.inner(*args, **kwargs)
        out = plan.replay if plan.replay is not None else self.inner(*args, **kwargs)
        if plan.mask is not None:
            out = mx.where(plan.mask, plan.clean, out)
        if plan.record:
            plan.recorded = out
        return out


class EmbedTap(Tap):
    """Adds a per-row offset to the embedding output (noise on the subject)."""

    def __call__(self, ids):
        out = self.inner(ids)
        delta = self.plan
        return out if delta is None else out + delta.astype(out.dtype)

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


class PatchableModel:
    """A model with taps installed on every block, attention and MLP output."""

    KIND_SLOTS = ("hidden", "attn", "mlp")

    def __init__(self, model: nn.Module):
        self.model = model
        anatomy: Anatomy = find_anatomy(model)
        self.anatomy = anatomy
        self.n_layers = anatomy.n_layers
        self.embed = _install(anatomy.embed, EmbedTap)
        self.taps = {
            "hidden": [_install(anatomy.block(i), Tap) for i in range(self.n_layers)],
            "attn": [_install(s, Tap) for s in anatomy.attn],
            "mlp": [_install(s, Tap) for s in anatomy.mlp],
        }
        self.last_only = anatomy.final_norm is not None
        if self.last_only:
            _install(anatomy.final_norm, LastPosition)

    def embedding_std(self) -> float:
        w = self.anatomy.embed_weight().astype(mx.float32)
        return float(mx.sqrt(mx.var(w)).item())

    def clear(self) -> None:
        object.__setattr__(self.embed, "plan", None)
        for taps in self.taps.values():
            for tap in taps:
                object.__setattr__(tap, "plan", None)

    def forward(self, ids: mx.array, *, delta=None, plans=None) -> mx.array:
        """Last-position logits [B, V] with the given plans; plans: {(kind, layer): TapPlan}."""
        self.clear()
        try:
            object.__setattr__(self.embed, "plan", delta)
            for (kind, layer), plan in (plans or {}).items():
                object.__setattr__(self.taps[kind][layer], "plan", plan)
            logits = self.model(ids)
        finally:
            self.clear()
        return logits[:, -1, :]

    def record(self, ids: mx.array, *, delta=None):
        """Run once, keeping every block/attn/MLP output: ({kind: [L x [B, T, D]]}, logits [B, V])."""
        plans = {(k, i): TapPlan(record=True) for k in self.KIND_SLOTS for i in range(self.n_layers)}
        logits = self.forward(ids, delta=delta, plans=plans)
        states = {k: [plans[(k, i)].recorded for i in range(self.n_layers)] for k in self.KIND_SLOTS}
        return states, logits
