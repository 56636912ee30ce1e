"""The obviously-correct reference: one full forward per cell, no batching, no reuse.

Its own small wrappers (not tracer.patching's taps) on a separately loaded model.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from tracer.anatomy import find_anatomy
from tracer.corruption import noise_delta
from tracer.prompts import subject_span, tokenize
from tracer.schedule import window_layers


class Hook(nn.Module):
    """A pass-through wrapper (held as `.inner`, like tracer's own) whose `fn`, when set,
    maps the wrapped module's output."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        object.__setattr__(self, "fn", None)

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "inner" or "inner" not in self:
                raise
            return getattr(self["inner"], name)

    def __call__(self, *args, **kwargs):
        out = self.inner(*args, **kwargs)
        return out if self.fn is None else self.fn(out)

    def as_linear(self, x):
        return self.inner.as_linear(x)


def install_hooks(model):
    """Wrap the embedding and every block/attention/MLP output in a Hook:
    (anatomy, {"embed": hook, (kind, layer): hook})."""
    anatomy = find_anatomy(model)
    hooks = {"embed": Hook(anatomy.embed.get())}
    anatomy.embed.set(hooks["embed"])
    slots = {"hidden": [anatomy.block(i) for i in range(anatomy.n_layers)], "attn": anatomy.attn, "mlp": anatomy.mlp}
    for kind, kind_slots in slots.items():
        for i, slot in enumerate(kind_slots):
            hooks[(kind, i)] = Hook(slot.get())
            slot.set(hooks[(kind, i)])
    return anatomy, hooks


def oracle_trace(lm, prompt, subject, *, kinds, samples=3, noise=3.0, window=3, seed=0,
                 corrupted_prompt=None, positions="all", target_id=None):
    """{kind: {"prob": grid, "logit_diff": grid}}, p_clean, p_corrupted, target id."""
    model, tok = lm.model, lm.tokenizer
    anatomy, hooks = install_hooks(model)
    L = anatomy.n_layers

    clean = tokenize(tok, prompt)
    T = len(clean)
    span = subject_span(prompt, subject, clean)
    if corrupted_prompt is None:
        std = noise * float(mx.sqrt(mx.var(anatomy.embed_weight().astype(mx.float32))).item())
        delta = mx.array(noise_delta(seed, samples, T, span, anatomy.hidden_size, std))
        corrupt_ids = mx.array([clean.ids] * samples)
    else:
        delta = None
        corrupt_ids = mx.array([tokenize(tok, corrupted_prompt).ids])

    def last_logits(ids, with_noise):
        hooks["embed"].fn = (lambda e: e + delta) if with_noise and delta is not None else None
        out = model(ids)[:, -1, :].astype(mx.float32)
        hooks["embed"].fn = None
        return np.array(out, dtype=np.float64)

    # record clean values
    recorded = {}
    for key, hook in hooks.items():
        if key != "embed":
            hook.fn = (lambda k: (lambda out: recorded.__setitem__(k, out) or out))(key)
    clean_logits = last_logits(mx.array([clean.ids]), False)
    mx.eval(list(recorded.values()))
    for key, hook in hooks.items():
        hook.fn = None

    def softmax(x):
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    corrupt_logits = last_logits(corrupt_ids, True)
    p_clean_all = softmax(clean_logits)[0]
    p_corrupt_all = softmax(corrupt_logits).mean(axis=0)
    target = int(np.argmax(p_clean_all)) if target_id is None else target_id
    top = int(np.argmax(p_corrupt_all))

    rows = list(range(T)) if positions == "all" else [None]
    grids = {}
    for kind in kinds:
        prob = np.zeros((len(rows), L))
        diff = np.zeros((len(rows), L))
        for r, t in enumerate(rows):
            restore = [t] if t is not None else list(positions)
            for layer in range(L):
                l0, l1 = window_layers(kind, layer, window, L)
                for j in range(l0, l1):
                    def patch(out, j=j):
                        clean_out = recorded[(kind, j)]
                        keep = np.zeros((1, T, 1), dtype=bool)
                        keep[0, restore, 0] = True
                        return mx.where(mx.array(keep), clean_out, out)
                    hooks[(kind, j)].fn = patch
                logits = last_logits(corrupt_ids, True)
                for j in range(l0, l1):
                    hooks[(kind, j)].fn = None
                prob[r, layer] = softmax(logits)[:, target].mean()
                diff[r, layer] = (logits[:, target] - logits[:, top]).mean()
        grids[kind] = {"prob": prob, "logit_diff": diff}
    return grids, float(p_clean_all[target]), float(p_corrupt_all[target]), target
