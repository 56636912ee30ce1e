"""`tracer-tui sweep`: trace many facts (ROME's known_1000 format) or prompt pairs into a resumable JSONL file.

All MLX work runs on the Engine's thread; this thread only renders progress and turns Ctrl-C
into a clean cancel (the fact in progress is dropped, the file stays valid).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

from ..errors import InputError, ModelError
from ..inputs.facts import DEFAULT_FILTER, FILTERS
from ..settings import add_settings_arguments, settings_from_args
from .common import add_model_args, loaded_engine, wait


def add_parser(sub) -> None:
    p = sub.add_parser(
        "sweep",
        help="trace many facts (ROME's known_1000 format) or prompt pairs into a resumable JSONL file",
        description="Trace every fact the model predicts correctly (known_1000 facts with noise, prompt pairs by "
        "substitution); one JSON line per fact, resumable.",
    )
    p.add_argument("facts", metavar="FACTS",
                   help="known_1000 (the copy shipped with tracer-tui; an existing file of that name wins), a file of "
                   "facts in ROME's known_1000 format, or a file of prompt pairs {prompt, corrupted_prompt, subject, "
                   "target?}: a JSON list, JSON Lines (.jsonl) or CSV with a header row (.csv)")
    add_model_args(p)
    p.add_argument("--output", "-o", metavar="RESULTS.jsonl", help="results file; rerun the same command to resume")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N facts of the file")
    add_settings_arguments(p)
    p.add_argument("--filter", choices=FILTERS, default=DEFAULT_FILTER,
                   help="which facts are traced: rome (default; the clean top token, stripped, equals the whole attribute, ROME's rule), "
                   "first-token (the top token is the first token of ' ' + attribute; not ROME's) or none (every fact). "
                   "Prompt pairs: with a target, kept when the clean top token is the target's first token (any rule but "
                   "none); without one, always")
    p.add_argument("--skip-flagged", default="none", metavar="CODE,CODE",
                   help="leave out of the results (a skipped line, 'flagged:CODE') every traced fact whose trace carries "
                   "one of these warnings: 'flagged' for small-total-effect, negative-total-effect and "
                   "corruption-kept-target, or codes such as weak-target (tracer.guards); the report counts them "
                   "(default: none, as ROME: every known fact is averaged)")
    p.add_argument("--check-only", action="store_true", help="only count the facts the model predicts correctly; write nothing")


def run(args) -> int:
    from ..inputs.facts_file import load_facts
    from ..sweeps.distributed import launched
    from ..sweeps.results import ResultsState, ResultsWriter, SweepConfig, prepare_output

    facts = load_facts(args.facts)
    if args.limit is not None:
        if args.limit < 1:
            raise InputError(f"--limit must be at least 1 (got {args.limit})")
        facts = facts[: args.limit]
    if not facts:
        raise InputError(f"{args.facts} holds no facts")
    config = SweepConfig(filter=args.filter, skip_flagged=args.skip_flagged,
                         **settings_from_args(args).as_kwargs()).with_mode(facts)
    if not args.check_only:
        if not args.output:
            raise InputError("sweep needs --output RESULTS.jsonl (or --check-only)")
        state = prepare_output(args.output, facts, config)  # settings and file checks before loading the model
        if not launched():  # ranks of a group lock their own files (tracer.sweeps.distributed)
            ResultsWriter(args.output, ResultsState(args.output)).close()  # writable, not locked by another sweep
        if state.records:
            in_run = sum(1 for f in facts if f.known_id in state.records)
            print(f"resuming {args.output}: {in_run} of {len(facts)} facts already done", file=sys.stderr)

    with loaded_engine(args) as engine:
        started = time.perf_counter()
        try:
            info = engine.load().result()
            print(f"model: {info.summary} (loaded in {time.perf_counter() - started:.1f} s); BLAS: {info.blas}", file=sys.stderr)
        except ModelError:
            if args.check_only or not launched():
                raise
            # a rank of a group: the sweep reports the failure to every rank (and fails them all)
        if args.check_only:
            return _check_only(engine, facts, config.filter)
        return _run(engine, facts, args.output, config)


def _check_only(engine, facts, rule: str) -> int:
    from ..inputs.facts import FILTER_RULES
    from ..sweeps.results import SKIP_REASONS

    cancel = threading.Event()
    with _Progress() as progress:
        fut = engine.count_known(facts, rule, on_event=progress.on_event)
        known, reasons, checks = wait(fut, cancel, keep_result=True)
    pairs = bool(facts) and facts[0].corrupted_prompt is not None
    if pairs:
        from ..inputs.facts import PAIR_RULE

        described = FILTER_RULES["none"] if rule == "none" else PAIR_RULE
        print(f"{known} of {len(facts)} prompt pairs kept (--filter {rule}: {described})")
    else:
        print(f"{known} of {len(facts)} facts predicted correctly (--filter {rule}: {FILTER_RULES[rule]})")
    for reason, n in sorted(reasons.items()):
        print(f"  skipped {n}: {reason} ({SKIP_REASONS.get(reason, reason)})")
    for other in () if pairs else FILTERS:
        if other not in (rule, "none"):
            n = sum(1 for c in checks if c.rules and c.rules.get(other))
            print(f"  under --filter {other}: {n} of {len(facts)}")
    return 0


def _run(engine, facts, output, config) -> int:
    from ..sweeps.results import skip_reason_text

    cancel = threading.Event()
    with _Progress() as progress, _TermCancels(cancel, progress):
        fut = engine.sweep(facts, output, config, on_event=progress.on_event, cancel=cancel)
        summary = wait(fut, cancel, keep_result=True)
    if summary.rank:
        print(f"rank {summary.rank} of {summary.ranks}: {summary.kept} traced, {summary.skipped} skipped of its "
              f"{summary.facts} facts ({summary.seconds:.0f} s); rank 0 merges the results into {output}")
        return 130 if summary.cancelled else 0
    reasons = ", ".join(f"{n} {r}" for r, n in sorted(summary.skipped_by_reason.items()))
    if summary.dropped_tail:
        print(f"{output}: an incomplete last line was removed and its fact redone", file=sys.stderr)
    state = "cancelled" if summary.cancelled else "incomplete" if summary.missing else "done"
    print(
        f"sweep {state} (--filter {config.filter}): {summary.kept} of {summary.facts} facts traced, {summary.skipped} skipped"
        + (f" ({reasons})" if reasons else "")
        + f"; {summary.traced_now} traced in this run ({summary.seconds:.0f} s)"
    )
    for reason in sorted(summary.skipped_by_reason):
        print(f"  {reason}: {skip_reason_text(reason)}")
    if summary.missing:
        shown = ", ".join(str(k) for k in summary.missing[:20]) + (", ..." if len(summary.missing) > 20 else "")
        print(f"{len(summary.missing)} facts missing (a rank stopped before finishing its share): known_id {shown}; "
              "rerun the same command to trace them")
        return 1
    if summary.cancelled:
        remaining = summary.facts - summary.kept - summary.skipped
        print(f"{remaining} facts left: rerun the same command to resume")
        return 130
    print(f"results: {output}  (tracer-tui sweep-report {output})")
    return 0


class _TermCancels:
    """In a distributed group, SIGTERM (what mlx.launch sends every rank once one rank has died)
    stops the sweep like Ctrl-C: the fact in hand is dropped and rank 0 still merges what the
    ranks wrote. Before the facts are dealt (the start's collectives) there is nothing to save:
    the process exits at once rather than wait on a peer that is gone."""

    def __init__(self, cancel: threading.Event, progress: "_Progress"):
        self.cancel = cancel
        self.progress = progress
        self.previous = None

    def _handler(self, signum, frame):
        if self.progress.rank is None:
            os._exit(128 + signum)
        self.cancel.set()

    def __enter__(self):
        from ..sweeps.distributed import launched

        if launched() and threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._handler)
        return self

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)


class _Progress:
    """Rich progress bars on a terminal; one plain line per fact otherwise (logs, nohup)."""

    def __init__(self):
        from rich.console import Console

        self.console = Console(stderr=True)
        self.live = self.console.is_terminal
        self.progress = None
        self.check_task = self.trace_task = None
        self.trace_total = 0
        self.trace_started = 0.0
        self.facts_done = 0
        self.rank = None  # in a distributed group: this process's rank, once the facts are dealt
        self.prefix = ""
        self.ranks_shown = None
        self.rank_tasks: list = []

    def __enter__(self):
        if self.live:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[note]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self.console,
                speed_estimate_period=600,
            )
            self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.__exit__(*exc)

    def on_event(self, event) -> None:  # called on the engine thread
        from ..sweeps.distributed import RanksProgress, ShardsAssigned
        from ..sweeps.run import FactDone, FactProgress, FactsChecked, FactStarted, SweepStarted, TracingStarted

        p = self.progress
        if isinstance(event, (ShardsAssigned, RanksProgress)):
            self._on_ranks(event)
        elif isinstance(event, SweepStarted):
            if event.dropped_tail:
                self.console.print(f"{event.path}: the last line is incomplete; redoing that fact")
        elif isinstance(event, FactsChecked):
            if p is not None:
                if self.check_task is None:
                    self.check_task = p.add_task("checking predictions", total=event.total, note="")
                p.update(self.check_task, completed=event.checked, note=f"{event.kept} known")
            elif event.checked == event.total:
                self.console.print(f"{self.prefix}checked {event.total} facts: {event.kept} predicted correctly, {event.skipped} skipped")
        elif isinstance(event, TracingStarted):
            self.trace_total = event.total
            self.trace_started = time.perf_counter()
            if p is not None:
                self.trace_task = p.add_task("tracing facts", total=max(event.total, 1), note="")
            else:
                self.console.print(f"{self.prefix}tracing {event.total} facts")
        elif isinstance(event, FactStarted):
            if p is not None:
                p.update(self.trace_task, completed=event.index, note=f"known_id {event.fact.known_id}")
        elif isinstance(event, FactProgress):
            if p is not None and event.total:
                p.update(self.trace_task, completed=self.facts_done + event.done / event.total)
        elif isinstance(event, FactDone):
            self.facts_done = event.index + 1
            if p is not None:
                p.update(self.trace_task, completed=self.facts_done)
            else:
                elapsed = time.perf_counter() - self.trace_started
                left = elapsed / self.facts_done * (event.total - self.facts_done)
                r = event.record
                self.console.print(
                    f"{self.prefix}[{self.facts_done}/{event.total}] known_id {r['known_id']} {r['subject']!r}: "
                    f"p_clean {r['clean_prob']:.3f}, p_corrupted {r['corrupted_prob']:.3f} "
                    f"({event.seconds:.1f} s; ETA {_duration(left)})",
                    highlight=False,
                    markup=False,
                    soft_wrap=True,
                )


    def _on_ranks(self, event) -> None:
        """Every rank's share (ShardsAssigned) and, on rank 0, how far each has come (RanksProgress)."""
        from ..sweeps.distributed import ShardsAssigned

        if isinstance(event, ShardsAssigned):
            self.rank, self.prefix = event.rank, f"rank {event.rank}: "
            shares = ", ".join(f"rank {k} {n}" for k, n in enumerate(event.shares))
            self.console.print(f"{self.prefix}{event.pending} facts to do over {event.ranks} ranks ({shares})")
            return
        if self.progress is not None:
            if not self.rank_tasks:
                self.rank_tasks = [self.progress.add_task(f"rank {k}", total=max(n, 1), note="")
                                   for k, n in enumerate(event.shares)]
                self.rank_tasks.append(self.progress.add_task("all ranks", total=max(event.total, 1), note=""))
            for task, done in zip(self.rank_tasks, [*event.done, event.all_done]):
                self.progress.update(task, completed=done)
        elif event.done != self.ranks_shown:
            self.ranks_shown = list(event.done)
            shares = ", ".join(f"rank {k} {d}/{n}" for k, (d, n) in enumerate(zip(event.done, event.shares)))
            self.console.print(f"all ranks {event.all_done}/{event.total} ({shares})", highlight=False)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"
