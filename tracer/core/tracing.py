"""A TraceRequest -> clean and corrupted runs -> scheduled patched forwards -> events and a result.

See schedule.py for how cells become batched forwards. Cells restoring only
positions before the first corrupted token equal the corrupted run exactly
(those positions carry the clean state already) and are not run at all.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

import mlx.core as mx
import numpy as np

from ..blas import load_fast_blas
from ..errors import InputError, check_cancel
from ..events import CellsDone, Log, Recording, Started
from ..guards import (
    TraceWarning,
    position_guards,
    recovery_available,
    trace_guards,
    unaligned_guards,
)
from ..inputs.positions import resolve_positions
from ..inputs.prompts import subject_span, tokenize
from ..metrics import METRIC_NAMES, cell_metrics, interval_grids
from ..models.load import LoadedModel
from ..types import Prediction, TraceRequest, TraceResult
from ..work import estimate_work, head_layers, trace_work
from . import corruption, schedule
from .estimate import (
    TermsInFlight,
    estimate_error,
    estimate_trace,
    estimated_kinds,
    fill_estimate,
    order_chunks,
    split_first,
    start_terms,
)
from .fastops import softmax
from .patching import PatchableModel
from .prepare import PreparedRun, in_frame, prepare_request
from .schedule import (
    Chunk,
    Corrupted,
    batch_limits,
    cell_token_layers,
    make_cells,
    make_chunks,
    record_batch_rows,
    recording_bytes,
    run_chunk_samples,
    sample_scores,
)
from .workers import Workers, default_workers


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
        anatomy = self.patchable.anatomy  # a forward row's logits, in token-layers (tracer.work)
        self.head_layers = head_layers(anatomy.vocab_size, anatomy.hidden_size, anatomy.block_weights())

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


def predicted_work(tracer: Tracer, req: TraceRequest) -> int:
    """Token-layers a trace of `req` will cost (tracer.work.trace_work, the WorkMeter's unit), from its
    tokens alone: a long phase made of several traces (robustness, a sweep) weighs each by it. A
    substitution is one corrupted run from the first token the two prompts differ in (exact for a
    corrupted prompt of the same token length; an aligned one of another length runs on a longer frame)."""
    tokens = tokenize(tracer.tokenizer, req.prompt)
    span = subject_span(req.prompt, req.subject, tokens)
    n = len(tokens)
    free, samples = span[0], req.samples
    if req.corrupted_prompt is not None:
        other = tokenize(tracer.tokenizer, req.corrupted_prompt).ids
        free = next((i for i, (a, b) in enumerate(zip(tokens.ids, other)) if a != b), min(n, len(other)))
        samples = 1
    positions = resolve_positions(req.positions, span, n)
    first = 0 if positions == "all" else min(positions)
    settings = dataclasses.replace(req, samples=samples) if samples != req.samples else req
    return trace_work(n, tracer.n_layers, settings=settings, positions=positions, first=first, free_before=free,
                      head=tracer.head_layers)


def plan_chunks(tracer: Tracer, cells, n_samples: int, n_tokens: int, use_prefix: bool):
    """(the batched forwards the cells run in, whether they run packed)."""
    packed = use_prefix and tracer.patchable.packed is not None
    max_rows, target_tokens = batch_limits(tracer.lm.model, n_tokens, tracer.max_rows, packed)
    chunks = make_chunks(cells, n_samples, n_tokens, max_rows=max_rows,
                         target_tokens=tracer.target_tokens or target_tokens, use_prefix=use_prefix, packed=packed)
    return chunks, packed


# token-rows per forward of a progressive trace's previews (plan_previews): small, so that each is
# done in a fraction of a second (today's forwards hold up to CPU_PACKED_TARGET_TOKENS)
PREVIEW_TOKENS = 192
# the previews' work, at most, as a share of the trace's forwards' (each grid's estimated peak runs
# ahead whatever it costs): on a short prompt the neighbourhoods cover much of the grid (17% of a
# 6-token trace's work without this bound)
PREVIEW_SHARE = 0.05


def plan_previews(tracer: Tracer, cells, work: int, priority: dict, n_samples: int, n_tokens: int,
                  use_prefix: bool) -> list[Chunk]:
    """A progressive trace's previews: the cells at least estimate.FIRST important (each grid's
    estimated peak and its neighbourhood), the most important first, within PREVIEW_SHARE of
    `work` (the trace's own forwards' token-layers: WorkMeter.cells), in small forwards
    (PREVIEW_TOKENS token-rows).
    They run before the trace's own forwards, which run them again: a cell's float rounding may
    depend on the cells that share its forward (the GEMMs' blocking follows the batch on some
    BLAS and GPUs), and the grids must equal today's bit for bit."""
    packed = use_prefix and tracer.patchable.packed is not None
    L = tracer.n_layers
    head = tracer.head_layers
    budget = PREVIEW_SHARE * work
    chosen, spent, peaks = [], 0, set()
    for cell in split_first(cells, priority)[0]:
        work = schedule.cell_token_layers(Chunk(cell.start, min(cell.positions), [cell]), cell, n_samples,
                                          n_tokens, L, packed, head)
        if cell.grid not in peaks or spent + work <= budget:  # a grid's first: its estimated peak
            chosen.append(cell)
            spent, peaks = spent + work, peaks | {cell.grid}
    max_rows, target = batch_limits(tracer.lm.model, n_tokens, tracer.max_rows, packed)
    previews = make_chunks(chosen, n_samples, n_tokens, max_rows=max_rows,
                           target_tokens=min(PREVIEW_TOKENS, tracer.target_tokens or target),
                           use_prefix=use_prefix, packed=packed)
    return sorted(previews, key=lambda c: (-max(priority[id(cell)] for cell in c.cells),
                                           schedule.token_layers(c, n_samples, n_tokens, L, packed, head)))


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


def run_trace(tracer: Tracer, req: TraceRequest, *, on_event=None, cancel: threading.Event | None = None,
              settle: threading.Event | None = None) -> TraceResult:
    """One causal trace (docs/method.md#d2-the-three-runs): the clean and corrupted runs, then every
    cell's patched run.

    Noise corrupts the subject's embeddings (req.samples samples; each cell also gets its spread).
    A corrupted prompt substitutes; one of another token length is aligned with the prompt
    (prompts.align_prompts) and the patched forwards run on its tokens. A target of several
    tokens is traced as P(whole target) by teacher forcing. The run is prepared as every patched
    run is (core/prepare.py); its cells then run in batched forwards (core/schedule.py).

    Args:
        tracer: the loaded model.
        req: what to trace.
        on_event: called with each event (Recording, Started, Log, CellsDone, Estimate) on this thread.
        cancel: set to stop; TraceCancelled is raised at the next check (between blocks).
        settle: adaptive samples (req.ci_width) only: set to stop refining and keep what is there:
            the forwards in flight finish (the first round always does), every cell still pending
            gets the samples it has, and the trace ends normally, a "refining-stopped" warning
            saying how many cells kept how many samples (_run_cells_adaptive). Ignored otherwise.

    Returns:
        The TraceResult.

    Raises:
        InputError: a request that cannot be traced (the message says why and what to do).
        TraceCancelled: `cancel` was set.
    """
    check_cancel(cancel)  # a request superseded before it started: nothing runs
    emit = on_event or (lambda event: None)
    started_at = time.perf_counter()
    prep = prepare_request(tracer, req)
    positions = resolve_positions(req.positions, prep.subject, len(prep.clean))
    blas = load_fast_blas()
    warnings = [TraceWarning("slow-blas", f"slow BLAS: {blas.note}")] if not blas.fast else []
    warnings += prep.warnings
    pm = tracer.patchable
    keep = corrupted_kinds(req.sever)  # memory for the recorded corrupted run, checked before it is made
    check_recording_memory(tracer, prep.n_samples, max(len(prep.clean_ids), prep.n_frame), keep,
                           pm.prefix_cache and pm.packed is not None)
    cells, unaffected = _cells(req, prep, positions, tracer.n_layers)
    chunks, packed = plan_chunks(tracer, [] if req.estimate == "only" else cells, prep.n_samples, prep.n_frame,
                                 use_prefix=pm.prefix_cache)
    meter = WorkMeter.plan(prep, req, tracer.n_layers, chunks, packed, tracer.head_layers)
    early = estimated_kinds(cells) if req.estimate != "off" and tracer.workers.n > 1 else ()
    rec = _record(tracer, prep, keep, meter.relay(emit), cancel, estimate_kinds=early)
    try:
        base = _baseline(tracer.tokenizer, prep, rec.clean_logits, rec.corrupt_logits)
        warnings += _run_guards(tracer.tokenizer, req, prep, base, positions)
        grids = _Grids(req, prep, base, positions, tracer.n_layers, len(unaffected) + len(cells), emit, meter)
        emit(Started(prep.clean.texts, prep.subject, base.p_clean, base.p_corrupt, grids.shape, req.grid_names,
                     base.target_text, grids.total, meter.total))
        for w in warnings:
            emit(Log("warning", w))
        if unaffected:
            n = len(unaffected)
            grids.deliver(unaffected, np.tile(base.probs, (n, 1)), np.tile(base.diffs, (n, 1)))
        run = dataclasses.replace(rec.run, states=rec.corrupt_states, kv=rec.corrupt_kv, top_id=base.corrupt_top_id,
                                  cancel=cancel)
        estimated, todo = _estimate(tracer, req, prep, base, run, grids, cells, unaffected, warnings, emit, cancel,
                                    rec.in_flight)
    finally:  # an error or a cancel before the estimate: it is joined all the same
        if rec.in_flight is not None:
            rec.in_flight.join()
    meter.done += meter.estimate  # counted with the next cells
    if req.ci_width is not None:  # the meter planned every cell at the most samples: an upper bound
        stopped = _run_cells_adaptive(tracer, run, todo, grids, cancel, target=req.ci_width, settle=settle)
        warnings += [stopped] if stopped else []
    else:
        _run_cells(tracer, run, todo, chunks, packed, estimated, grids, cancel)
    return _result(tracer, req, prep, base, positions, grids, warnings, estimated, todo,
                   time.perf_counter() - started_at)


@dataclass
class _Recorded:
    """The clean and corrupted runs as recorded (_record), the logits in float32."""

    run: Corrupted  # the clean states in the frame, the ids, embeddings and targets: no corrupted states yet
    clean_logits: mx.array  # [k, V]
    corrupt_states: dict
    corrupt_logits: mx.array  # [N, k, V]
    corrupt_kv: list | None
    in_flight: TermsInFlight | None  # the estimate's terms, started before the corrupted run


def _record(tracer: Tracer, prep: PreparedRun, keep, emit, cancel, *, estimate_kinds=()) -> _Recorded:
    """The clean and corrupted runs, recorded block by block (progress events; a cancel stops them
    between blocks). Of the corrupted run only what the patched forwards read is kept, and only its
    positions from the first corrupted token on are computed (earlier ones equal the clean run's).

    With `estimate_kinds`, the first-order estimate of those kinds starts on the engine's workers
    between the two (core/estimate.py start_terms: it reads the clean run only), so it overlaps the
    corrupted run's recording on this thread.
    """
    pm, L, k = tracer.patchable, tracer.n_layers, prep.k
    emit(Recording("clean", 0, L))
    clean_states, clean_logits, clean_kv = pm.record(
        mx.array([prep.clean_ids]), cancel=cancel, on_layer=lambda b, layer: emit(Recording("clean", layer, L)),
        last=k)
    targets = _target_ids(prep, clean_logits)
    frame_map, n_frame = prep.frame_map, prep.n_frame
    run = Corrupted(ids=prep.frame_ids, n_samples=prep.n_samples, embeds=prep.embeds, states={}, kv=None,
                    clean={kind: [in_frame(s[0], frame_map, n_frame) for s in clean_states[kind]]
                           for kind in clean_states},
                    target_id=targets[0], top_id=-1, target_ids=tuple(targets))
    in_flight = None
    if estimate_kinds:
        in_flight = start_terms(pm, run, first_corrupt=prep.first_corrupt, kinds=estimate_kinds,
                                workers=tracer.workers)
    batch_rows = record_batch_rows(n_frame - min(prep.first_corrupt, n_frame - 1))  # the positions a row computes
    n_batches = -(-prep.n_samples // batch_rows)
    emit(Recording("corrupted", 0, L, 1, n_batches))
    try:
        corrupt_states, corrupt_logits, corrupt_kv = pm.record(
            mx.array([prep.frame_ids] * prep.n_samples), embeds=prep.embeds, kinds=keep, batch_rows=batch_rows,
            cancel=cancel, on_layer=lambda b, layer: emit(Recording("corrupted", layer, L, b + 1, n_batches)),
            shared=(clean_states, clean_kv, prep.first_corrupt), last=k)  # before the corruption: the clean run's
    except BaseException:
        if in_flight is not None:
            in_flight.join()
        raise
    return _Recorded(run, clean_logits.astype(mx.float32), corrupt_states, corrupt_logits.astype(mx.float32),
                     corrupt_kv, in_flight)


def _target_ids(prep: PreparedRun, clean_logits: mx.array) -> list[int]:
    """The traced target's tokens: the request's, else the clean run's top token."""
    if prep.targets:
        return list(prep.targets)
    return [int(np.argmax(np.array(softmax(clean_logits.reshape(prep.k, -1).astype(mx.float32)))[0]))]


@dataclass
class _Baseline:
    """What the clean and corrupted runs say: the target, the two probabilities, the corrupted run's
    per-sample values (every cell restoring only unaffected positions has them), what each predicts."""

    clean_dists: np.ndarray  # [k, V]: after the prompt and after each teacher-forced target token
    corrupt_dists: np.ndarray  # [N, k, V]
    targets: list[int]
    target_text: str
    corrupt_top_id: int  # the logit difference's reference: the corrupted run's strongest other token
    p_clean: float
    p_corrupt: float
    probs: np.ndarray  # [N] float32: the corrupted run's P(target) per sample
    diffs: np.ndarray  # [N] float32: its logit difference per sample
    available: bool  # recovery means something (metrics)

    @property
    def target_id(self) -> int:
        return self.targets[0]


def _baseline(tok, prep: PreparedRun, clean_logits, corrupt_logits) -> _Baseline:
    k, n = prep.k, prep.n_samples
    clean_dists = np.array(softmax(clean_logits.reshape(k, -1)))
    corrupt_dists = np.array(softmax(corrupt_logits.reshape(n * k, -1))).reshape(n, k, -1)
    targets = _target_ids(prep, clean_logits)
    # the logit difference is measured against the corrupted run's strongest token other than the
    # target (against its top token it is exactly 0 wherever the corruption kept the target on top)
    others = corrupt_dists[:, 0].mean(axis=0).copy()
    others[targets[0]] = -1.0
    corrupt_top_id = int(np.argmax(others))
    p_clean = float(np.array(sample_scores(clean_logits, targets, corrupt_top_id)[0])[0])
    probs, diffs = (np.array(x) for x in sample_scores(corrupt_logits, targets, corrupt_top_id))
    p_corrupt = float(probs.astype(np.float64).mean())  # as every cell's mean: float32 rows, float64 mean
    return _Baseline(clean_dists, corrupt_dists, targets, tok.decode(targets, skip_special_tokens=False),
                     corrupt_top_id, p_clean, p_corrupt, probs, diffs, recovery_available(p_clean, p_corrupt))


def _run_guards(tok, req: TraceRequest, prep: PreparedRun, base: _Baseline, positions) -> list[TraceWarning]:
    """The guards that need the two runs: the target's, the total effect's and the positions'."""
    k, targets = prep.k, base.targets
    # what each run predicts, token by token along the target (teacher-forced): for a one-token
    # target its top token; for a longer one whether it would write the whole target
    clean_greedy = tuple(int(np.argmax(base.clean_dists[j])) for j in range(k))
    corrupt_greedy = tuple(int(np.argmax(base.corrupt_dists[:, j].mean(axis=0))) for j in range(k))
    # what the clean run writes instead: the target up to its first other top token, then that token
    differ = next((j for j in range(k) if clean_greedy[j] != targets[j]), k - 1)
    clean_instead = list(targets[:differ]) + [clean_greedy[differ]]
    warnings = trace_guards(
        target_text=base.target_text, p_clean=base.p_clean, p_corrupted=base.p_corrupt,
        corrupted_top_id=corrupt_greedy, target_id=tuple(targets), clean_top_id=clean_greedy,
        clean_top_text=tok.decode(clean_instead, skip_special_tokens=False), target_given=bool(req.target))
    if req.positions != "whole":  # restoring every position together: the early ones are simply included
        warnings += position_guards(positions, prep.first_corrupt, prep.clean.texts)
    return warnings + unaligned_guards(positions, prep.mapping, prep.clean.texts)


def _cells(req: TraceRequest, prep: PreparedRun, positions, n_layers: int) -> tuple[list, list]:
    """(the cells to run, the cells equal to the corrupted run): each cell's positions moved to the
    frame; cells with no aligned position are not run at all."""
    mapping, first_corrupt = prep.mapping, prep.first_corrupt
    cells, unaffected = [], []
    for cell in make_cells(req.kinds, positions, len(prep.clean), n_layers, req.window, req.sever):
        frame = tuple(mapping[p] for p in cell.positions if mapping[p] is not None)
        if frame:
            # restoring only positions before the first corrupted token, each at its own place:
            # exactly the corrupted run
            same = all(mapping[p] == p < first_corrupt for p in cell.positions)
            cell.positions = frame
            (unaffected if same else cells).append(cell)
    return cells, unaffected


class _Grids:
    """The trace's grids as cells arrive: stored per kind and metric, and reported (CellsDone)."""

    def __init__(self, req: TraceRequest, prep: PreparedRun, base: _Baseline, positions, n_layers: int,
                 total: int, emit, meter: "WorkMeter"):
        self.shape = (len(prep.clean) if positions == "all" else 1, n_layers)
        metrics = METRIC_NAMES + (UNCERTAINTY_NAMES if prep.mode == "noise" else ())
        metrics += ("samples",) if req.ci_width is not None else ()
        self.grids = {k: {m: [[None] * n_layers for _ in range(self.shape[0])] for m in metrics}
                      for k in req.grid_names}
        self.base, self.total, self.done, self.emit, self.meter = base, total, 0, emit, meter
        self.final: set = set()  # (grid, row, layer) of the cells delivered from the trace's own forwards

    def deliver(self, batch_cells, probs, diffs, work=None, *, preview: bool = False) -> None:
        """Store and report cells from their per-sample values [cells, N] (float32); `work`: each
        cell's token-layers (schedule.cell_token_layers; None: none, the cells cost nothing);
        `preview`: values computed ahead (plan_previews), not counted as done: the cells come again.
        A preview that ends after its cells' own forward (the workers yield forwards as they end) is
        dropped: the grids keep the trace's own values, bit for bit."""
        stats = interval_grids(probs, diffs)
        base = self.base
        by_kind = defaultdict(list)
        for i, cell in enumerate(batch_cells):
            where = (cell.grid, cell.row, cell.layer)
            if not preview:
                self.final.add(where)
            elif where in self.final:
                continue
            by_kind[cell.grid].append((cell, i))
        for kind, items in by_kind.items():
            g = self.grids[kind]
            values = {m: [(float if m in METRIC_NAMES else _value)(stats[m][i]) for _, i in items]
                      for m in stats if m in g}
            values["recovery"] = [cell_metrics(p, base.p_clean, base.p_corrupt) if base.available else None
                                  for p in values["prob"]]
            if "samples" in g:
                values["samples"] = [int(probs.shape[1])] * len(items)
            for j, (cell, _) in enumerate(items):
                for m, column in values.items():
                    g[m][cell.row][cell.layer] = column[j]
            self.done += 0 if preview else len(items)
            spent = sum(work[i] for _, i in items) if work else 0
            self.meter.done += spent
            self.emit(CellsDone(kind, [(c.row, c.layer) for c, _ in items], values["prob"], values["recovery"],
                                values["logit_diff"], self.done, self.total, spent, self.meter.shown(),
                                self.meter.total, prob_low=values.get("prob_low"), prob_high=values.get("prob_high"),
                                preview=preview, samples=values.get("samples")))


@dataclass
class WorkMeter:
    """One trace's work in token-layers (block evaluations and each row's logits, schedule.token_layers'
    unit), planned before it starts and counted as it runs: the recorded runs, the estimate, the cells'
    forwards (half of those running: shown). The events carry it (work_done, work_total) so a UI's ETA
    needs no model of the schedule."""

    clean: int  # the clean run's recording
    corrupted: int  # the corrupted runs' (the positions from the first corrupted token on)
    estimate: int  # the first-order estimate (0 without one)
    cells: int  # every planned forward's
    done: int = 0
    flying: int = 0  # the forwards running on the workers (begun, not ended)
    _shown: int = 0  # the last work_done reported by shown()
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def plan(cls, prep: PreparedRun, req: TraceRequest, n_layers: int, chunks, packed: bool,
             head: int = 0) -> "WorkMeter":
        """The work of each phase; `head`: a row's logits in token-layers (tracer.work.head_layers)."""
        n_frame, n = prep.n_frame, prep.n_samples
        computed = n_frame - min(prep.first_corrupt, n_frame - 1)  # as _record's batches compute them
        return cls(len(prep.clean_ids) * n_layers + head, n * (computed * n_layers + head),
                   estimate_work(n_frame, n_layers, n, head) if req.estimate != "off" else 0,
                   sum(schedule.token_layers(c, n, n_frame, n_layers, packed, head) for c in chunks))

    @property
    def total(self) -> int:
        return self.clean + self.corrupted + self.estimate + self.cells

    def fly(self, work: int) -> None:
        """A forward of `work` token-layers begins (on a worker; negative: it ended)."""
        with self._lock:
            self.flying += work

    def shown(self) -> int:
        """The work done to report: the forwards ended and half of those running (on average half
        done: counted only when they end, a worker's long forward stalls the count and the ETA
        jumps), never less than reported before (an adaptive round's forwards end before its cells
        are delivered)."""
        self._shown = min(self.total, max(self._shown, self.done + self.flying // 2))
        return self._shown

    def relay(self, emit):
        """`emit` for the recording: each Recording event gets the work recorded by then."""
        def on_event(event):
            if isinstance(event, Recording):
                share = self.clean if event.phase == "clean" else self.corrupted
                self.done = (0 if event.phase == "clean" else self.clean) + round(event.fraction * share)
                event.work_done, event.work_total = self.done, self.total
            emit(event)
        return on_event


def _estimate(tracer, req, prep, base, run, grids, cells, unaffected, warnings, emit, cancel, in_flight):
    """The first-order estimate when asked (core/estimate.py; `in_flight`: its terms, started while
    the corrupted run was recorded): (the estimate or None, the cells still to run exactly: none
    when the estimate alone was asked)."""
    if req.estimate == "off":
        return None, cells
    estimated = estimate_trace(tracer.patchable, run, unaffected + cells, first_corrupt=prep.first_corrupt,
                               shape=grids.shape, p_clean=base.p_clean, p_corrupt=base.p_corrupt,
                               available=base.available, delivered=unaffected, emit=emit, cancel=cancel,
                               in_flight=in_flight)
    if req.estimate != "only":
        return estimated, cells
    fill_estimate(grids.grids, cells, estimated)
    warnings.append(TraceWarning("estimate-only", "the grids are a first-order estimate (attribution "
                                 "patching), not patched runs"))
    return estimated, []


def _run_cells(tracer: Tracer, run: Corrupted, cells, chunks, packed: bool, estimated, grids: _Grids,
               cancel) -> None:
    """Every cell's patched run, in the batched forwards planned (plan_chunks) on the engine's workers
    (core/schedule.py). With an estimate, the most important cells' previews first (plan_previews),
    then the forwards holding the largest estimated effects (estimate.order_chunks)."""
    previews = []
    if estimated is not None:
        previews = plan_previews(tracer, cells, grids.meter.cells, estimated.priority, run.n_samples, len(run.ids),
                                 tracer.patchable.prefix_cache)
        chunks = order_chunks(chunks, estimated.priority)
    ahead = set(map(id, previews))  # not in the work meter: the work predicted before the estimate (trace_work)
    for chunk, probs, diffs, work in _forwards(tracer, run, previews + chunks, packed, cancel, grids.meter,
                                               uncounted=ahead):
        if id(chunk) in ahead:
            grids.deliver(chunk.cells, probs, diffs, preview=True)
        else:
            grids.deliver(chunk.cells, probs, diffs, work)
    check_cancel(cancel)


def _forwards(tracer: Tracer, run: Corrupted, chunks, packed: bool, cancel, meter: WorkMeter | None = None, *,
              uncounted=frozenset()):
    """The chunks' batched forwards on the engine's workers: (chunk, P(target) and logit difference
    per cell and sample, each cell's token-layers) as each forward ends; `meter` counts the forwards
    in flight (WorkMeter.fly) but those whose id is in `uncounted` (a progressive trace's previews)."""
    pm = tracer.patchable
    if packed:
        pm.packed.prepare(run)
        run.kv = None  # the packed forward reads the rows only
    # workers may only share evaluated arrays (streams are per thread); a subset's slices are lazy
    mx.eval(run.clean, run.kv_rows, run.kv, run.states, run.embeds)

    def work(chunk):
        return [cell_token_layers(chunk, c, run.n_samples, len(run.ids), tracer.n_layers, packed, tracer.head_layers)
                for c in chunk.cells]

    def forward(chunk):
        if meter is not None and id(chunk) not in uncounted:
            meter.fly(sum(work(chunk)))
        return run_chunk_samples(pm, chunk, run)

    for chunk, (probs, diffs) in tracer.workers.map(forward, chunks, cancel):
        cells = work(chunk)
        if meter is not None and id(chunk) not in uncounted:
            meter.fly(-sum(cells))
        yield chunk, probs, diffs, cells


AUTO_FIRST_SAMPLES = 3  # adaptive samples: every cell's first round (the fewest that give a t interval worth reading)


def _run_cells_adaptive(tracer: Tracer, run: Corrupted, todo, grids: _Grids, cancel, *, target: float,
                        settle: threading.Event | None = None) -> TraceWarning | None:
    """Adaptive samples: every cell gets the first AUTO_FIRST_SAMPLES noise samples, then the next
    ones (doubling its count) while its 95% interval of P is wider than `target`, up to the
    run's samples. The draws are the fixed-samples run's, in order: a cell with n samples has
    exactly the values the first n samples of a fixed run give it.

    `settle` (the user's word to stop refining): the first round always completes (no cell is
    delivered without samples); from the second on, once it is set no new forward starts, the
    ones in flight finish, and every cell still pending is delivered with the samples it has by
    then (a round cut short leaves cells with different counts). Returns the warning that says so,
    or None when every cell reached its width or the run's samples."""
    pm = tracer.patchable
    got = _SamplesSoFar(todo)
    pending, done, stop = list(todo), 0, min(AUTO_FIRST_SAMPLES, run.n_samples)
    while pending:
        if done and settle is not None and settle.is_set():
            return _settle(grids, got, pending, target)
        part = run.subset(done, stop)
        chunks, packed = plan_chunks(tracer, pending, part.n_samples, len(part.ids), use_prefix=pm.prefix_cache)
        halt = cancel if not done or settle is None else _Either(cancel, settle)  # workers.map: no new forward
        for chunk, probs, diffs, cell_work in _forwards(tracer, part, chunks, packed, halt, grids.meter):
            got.add(chunk.cells, probs, diffs, cell_work)
        check_cancel(cancel)
        pending = _deliver_narrow(grids, got, pending, target, run.n_samples)
        done, stop = stop, min(2 * stop, run.n_samples)
    return None


class _SamplesSoFar:
    """Adaptive samples: each cell's per-sample P(target) and logit difference so far, and its work."""

    def __init__(self, cells):
        self.probs = {id(c): [] for c in cells}
        self.diffs = {id(c): [] for c in cells}
        self.work = dict.fromkeys(self.probs, 0)

    def add(self, cells, probs, diffs, cell_work) -> None:
        for i, cell in enumerate(cells):
            self.probs[id(cell)].append(probs[i]), self.diffs[id(cell)].append(diffs[i])
            self.work[id(cell)] += cell_work[i]

    def by_count(self, cells) -> dict[int, list]:
        """The cells grouped by their number of samples."""
        groups = defaultdict(list)
        for cell in cells:
            groups[sum(len(p) for p in self.probs[id(cell)])].append(cell)
        return groups

    def arrays(self, cells) -> tuple[np.ndarray, np.ndarray]:
        """[cells, n] P(target) and logit differences of cells with the same number of samples."""
        return (np.array([np.concatenate(self.probs[id(c)]) for c in cells]),
                np.array([np.concatenate(self.diffs[id(c)]) for c in cells]))


def _deliver_narrow(grids: _Grids, got: _SamplesSoFar, pending, target: float, most: int) -> list:
    """Deliver the pending cells whose 95% interval of P is at most `target` wide, or that have
    `most` samples; returns the others, in their order."""
    closed = set()
    for count, cells in got.by_count(pending).items():
        probs, diffs = got.arrays(cells)
        stats = interval_grids(probs, diffs)
        wide = stats["prob_high"] - stats["prob_low"] > target  # NaN (one sample) is not wide: nothing to go on
        finished = [i for i in range(len(cells)) if not wide[i] or count == most]
        if finished:
            grids.deliver([cells[i] for i in finished], probs[finished], diffs[finished],
                          [got.work[id(cells[i])] for i in finished])
        closed |= {id(cells[i]) for i in finished}
    return [cell for cell in pending if id(cell) not in closed]


def _settle(grids: _Grids, got: _SamplesSoFar, pending, target: float) -> TraceWarning:
    """The user's word: every pending cell delivered with the samples it has; the warning says how many."""
    groups = sorted(got.by_count(pending).items())
    for _, cells in groups:
        probs, diffs = got.arrays(cells)
        grids.deliver(cells, probs, diffs, [got.work[id(c)] for c in cells])
    kept = ", ".join(f"{len(cells)} cell{'s' if len(cells) != 1 else ''} at {count} samples" for count, cells in groups)
    warning = TraceWarning("refining-stopped", f"refining stopped at the user's word: {kept} (their 95% interval "
                           f"of P may be wider than {target:g})")
    grids.emit(Log("warning", warning))
    return warning


class _Either:
    """Set when either event is: what workers.map reads to start no new forward (its `is_set`)."""

    def __init__(self, *events):
        self.events = events

    def is_set(self) -> bool:
        return any(e is not None and e.is_set() for e in self.events)


def _result(tracer, req, prep, base, positions, grids, warnings, estimated, todo, seconds) -> TraceResult:
    tok = tracer.tokenizer
    clean_probs, corrupt_probs = base.clean_dists[0], base.corrupt_dists[:, 0].mean(axis=0)  # after the prompt
    return TraceResult(
        model=tracer.lm.name, tokens=prep.clean.texts, subject_range=prep.subject, target_id=base.target_id,
        target_text=base.target_text, clean_prob=base.p_clean, corrupted_prob=base.p_corrupt,
        clean_top=top_predictions(tok, clean_probs, req.top_k),
        corrupted_top=top_predictions(tok, corrupt_probs, req.top_k),
        corrupted_top_id=base.corrupt_top_id, noise_std=prep.noise_std, corruption=prep.mode, positions=positions,
        request=req, grids=grids.grids, seconds=seconds, warnings=warnings, token_ids=list(prep.clean.ids),
        recovery_available=base.available, alignment=prep.alignment,
        target_tokens=[{"id": int(t), "text": tok.decode([int(t)], skip_special_tokens=False),
                        "clean_prob": float(base.clean_dists[j, t]),
                        "corrupted_prob": float(base.corrupt_dists[:, j, t].mean())}
                       for j, t in enumerate(base.targets)],
        estimate=estimated.grids if estimated else None,
        estimate_error=estimate_error(estimated.grids, grids.grids, prep.clean.texts) if todo and estimated else None,
        exact=req.estimate != "only",
    )


# the grids' extra keys in noise mode: the spread over the noise samples (metrics.interval_grids)
UNCERTAINTY_NAMES = ("prob_std", "prob_low", "prob_high", "logit_diff_std")


def _value(x) -> float | None:
    """A cell's value as a Python float; None where it has none (NaN: a std of one sample)."""
    x = float(x)
    return None if np.isnan(x) else x
