"""A TraceRequest -> clean and corrupted runs -> scheduled patched forwards -> events and a result.

See schedule.py for how cells become batched forwards. Cells restoring only
positions before the first corrupted token equal the corrupted run exactly
(those positions carry the clean state already) and are not run at all.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict

import mlx.core as mx
import numpy as np

from . import corruption
from ..errors import InputError, check_cancel
from ..events import CellsDone, Log, Recording, Started
from .fastops import softmax
from ..guards import (
    TraceWarning,
    position_guards,
    recovery_available,
    substitution_guards,
    trace_guards,
    unaligned_guards,
)
from ..types import Prediction, TraceRequest, TraceResult
from ..metrics import METRIC_NAMES, cell_metrics, interval_grids
from ..models.load import LoadedModel
from .estimate import estimate_error, estimate_trace, fill_estimate, order_chunks
from .patching import PatchableModel
from .workers import Workers, default_workers
from . import schedule
from .schedule import (Corrupted, batch_limits, make_cells, make_chunks, record_batch_rows, recording_bytes,
                       run_chunk_samples, sample_scores)
from ..inputs.prompts import align_prompts, subject_span, target_ids, tokenize
from ..inputs.positions import resolve_positions


class Tracer:
    """A loaded model ready for tracing. Use from one thread only (the engine's)."""

    def __init__(self, lm: LoadedModel, *, max_rows: int | None = None, workers: int | None = None):
        self.lm = lm
        self.tokenizer = lm.tokenizer
        self.patchable = PatchableModel(lm.model)
        self.n_layers = self.patchable.n_layers
        self._sigmas: dict[str, float] = {}  # per model, computed once when first needed
        self._recording_shapes: tuple[int, int, int] | None = None
        self.max_rows = max_rows
        self.target_tokens: int | None = None  # token-rows per forward; None: from batch_limits
        self.context_length = _context_length(lm.model)
        self.workers = Workers(default_workers() if workers is None else workers)

    def subject_sigma(self) -> float:
        """ROME's sigma: the std of the known_1000 subjects' token embeddings (float64)."""
        if "subject" not in self._sigmas:
            ids = corruption.subject_token_ids(self.tokenizer, corruption.known_subjects())
            self._sigmas["subject"] = corruption.pooled_std(self.embed_rows(ids))
        return self._sigmas["subject"]

    def embedding_sigma(self) -> float:
        """The std of all token-embedding values (float64)."""
        if "embedding" not in self._sigmas:
            self._sigmas["embedding"] = corruption.pooled_std(self.patchable.anatomy.embed_weight())
        return self._sigmas["embedding"]

    def noise_std(self, rule) -> float:
        """The absolute noise std of a NoiseRule for this model."""
        return corruption.noise_std(rule, self.subject_sigma, self.embedding_sigma)

    def noised_embeddings(self, ids: list[int], subject: tuple[int, int], settings) -> tuple[mx.array, float]:
        """The corrupted run's input: [samples, T, D] embeddings with the subject's rows noised
        by `settings`' rule (ROME's draws, float64 sum), and the noise's absolute std."""
        rule = settings.noise_rule
        std = self.noise_std(rule)
        hidden = self.patchable.anatomy.hidden_size
        noise = corruption.draws(rule, settings.seed, settings.samples, subject[1] - subject[0], hidden, std)
        x = self.patchable.embed(mx.array([ids]))[0]
        embeds = corruption.corrupted_embeddings(_float64(x), subject, noise, replace=settings.replace)
        return mx.array(embeds).astype(x.dtype), std

    def recording_shapes(self) -> tuple[int, int, int]:
        """(hidden size, keys/values elements per token over all layers, bytes per element) of the
        recorded runs, from recording one token once."""
        if self._recording_shapes is None:
            states, _, kv = self.patchable.record(mx.array([[0]]))
            first = states["hidden"][0]
            kv_per_token = sum(k.shape[1] * k.shape[3] + v.shape[1] * v.shape[3] for k, v in kv) if kv else 0
            self._recording_shapes = (first.shape[-1], kv_per_token, first.dtype.size)
        return self._recording_shapes

    def embed_rows(self, ids: list[int]) -> np.ndarray:
        """The embedding module's outputs for the token ids, [len(ids), D] in float64."""
        return _float64(self.patchable.embed(mx.array([ids]))[0])

    def tokenize(self, prompt: str, subject: str | None = None):
        """(token texts, subject range or None) for previews."""
        tokens = tokenize(self.tokenizer, prompt)
        span = subject_span(prompt, subject, tokens) if subject else None
        return tokens.texts, span

    def check_context(self, n_tokens: int, what: str = "prompt") -> None:
        """InputError when `n_tokens` exceed the model's context (a longer run would only be slow and wrong)."""
        if self.context_length and n_tokens > self.context_length:
            raise InputError(f"{what} is {n_tokens} tokens, longer than the model's context of {self.context_length}")

    def predict(self, prompts: list[str], k: int = 3) -> list[list[Prediction]]:
        """Top-k next tokens of each prompt (one forward each)."""
        out = []
        for prompt in prompts:
            tokens = tokenize(self.tokenizer, prompt)
            self.check_context(len(tokens))
            probs = softmax(self.patchable.forward(mx.array([tokens.ids])))[0]
            out.append(top_predictions(self.tokenizer, np.array(probs), k))
        return out


def _float64(x: mx.array) -> np.ndarray:
    return np.array(x.astype(mx.float32), dtype=np.float64)


def _context_length(model) -> int | None:
    args = getattr(model, "args", None)
    for name in ("max_position_embeddings", "n_positions", "n_ctx", "context_length"):
        value = getattr(args, name, None)
        if value:
            return int(value)
    return None


def top_predictions(tokenizer, probs: np.ndarray, k: int) -> list[Prediction]:
    """The k most probable tokens of a distribution [vocab], most probable first."""
    idx = np.argsort(-probs)[:k]
    return [Prediction(int(i), tokenizer.decode([int(i)], skip_special_tokens=False), float(probs[i])) for i in idx]


def plan_chunks(tracer: Tracer, cells, n_samples: int, n_tokens: int, use_prefix: bool):
    """(the batched forwards the cells run in, whether they run packed)."""
    packed = use_prefix and tracer.patchable.packed is not None
    max_rows, target_tokens = batch_limits(tracer.lm.model, n_tokens, tracer.max_rows, packed)
    chunks = make_chunks(cells, n_samples, n_tokens, max_rows=max_rows,
                         target_tokens=tracer.target_tokens or target_tokens, use_prefix=use_prefix, packed=packed)
    return chunks, packed


def corrupted_kinds(sever) -> tuple[str, ...]:
    """The corrupted run's outputs the patched forwards read: every block's (hidden states below a
    cell's first computed layer are replayed) and, for severed paths, the severed kinds' (held at
    their corrupted values)."""
    return ("hidden",) + tuple(k for k in PatchableModel.KIND_SLOTS if k != "hidden" and k in sever)


def check_recording_memory(tracer: Tracer, n_samples: int, n_tokens: int, kinds, packed: bool) -> int:
    """The bytes the recorded corrupted run will need (schedule.recording_bytes, with the hidden size
    and keys/values per token of this model); InputError when more than the memory available.
    Returns the estimate."""
    hidden, kv_per_token, itemsize = tracer.recording_shapes()
    need = recording_bytes(n_samples, n_tokens, tracer.n_layers, hidden, kv_per_token, len(kinds), itemsize, packed)
    available = schedule.free_memory_bytes()
    if need > available:
        what = f"{n_samples} samples x {n_tokens} tokens" if n_samples > 1 else f"a prompt of {n_tokens} tokens"
        advice = "use fewer samples" if n_samples > 1 else "use a shorter prompt"
        raise InputError(f"{what} need{'s' if n_samples == 1 else ''} ~{need / 2**30:.1f} GiB for the recorded "
                         f"corrupted run; {available / 2**30:.1f} GiB is available: {advice}")
    return need


def run_trace(tracer: Tracer, req: TraceRequest, *, on_event=None, cancel: threading.Event | None = None) -> TraceResult:
    """One causal trace (docs/method.md#d2-the-three-runs): the clean and corrupted runs, then every
    cell's patched run.

    Noise corrupts the subject's embeddings (req.samples samples; each cell also gets its spread).
    A corrupted prompt substitutes; one of another token length is aligned with the prompt
    (prompts.align_prompts) and the patched forwards run on its tokens. A target of several
    tokens is traced as P(whole target) by teacher forcing.

    Args:
        tracer: the loaded model.
        req: what to trace.
        on_event: called with each event (Recording, Started, Log, CellsDone) on this thread.
        cancel: set to stop; TraceCancelled is raised at the next check (between blocks).

    Returns:
        The TraceResult.

    Raises:
        InputError: a request that cannot be traced (the message says why and what to do).
        TraceCancelled: `cancel` was set.
    """
    check_cancel(cancel)  # a request superseded before it started: nothing runs
    emit = on_event or (lambda event: None)
    started_at = time.perf_counter()
    pm, tok, L = tracer.patchable, tracer.tokenizer, tracer.n_layers
    clean = tokenize(tok, req.prompt)
    T = len(clean)
    tracer.check_context(T)
    subject = subject_span(req.prompt, req.subject, clean)
    positions = resolve_positions(req.positions, subject, T)
    warnings: list[TraceWarning] = []
    from .. import BLAS

    if not BLAS.fast:
        warnings.append(TraceWarning("slow-blas", f"slow BLAS: {BLAS.note}"))

    # a target of k tokens is teacher-forced: both runs read its first k - 1 tokens after the prompt,
    # and P(target) is the product of its tokens' probabilities at the last k positions
    targets = target_ids(tok, req.target, req.prompt, clean.ids) if req.target else None
    extra = list(targets[:-1]) if targets else []
    k = len(extra) + 1

    # corrupted input; a corrupted prompt of another length runs in its own frame: the patched
    # forwards run on its tokens, restoring each clean position's state at its aligned position
    alignment = None
    if req.corrupted_prompt is not None:
        corrupted = tokenize(tok, req.corrupted_prompt, "the corrupted prompt")
        span = (subject_span(req.corrupted_prompt, req.corrupted_subject, corrupted, "corrupted subject")
                if req.corrupted_subject is not None else None)
        aligned = align_prompts(clean, corrupted, subject, span)
        alignment = {"corrupted_tokens": corrupted.texts, **aligned}
        mapping, first_corrupt = aligned["clean_to_corrupted"], aligned["prefix"]
        warnings += substitution_guards(clean.ids, corrupted.ids, subject, mapping)
        corrupt_ids, embeds, noise_std = corrupted.ids, None, 0.0
        mode = "substitution"
    else:
        mapping = list(range(T))
        corrupt_ids = clean.ids
        embeds, noise_std = tracer.noised_embeddings(clean.ids + extra, subject, req)
        first_corrupt = subject[0]
        mode = "noise"
    clean_ids, corrupt_ids = list(clean.ids) + extra, list(corrupt_ids) + extra
    Tf = len(corrupt_ids)  # the frame's length: the corrupted prompt's and the appended target tokens
    frame_map = mapping + [Tf - k + 1 + j for j in range(k - 1)]  # every clean run position's place
    if tracer.context_length and max(len(clean_ids), Tf) > tracer.context_length:
        raise InputError(f"the prompts with the target are {max(len(clean_ids), Tf)} tokens, longer than the "
                         f"model's context of {tracer.context_length}")

    # memory for the recorded corrupted run, checked before anything that size is made
    keep = corrupted_kinds(req.sever)
    use_prefix = pm.prefix_cache
    n_samples = 1 if req.corrupted_prompt is not None else req.samples
    check_recording_memory(tracer, n_samples, max(len(clean_ids), Tf), keep, use_prefix and pm.packed is not None)

    # clean and corrupted runs, recorded block by block (progress events, a cancel stops them
    # between blocks); of the corrupted run only what the patched forwards read is kept, and only
    # its positions from the first corrupted token on are computed (earlier ones equal the clean run)
    emit(Recording("clean", 0, L))
    clean_states, clean_logits, clean_kv = pm.record(
        mx.array([clean_ids]), cancel=cancel, on_layer=lambda b, layer: emit(Recording("clean", layer, L)), last=k)
    batch_rows = record_batch_rows(Tf - min(first_corrupt, Tf - 1))  # the positions each row computes
    n_batches = -(-n_samples // batch_rows)
    emit(Recording("corrupted", 0, L, 1, n_batches))
    corrupt_batch = mx.array([corrupt_ids] * n_samples)
    corrupt_states, corrupt_logits, corrupt_kv = pm.record(
        corrupt_batch, embeds=embeds, kinds=keep, batch_rows=batch_rows, cancel=cancel,
        on_layer=lambda b, layer: emit(Recording("corrupted", layer, L, b + 1, n_batches)),
        shared=(clean_states, clean_kv, first_corrupt), last=k)  # positions before the corruption: the clean run's
    del clean_kv
    clean_logits, corrupt_logits = clean_logits.astype(mx.float32), corrupt_logits.astype(mx.float32)
    # [k, V] and [N, k, V]: the next-token distributions after the prompt and after each target token
    clean_dists = np.array(softmax(clean_logits.reshape(k, -1)))
    corrupt_dists = np.array(softmax(corrupt_logits.reshape(n_samples * k, -1))).reshape(n_samples, k, -1)
    clean_probs, corrupt_probs = clean_dists[0], corrupt_dists[:, 0].mean(axis=0)  # after the prompt
    clean_top_id = int(np.argmax(clean_probs))
    targets = targets or [clean_top_id]
    target_id = targets[0]
    target_text = tok.decode(targets, skip_special_tokens=False)
    # the logit difference is measured against the corrupted run's strongest token other than the
    # target (against its top token it is exactly 0 wherever the corruption kept the target on top)
    others = corrupt_probs.copy()
    others[target_id] = -1.0
    corrupt_top_id = int(np.argmax(others))
    p_clean = float(np.array(sample_scores(clean_logits, targets, corrupt_top_id)[0])[0])
    # the corrupted run's per-sample values: every cell restoring only unaffected positions has them
    base_probs, base_diffs = (np.array(x) for x in sample_scores(corrupt_logits, targets, corrupt_top_id))
    p_corrupt = float(base_probs.astype(np.float64).mean())  # as every cell's mean: float32 rows, float64 mean
    available = recovery_available(p_clean, p_corrupt)
    # what each run predicts, token by token along the target (teacher-forced): for a one-token
    # target its top token; for a longer one whether it would write the whole target
    clean_greedy = tuple(int(np.argmax(clean_dists[j])) for j in range(k))
    corrupt_greedy = tuple(int(np.argmax(corrupt_dists[:, j].mean(axis=0))) for j in range(k))
    # what the clean run writes instead: the target up to its first other top token, then that token
    differ = next((j for j in range(k) if clean_greedy[j] != targets[j]), k - 1)
    clean_instead = list(targets[:differ]) + [clean_greedy[differ]]
    warnings += trace_guards(
        target_text=target_text, p_clean=p_clean, p_corrupted=p_corrupt, corrupted_top_id=corrupt_greedy,
        target_id=tuple(targets), clean_top_id=clean_greedy,
        clean_top_text=tok.decode(clean_instead, skip_special_tokens=False), target_given=bool(req.target))
    if req.positions != "whole":  # restoring every position together: the early ones are simply included
        warnings += position_guards(positions, first_corrupt, clean.texts)
    warnings += unaligned_guards(positions, mapping, clean.texts)

    # the cells, their positions in the frame; cells with no aligned position are not run (None)
    cells, unaffected = [], []
    for cell in make_cells(req.kinds, positions, T, L, req.window, req.sever):
        frame = tuple(mapping[p] for p in cell.positions if mapping[p] is not None)
        if frame:
            # restoring only positions before the first corrupted token, each at its own place:
            # exactly the corrupted run
            same = all(mapping[p] == p < first_corrupt for p in cell.positions)
            cell.positions = frame
            (unaffected if same else cells).append(cell)
    todo, cells = cells, unaffected + cells
    shape = (T if positions == "all" else 1, L)
    names = req.grid_names
    metrics = METRIC_NAMES + (UNCERTAINTY_NAMES if mode == "noise" else ())
    grids = {k: {m: [[None] * L for _ in range(shape[0])] for m in metrics} for k in names}
    emit(Started(clean.texts, subject, p_clean, p_corrupt, shape, names, target_text, len(cells)))
    for w in warnings:
        emit(Log("warning", w))

    done = 0

    def deliver(batch_cells, probs, diffs):
        """Store and report cells from their per-sample values [cells, N] (float32)."""
        nonlocal done
        stats = interval_grids(probs, diffs)
        by_kind = defaultdict(list)
        for i, cell in enumerate(batch_cells):
            by_kind[cell.grid].append((cell, i))
        for kind, items in by_kind.items():
            g = grids[kind]
            values = {m: [(float if m in METRIC_NAMES else _value)(stats[m][i]) for _, i in items]
                      for m in stats if m in g}
            values["recovery"] = [cell_metrics(p, p_clean, p_corrupt) if available else None for p in values["prob"]]
            for j, (cell, _) in enumerate(items):
                for m, column in values.items():
                    g[m][cell.row][cell.layer] = column[j]
            done += len(items)
            emit(CellsDone(kind, [(c.row, c.layer) for c, _ in items], values["prob"], values["recovery"],
                           values["logit_diff"], done, len(cells)))

    if unaffected:
        deliver(unaffected, np.tile(base_probs, (len(unaffected), 1)), np.tile(base_diffs, (len(unaffected), 1)))

    run = Corrupted(
        ids=corrupt_ids, n_samples=n_samples, embeds=embeds, states=corrupt_states, kv=corrupt_kv,
        clean={kind: [in_frame(s[0], frame_map, Tf) for s in clean_states[kind]] for kind in clean_states},
        target_id=target_id, top_id=corrupt_top_id, cancel=cancel, target_ids=tuple(targets),
    )
    del clean_states
    estimated = None
    if req.estimate != "off":  # first-order estimate of every cell (core/estimate.py), then exact cells by it
        estimated = estimate_trace(pm, run, cells, first_corrupt=first_corrupt, shape=shape, p_clean=p_clean,
                                   p_corrupt=p_corrupt, available=available, delivered=unaffected, emit=emit,
                                   cancel=cancel)
        if req.estimate == "only":
            fill_estimate(grids, todo, estimated)
            warnings.append(TraceWarning("estimate-only", "the grids are a first-order estimate (attribution "
                                         "patching), not patched runs"))
            todo = []
    chunks, packed = plan_chunks(tracer, todo, n_samples, Tf, use_prefix=use_prefix)
    if estimated is not None:
        chunks = order_chunks(chunks, estimated.priority)
    if packed:
        pm.packed.prepare(run)
        run.kv = corrupt_kv = None  # the packed forward reads the rows only
    mx.eval(run.clean, run.kv_rows)  # workers may only share evaluated arrays (streams are per thread)
    for chunk, (probs, diffs) in tracer.workers.map(lambda c: run_chunk_samples(pm, c, run), chunks, cancel):
        deliver(chunk.cells, probs, diffs)
    check_cancel(cancel)

    return TraceResult(
        model=tracer.lm.name,
        tokens=clean.texts,
        subject_range=subject,
        target_id=target_id,
        target_text=target_text,
        clean_prob=p_clean,
        corrupted_prob=p_corrupt,
        clean_top=top_predictions(tok, clean_probs, req.top_k),
        corrupted_top=top_predictions(tok, corrupt_probs, req.top_k),
        corrupted_top_id=corrupt_top_id,
        noise_std=noise_std,
        corruption=mode,
        positions=positions,
        request=req,
        grids=grids,
        seconds=time.perf_counter() - started_at,
        warnings=warnings,
        token_ids=list(clean.ids),
        recovery_available=available,
        alignment=alignment,
        target_tokens=[{"id": int(t), "text": tok.decode([int(t)], skip_special_tokens=False),
                        "clean_prob": float(clean_dists[j, t]), "corrupted_prob": float(corrupt_dists[:, j, t].mean())}
                       for j, t in enumerate(targets)],
        estimate=estimated.grids if estimated else None,
        estimate_error=estimate_error(estimated.grids, grids, clean.texts) if todo and estimated else None,
        exact=req.estimate != "only",
    )


def in_frame(states: mx.array, mapping: list, n_frame: int) -> mx.array:
    """A clean run's states moved to the corrupted prompt's positions (the frame the patched forwards
    run in).

    Args:
        states: [T, D], one kind's clean outputs at one layer.
        mapping: the frame position of each clean position (None: no counterpart).
        n_frame: the frame's length.

    Returns:
        [n_frame, D]: clean position t's state at mapping[t]; frame positions without a clean
        counterpart (never restored) hold position 0's. The identity mapping returns `states` itself.
    """
    if len(mapping) == n_frame and all(q == t for t, q in enumerate(mapping)):
        return states
    source = np.zeros(n_frame, dtype=np.int32)
    for t, q in enumerate(mapping):
        if q is not None:
            source[q] = t
    return states[mx.array(source)]


# the grids' extra keys in noise mode: the spread over the noise samples (metrics.interval_grids)
UNCERTAINTY_NAMES = ("prob_std", "prob_low", "prob_high", "logit_diff_std")


def _value(x) -> float | None:
    """A cell's value as a Python float; None where it has none (NaN: a std of one sample)."""
    x = float(x)
    return None if np.isnan(x) else x
