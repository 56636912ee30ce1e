"""A first-order estimate of every cell of a trace (attribution patching), from one corrupted
forward and backward pass per batch of noise samples.

A cell restores the clean value c of some states (kind, layers l0..l1, positions P) in the
corrupted run, whose value there is x. Its P(target) is estimated per noise sample as

    f(x) + sum over l in l0..l1, p in P of  grad_{l,p} f(x) . (c_{l,p} - x_{l,p})

(Nanda 2023's attribution patching; AtP in Kramar et al. 2024), averaged over the samples like the
exact cells. The gradients come from one pass: every tapped output (block, attention, MLP; every
layer and position) gets a zero added (TapPlan.add), and `mx.value_and_grad` differentiates the
per-sample P(target) with respect to those zeros.

What the estimate is exactly: the derivative along an *added* change. For a hidden cell (one
layer) that equals restoring to first order. For a window of mlp or attn layers it is the sum of
the per-layer terms, each a total derivative: it includes the path from layer l's change through
layer l' > l of the same window, which restoring (replacing l' by its clean value) cuts. Where the
change is large (the noised subject's residual stream, the early MLPs) the first order is poor
anyway; README's performance section gives the correlations measured here.

Positions before the first corrupted token equal the clean run: their terms are zero, so those
cells estimate exactly the corrupted run's value, as their exact value is.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import wait
from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from ..errors import check_cancel
from ..events import Estimate, Log
from ..metrics import cell_metrics
from .fastops import exact_activations
from .patching import PatchableModel, TapPlan
from .schedule import Cell, Chunk, Corrupted, record_batch_rows
from .workers import Workers

KINDS = PatchableModel.KIND_SLOTS  # what is estimated: hidden, attn, mlp outputs


def differentiable_prob(logits: mx.array, targets) -> mx.array:
    """P(target) per row [rows] from the last positions' logits [rows, k, V] (or [rows, V]):
    the product of the k target tokens' softmax probabilities, with MLX's own logsumexp (the
    fast polynomial exp of fastops has no gradient through its exponent bits)."""
    if logits.ndim == 2:
        logits = logits[:, None, :]
    logits = _wide(logits)
    picked = mx.stack([logits[:, j, t] for j, t in enumerate(targets)], axis=1)
    return mx.exp((picked - mx.logsumexp(logits, axis=-1)).sum(axis=1))


def _wide(x: mx.array) -> mx.array:
    """float32, or float64 where it is already (a model in float64: the tests' finite differences)."""
    return x if x.dtype == mx.float64 else x.astype(mx.float32)


def _batch_terms(pm: PatchableModel, run: Corrupted, rows: slice, kinds) -> tuple[mx.array, dict]:
    """P(target) [n] and per kind [L, n, T] the terms grad . (clean - corrupted) of samples `rows`."""
    n = rows.stop - rows.start
    T = len(run.ids)
    ids = mx.array([run.ids] * n)
    embeds = None if run.embeds is None else run.embeds[rows]
    zeros = {k: [mx.zeros((n, T, pm.anatomy.hidden_size), dtype=mx.float32) for _ in range(pm.n_layers)]
             for k in kinds}

    def prob(added):
        plans = {(k, i): TapPlan(add=added[k][i], record=True) for k in kinds for i in range(pm.n_layers)}
        logits = pm.forward(ids, embeds=embeds, plans=plans, eval_blocks=False, last=run.n_last)
        p = differentiable_prob(logits, run.targets)
        return p.sum(), (p, {k: [plans[(k, i)].recorded for i in range(pm.n_layers)] for k in kinds})

    with exact_activations():
        (_, (p, states)), grads = mx.value_and_grad(prob)(zeros)
    terms = {}
    for k in kinds:
        per_layer = [(_wide(g) * (_wide(run.clean[k][i]) - _wide(s))).sum(axis=-1)
                     for i, (g, s) in enumerate(zip(grads[k], states[k]))]
        terms[k] = mx.stack(per_layer)
    mx.eval(p, terms)
    return p, terms


def state_terms(pm: PatchableModel, run: Corrupted, *, first_corrupt: int, kinds=KINDS,
                cancel: threading.Event | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The corrupted run's P(target) per sample and every state's first-order term.

    Args:
        pm: the patchable model.
        run: the clean (in the corrupted run's frame) and corrupted runs; only `ids`, `embeds`,
            `clean`, `n_samples` and the targets are read (the corrupted states are recomputed).
        first_corrupt: the first frame position whose state differs from the clean run's.
        kinds: which outputs.
        cancel: checked between batches of samples.

    Returns:
        (P(target) [N] float64, {kind: [L, N, T] float64}: grad f . (clean - corrupted) of each
        layer, sample and position; zero before `first_corrupt`).
    """
    batches = []
    for rows in _sample_batches(run.n_samples, record_batch_rows(len(run.ids))):
        batches.append(_terms_batch(pm, run, rows, kinds))
        check_cancel(cancel)
    return _joined(batches, first_corrupt)


def _sample_batches(n_samples: int, size: int) -> list[slice]:
    return [slice(r0, min(n_samples, r0 + size)) for r0 in range(0, n_samples, size)]


def _terms_batch(pm: PatchableModel, run: Corrupted, rows: slice, kinds) -> tuple[np.ndarray, dict]:
    p, t = _batch_terms(pm, run, rows, kinds)
    return np.array(p, dtype=np.float64), {k: np.array(t[k], dtype=np.float64) for k in kinds}


def _joined(batches: list, first_corrupt: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The batches' P(target) and terms, in sample order, zero before the first corrupted position."""
    terms = {k: np.concatenate([t[k] for _, t in batches], axis=1) for k in batches[0][1]}
    for v in terms.values():
        v[:, :, :first_corrupt] = 0.0
    return np.concatenate([p for p, _ in batches]), terms


@dataclass
class TermsInFlight:
    """state_terms' batches of samples running on the engine's workers (start_terms)."""

    futures: list  # one Future per batch of samples, in sample order
    first_corrupt: int
    started: float  # time.perf_counter() when they were submitted

    def wait(self, cancel: threading.Event | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """state_terms' result once every batch is done. The batches always finish first (no worker
        may still read a trace's arrays when it ends), then a set `cancel` raises TraceCancelled."""
        self.join()
        check_cancel(cancel)
        return _joined([f.result() for f in self.futures], self.first_corrupt)

    def join(self) -> None:
        """Wait until no worker runs a batch any more, whatever happened to them (a trace that ends
        for any reason first joins its estimate: no worker may still read its arrays)."""
        wait(self.futures)


def start_terms(pm: PatchableModel, run: Corrupted, *, first_corrupt: int, kinds=KINDS,
                workers: Workers) -> TermsInFlight:
    """Submit state_terms' batches to the engine's workers and return at once. The estimate reads
    the clean run and the noised embeddings only, so a trace starts it before it records the
    corrupted run on its own thread, and the two overlap. The batches are one thread's (a short
    prompt's samples in one): split between both workers, they ran slower beside the recording (three
    threads on two cores, smaller GEMMs; the Eiffel estimate on screen 0.92-1.0 s against 0.87-0.92 s
    in the engine, 1.02-1.19 s against 1.0-1.14 s in the app)."""
    mx.eval(run.clean, run.embeds)  # workers may only share evaluated arrays (streams are per thread)
    futures = [workers.submit(lambda rows: _terms_batch(pm, run, rows, kinds), rows)
               for rows in _sample_batches(run.n_samples, record_batch_rows(len(run.ids)))]
    return TermsInFlight(futures, first_corrupt, time.perf_counter())


def cell_estimates(cells: list[Cell], base: np.ndarray, terms: dict[str, np.ndarray]) -> np.ndarray:
    """Estimated P(target) per cell and sample [cells, N] (float64): the corrupted run's plus the
    cell's terms summed over its layers and positions, clipped to [0, 1] (a first-order step can
    leave the probabilities' range; clipped, the correlation with the exact grids measured here was
    as good or better for every kind, 0.55 -> 0.62 for one fact's mlp). Severed cells (hidden with a
    sublayer frozen) have no first-order estimate here: NaN."""
    cumulative = {k: np.concatenate([np.zeros_like(v[:1]), np.cumsum(v, axis=0)]) for k, v in terms.items()}
    out = np.full((len(cells), base.shape[0]), np.nan)
    for i, cell in enumerate(cells):
        if cell.sever or cell.kind not in cumulative:
            continue
        c = cumulative[cell.kind]
        l0, l1 = cell.layers
        out[i] = base + (c[l1] - c[l0])[:, list(cell.positions)].sum(axis=1)
    return np.clip(out, 0.0, 1.0)


def estimated_kinds(cells: list[Cell]) -> tuple[str, ...]:
    """The outputs whose terms the cells' estimate needs (severed cells have none)."""
    return tuple(k for k in KINDS if any(c.kind == k and not c.sever for c in cells))


def estimate(pm: PatchableModel, run: Corrupted, cells: list[Cell], *, first_corrupt: int,
             cancel: threading.Event | None = None, in_flight: TermsInFlight | None = None,
             ) -> tuple[np.ndarray, float]:
    """The estimated P(target) of each cell (mean over the samples, float64) and the seconds taken.

    Args:
        pm: the patchable model.
        run: the clean and corrupted runs (see state_terms).
        cells: the cells, their positions in the corrupted run's frame.
        first_corrupt: the first frame position that differs from the clean run.
        cancel: checked between batches of samples.
        in_flight: the terms already started on the engine's workers (start_terms, for
            estimated_kinds(cells)): waited for; None: computed here (state_terms).

    Returns:
        ([cells] estimated P(target), NaN for severed cells; seconds, from the terms' start).
    """
    if in_flight is None:
        started = time.perf_counter()
        base, terms = state_terms(pm, run, first_corrupt=first_corrupt, kinds=estimated_kinds(cells), cancel=cancel)
    else:
        started = in_flight.started
        base, terms = in_flight.wait(cancel)
    return cell_estimates(cells, base, terms).mean(axis=1), time.perf_counter() - started


def estimate_grids(cells: list[Cell], probs: np.ndarray, shape: tuple[int, int], p_clean: float,
                   p_corrupt: float, available: bool) -> dict[str, dict[str, list[list]]]:
    """The estimate as grids like TraceResult's: {grid: {"prob", "recovery"}: rows x layers},
    None where a cell has no estimate (severed cells, cells not traced)."""
    grids: dict = {}
    for cell, p in zip(cells, probs):
        g = grids.setdefault(cell.grid, {m: [[None] * shape[1] for _ in range(shape[0])] for m in ("prob", "recovery")})
        if np.isnan(p):
            continue
        g["prob"][cell.row][cell.layer] = float(p)
        g["recovery"][cell.row][cell.layer] = cell_metrics(float(p), p_clean, p_corrupt) if available else None
    return grids


# a progressive trace runs first the cells at least FIRST important (each grid's estimated peak and
# its neighbourhood), in small forwards; then today's forwards of the others, those holding a cell at
# least IMPORTANT first, largest first, the rest in today's order (costliest first: the workers
# finish together)
NEIGHBOURHOOD = 2  # layers either side of a grid's estimated peak (same row) that come with it (mlp/attn: half the window, at least this)
NEIGHBOUR_PRIORITY = 0.9
FIRST = NEIGHBOUR_PRIORITY  # the peak's neighbourhood is previewed
IMPORTANT = 0.25


def importance(cells: list[Cell], probs: np.ndarray, p_corrupt: float) -> np.ndarray:
    """Each cell's priority in a progressive trace, 0..1: its estimated |effect| (|P - P(corrupted)|)
    relative to the largest of its grid, so every grid's peak comes early; the cells of a grid's
    estimated peak's row within NEIGHBOURHOOD layers of it, or half its window for mlp/attn (the
    first order misplaces the peak along a window's plateau: Eiffel's mlp peak at 'iffel' layer 2
    was estimated at layer 5), at least NEIGHBOUR_PRIORITY (between it and 1, in the order of their
    own estimate). Cells without an estimate: 0."""
    effect = np.nan_to_num(np.abs(np.asarray(probs, dtype=np.float64) - p_corrupt), nan=0.0)
    out = np.zeros(len(cells))
    for grid in {c.grid for c in cells}:
        idx = [i for i, c in enumerate(cells) if c.grid == grid]
        top = effect[idx].max()
        if top <= 0:
            continue
        out[idx] = effect[idx] / top
        peak = cells[idx[int(np.argmax(effect[idx]))]]
        reach = NEIGHBOURHOOD if peak.kind == "hidden" else max(NEIGHBOURHOOD, (peak.layers[1] - peak.layers[0]) // 2)
        for i in idx:  # at least NEIGHBOUR_PRIORITY, still in the order of their own estimate
            if cells[i].row == peak.row and abs(cells[i].layer - peak.layer) <= reach and out[i] < NEIGHBOUR_PRIORITY:
                out[i] = NEIGHBOUR_PRIORITY + (1 - NEIGHBOUR_PRIORITY) * out[i]
    return out


def split_first(cells: list[Cell], priority: dict[int, float]) -> tuple[list[Cell], list[Cell]]:
    """(the cells at least FIRST important, most important first; the others, in their order).
    `priority`: id(cell) -> importance."""
    first = sorted((c for c in cells if priority.get(id(c), 0.0) >= FIRST), key=lambda c: -priority[id(c)])
    chosen = set(map(id, first))
    return first, [c for c in cells if id(c) not in chosen]


def order_chunks(chunks: list[Chunk], priority: dict[int, float]) -> list[Chunk]:
    """The same forwards in another order: those holding a cell of priority >= IMPORTANT first,
    largest first, then the rest in today's order. `priority`: id(cell) -> importance."""
    top = [max(priority.get(id(c), 0.0) for c in chunk.cells) for chunk in chunks]
    first = sorted((i for i in range(len(chunks)) if top[i] >= IMPORTANT), key=lambda i: (-top[i], i))
    return [chunks[i] for i in first] + [chunks[i] for i in range(len(chunks)) if top[i] < IMPORTANT]


def estimate_error(estimated: dict, exact: dict, tokens: list[str], *, largest: int = 5) -> dict:
    """How far the estimate is from the exact grids, per grid: the Pearson correlation of
    P(target) over the cells both have (None where undefined: fewer than 3 cells or a constant
    grid), the mean and largest absolute errors, and where the largest are.

    Args:
        estimated: estimate_grids' grids.
        exact: the trace's grids (TraceResult.grids).
        tokens: the prompt's tokens (rows of a positions-"all" grid).
        largest: how many of the largest errors to list.

    Returns:
        {grid: {"correlation", "mean_abs_error", "max_abs_error", "largest": [{"row", "layer",
        "token", "estimate", "exact", "error"}]}} (error = estimate - exact).
    """
    out = {}
    for grid, g in estimated.items():
        est = np.array([[np.nan if v is None else v for v in row] for row in g["prob"]], dtype=np.float64)
        ref = np.array([[np.nan if v is None else v for v in row] for row in exact[grid]["prob"]], dtype=np.float64)
        both = ~np.isnan(est) & ~np.isnan(ref)
        err = np.where(both, est - ref, np.nan)
        r = None
        if both.sum() >= 3 and est[both].std() > 0 and ref[both].std() > 0:
            r = float(np.corrcoef(est[both], ref[both])[0, 1])
        order = np.argsort(-np.nan_to_num(np.abs(err), nan=-1.0), axis=None)[:min(largest, int(both.sum()))]
        worst = []
        for flat in order:
            row, layer = (int(x) for x in np.unravel_index(flat, err.shape))
            worst.append({"row": row, "layer": layer, "token": tokens[row] if len(est) == len(tokens) else None,
                          "estimate": float(est[row, layer]), "exact": float(ref[row, layer]),
                          "error": float(err[row, layer])})
        out[grid] = {"correlation": r,
                     "mean_abs_error": float(np.abs(err[both]).mean()) if both.any() else None,
                     "max_abs_error": float(np.abs(err[both]).max()) if both.any() else None,
                     "largest": worst}
    return out


@dataclass
class Estimated:
    """A trace's estimate: its grids (estimate_grids), each cell's priority (id(cell) ->
    importance) and the seconds it took."""

    grids: dict
    priority: dict
    seconds: float


def estimate_trace(pm: PatchableModel, run: Corrupted, cells: list[Cell], *, first_corrupt: int,
                   shape: tuple[int, int], p_clean: float, p_corrupt: float, available: bool,
                   delivered=(), emit=None, cancel: threading.Event | None = None,
                   in_flight: TermsInFlight | None = None) -> Estimated:
    """Estimate every cell of a trace and send one Estimate event per grid.

    Args:
        pm: the patchable model.
        run: the clean and corrupted runs.
        cells: every cell of the trace, its positions in the corrupted run's frame.
        first_corrupt: the first frame position that differs from the clean run.
        shape: rows x layers of each grid.
        p_clean, p_corrupt: the clean and corrupted runs' P(target) (recovery % from them).
        available: whether recovery % is available (guards.recovery_available).
        delivered: cells already sent exactly (they equal the corrupted run): in the grids, not in
            the events.
        emit: called with each Estimate event.
        cancel: checked between batches of samples.
        in_flight: the terms already started (start_terms): waited for instead.

    Returns:
        The Estimated grids and priorities.
    """
    probs, seconds = estimate(pm, run, cells, first_corrupt=first_corrupt, cancel=cancel, in_flight=in_flight)
    grids = estimate_grids(cells, probs, shape, p_clean, p_corrupt, available)
    done = {(c.grid, c.row, c.layer) for c in delivered}
    for grid, g in grids.items():
        where = [(r, c) for r in range(shape[0]) for c in range(shape[1])
                 if g["prob"][r][c] is not None and (grid, r, c) not in done]
        if where and emit is not None:
            emit(Estimate(grid, where, [g["prob"][r][c] for r, c in where],
                          [g["recovery"][r][c] for r, c in where], seconds))
    if emit is not None:
        emit(Log("info", f"first-order estimate of {len(cells)} cells in {seconds:.2f} s; exact cells follow"))
    priority = importance(cells, probs, p_corrupt)
    return Estimated(grids, {id(c): float(v) for c, v in zip(cells, priority)}, seconds)


def fill_estimate(grids: dict, cells: list[Cell], estimated: Estimated) -> None:
    """Put the estimate of `cells` (those not run) into a trace's grids: P(target) and recovery
    from the estimate; the other metrics stay None."""
    for cell in cells:
        g, e = grids[cell.grid], estimated.grids.get(cell.grid)
        if e is not None:
            for m in ("prob", "recovery"):
                g[m][cell.row][cell.layer] = e[m][cell.row][cell.layer]
