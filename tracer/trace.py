"""A TraceRequest -> cells -> batched patched forwards -> TraceEvents and a TraceResult.

Schedule: every cell is (kind, restored layers, restored positions, grid row).
Rows of one forward are (cell, noise sample). A cell's *start layer* is the
first layer whose computation differs from the corrupted run: layer l+1 for
`hidden` at l (block l's output is the corrupted one with the clean value
written in), the window's first layer for `mlp`/`attn`. Cells are grouped by
start layer and every layer below it is replayed from the cached corrupted run
(MLX's lazy graph never computes the unused layers). Positions before the first
corrupted token carry exactly the clean state, so their cells equal the
corrupted run and are not run at all.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from .corruption import noise_delta
from .errors import InputError
from .events import KINDS, CellsDone, Log, Prediction, Started, TraceRequest, TraceResult
from .metrics import cell_metrics
from .models import LoadedModel
from .patching import PatchableModel, TapPlan
from .prompts import Tokens, check_substitution, subject_span, target_token, tokenize


@dataclass
class Cell:
    kind: str
    row: int  # grid row
    layer: int  # grid column
    layers: tuple[int, int]  # restored layers [l0, l1)
    positions: tuple[int, ...]

    @property
    def start(self) -> int:
        return self.layers[1] if self.kind == "hidden" else self.layers[0]


def window_layers(kind: str, layer: int, window: int, n_layers: int) -> tuple[int, int]:
    """Restored layers [l0, l1): one layer for `hidden`, a window of `window` centred on it otherwise."""
    if kind == "hidden":
        return layer, layer + 1
    return max(0, layer - window // 2), min(n_layers, layer - (-window // 2))


class Tracer:
    """A loaded model ready for tracing. Use from one thread only (the engine's)."""

    def __init__(self, lm: LoadedModel, *, max_rows: int | None = None):
        self.lm = lm
        self.tokenizer = lm.tokenizer
        self.patchable = PatchableModel(lm.model)
        self.n_layers = self.patchable.n_layers
        self.embedding_std = self.patchable.embedding_std()
        self.max_rows = max_rows
        self.context_length = _context_length(lm.model)

    def tokenize(self, prompt: str, subject: str | None = None):
        """(token texts, subject range or None) for previews."""
        tokens = tokenize(self.tokenizer, prompt)
        span = subject_span(prompt, subject, tokens) if subject else None
        return tokens.texts, span

    def predict(self, prompts: list[str], k: int = 3) -> list[list[Prediction]]:
        """Top-k next tokens of each prompt (one forward each)."""
        out = []
        for prompt in prompts:
            tokens = tokenize(self.tokenizer, prompt)
            probs = mx.softmax(self.patchable.forward(mx.array([tokens.ids])).astype(mx.float32), axis=-1)[0]
            out.append(_top(self.tokenizer, np.array(probs), k))
        return out

    def rows_per_batch(self, n_tokens: int) -> int:
        if self.max_rows:
            return self.max_rows
        return _rows_for_memory(self.lm.model, n_tokens)


def _context_length(model) -> int | None:
    args = getattr(model, "args", None)
    for name in ("max_position_embeddings", "n_positions", "n_ctx", "context_length"):
        value = getattr(args, name, None)
        if value:
            return int(value)
    return None


def _rows_for_memory(model, n_tokens: int) -> int:
    """Rows per forward from the model size and free memory: large batches keep GEMMs efficient,
    but the activations of one forward (~ rows x tokens x (a few hidden + ffn + a vocab row)) must fit."""
    args = getattr(model, "args", None)
    hidden = getattr(args, "hidden_size", 1024) or 1024
    ffn = getattr(args, "intermediate_size", 4 * hidden) or 4 * hidden
    vocab = getattr(args, "vocab_size", 50000) or 50000
    per_row = 4 * (n_tokens * (8 * hidden + 3 * ffn) + 2 * vocab)
    free = _free_memory_bytes()
    budget = max(64 << 20, free // 8)
    # about 2k token-rows per forward saturate the GEMMs on CPU; more only costs memory
    rows = min(budget // per_row, max(16, 2048 // max(1, n_tokens)))
    return int(max(1, rows))


def _free_memory_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import os

        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def _top(tokenizer, probs: np.ndarray, k: int) -> list[Prediction]:
    idx = np.argsort(-probs)[:k]
    return [Prediction(int(i), tokenizer.decode([int(i)], skip_special_tokens=False), float(probs[i])) for i in idx]


def _check_request(req: TraceRequest, n_layers: int) -> None:
    unknown = [k for k in req.kinds if k not in KINDS]
    if unknown or not req.kinds:
        raise InputError(f"unknown kind {unknown[0] if unknown else '(none)'!r}: choose from {', '.join(KINDS)}")
    if req.samples < 1:
        raise InputError(f"samples must be at least 1 (got {req.samples})")
    if req.window < 1:
        raise InputError(f"window must be at least 1 (got {req.window})")
    if req.noise < 0:
        raise InputError(f"noise must be non-negative (got {req.noise})")


def resolve_positions(positions, subject: tuple[int, int], n_tokens: int):
    if positions == "all":
        return "all"
    if positions == "subject-last":
        return [subject[1] - 1]
    chosen = sorted({int(p) for p in positions})
    if not chosen:
        raise InputError("no positions chosen to restore")
    for p in chosen:
        if not -n_tokens <= p < n_tokens:
            raise InputError(f"position {p} out of range: the prompt has {n_tokens} tokens (0..{n_tokens - 1})")
    return sorted({p % n_tokens for p in chosen})


def make_cells(kinds, positions, n_tokens: int, n_layers: int, window: int) -> list[Cell]:
    cells = []
    for kind in kinds:
        for layer in range(n_layers):
            span = window_layers(kind, layer, window, n_layers)
            if positions == "all":
                cells += [Cell(kind, t, layer, span, (t,)) for t in range(n_tokens)]
            else:
                cells.append(Cell(kind, 0, layer, span, tuple(positions)))
    return cells


def run_trace(tracer: Tracer, req: TraceRequest, *, on_event=None, cancel: threading.Event | None = None) -> TraceResult:
    from .engine import TraceCancelled

    emit = on_event or (lambda event: None)
    started_at = time.perf_counter()
    pm, tok, L = tracer.patchable, tracer.tokenizer, tracer.n_layers
    _check_request(req, L)
    clean = tokenize(tok, req.prompt)
    T = len(clean)
    if tracer.context_length and T > tracer.context_length:
        raise InputError(f"prompt is {T} tokens, longer than the model's context of {tracer.context_length}")
    subject = subject_span(req.prompt, req.subject, clean)
    positions = resolve_positions(req.positions, subject, T)
    warnings: list[str] = []

    # corrupted input
    if req.corrupted_prompt is not None:
        corrupted = tokenize(tok, req.corrupted_prompt)
        first_corrupt = check_substitution(clean, corrupted)
        if first_corrupt == T:
            warnings.append("the corrupted prompt tokenizes exactly like the prompt: nothing is corrupted")
        n_samples, corrupt_ids, delta, noise_std = 1, corrupted.ids, None, 0.0
        mode = "substitution"
    else:
        n_samples, corrupt_ids = req.samples, clean.ids
        noise_std = req.noise * tracer.embedding_std
        delta = mx.array(noise_delta(req.seed, n_samples, T, subject, pm.anatomy.hidden_size, noise_std))
        first_corrupt = subject[0]
        mode = "noise"

    # clean and corrupted runs, recorded
    clean_states, clean_logits = pm.record(mx.array([clean.ids]))
    corrupt_batch = mx.array([corrupt_ids] * n_samples)
    corrupt_states, corrupt_logits = pm.record(corrupt_batch, delta=delta)
    mx.eval(clean_states, clean_logits, corrupt_states, corrupt_logits)
    clean_probs = np.array(mx.softmax(clean_logits.astype(mx.float32), axis=-1))[0]
    corrupt_probs = np.array(mx.softmax(corrupt_logits.astype(mx.float32), axis=-1)).mean(axis=0)
    if req.target:
        target_id, target_text, target_warnings = target_token(tok, req.target)
        warnings += target_warnings
    else:
        target_id = int(np.argmax(clean_probs))
        target_text = tok.decode([target_id], skip_special_tokens=False)
    corrupt_top_id = int(np.argmax(corrupt_probs))
    p_clean, p_corrupt = float(clean_probs[target_id]), float(corrupt_probs[target_id])
    if abs(p_clean - p_corrupt) < 1e-6:
        warnings.append("clean and corrupted probabilities are equal: recovery % is undefined (shown as 0)")
    corrupt_np_logits = np.array(corrupt_logits.astype(mx.float32))
    base_logit_diff = float(np.mean(corrupt_np_logits[:, target_id] - corrupt_np_logits[:, corrupt_top_id]))

    cells = make_cells(req.kinds, positions, T, L, req.window)
    shape = (T if positions == "all" else 1, L)
    grids = {k: {m: [[0.0] * L for _ in range(shape[0])] for m in ("prob", "recovery", "logit_diff")} for k in req.kinds}
    emit(Started(clean.texts, subject, p_clean, p_corrupt, shape, tuple(req.kinds), target_text, len(cells)))
    for w in warnings:
        emit(Log("warning", w))

    done = 0

    def deliver(batch_cells, probs, diffs):
        nonlocal done
        by_kind = defaultdict(list)
        for cell, p, d in zip(batch_cells, probs, diffs):
            by_kind[cell.kind].append((cell, p, d))
        for kind, items in by_kind.items():
            rec = [cell_metrics(p, p_clean, p_corrupt) for _, p, _ in items]
            for (cell, p, d), r in zip(items, rec):
                g = grids[kind]
                g["prob"][cell.row][cell.layer], g["recovery"][cell.row][cell.layer] = p, r
                g["logit_diff"][cell.row][cell.layer] = d
            done += len(items)
            emit(CellsDone(kind, [(c.row, c.layer) for c, _, _ in items], [p for _, p, _ in items], rec,
                           [d for _, _, d in items], done, len(cells)))

    # cells restoring only unaffected positions: exactly the corrupted run
    unaffected = [c for c in cells if max(c.positions) < first_corrupt]
    if unaffected:
        deliver(unaffected, [p_corrupt] * len(unaffected), [base_logit_diff] * len(unaffected))
    todo = [c for c in cells if max(c.positions) >= first_corrupt]

    clean_t = {k: [s[0] for s in clean_states[k]] for k in clean_states}  # [T, D] per layer
    rows_cap = max(1, tracer.rows_per_batch(T) // n_samples)
    by_start = defaultdict(list)
    for cell in todo:
        by_start[cell.start].append(cell)
    for start in sorted(by_start):
        group = by_start[start]
        for i in range(0, len(group), rows_cap):
            if cancel is not None and cancel.is_set():
                raise TraceCancelled()
            chunk = group[i : i + rows_cap]
            probs, diffs = _patched_batch(
                pm, chunk, start, n_samples, T, corrupt_ids, delta, clean_t, corrupt_states, target_id, corrupt_top_id
            )
            deliver(chunk, probs, diffs)
    if cancel is not None and cancel.is_set():
        raise TraceCancelled()

    return TraceResult(
        model=tracer.lm.name,
        tokens=clean.texts,
        subject_range=subject,
        target_id=target_id,
        target_text=target_text,
        clean_prob=p_clean,
        corrupted_prob=p_corrupt,
        clean_top=_top(tok, clean_probs, 3),
        corrupted_top=_top(tok, corrupt_probs, 3),
        corrupted_top_id=corrupt_top_id,
        noise_std=noise_std,
        corruption=mode,
        positions=positions,
        request=req,
        grids=grids,
        seconds=time.perf_counter() - started_at,
        warnings=warnings,
    )


def _patched_batch(pm, cells, start, n_samples, T, corrupt_ids, delta, clean_t, corrupt_states, target_id, top_id):
    """One forward for `cells` x `n_samples` rows that all start computing at layer `start`."""
    n_rows = len(cells) * n_samples
    sample_of_row = mx.array(np.tile(np.arange(n_samples), len(cells)))
    plans: dict = {}
    for layer in range(min(start, pm.n_layers)):
        plans[("hidden", layer)] = TapPlan(replay=corrupt_states["hidden"][layer][sample_of_row])
    masks = defaultdict(lambda: np.zeros((n_rows, T, 1), dtype=bool))
    for c_i, cell in enumerate(cells):
        rows = slice(c_i * n_samples, (c_i + 1) * n_samples)
        for layer in range(*cell.layers):
            masks[(cell.kind, layer)][rows, list(cell.positions), 0] = True
    for (kind, layer), mask in masks.items():
        plan = plans.setdefault((kind, layer), TapPlan())
        plan.mask, plan.clean = mx.array(mask), clean_t[kind][layer]
    ids = mx.array([corrupt_ids] * n_rows)
    row_delta = None if delta is None or start > 0 else delta[sample_of_row]
    logits = pm.forward(ids, delta=row_delta, plans=plans).astype(mx.float32)
    logp = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    p_target = mx.exp(logp[:, target_id]).reshape(len(cells), n_samples).mean(axis=1)
    diff = (logits[:, target_id] - logits[:, top_id]).reshape(len(cells), n_samples).mean(axis=1)
    mx.eval(p_target, diff)
    return p_target.tolist(), diff.tolist()
