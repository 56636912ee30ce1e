"""The work of a trace in token-layers (one block evaluated at one token), predicted before it runs.

Plain integers, no MLX: the engine's cost per token-layer, the app's time estimates and the trace's
own work meter (core/tracing.py WorkMeter) all count in this unit (core/schedule.py token_layers).

Every forward row also computes its last position's logits: the LM head, vocab x hidden weights,
counted as `head` token-layers per row (head_layers: SmolLM2-135M's head is as large as 8 of its
blocks), so a late cell (few layers, one token) weighs what it costs beside an early one.
"""

from __future__ import annotations

from .settings import window_layers


def head_layers(vocab: int, hidden: int, block_weights: int) -> int:
    """Token-layers one row's logits cost: the head's weights (vocab x hidden) over one block's
    matrices' (attention's projections and the MLP), rounded; 0 without a block's weights."""
    return round(vocab * hidden / block_weights) if block_weights > 0 else 0


def cell_work(kind: str, token: int, layer: int, *, n_tokens: int, n_layers: int, window: int,
              free_before: int = 0, head: int = 0) -> int:
    """Block evaluations (token x layer) one sample of one restored cell costs: the patched forward
    runs from the layer after `layer` for hidden, the first restored layer otherwise (a window
    centred on `layer` for mlp/attn, as
    tracer.settings.window_layers) over the tokens from `token` on, the last layer at the last
    position only (tracer.schedule.token_layers, packed). A token before `free_before` (the first
    corrupted token) costs nothing: restoring it is the corrupted run (tracing.run_trace's
    "unaffected" cells). Every other cell's rows compute the logits: `head` more (head_layers).
    Plain integers: the app may call it."""
    if token < free_before:
        return 0
    first, after = window_layers(kind, layer, window, n_layers)
    layers = n_layers - (after if kind == "hidden" else first)  # hidden at l: computed from l + 1 (Cell.start)
    return head + (0 if layers <= 0 else (n_tokens - token) * (layers - 1) + 1)


# token-layers the first-order estimate (a progressive trace's) costs per sample, token and layer:
# one forward and its backward (about twice a forward), every kind's outputs tapped
ESTIMATE_WORK = 3


def estimate_work(n_tokens: int, n_layers: int, samples: int, head: int = 0) -> int:
    """Token-layers of the first-order estimate: ESTIMATE_WORK x a forward of every sample (its
    blocks at every position and its logits)."""
    return ESTIMATE_WORK * samples * (n_tokens * n_layers + head)


def recording_work(n_tokens: int, n_layers: int, samples: int, free_before: int = 0, head: int = 0) -> int:
    """Token-layers of the clean run and the corrupted runs recorded before any cell (the corrupted
    runs compute the positions from the first corrupted token, `free_before`, on), each row's
    logits `head` more."""
    return (n_tokens * n_layers + head
            + samples * ((n_tokens - min(free_before, n_tokens - 1)) * n_layers + head))


def trace_work(n_tokens: int, n_layers: int, *, settings, positions="all", first: int = 0,
               free_before: int = 0, head: int = 0) -> int:
    """Token-layers a whole trace costs, predicted before it runs: the recording, the estimate (a
    request with `estimate` other than "off"), then every cell of every kind (and severed series)
    times the samples; core.tracing.WorkMeter counts the same from the planned forwards.
    `settings`: a TraceSettings or TraceRequest (kinds, samples, window, sever); `first`: the first
    restored token for a chosen-positions trace; `free_before`: the first corrupted token (the
    subject's first; cell_work); `head`: a row's logits in token-layers (head_layers)."""
    series = [*settings.kinds, *(["hidden"] * len(settings.sever))]
    tokens = range(n_tokens) if positions == "all" else (first,)
    cells = sum(cell_work(kind, t, layer, n_tokens=n_tokens, n_layers=n_layers, window=settings.window,
                          free_before=free_before, head=head)
                for kind in series for layer in range(n_layers) for t in tokens)
    estimate = getattr(settings, "estimate", "off") != "off"
    return (recording_work(n_tokens, n_layers, settings.samples, free_before, head) + settings.samples * cells
            + (estimate_work(n_tokens, n_layers, settings.samples, head) if estimate else 0))
