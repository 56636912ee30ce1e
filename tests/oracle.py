"""The obviously-correct reference: one full forward per cell, no batching, no reuse.

Its own small wrappers (not tracer.core.patching's taps) on a separately loaded model.
"""

from __future__ import annotations

from tracer.inputs.prompts import subject_span, tokenize
from tracer.models.anatomy import find_anatomy
from tracer.settings import window_layers

import mlx.core as mx
import mlx.nn as nn
import numpy as np


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


def oracle_trace(lm, prompt, subject, *, kinds, samples=3, noise_std=0.5, window=3, seed=1,
                 corrupted_prompt=None, positions="all", target_id=None, sever=(), replace=False,
                 noise_draws=None, mapping=None, targets=None):
    """{kind: {"prob": grid, "logit_diff": grid, "prob_samples": [rows, L, N],
    "logit_diff_samples": [rows, L, N]}}, p_clean, p_corrupted, target id.

    Noise as ROME draws and adds it: RandomState(seed).randn(N, e - b, D) x noise_std, added
    to the subject's embeddings in float64 (or replacing them) and rounded once to float32.
    sever: also the grids "hidden-severed-<kind>": hidden cells with that kind's outputs at
    the restored positions held at the corrupted run's values in every layer above the
    restored one. noise_draws: [N, e - b, D] noise used instead of the Gaussian draws.
    mapping: substitution by a prompt of another length: the corrupted position of each clean
    position (None: no counterpart; its cells are NaN and restored positions without one are
    skipped); restoring clean position t writes its clean value at corrupted position mapping[t].
    targets: a target of several token ids, teacher-forced: both inputs get targets[:-1]
    appended, P(target) is the product of the k tokens' probabilities at the last k positions,
    the logit difference the first token's (p_clean, p_corrupted likewise)."""
    model, tok = lm.model, lm.tokenizer
    anatomy, hooks = install_hooks(model)
    L = anatomy.n_layers

    clean = tokenize(tok, prompt)
    T = len(clean)
    span = subject_span(prompt, subject, clean)
    extra = list(targets[:-1]) if targets else []
    k = len(extra) + 1
    clean_ids = list(clean.ids) + extra
    if corrupted_prompt is None:
        b, e = span
        z = np.random.RandomState(seed).randn(samples, e - b, anatomy.hidden_size)
        x = np.array(anatomy.embed.get().inner(mx.array([clean_ids]))[0].astype(mx.float32), dtype=np.float64)
        noised = np.repeat(x[None], samples, axis=0)
        noise = noise_std * z if noise_draws is None else noise_draws
        noised[:, b:e] = (0.0 if replace else x[None, b:e]) + noise
        embeds = mx.array(noised.astype(np.float32))
        corrupt_ids = mx.array([clean_ids] * samples)
    else:
        embeds = None
        corrupt_ids = mx.array([tokenize(tok, corrupted_prompt).ids + extra])
    Tk = int(corrupt_ids.shape[1])  # the corrupted frame's length
    if mapping is None:
        mapping = list(range(T))

    def last_logits(ids, with_noise):
        hooks["embed"].fn = (lambda e: mx.array(embeds)) if with_noise and embeds is not None else None
        out = model(ids)[:, -k:, :].astype(mx.float32)
        hooks["embed"].fn = None
        return np.array(out, dtype=np.float64)  # [B, k, V]

    # record clean values
    recorded = {}
    for key, hook in hooks.items():
        if key != "embed":
            hook.fn = (lambda k: (lambda out: recorded.__setitem__(k, out) or out))(key)
    clean_logits = last_logits(mx.array([clean_ids]), False)
    mx.eval(list(recorded.values()))
    for hook in hooks.values():
        hook.fn = None

    def softmax(x):
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    corrupted_values = {}
    for key, hook in hooks.items():
        if key != "embed":
            hook.fn = (lambda k: (lambda out: corrupted_values.__setitem__(k, out) or out))(key)
    corrupt_logits = last_logits(corrupt_ids, True)
    mx.eval(list(corrupted_values.values()))
    for hook in hooks.values():
        hook.fn = None
    p_clean_all = softmax(clean_logits[:, 0])[0]
    p_corrupt_all = softmax(corrupt_logits[:, 0]).mean(axis=0)
    target = int(np.argmax(p_clean_all)) if target_id is None else target_id
    chain = list(targets) if targets else [target]
    others = p_corrupt_all.copy()
    others[target] = -1.0
    top = int(np.argmax(others))  # the logit difference's reference: the strongest token other than the target

    def p_target(logits):  # [B, k, V] -> [B]: the product of the target tokens' probabilities
        probs = softmax(logits)
        return np.prod([probs[:, j, t] for j, t in enumerate(chain)], axis=0)

    rows = list(range(T)) if positions == "all" else [None]

    series = [(kind, None, kind) for kind in kinds] + [("hidden", s, f"hidden-severed-{s}") for s in sever]
    grids = {}
    n_rows = int(corrupt_ids.shape[0])
    for kind, severed, name in series:
        prob = np.full((len(rows), L), np.nan)
        diff = np.full((len(rows), L), np.nan)
        prob_samples = np.full((len(rows), L, n_rows), np.nan)
        diff_samples = np.full((len(rows), L, n_rows), np.nan)
        for r, t in enumerate(rows):
            restore = [t] if t is not None else list(positions)
            restore = [u for u in restore if mapping[u] is not None]
            if not restore:
                continue
            keep = np.zeros((1, Tk, 1), dtype=bool)
            source = np.zeros(Tk, dtype=np.int64)  # the clean position restored at each corrupted one
            for u in restore:
                keep[0, mapping[u], 0] = True
                source[mapping[u]] = u
            keep, source = mx.array(keep), mx.array(source)
            for layer in range(L):
                l0, l1 = window_layers(kind, layer, window, L)
                touched = []
                for j in range(l0, l1):
                    hooks[(kind, j)].fn = lambda out, j=j, kind=kind, keep=keep, source=source: mx.where(
                        keep, recorded[(kind, j)][:, source], out)
                    touched.append((kind, j))
                for j in range(L) if severed else ():
                    hooks[(severed, j)].fn = lambda out, j=j, severed=severed, keep=keep: mx.where(
                        keep, corrupted_values[(severed, j)], out)
                    touched.append((severed, j))
                logits = last_logits(corrupt_ids, True)
                for key in touched:
                    hooks[key].fn = None
                prob_samples[r, layer] = p_target(logits)
                diff_samples[r, layer] = logits[:, 0, target] - logits[:, 0, top]
                prob[r, layer] = prob_samples[r, layer].mean()
                diff[r, layer] = diff_samples[r, layer].mean()
        grids[name] = {"prob": prob, "logit_diff": diff, "prob_samples": prob_samples, "logit_diff_samples": diff_samples}
    return grids, float(p_target(clean_logits)[0]), float(p_target(corrupt_logits).mean()), target
