"""Many facts -> one full trace each -> a resumable JSONL file.

A sweep reads facts in ROME's known_1000 format (known_id, subject, attribute,
prompt, ...) or prompt pairs (prompt, corrupted_prompt, subject, target?), keeps
the facts the model predicts correctly (tracer.inputs.facts: by default ROME's rule, the
clean top token decoded and stripped equals the attribute; or --filter
first-token; a pair with a target: the clean top token is the target's first
token; --filter none keeps all), traces each kept fact (pairs by substitution) with
positions="all" (a tokens x layers grid per kind) and appends one JSON line per
fact as it finishes. Facts it skips get a line too ({"status": "skipped", ...}),
so a rerun neither traces nor re-checks anything already in the file. The facts
file, the settings and the results file's format live in `files`.

Aggregation (the paper's average indirect effect) lives in `sweep_report`.
Everything here runs on one thread: the engine's (Engine.submit) or the CLI's.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass
from typing import Callable, Protocol

from ..core.fastops import softmax
from ..errors import InputError, TraceCancelled, TracerError, check_cancel, one_line
from ..events import CellsDone, Recording
from ..guards import warning_code
from ..inputs.facts import (
    DEFAULT_FILTER,
    FILTER_RULES,
    FILTERS,
    Fact,
    check_filter,
    pair_passes,
    passes_filter,
    resolve_facts,
)
from ..inputs.facts_file import load_facts
from ..types import TraceRequest, TraceResult
from .results import (
    SKIP_FLAGGED,
    SKIP_INPUT,
    SKIP_REASONS,
    SKIP_WRONG,
    Check,
    ResultsState,
    ResultsWriter,
    SweepConfig,
    config_mismatch,
    kept_record,
    prepare_output,
    scan_results,
    skip_reason_text,
    skipped_record,
)

CHECK_BATCH = 64  # prompts per batched clean forward


# ---- the model side -----------------------------------------------------------------------


class Backend(Protocol):
    """What a sweep needs from the model; TracerBackend is the real one, tests may fake it. A backend
    may also have `work(request) -> int` (a trace's predicted token-layers): the progress events'
    work then weighs each fact by it."""

    name: str

    def check(self, facts: list[Fact]) -> list[Check]: ...

    def trace(self, request: TraceRequest, on_event, cancel: threading.Event | None) -> TraceResult: ...


class TracerBackend:
    """A sweep backend over a loaded `tracer.core.tracing.Tracer`; use on the thread that owns it.
    `filter` is the fact filter's rule (tracer.inputs.facts); run_sweep sets it from its config."""

    def __init__(self, tracer, filter: str = DEFAULT_FILTER):
        self.tracer = tracer
        self.name = tracer.lm.name
        self.n_layers = tracer.n_layers
        self.filter = check_filter(filter)

    def fingerprint(self) -> str:
        """The model's identity beyond its name: layers, vocabulary and a SHA-256 of the token
        embedding's float32 bytes (ranks of a distributed sweep compare it)."""
        import hashlib

        import mlx.core as mx
        import numpy as np

        emb = np.asarray(self.tracer.patchable.anatomy.embed_weight().astype(mx.float32))
        digest = hashlib.sha256(np.ascontiguousarray(emb).tobytes()).hexdigest()[:16]
        return f"{self.name}/{self.n_layers} layers/{emb.shape[0]}x{emb.shape[1]}/{digest}"

    def token_ids(self, prompt: str) -> list[int]:
        from ..inputs.prompts import tokenize

        return list(tokenize(self.tracer.tokenizer, prompt).ids)

    def check(self, facts: list[Fact]) -> list[Check]:
        """Does the clean top token pass the filter? Prompts of equal length share a forward.
        Every Check carries the verdict of every rule (`rules`); `ok` is this backend's.
        Prompt pairs are checked against their target's first token (facts.pair_passes)."""
        import mlx.core as mx
        import numpy as np

        from ..inputs.prompts import subject_span, target_token, tokenize

        tok = self.tracer.tokenizer
        checks: list[Check | None] = [None] * len(facts)
        pending: dict[int, list[tuple[int, list[int], int | None, str | None]]] = {}
        for i, fact in enumerate(facts):
            try:
                tokens = tokenize(tok, fact.prompt)
                subject_span(fact.prompt, fact.subject, tokens)
                lengths = [len(tokens)]
                first_id, first_text = None, None
                if fact.corrupted_prompt is not None:  # a pair: its target's first token, if any
                    lengths.append(len(tokenize(tok, fact.corrupted_prompt)))
                    if fact.target is not None:
                        first_id, first_text, _ = target_token(tok, fact.target)
                elif self.filter != "none":
                    if not fact.attribute.strip():
                        raise InputError("the attribute is empty")
                    try:  # first-token needs the attribute's first token; rome never tokenizes it
                        first_id, first_text, _ = target_token(tok, fact.attribute)
                    except InputError:
                        if self.filter == "first-token":
                            raise
                limit = self.tracer.context_length
                if limit and max(lengths) > limit:
                    raise InputError(f"prompt is {max(lengths)} tokens, longer than the model's context of {limit}")
            except TracerError as exc:  # the fact is unusable: a skipped line, the sweep goes on
                checks[i] = Check(False, SKIP_INPUT, one_line(str(exc)))
                continue
            pending.setdefault(len(tokens), []).append((i, tokens.ids, first_id, first_text))
        for _, items in sorted(pending.items()):
            for start in range(0, len(items), CHECK_BATCH):
                chunk = items[start : start + CHECK_BATCH]
                logits = self.tracer.patchable.forward(mx.array([ids for _, ids, _, _ in chunk]))
                probs = np.array(softmax(logits))
                for (i, _, first_id, first_text), p in zip(chunk, probs):
                    checks[i] = self._verdict(facts[i], p, first_id, first_text)
        return checks  # type: ignore[return-value]

    def _verdict(self, fact: Fact, p, first_id: int | None, first_text: str | None) -> Check:
        import numpy as np

        top_id = int(np.argmax(p))
        top_text = self.tracer.tokenizer.decode([top_id], skip_special_tokens=False)
        top = (top_id, top_text, float(p[top_id]))
        if fact.corrupted_prompt is not None:
            rules = {rule: pair_passes(rule, top_id, first_id) for rule in FILTERS}
            ok = rules[self.filter]
            if first_id is None:  # no target: the traced token is the clean argmax
                return Check(ok, None, "", top_id, top_text, top, float(p[top_id]), rules)
            detail = "" if ok else f"predicts {top_text!r} (p={p[top_id]:.3f}), not the target's first token {first_text!r} (p={p[first_id]:.3f})"
            return Check(ok, None if ok else SKIP_WRONG, detail, first_id, first_text, top, float(p[first_id]), rules)
        rules = {rule: passes_filter(rule, top_text, fact.attribute, top_id, first_id) for rule in FILTERS}
        ok = rules[self.filter]
        if self.filter != "first-token":
            detail = "" if ok else f"predicts {top_text!r} (p={p[top_id]:.3f}), not {fact.attribute!r}"
            return Check(ok, None if ok else SKIP_WRONG, detail, top_id, top_text, top, float(p[top_id]), rules)
        detail = "" if ok else f"predicts {top_text!r} (p={p[top_id]:.3f}), not {first_text!r} (p={p[first_id]:.3f})"
        return Check(ok, None if ok else SKIP_WRONG, detail, first_id, first_text, top, float(p[first_id]), rules)

    def work(self, request: TraceRequest) -> int:
        """The predicted token-layers of tracing `request` (core.tracing.predicted_work)."""
        from ..core.tracing import predicted_work

        return predicted_work(self.tracer, request)

    def trace(self, request: TraceRequest, on_event, cancel) -> TraceResult:
        from ..core.tracing import run_trace

        return run_trace(self.tracer, request, on_event=on_event, cancel=cancel)


# ---- sweep events (plain data, posted from the sweep's thread) -------------------------------


@dataclass
class SweepStarted:
    path: str
    total: int  # facts in this run (after --limit)
    done: int  # already in the file
    kept: int
    skipped: int
    dropped_tail: bool  # a torn last line was cut away and will be redone
    config: dict


@dataclass
class FactsChecked:
    checked: int
    total: int  # facts to check in this run
    kept: int  # of those checked, predicted correctly
    skipped: int


@dataclass
class FactSkipped:
    known_id: int | str
    reason: str
    detail: str


@dataclass
class TracingStarted:
    total: int  # facts to trace in this run
    work_total: int = 0  # their traces' predicted token-layers (Backend.work; 0: not counted)


@dataclass
class FactStarted:
    index: int  # 0-based among the facts traced in this run
    total: int
    fact: Fact


@dataclass
class FactProgress:
    """The fact in hand's trace moved on (a Recording or CellsDone of it): its cells done (0 of 0
    while its runs are recorded), and the work done of the whole tracing phase: the facts traced
    before it and this fact's share (its predicted token-layers, counted within by its trace's events)."""

    known_id: int | str
    done: int  # cells
    total: int
    work_done: int = 0
    work_total: int = 0  # TracingStarted's (0: not counted)


@dataclass
class FactDone:
    index: int
    total: int
    record: dict  # the line just written
    seconds: float
    work_done: int = 0  # of the tracing phase, this fact's share included (FactProgress)
    work_total: int = 0


@dataclass
class SweepSummary:
    path: str
    facts: int  # in this run (after --limit)
    kept: int  # in the file, among this run's facts
    skipped: int
    skipped_by_reason: dict[str, int]
    traced_now: int
    checked_now: int
    cancelled: bool
    seconds: float
    dropped_tail: bool
    rank: int = 0  # a distributed sweep (tracer.sweeps.distributed): this process's rank
    ranks: int = 1  # and the group's size
    missing: list = dataclasses.field(default_factory=list)  # known_ids no rank finished (rank 0)


SweepEvent = SweepStarted | FactsChecked | FactSkipped | TracingStarted | FactStarted | FactProgress | FactDone


# ---- the sweep ------------------------------------------------------------------------------


def run_sweep(
    backend: Backend,
    facts: list[Fact],
    output: str,
    config: SweepConfig,
    *,
    on_event: Callable[[object], None] | None = None,
    cancel: threading.Event | None = None,
) -> SweepSummary:
    """Check and trace every fact not yet in `output`, appending a line per fact.

    Runs on the calling thread (which must own the backend's model). Setting
    `cancel` stops at the next batch boundary; the fact in progress is not
    written, so the file stays valid and a rerun resumes."""
    emit = on_event or (lambda event: None)
    started = time.perf_counter()
    config, state = _resume(backend, facts, output, config, emit)
    todo = [f for f in facts if f.known_id not in state.records]
    traced_now = checked_now = 0
    cancelled = False
    with ResultsWriter(output, state) as writer:
        try:
            to_trace, checked_now = _check_facts(backend, todo, config, writer, state, emit, cancel)
            works = _works(backend, to_trace, config)
            emit(TracingStarted(len(to_trace), sum(works)))
            for index, fact in enumerate(to_trace):  # one line each as it finishes
                check_cancel(cancel)
                share = (sum(works[:index]), works[index], sum(works))
                traced_now += _trace_fact(backend, fact, index, len(to_trace), config, writer, state, emit, cancel,
                                          share)
        except TraceCancelled:
            cancelled = True
    return _summary(output, facts, state, traced_now, checked_now, cancelled, time.perf_counter() - started)


def _resume(backend: Backend, facts: list[Fact], output: str, config: SweepConfig, emit):
    """(the config this file records, the results file's state): its settings checked against what is
    already there; SweepStarted reports what a rerun resumes."""
    if config.model is None:
        config = dataclasses.replace(config, model=backend.name)
    config = config.with_mode(facts)  # noise for known_1000 facts, substitution for prompt pairs
    if hasattr(backend, "filter"):
        backend.filter = config.filter  # the backend checks facts with the rule this file records
    state = prepare_output(output, facts, config)
    if state.config is not None:
        diff = config_mismatch(state.config, config, check_model=True)
        if diff:
            raise InputError(f"{output} was written with {diff}; use the same settings to resume, or another --output")
    in_run = {f.known_id: state.records[f.known_id] for f in facts if f.known_id in state.records}
    emit(SweepStarted(output, len(facts), len(in_run), sum(1 for r in in_run.values() if r["status"] == "kept"),
                      sum(1 for r in in_run.values() if r["status"] == "skipped"), bool(state.dropped_tail),
                      config.to_dict()))
    return config, state


def _skip(writer, state, emit, fact: Fact, config: SweepConfig, check: Check) -> None:
    """Write a fact as skipped (its line, the state, the event)."""
    writer.append(skipped_record(fact, config, check))
    state.records[fact.known_id] = {"status": "skipped", "skipped": check.reason}
    emit(FactSkipped(fact.known_id, check.reason or "", check.detail))


def _check_facts(backend, todo: list[Fact], config, writer, state, emit, cancel) -> tuple[list[Fact], int]:
    """Which facts the model knows (batched clean forwards); the others are written as skipped now.
    Returns (the facts to trace, how many were checked)."""
    to_trace: list[Fact] = []
    checked = skipped = 0
    for start in range(0, len(todo), CHECK_BATCH * 4):
        check_cancel(cancel)
        chunk = todo[start : start + CHECK_BATCH * 4]
        for fact, check in zip(chunk, backend.check(chunk)):
            if check.ok:
                to_trace.append(fact)
            else:
                _skip(writer, state, emit, fact, config, check)
                skipped += 1
        checked += len(chunk)
        emit(FactsChecked(checked, len(todo), len(to_trace), skipped))
    return to_trace, checked


def _works(backend, facts: list[Fact], config) -> list[int]:
    """Each fact's predicted token-layers (Backend.work, when the backend has it; else 1 each), or 0
    for a fact whose input the trace will refuse (skipped at once)."""
    work = getattr(backend, "work", None)
    if work is None:
        return [1] * len(facts)
    out = []
    for fact in facts:
        try:
            out.append(work(config.request(fact)))
        except InputError:
            out.append(0)
    return out


def _trace_fact(backend, fact: Fact, index: int, total: int, config, writer, state, emit, cancel,
                share: tuple[int, int, int] = (0, 0, 0)) -> int:
    """Trace one fact and write its line (kept; or skipped: refused input, --skip-flagged); `share`:
    (the work of the facts before it, its own, of all) for the progress events. Returns 1 when it
    was kept, else 0."""
    emit(FactStarted(index, total, fact))
    fact_started = time.perf_counter()
    before, own, whole = share

    def relay(event, known_id=fact.known_id):
        if isinstance(event, (CellsDone, Recording)) and event.work_total:
            cells = (event.done, event.total) if isinstance(event, CellsDone) else (0, 0)
            emit(FactProgress(known_id, *cells, before + own * event.work_done // event.work_total, whole))
        elif isinstance(event, CellsDone):
            emit(FactProgress(known_id, event.done, event.total))

    try:
        result = backend.trace(config.request(fact), relay, cancel)
    except InputError as exc:  # e.g. a prompt the tracer refuses: record, go on
        _skip(writer, state, emit, fact, config, Check(False, SKIP_INPUT, one_line(str(exc))))
        return 0
    if result is None:  # an engine that reports cancellation by returning None
        raise TraceCancelled()
    flag = config.flagged(result.warnings)
    if flag is not None:  # --skip-flagged: written as skipped, left out of the report
        top = result.clean_top[0] if result.clean_top else None
        _skip(writer, state, emit, fact, config, Check(
            False, f"{SKIP_FLAGGED}:{warning_code(flag)}", one_line(str(flag)), result.target_id, result.target_text,
            (top.token_id, top.text, top.prob) if top else None))
        return 0
    ids = backend.token_ids(fact.prompt) if hasattr(backend, "token_ids") else None
    record = kept_record(fact, config, result, ids)
    writer.append(record)
    state.records[fact.known_id] = {"status": "kept", "skipped": None}
    emit(FactDone(index, total, record, time.perf_counter() - fact_started, before + own, whole))
    return 1


def _summary(output, facts, state, traced_now: int, checked_now: int, cancelled: bool, seconds: float) -> SweepSummary:
    in_run = {f.known_id for f in facts}
    by_reason: dict[str, int] = {}
    for k, r in state.records.items():
        if k in in_run and r["status"] == "skipped":
            by_reason[r["skipped"] or "?"] = by_reason.get(r["skipped"] or "?", 0) + 1
    return SweepSummary(
        path=output,
        facts=len(facts),
        kept=sum(1 for k, r in state.records.items() if k in in_run and r["status"] == "kept"),
        skipped=sum(by_reason.values()),
        skipped_by_reason=by_reason,
        traced_now=traced_now,
        checked_now=checked_now,
        cancelled=cancelled,
        seconds=seconds,
        dropped_tail=bool(state.dropped_tail),
    )


def count_known(backend: Backend, facts: list[Fact], *, on_event=None, batch: int = CHECK_BATCH * 4) -> tuple[int, dict[str, int], list[Check]]:
    """How many facts the model predicts correctly (no tracing, nothing written)."""
    emit = on_event or (lambda event: None)
    checks: list[Check] = []
    for start in range(0, len(facts), batch):
        checks += backend.check(facts[start : start + batch])
        emit(FactsChecked(len(checks), len(facts), sum(c.ok for c in checks), sum(not c.ok for c in checks)))
    reasons: dict[str, int] = {}
    for c in checks:
        if not c.ok:
            reasons[c.reason or "?"] = reasons.get(c.reason or "?", 0) + 1
    return sum(c.ok for c in checks), reasons, checks


__all__ = [
    "Backend",
    "Check",
    "FILTERS",
    "FILTER_RULES",
    "Fact",
    "FactDone",
    "FactProgress",
    "FactSkipped",
    "FactStarted",
    "FactsChecked",
    "ResultsState",
    "ResultsWriter",
    "SKIP_REASONS",
    "skip_reason_text",
    "SweepConfig",
    "SweepStarted",
    "SweepSummary",
    "TracerBackend",
    "TracerError",
    "TracingStarted",
    "count_known",
    "load_facts",
    "passes_filter",
    "prepare_output",
    "resolve_facts",
    "run_sweep",
    "scan_results",
]
