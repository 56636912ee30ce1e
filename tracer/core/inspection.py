"""The top-k next tokens of one patched cell of a trace (`trace --inspect KIND:LAYER[:TOKEN]`).

A trace's grid gives P(target) per cell; `inspect_cell` reruns one cell and returns the whole
next-token distribution: the corrupted run exactly as the trace makes it (the same noise rule,
seed, samples and replace, or the same substituted prompt), with `kind` restored at `layer` over
the trace's window (schedule.window_layers: one layer for hidden, `window` layers around it for
mlp and attn) at the chosen clean-prompt positions. The distribution is the mean over the noise
samples of each sample's softmax, as the trace's cells are, so its P(target) equals the trace's
grid cell; a target of several tokens is teacher-forced as the trace does (P of the whole target
in ``restored["target"]``), and a severed grid's cell holds the severed kind at its corrupted values.

It is a specialisation of core/prepare.py: the trace's request prepared as the trace prepares it,
and one restoration run on it.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..guards import named_positions
from ..inputs.positions import resolve_positions
from ..settings import SEVERABLE, kind_name, severed_name, window_layers
from ..types import PatchedRun
from .prepare import Restoration, prepare_request, restored_distributions
from .tracing import top_predictions


def inspect_cell(model, request, kind: str, layer: int, *, token: int | None = None, k: int = 5) -> PatchedRun:
    """The patched run of one cell of the trace `request`.

    Args:
        model: a loaded ``Tracer`` (``tracer.load``).
        request: the trace's ``TraceRequest`` (prompt, subject, corruption and settings).
        kind: "hidden", "mlp" or "attn": the output restored (or an alias, e.g. "output"); or a
            severed grid's name, "hidden-severed-mlp"/"-attn": hidden restored with that kind's
            outputs above the layer held at their corrupted values.
        layer: the cell's layer (the centre of the window for mlp and attn).
        token: the clean-prompt index restored (negative counts from the end); None: the trace's
            positions when they are chosen positions (restored together, as the trace's one row),
            else the subject's last token.
        k: how many top tokens.

    Returns:
        A ``PatchedRun``: ``probs`` [vocab] (the next token after the prompt: mean of softmax over the
        samples), ``top`` [(text, prob)] and ``restored`` {"kind", "layers", "positions" (those
        restored), "corruption", "samples", "target": {"ids", "text", "prob"}}; the target's "prob" is
        P(the whole target) (teacher-forced, as the trace) and equals the trace's grid cell.

    Raises:
        InputError: an unknown kind, a layer or token out of range, k < 1, or a bad request.
    """
    kind, severed = _kind(kind)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InputError(f"k must be a whole number of at least 1 (got {k!r:.40})")
    n_layers = model.n_layers
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < n_layers:
        raise InputError(f"layer must be in 0..{n_layers - 1} (got {layer!r:.40})")
    prep = prepare_request(model, request)
    chosen = _positions(request.positions, prep.subject, len(prep.clean), token)
    chosen = [p for p in chosen if prep.mapping[p] is not None]
    if not chosen:
        names = named_positions(_positions(request.positions, prep.subject, len(prep.clean), token), prep.clean.texts)
        raise InputError(f"position(s) {names} have no counterpart in the corrupted prompt: choose another token")
    layers = tuple(range(*window_layers(kind, layer, request.window, n_layers)))
    dists, targets = restored_distributions(model, prep, Restoration(kind, layers, tuple(chosen), severed))
    probs = dists[:, 0].mean(axis=0)
    p_target = np.prod([dists[:, j, t] for j, t in enumerate(targets)], axis=0).mean()
    top = [(p.text, p.prob) for p in top_predictions(model.tokenizer, probs, k)]
    restored = {"kind": kind, "severed": severed, "layers": list(layers), "positions": chosen, "corruption": prep.mode,
                "samples": int(prep.n_samples),
                "target": {"ids": [int(t) for t in targets],
                           "text": model.tokenizer.decode(targets, skip_special_tokens=False), "prob": float(p_target)}}
    return PatchedRun(probs, top, restored)


def _kind(name) -> tuple[str, str | None]:
    """(the restored kind, the kind held corrupted or None) of a grid's name: a kind, an alias of
    one (tracer.settings.kind_name) or "hidden-severed-mlp"/"-attn"."""
    text = str(name).strip()
    for severed in SEVERABLE:
        if text == severed_name(severed):
            return "hidden", severed
    return kind_name(text), None


def _positions(positions, subject: tuple[int, int], n_tokens: int, token) -> list[int]:
    """The clean-prompt positions restored: `token`, or the trace's chosen positions, or the
    subject's last token."""
    if token is not None:
        if isinstance(token, bool) or not isinstance(token, int) or not -n_tokens <= token < n_tokens:
            raise InputError(f"token must be an index in 0..{n_tokens - 1} of the prompt's "
                             f"{n_tokens} tokens (got {token!r:.40})")
        return [token % n_tokens]
    resolved = resolve_positions(positions, subject, n_tokens)
    return [subject[1] - 1] if resolved == "all" else [int(p) for p in resolved]
