"""The work of a trace in token-layers (one block evaluated at one token), predicted before it runs.

Plain integers, no MLX: the engine's cost per token-layer, the app's time estimates and the trace's
own work meter (core/tracing.py WorkMeter) all count in this unit (core/schedule.py token_layers).
"""

from __future__ import annotations

from .settings import window_layers


def cell_work(kind: str, token: int, layer: int, *, n_tokens: int, n_layers: int, window: int,
              free_before: int = 0) -> int:
    """Block evaluations (token x layer) one sample of one restored cell costs: the patched forward
    runs from the layer after `layer` for hidden, the first restored layer otherwise (a window
    centred on `layer` for mlp/attn, as
    tracer.settings.window_layers) over the tokens from `token` on, the last layer at the last
    position only (tracer.schedule.token_layers, packed). A token before `free_before` (the first
    corrupted token) costs nothing: restoring it is the corrupted run (tracing.run_trace's
    "unaffected" cells). Plain integers: the app may call it."""
    if token < free_before:
        return 0
    first, after = window_layers(kind, layer, window, n_layers)
    layers = n_layers - (after if kind == "hidden" else first)  # hidden at l: computed from l + 1 (Cell.start)
    return 0 if layers <= 0 else (n_tokens - token) * (layers - 1) + 1


# token-layers the first-order estimate (a progressive trace's) costs per sample, token and layer:
# one forward and its backward (about twice a forward), every kind's outputs tapped
ESTIMATE_WORK = 3


def recording_work(n_tokens: int, n_layers: int, samples: int, free_before: int = 0) -> int:
    """Token-layers of the clean run and the corrupted runs recorded before any cell (the corrupted
    runs compute the positions from the first corrupted token, `free_before`, on)."""
    return n_tokens * n_layers + samples * (n_tokens - min(free_before, n_tokens - 1)) * n_layers


def trace_work(n_tokens: int, n_layers: int, *, settings, positions="all", first: int = 0,
               free_before: int = 0) -> int:
    """Token-layers a whole trace costs, predicted before it runs: the recording, the estimate (a
    request with `estimate` other than "off"), then every cell of every kind (and severed series)
    times the samples; core.tracing.WorkMeter counts the same from the planned forwards.
    `settings`: a TraceSettings or TraceRequest (kinds, samples, window, sever); `first`: the first
    restored token for a chosen-positions trace; `free_before`: the first corrupted token (the
    subject's first; cell_work)."""
    series = [*settings.kinds, *(["hidden"] * len(settings.sever))]
    tokens = range(n_tokens) if positions == "all" else (first,)
    cells = sum(cell_work(kind, t, layer, n_tokens=n_tokens, n_layers=n_layers, window=settings.window,
                          free_before=free_before)
                for kind in series for layer in range(n_layers) for t in tokens)
    estimate = getattr(settings, "estimate", "off") != "off"
    return (recording_work(n_tokens, n_layers, settings.samples, free_before) + settings.samples * cells
            + (ESTIMATE_WORK * settings.samples * n_tokens * n_layers if estimate else 0))
