"""The sweep screen: the average indirect effect curves of a results file, live.

`SweepScreen(results=PATH)` follows a results file (one written by
`tracer-tui sweep` in another terminal, or by this screen) and redraws the
curves as lines arrive. With an engine and a facts file it also runs the sweep
itself: the work goes to the engine thread through `Engine.submit`; the engine
thread only posts messages here. The view is always of the file, so a resumed
sweep shows the facts already done at once.

Mount it with `app.push_screen(SweepScreen(engine=app.engine, results="r.jsonl"))`
(add `facts="known_1000.json", config=SweepConfig(...), limit=N` to run one). ctrl+s writes
the report (tui/exporting.py).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from tracer.errors import TracerError, error_location, user_message
from tracer.render.sweep_report import summary_lines
from tracer.sweeps.aggregate import SweepReport, aggregate
from tracer.sweeps.results import ResultsTail, SweepConfig
from tracer.sweeps.run import FactDone, FactProgress, FactsChecked, FactStarted, SweepSummary, TracingStarted
from tracer.sweeps.stats import GROUP_LABELS, GROUPS, THIRDS
from tracer.work import trace_work

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, DataTable, Footer, Input, ProgressBar, Static

from .. import exporting
from ..gridmodel import WorkClock, eta_blend, format_seconds
from ..widgets.sweep_plot import SweepPlot

POLL_SECONDS = 1.0


@dataclass
class _Running:
    cancel: threading.Event
    total: int = 0  # facts to trace
    done: int = 0
    work: dict = field(default_factory=dict)  # known_id -> token-layers of the fact's trace (fact_work)
    work_done: int = 0
    seconds: float | None = None  # the estimate shown before Start
    started: float = field(default_factory=time.monotonic)
    current: object = None  # the fact being traced
    clock: WorkClock | None = None  # the tracing phase's work, as the engine reports it (from TracingStarted)
    line: str = ""  # the status line's fact in hand

    def eta(self) -> str:
        """"ETA 12m (3m elapsed)": once the facts are checked, the tracing phase's work done (the
        engine's token-layers of the facts to trace: FactProgress, FactDone) by its time elapsed,
        blended with the measured cost (WorkClock). Before: the estimate less the time elapsed,
        blended with the pace of the facts finished (eta_blend); the facts the model does not know
        finish at once, so the estimate is an upper bound."""
        elapsed = time.monotonic() - self.started
        if self.clock is not None and self.clock.eta is not None:
            return f"ETA {format_seconds(self.clock.eta)} ({format_seconds(elapsed)} elapsed)"
        total = sum(self.work.values())
        if not total:
            return ""
        left = eta_blend(elapsed, self.work_done / total, self.seconds)
        return f"ETA {format_seconds(left)} ({format_seconds(elapsed)} elapsed)"


@dataclass
class SweepPlan:
    """What a sweep would do, for the confirmation: the facts file, its facts and those left to
    trace, the results file, the settings and the estimated seconds (None: no trace timed yet)."""

    facts_path: str
    n_facts: int
    n_left: int
    results: str
    config: SweepConfig
    seconds: float | None

    def lines(self) -> list[str]:
        c = self.config
        resumed = f", {self.n_facts - self.n_left} already in the results file" if self.n_left < self.n_facts else ""
        time_line = ("estimated time: unknown until a trace has been timed (run one with ctrl+r on the trace screen)"
                     if self.seconds is None else
                     f"estimated time: up to {format_seconds(self.seconds)} (the engine's measured cost per "
                     "token-layer; facts the model does not know are skipped, which is quicker)")
        return [f"Sweep {self.n_left} facts of {self.facts_path}{resumed}",
                f"settings: kinds {', '.join(c.kinds)} · {c.samples} samples · window {c.window} · filter {c.filter}",
                time_line,
                f"writes: {self.results} (run again to resume; ctrl+x stops it)"]


class ConfirmSweep(ModalScreen[bool]):
    """Asks before a sweep starts: enter or Start starts it, escape or Cancel does not."""

    BINDINGS = [Binding("escape", "answer(False)", "Cancel"), Binding("enter", "answer(True)", "Start", priority=True)]
    DEFAULT_CSS = """
    ConfirmSweep { align: center middle; }
    ConfirmSweep #confirm-box { width: 90%; max-width: 110; height: auto; border: thick $primary;
                                background: $surface; padding: 1 2; }
    ConfirmSweep #confirm-text { color: $text; }
    ConfirmSweep #confirm-buttons { height: auto; margin-top: 1; }
    """

    def __init__(self, plan: SweepPlan) -> None:
        super().__init__()
        self.plan = plan

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-box"):
            yield Static(Text("\n".join(self.plan.lines())), id="confirm-text")
            with Horizontal(id="confirm-buttons"):
                yield Button("Start", id="confirm-start", variant="primary")
                yield Button("Cancel", id="confirm-cancel")

    @on(Button.Pressed, "#confirm-start")
    def _start(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#confirm-cancel")
    def _cancel(self) -> None:
        self.dismiss(False)

    def action_answer(self, start: bool) -> None:
        self.dismiss(start)


class SweepScreen(Screen):
    """Open a sweep's results (or run a sweep) and watch the average indirect effect curves."""

    BINDINGS = [
        Binding("escape", "close", "Back", id="sweep-back", tooltip="Back to the trace view (stops a running sweep)"),
        Binding("ctrl+g", "next_kind", "Kind", id="sweep-kind", tooltip="Next kind (hidden, mlp, attn)"),
        Binding("ctrl+r", "run", "Run sweep", id="sweep-run", tooltip="Run (or resume) the sweep of the facts file"),
        # priority: a focused Input would take ctrl+x as "cut" and the sweep would not stop
        Binding("ctrl+x", "stop", "Stop", id="sweep-stop", priority=True,
                tooltip="Stop the running sweep (from any field); the file stays valid"),
        Binding("ctrl+s", "export", "Export", id="sweep-export",
                tooltip="Write the sweep report (.txt, .csv, .json; plots with tracer.render.figures)"),
    ]

    DEFAULT_CSS = """
    SweepScreen { layout: vertical; }
    SweepScreen #sweep-files { height: auto; }
    SweepScreen #sweep-files Input { width: 1fr; }
    SweepScreen #sweep-files Button { width: auto; min-width: 8; }
    SweepScreen #sweep-summary { height: auto; padding: 0 1; color: $text; }
    SweepScreen #sweep-body { height: 1fr; }
    SweepScreen #sweep-table { height: 14; }
    SweepScreen #sweep-status-row { height: 1; }
    SweepScreen #sweep-status { width: 1fr; padding: 0 1; color: $text-muted; }
    SweepScreen #sweep-progress { width: 40; }
    """

    class RecordsChanged(Message):
        """Poll the file now (a fact finished). A burst collapses into one."""

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, SweepScreen.RecordsChanged)

    @dataclass
    class Progressed(Message):
        """A sweep event other than a finished fact, from the engine thread."""

        event: object

    @dataclass
    class Ended(Message):
        """The sweep returned (summary), or failed (error)."""

        summary: SweepSummary | None
        error: str | None = None
        detail: str = ""  # for an internal error: where it was raised

    def __init__(
        self,
        *,
        engine=None,
        results: str | None = None,
        export_dir: str = "exports",
        facts: str | None = None,
        config: SweepConfig | None = None,
        limit: int | None = None,
        name: str | None = None,
        id: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id)
        self.engine = engine
        self.initial_results = results or ""
        self.initial_facts = facts or ""
        self.config = config or SweepConfig()
        self.limit = limit
        self.export_dir = export_dir
        self.last_export: list[str] | None = None
        self.tail: ResultsTail | None = None
        self.report: SweepReport | None = None
        self.kind: str | None = None
        self.running: _Running | None = None
        self._events: deque = deque()

    # ---- layout ----------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        with Horizontal(id="sweep-files"):
            yield Input(self.initial_results, placeholder="results.jsonl", id="sweep-results")
            yield Button("Open", id="sweep-open")
            yield Input(self.initial_facts, placeholder="known_1000 (shipped), or facts.json in its format, to run a sweep", id="sweep-facts")
            yield Button("Run", id="sweep-run-button", variant="primary", disabled=self.engine is None)
            yield Button("Stop", id="sweep-stop-button", variant="error", disabled=True)
        yield Static("", id="sweep-summary")
        with Vertical(id="sweep-body"):
            yield SweepPlot(id="sweep-plot")
            yield DataTable(id="sweep-table", zebra_stripes=True, cursor_type="row")
        with Horizontal(id="sweep-status-row"):
            yield Static("", id="sweep-status")
            yield ProgressBar(id="sweep-progress", show_eta=True)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#sweep-progress", ProgressBar).display = False
        self.set_interval(POLL_SECONDS, self.poll)
        # idle until asked: a sweep starts only from Run (ctrl+r) and the confirmation it shows
        if self.initial_results and Path(self.initial_results).expanduser().exists():
            self.open(self.initial_results)
        elif self.engine is not None:
            self.status("idle: ctrl+r (or Run) shows what a sweep of the facts file would do, and asks first")

    # ---- opening and following a file ----------------------------------------------------------
    def open(self, path: str) -> None:
        """Show `path` (and follow it); the previous file's report is cleared first, so a file
        that cannot be read never leaves another file's summary, curves and table on screen."""
        self.tail = ResultsTail(path)
        self.report = None
        self._last_error = None
        self.redraw()
        if not self.poll() or self.tail.records or self.running:
            return
        if self.tail.bad_lines:
            lines = f"{self.tail.bad_lines} unreadable line{'s' if self.tail.bad_lines != 1 else ''}"
            self.error(f"{path}: no sweep result lines ({lines})")
            return
        self.status(f"{path}: no results yet (waiting for lines)")

    def poll(self) -> bool:
        """Read what the followed file gained; False (the error shown) when it cannot be read."""
        if self.tail is None:
            return True
        try:
            new, reset = self.tail.poll()
        except TracerError as exc:
            if self.report is not None:
                self.report = None
                self.redraw_empty()
            self.error(str(exc))
            return False
        if new or reset or self.report is None and self.tail.records:
            self.redraw()
        return True

    def error(self, text: str, detail: str = "") -> None:
        """An error in the status line, and once per message a notification and a line in the
        app's log (a file polled every half second does not notify twice)."""
        self.status(text, error=True)
        if text == getattr(self, "_last_error", None):
            return
        self._last_error = text
        self.app.notify(text, severity="error", timeout=8)
        from ..widgets.log import RunLog

        for screen in self.app.screen_stack:
            for log in screen.query(RunLog):
                log.line(f"sweep: {text}", "error")
                if detail:
                    log.line(f"  {detail} (please report this bug)", "error")
                return

    def redraw_empty(self) -> None:
        self.report = None
        self.query_one("#sweep-summary", Static).update("")
        with self.app.batch_update():
            self.query_one(SweepPlot).show(None, self.kind)
            self.fill_table()

    def redraw(self) -> None:
        records = self.tail.records if self.tail else []
        self.report = aggregate(records, self.tail.path if self.tail else "") if records else None
        report = self.report
        if report is not None and report.kinds and self.kind not in report.kinds:
            self.kind = "mlp" if "mlp" in report.kinds else report.kinds[0]
        summary = self.query_one("#sweep-summary", Static)
        if report is None:
            summary.update("")
        else:
            lines = summary_lines(report)
            if self.tail and self.tail.bad_lines:
                lines.append(f"{self.tail.bad_lines} unreadable line(s) left out")
            summary.update(Text("\n".join(lines)))
        with self.app.batch_update():
            self.query_one(SweepPlot).show(report, self.kind)
            self.fill_table()
        if report is not None and self.running is None and self.tail is not None:
            self.status(f"{self.tail.path}: {report.kept} facts ({len(records)} lines) · kind {self.kind} "
                        "(ctrl+g) · ctrl+s exports the report")

    def fill_table(self) -> None:
        table = self.query_one("#sweep-table", DataTable)
        table.clear(columns=True)
        report, kind = self.report, self.kind
        if report is None or kind is None or not report.kept:
            return
        table.add_columns("layer", *(f"{GROUP_LABELS[g]} (AIE ±95%)" for g in GROUPS))
        curves = report.curves[kind]

        def cell(g, layer):  # the AIE and its 95% interval's half-width (the report's own band)
            c = curves[g]
            if not c.n or c.mean[layer] is None:
                return "–"
            low, high = (c.low[layer], c.high[layer]) if len(c.low) > layer else (None, None)
            if low is None or high is None or c.n < 2:  # one fact: no interval to show
                return f"{c.mean[layer]:+.4f}"
            return f"{c.mean[layer]:+.4f} ±{(high - low) / 2:.4f}"

        for layer in range(report.n_layers):
            table.add_row(str(layer), *(cell(g, layer) for g in GROUPS), key=f"L{layer}")
        table.add_row("n", *(str(curves[g].n) for g in GROUPS), key="n")
        table.add_row(
            "peak",
            *(f"L{curves[g].peak_layer} ({curves[g].peak:+.4f})" if curves[g].peak_layer is not None else "–" for g in GROUPS),
            key="peak",
        )
        for t, (name, (s, e)) in enumerate(zip(THIRDS, report.thirds)):
            values = [curves[g].thirds[t] for g in GROUPS]
            table.add_row(f"{name} {s}-{e - 1}", *("–" if v is None else f"{v:+.4f}" for v in values), key=name)

    def status(self, text: str, *, error: bool = False) -> None:
        self.query_one("#sweep-status", Static).update(Text(text, style="bold red" if error else ""))

    # ---- actions ----------------------------------------------------------------------------
    @on(Button.Pressed, "#sweep-open")
    @on(Input.Submitted, "#sweep-results")
    def _open_pressed(self) -> None:
        path = self.query_one("#sweep-results", Input).value.strip()
        if not path:
            self.status("type the path of a results file", error=True)
            return
        if self.running:
            self.status("a sweep is running: stop it before opening another file", error=True)
            return
        self.open(path)

    @on(Button.Pressed, "#sweep-run-button")
    @on(Input.Submitted, "#sweep-facts")
    def _run_pressed(self) -> None:
        self.action_run()

    @on(Button.Pressed, "#sweep-stop-button")
    def _stop_pressed(self) -> None:
        self.action_stop()

    def action_next_kind(self) -> None:
        if self.report is None or not self.report.kinds:
            return
        kinds = self.report.kinds
        self.kind = kinds[(kinds.index(self.kind) + 1) % len(kinds)] if self.kind in kinds else kinds[0]
        self.redraw()

    def action_export(self) -> None:
        """The sweep report as text, CSV and JSON (as `tracer-tui sweep-report` writes them), and its
        plots where tracer.render.figures is there, into the export folder."""
        if self.report is None:
            self.status("nothing to export: open a results file first", error=True)
            self.app.notify("nothing to export: open a results file first", severity="warning")
            return
        paths, notes, error = exporting.write_report(self.report, self.export_dir)
        if error:
            self.error(f"export failed: {error}")
            return
        self.last_export = paths
        folder = str(Path(paths[0]).parent)
        text = f"exported to {folder}/: " + ", ".join(Path(p).name for p in paths)
        self.status(text + ("; " + "; ".join(notes) if notes else ""))
        self.app.notify(text, timeout=5)

    def action_close(self) -> None:
        self.action_stop()
        self.app.pop_screen()

    def action_stop(self) -> None:
        if self.running is not None:
            self.running.cancel.set()
            self.status("stopping after the current batch…")

    def action_run(self) -> None:
        """Check the facts and the results file, then ask (ConfirmSweep: the facts, the estimated
        time, where it writes); the sweep starts only on Start."""
        if self.engine is None:
            self.status("no engine: this screen can only show results", error=True)
            return
        if self.running is not None:
            self.status("a sweep is already running", error=True)
            return
        results = self.query_one("#sweep-results", Input).value.strip()
        facts_path = self.query_one("#sweep-facts", Input).value.strip()
        if not results or not facts_path:
            self.status("a sweep needs a facts file and a results file", error=True)
            return
        try:  # cheap checks here, before the engine is busy: one line on failure
            facts, left = self.check_sweep(results, facts_path)
        except TracerError as exc:
            self.status(str(exc), error=True)
            return
        plan = SweepPlan(facts_path, len(facts), len(left), str(Path(results).expanduser().resolve()),
                         self.config, self.estimate(left))
        self.app.push_screen(ConfirmSweep(plan), lambda start: start and self.start_sweep(results, facts, left,
                                                                                        plan.seconds))

    def check_sweep(self, results: str, facts_path: str) -> tuple[list, list]:
        """(the facts, those the results file does not hold yet); raises TracerError (InputError)
        for a bad facts file or a results file written with other settings or facts."""
        from tracer.inputs.facts_file import load_facts
        from tracer.sweeps.results import prepare_output

        facts = load_facts(facts_path)
        if self.limit:
            facts = facts[: self.limit]
        if not Path(results).expanduser().resolve().parent.is_dir():
            return facts, facts  # created on Start
        done = prepare_output(results, facts, self.config).records
        return facts, [f for f in facts if f.known_id not in done]

    def fact_work(self, facts: list) -> dict:
        """known_id -> token-layers of each fact (its one-forward check and its trace,
        tracer.work.trace_work); facts that cannot be tokenized are left out (skipped as bad input)."""
        info = getattr(self.app, "model_info", None)
        if info is None:
            return {}
        work, head = {}, getattr(info, "head_layers", 0)  # a forward row's logits (tracer.work.head_layers)
        for fact in facts:
            try:
                tokens, span = self.engine.tokenize(fact.prompt, fact.subject)
            except TracerError:
                continue  # a fact the sweep will skip as bad input
            n = len(tokens)
            work[fact.known_id] = n * info.n_layers + head + trace_work(n, info.n_layers, settings=self.config,
                                                                        free_before=span[0] if span else 0, head=head)
        return work

    def estimate(self, facts: list) -> float | None:
        """Seconds the sweep of `facts` would take at most (every fact known): their token-layers
        (fact_work) times the engine's measured cost per token-layer of the last trace. None before
        any trace has been timed."""
        cost = getattr(self.engine, "cost_per_token_layer", None)
        work = self.fact_work(facts)
        return sum(work.values()) * cost if cost and work else None

    def start_sweep(self, results: str, facts: list, left: list | None = None, seconds: float | None = None) -> None:
        """Start the confirmed sweep on the engine thread (the results file's folder made first);
        `left` (the facts not yet in the file) and `seconds` (the estimate) give its ETA."""
        try:
            Path(results).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self.status(f"cannot write {results}: {exc.strerror or exc}", error=True)
            return
        self.open(results)
        self.running = _Running(threading.Event(), work=self.fact_work(facts if left is None else left),
                                seconds=seconds)
        self.query_one("#sweep-run-button", Button).disabled = True
        self.query_one("#sweep-stop-button", Button).disabled = False
        self.status(f"sweep of {len(facts)} facts starting… (ctrl+x stops it)")
        future = self.engine.sweep(facts, results, self.config, on_event=self._on_sweep_event, cancel=self.running.cancel)
        future.add_done_callback(self._on_done)

    # ---- from the engine thread: post, never wait -----------------------------------------------
    def _on_sweep_event(self, event) -> None:
        if isinstance(event, FactDone):
            self.post_message(self.RecordsChanged())
        if isinstance(event, (FactDone, FactStarted, FactsChecked, TracingStarted)):
            self.post_message(self.Progressed(event))
        elif isinstance(event, FactProgress):
            self._events.append(event)  # the latest is enough; drained with the next message
            self.post_message(self.Progressed(None))

    def _on_done(self, future) -> None:
        exc = future.exception()
        if exc is None:
            self.post_message(self.Ended(future.result()))
        else:
            detail = "" if isinstance(exc, TracerError) else error_location(exc)
            self.post_message(self.Ended(None, user_message(exc), detail))

    # ---- back on the UI thread ------------------------------------------------------------------
    def on_sweep_screen_records_changed(self, message: RecordsChanged) -> None:
        self.poll()

    def on_sweep_screen_progressed(self, message: Progressed) -> None:
        run, event = self.running, message.event
        if run is None:
            return
        bar = self.query_one("#sweep-progress", ProgressBar)
        if isinstance(event, FactsChecked):
            self.status(f"checking predictions: {event.checked}/{event.total} ({event.kept} known)")
        elif isinstance(event, TracingStarted):
            run.total = event.total
            run.clock = WorkClock(cost=getattr(self.engine, "cost_per_token_layer", None))
            run.clock.update(0, event.work_total)
            bar.display = True
            bar.update(total=max(1, event.total), progress=0)
            self.status(f"tracing {event.total} facts")
        elif isinstance(event, FactStarted):
            run.current = event.fact.known_id
            run.line = f"tracing fact {event.index + 1}/{event.total}: known_id {event.fact.known_id} ({event.fact.subject})"
        elif isinstance(event, FactDone):
            run.done = event.index + 1
            run.work_done += run.work.get(event.record.get("known_id", run.current), 0)
            bar.update(progress=run.done)
        latest = None
        while self._events:
            latest = self._events.popleft()
        for counted in (event, latest):
            if run.clock is not None and isinstance(counted, (FactProgress, FactDone)) and counted.work_total:
                run.clock.update(counted.work_done, counted.work_total)
        if run.line and (isinstance(event, FactStarted) or latest is not None):
            self.status(f"{run.line} · {run.eta()} · ctrl+x stops")
        if latest is not None and latest.total and run.total:
            bar.update(progress=run.done + latest.done / latest.total)

    def on_sweep_screen_ended(self, message: Ended) -> None:
        self.running = None
        self.query_one("#sweep-run-button", Button).disabled = self.engine is None
        self.query_one("#sweep-stop-button", Button).disabled = True
        self.query_one("#sweep-progress", ProgressBar).display = False
        self.poll()
        if message.error:
            self.error(f"sweep failed: {message.error}", message.detail)
            return
        s = message.summary
        state = "stopped" if s.cancelled else "done"
        reasons = ", ".join(f"{n} {r}" for r, n in sorted(s.skipped_by_reason.items()))
        self.status(
            f"sweep {state}: {s.kept} of {s.facts} traced, {s.skipped} skipped" + (f" ({reasons})" if reasons else "")
            + (" — run again to resume" if s.cancelled else "")
        )

    def on_unmount(self) -> None:
        if self.running is not None:
            self.running.cancel.set()
