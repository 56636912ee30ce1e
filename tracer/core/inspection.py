"""The top-k next tokens of one patched cell of a trace (`trace --inspect KIND:LAYER[:TOKEN]`).

A trace's grid gives P(target) per cell; `inspect_cell` reruns one cell and returns the whole
next-token distribution: the corrupted run exactly as the trace makes it (the same noise rule,
seed, samples and replace, or the same substituted prompt), with `kind` restored at `layer` over
the trace's window (schedule.window_layers: one layer for hidden, `window` layers around it for
mlp and attn) at the chosen clean-prompt positions. The distribution is the mean over the noise
samples of each sample's softmax, as the trace's cells are, so its P(target) equals the trace's
grid cell; a target of several tokens is teacher-forced as the trace does (P of the whole target
in ``restored["target"]``), and a severed grid's cell holds the severed kind at its corrupted values.

Nothing here imports MLX at module level: `import tracer` imports this module (see
tracer/__init__.py) and must stay light.
"""

from __future__ import annotations


def inspect_cell(model, request, kind: str, layer: int, *, token: int | None = None, k: int = 5):
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
    import mlx.core as mx
    import numpy as np

    from ..types import PatchedRun
    from ..errors import InputError
    from .fastops import softmax
    from .patching import TapPlan
    from ..inputs.prompts import subject_span, tokenize
    from .schedule import window_layers
    from .tracing import top_predictions

    kind, severed = _kind(kind)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InputError(f"k must be a whole number of at least 1 (got {k!r:.40})")
    n_layers = model.n_layers
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < n_layers:
        raise InputError(f"layer must be in 0..{n_layers - 1} (got {layer!r:.40})")
    pm, tok = model.patchable, model.tokenizer
    clean = tokenize(tok, request.prompt)
    T = len(clean)
    subject = subject_span(request.prompt, request.subject, clean)
    chosen = _positions(request.positions, subject, T, token)
    layers = range(*window_layers(kind, layer, request.window, n_layers))

    # a target of several tokens is teacher-forced as the trace does: both runs read its first
    # tokens after the prompt, and P(target) is the product of its tokens' probabilities
    targets = _target_ids(tok, request, clean.ids)
    extra = list(targets[:-1]) if targets else []
    last = {"last": len(extra) + 1} if extra else {}
    if request.corrupted_prompt is not None:
        corrupted = tokenize(tok, request.corrupted_prompt, "the corrupted prompt")
        chosen, where = _counterparts(request, clean, corrupted, subject, chosen)
        batch, embeds, mode = mx.array([corrupted.ids + extra]), None, "substitution"
    else:
        embeds, _ = model.noised_embeddings(clean.ids + extra, subject, request)
        where = chosen
        batch, mode = mx.array([clean.ids + extra] * request.samples), "noise"
    n_rows, n_frame = batch.shape
    states, clean_logits, _ = pm.record(mx.array([clean.ids + extra]), kinds=(kind,), **last)
    if targets is None:  # the clean run's top token, as the trace's default
        targets = [int(np.argmax(np.array(clean_logits.astype(mx.float32)).reshape(-1)))]
    mask = np.zeros((n_rows, n_frame, 1), dtype=bool)
    mask[:, where] = True
    source = np.zeros(n_frame, dtype=np.int32)  # the clean position restored at each frame position
    source[where] = chosen
    source = mx.array(source)
    plans = {(kind, i): TapPlan(mask=mx.array(mask), clean=states[kind][i][0][source]) for i in layers}
    if severed:  # the severed kind's outputs above the restored layer held at the corrupted run's
        corrupted_states, _, _ = pm.record(batch, embeds=embeds, kinds=(severed,), **last)
        for i in range(layers.stop, n_layers):
            plans[(severed, i)] = TapPlan(freeze=mx.array(mask), frozen=corrupted_states[severed][i])
    logits = pm.forward(batch, embeds=embeds, plans=plans, **last).astype(mx.float32)
    dists = np.array(softmax(logits), dtype=np.float64).reshape(n_rows, len(targets), -1)  # [N, k, V]
    probs = dists[:, 0].mean(axis=0)
    p_target = np.prod([dists[:, j, t] for j, t in enumerate(targets)], axis=0).mean()
    top = [(p.text, p.prob) for p in top_predictions(tok, probs, k)]
    restored = {"kind": kind, "severed": severed, "layers": list(layers), "positions": chosen, "corruption": mode,
                "samples": int(n_rows), "target": {"ids": [int(t) for t in targets],
                                                   "text": tok.decode(targets, skip_special_tokens=False),
                                                   "prob": float(p_target)}}
    return PatchedRun(probs, top, restored)


def _kind(name) -> tuple[str, str | None]:
    """(the restored kind, the kind held corrupted or None) of a grid's name: a kind, an alias of
    one (tracer.settings.kind_name) or "hidden-severed-mlp"/"-attn"."""
    from ..settings import SEVERABLE, kind_name, severed_name

    text = str(name).strip()
    for severed in SEVERABLE:
        if text == severed_name(severed):
            return "hidden", severed
    return kind_name(text), None


def _target_ids(tokenizer, request, prompt_ids) -> list[int] | None:
    """The traced target's token ids (None: the clean run's top token, found by the caller)."""
    if not request.target:
        return None
    from ..inputs.prompts import target_ids

    return [int(t) for t in target_ids(tokenizer, request.target, request.prompt, list(prompt_ids))]


def _positions(positions, subject: tuple[int, int], n_tokens: int, token) -> list[int]:
    """The clean-prompt positions restored: `token`, or the trace's chosen positions, or the
    subject's last token."""
    from ..errors import InputError

    if token is not None:
        if isinstance(token, bool) or not isinstance(token, int) or not -n_tokens <= token < n_tokens:
            raise InputError(f"token must be an index in 0..{n_tokens - 1} of the prompt's "
                             f"{n_tokens} tokens (got {token!r:.40})")
        return [token % n_tokens]
    from ..inputs.positions import resolve_positions

    resolved = resolve_positions(positions, subject, n_tokens)
    return [subject[1] - 1] if resolved == "all" else [int(p) for p in resolved]


def _counterparts(request, clean, corrupted, subject: tuple[int, int], chosen: list[int]) -> tuple[list[int], list[int]]:
    """(the chosen clean positions that have a counterpart, their positions in the corrupted prompt):
    the same ones for prompts of one length, else as the trace aligns them (tracer.inputs.prompts.align_prompts,
    with the corrupted subject when given); positions without a counterpart are not restored."""
    from ..errors import InputError
    from ..guards import named_positions
    from ..inputs.prompts import align_prompts, subject_span

    if len(clean) == len(corrupted) and request.corrupted_subject is None:
        return list(chosen), list(chosen)
    span = (subject_span(request.corrupted_prompt, request.corrupted_subject, corrupted)
            if request.corrupted_subject is not None else None)
    mapping = align_prompts(clean, corrupted, subject, span)["clean_to_corrupted"]
    kept = [p for p in chosen if mapping[p] is not None]
    if not kept:
        names = named_positions(chosen, clean.texts)
        raise InputError(f"position(s) {names} have no counterpart in the corrupted prompt: choose another token")
    return kept, [int(mapping[p]) for p in kept]
