"""The trace screen: prompt form, token strip, view bar, status, and the tabs (grid with the facts
beside it, number table, log, settings). It owns the trace flow and the run state (`RunState`).

Waiting on the engine has one shape (tui/runstate.py): `Engine.trace` gets the run's `on_event`
(engine thread: it only queues cells and posts messages) and its future the run's done-callback,
which posts `RunEnded`. The end of a run comes only from that callback; nothing polls.
"""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Footer, Header, TabbedContent, TabPane

from tracer.render.tokens import escape_controls
from tracer.events import Log, Recording, Started
from tracer.settings import TraceSettings
from tracer.types import TraceRequest, TraceResult

from ..gridmodel import METRICS, MODES, GridData, peak_sentence
from ..messages import CellInspected, CellsArrived, RunEnded, RunEvent
from ..runstate import RunState
from ..widgets.facts import TraceFacts, WarningBadge
from ..widgets.grid import GridPane, GridTable
from ..widgets.log import RunLog
from ..widgets.prompt_form import PromptForm
from ..widgets.run_status import RunStatus
from ..widgets.settings import SettingsPanel, ViewBar
from ..widgets.token_strip import TokenStrip
from . import trace_actions

REFRESH_SECONDS = 0.2  # the grid and the status redraw at most this often while cells arrive


class TraceScreen(Screen):
    """Trace one prompt and show its grid. The App hands it the engine and tells it when the
    model is ready (`model_ready`) or failed (`model_failed`)."""

    BINDINGS = [
        Binding("ctrl+r", "run", "Run", id="run", tooltip="Trace the prompt for the current view"),
        Binding("escape", "cancel", "Cancel", id="cancel", tooltip="Stop the running trace"),
        Binding("ctrl+s", "export", "Export", id="export", tooltip="Write the grid as .txt/.csv/.json (+ .svg)"),
        Binding("ctrl+o", "toggle_view", "View", id="view", tooltip="All tokens <-> chosen positions"),
        Binding("ctrl+g", "next_kind", "Kind", id="kind", tooltip="Next kind in the all-tokens view"),
        Binding("ctrl+n", "next_metric", "Metric", id="metric", tooltip="Next metric"),
        Binding("f7", "toggle_scale", "Scale", id="scale", tooltip="Fixed (ROME's) colour scale <-> auto scale"),
        Binding("f8", "show_warnings", "Warnings", id="warnings", show=False, tooltip="The trace's warnings"),
        Binding("f9", "inspect", "Inspect", id="inspect", show=False, tooltip="Top-k of the selected table cell's run"),
        Binding("question_mark", "app.help", "Help", show=False),  # Inputs keep '?': F1 always works
        Binding("f2", "show_tab('tab-grid')", "Grid", show=False),
        Binding("f3", "show_tab('tab-table')", "Table", show=False),
        Binding("f4", "show_tab('tab-log')", "Log", show=False),
        Binding("f5", "show_tab('tab-settings')", "Settings", show=False),
        Binding("f6", "sweeps", "Sweeps", id="sweeps", tooltip="Average indirect effect over many facts"),
        Binding("f10", "robustness", "Robustness", id="robustness", show=False,
                tooltip="Does the peak move when the corruption changes?"),
    ]
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]
    DEFAULT_CSS = """
    TraceScreen { layout: vertical; }
    TraceScreen #tabs { height: 1fr; }
    TraceScreen #tabs TabPane { padding: 0; }
    TraceScreen #grid-row { height: 1fr; }
    TraceScreen.-narrow #facts { display: none; }
    TraceScreen.-tall #form, TraceScreen.-tall #strip, TraceScreen.-tall #viewbar { margin-top: 1; }
    """

    def __init__(self, engine, *, settings: TraceSettings | None = None, export_dir: str = "exports",
                 view_mode: str = "all", view_kind: str = "hidden") -> None:
        super().__init__()
        self.engine = engine
        self.settings = settings or TraceSettings()
        self.export_dir = export_dir
        self.run: RunState | None = None
        self.run_count = 0
        self.finished: dict[str, tuple[GridData, TraceResult] | None] = {m: None for m in MODES}
        self.view_mode, self.view_kind, self.metric, self.auto_scale = view_mode, view_kind, "recovery", False
        self.last_export: dict[str, str] | None = None
        self.done_note = ""  # "done in 1.2 s (162 cells)." of the last finished run
        self.model_ready_flag = False
        self._composed = False
        self._model = None
        self._model_failure: tuple[str, str] | None = None
        self._dirty = False
        self._preview_timer = None
        self.form = PromptForm(id="form")
        self.strip = TokenStrip(id="strip")
        self.viewbar = ViewBar(view_mode, view_kind, "recovery", id="viewbar")
        self.status = RunStatus(id="status")
        self.pane = GridPane(id="grid")
        self.facts = TraceFacts(id="facts")
        self.table = GridTable(id="table")
        self.run_log = RunLog(id="log")
        self.panel = SettingsPanel(self.settings, export_dir=export_dir, id="settings")

    # ---- layout ---------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Header()
        yield self.form
        yield self.strip
        yield self.viewbar
        yield self.status
        with TabbedContent(id="tabs"):
            with TabPane("Grid", id="tab-grid"):
                with Horizontal(id="grid-row"):
                    yield self.pane
                    yield self.facts
            with TabPane("Table", id="tab-table"):
                yield self.table
            with TabPane("Log", id="tab-log"):
                yield self.run_log
            with TabPane("Settings", id="tab-settings"):
                yield self.panel
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.pane.loading = True
        self.strip.show_note("(loading the model…)")
        self.status.idle("loading the model…")
        self._refresh_timer = self.set_interval(REFRESH_SECONDS, self._refresh)
        prompt = self.form.inputs["prompt"]
        prompt.focus()
        prompt.cursor_position = len(prompt.value)
        self._composed = True
        if self._model is not None:  # the model was quicker than the screen
            self.model_ready(self._model)
        elif self._model_failure is not None:
            self.model_failed(*self._model_failure)

    def on_unmount(self) -> None:
        self._refresh_timer.stop()  # nothing redraws into widgets being pruned (issue 16.2)
        if self._preview_timer is not None:
            self._preview_timer.stop()
        if self.run is not None:
            self.run.cancel.set()

    # ---- reporting ------------------------------------------------------------------
    def report(self, text: str, level: str = "info", notify: bool = True) -> None:
        """A log line, and for warnings/errors (and "done") a notification too."""
        text = escape_controls(text, keep_newlines=True)  # a token's ESC or CR never reaches the terminal
        self.run_log.line(text, level)
        if notify and level in ("warning", "error"):
            self.app.notify(text, severity=level, timeout=8 if level == "error" else 5)
        elif notify and level == "done":
            self.app.notify(text, timeout=4)

    # ---- the model (told by the App) ------------------------------------------------
    def model_ready(self, info) -> None:
        self._model = info
        if not self._composed:
            return  # on_mount shows it
        self.model_ready_flag = True
        self.pane.loading = False
        self.status.idle(f"ready: {info.name}, {info.n_layers} layers. Press enter or ctrl+r to trace.")
        self.report(f"model: {info.summary}; BLAS: {info.blas}; device {info.device}")
        if not info.blas_fast:
            self.report(f"no fast BLAS: tracing will be slow ({info.blas})", "warning")
        self.request_preview()

    def model_failed(self, message: str, detail: str = "") -> None:
        self._model_failure = (message, detail)
        if not self._composed:
            return  # on_mount shows it
        self.pane.loading = False
        self.status.idle(f"model failed to load: {message}", error=True)
        self.strip.show_note("(no model)")
        self.report(f"model failed to load: {message}", "error")
        if detail:
            self.report(f"  {detail} (please report this bug)", "error", notify=False)

    # ---- token strip preview ----------------------------------------------------------
    @on(PromptForm.Changed)
    def _form_changed(self) -> None:
        if self._preview_timer is not None:
            self._preview_timer.stop()
        self._preview_timer = self.set_timer(0.25, self.request_preview)

    def request_preview(self) -> None:
        """Tokenize on the UI thread (Engine.tokenize uses no MLX), so the strip follows typing mid-run."""
        if not self.model_ready_flag or not self.is_attached:
            return
        values = self.form.values()
        tokens, span, note = trace_actions.preview_tokens(self.engine, values.prompt, values.subject)
        aligned, align_note = trace_actions.aligned_tokens(self.engine, tokens, values.corrupted)
        self.strip.aligned = aligned
        self.strip.set_tokens(tokens, span, source=(values.prompt, values.subject), note=note or align_note)

    def on_prompt_form_submitted(self, message: PromptForm.Submitted) -> None:
        self.action_run()
    # ---- a run ------------------------------------------------------------------------
    def start(self, request: TraceRequest) -> RunState:
        """Hand `request` to the engine; a run in hand is cancelled (its events are ignored)."""
        if self.run is not None:
            self.run.cancel.set()
        self.run_count += 1
        run = self.run = RunState(self.run_count, request, self.view_mode, post=self.post_message)
        self.run_log.settings(run.id, request, MODES[run.mode])
        self.status.running(run.progress, "recording clean and corrupted runs…")
        future = self.engine.trace(request, run.on_event, run.cancel)
        future.add_done_callback(run.on_done)
        return run

    def _current(self, run_id: int) -> RunState | None:
        run = self.run
        return run if run is not None and run.id == run_id and not run.ended and self.is_attached else None

    def on_cells_arrived(self, message: CellsArrived) -> None:
        run = self._current(message.run_id)
        if run is None:
            return
        while run.cells:
            event = run.cells.popleft()
            if run.grid is not None:
                run.grid.apply(event)
            run.progress.update(event.done, event.total)
        self._dirty = True

    def on_run_event(self, message: RunEvent) -> None:
        run, event = self._current(message.run_id), message.event
        if run is None:
            return
        if isinstance(event, Started):
            run.grid = GridData.from_started(run.mode, event, trace_actions.started_positions(run.request, event))
            run.progress.update(0, event.total_cells)
            if tuple(event.tokens) != self.strip.tokens:
                v = self.form.values()
                self.strip.set_tokens(event.tokens, tuple(event.subject_range), source=(v.prompt, v.subject))
            self.facts.show_started(event, run.request)
            self.report(f"  {len(event.tokens)} tokens, {event.total_cells} cells, target {event.target_text!r}: "
                        f"clean P = {event.clean_prob:.4f}, corrupted P = {event.corrupted_prob:.4f}", notify=False)
            self.show_view()
        elif isinstance(event, Recording):
            batches = f", samples batch {event.batch}/{event.n_batches}" if event.n_batches > 1 else ""
            self.status.running(run.progress, f"recording the {event.phase} run: layer {event.layer}/{event.n_layers}{batches}")
        elif isinstance(event, Log):
            self.report(event.text, event.level)

    def on_run_ended(self, message: RunEnded) -> None:
        run = self._current(message.run_id)
        if run is None:
            return
        run.ended = True
        if message.result is not None:
            self._finished(run, message.result)
        elif message.error is not None:
            self._stopped(f"run failed: {message.error}", "error")
            if message.detail:
                self.report(f"  {message.detail} (please report this bug)", "error", notify=False)
        else:
            self._stopped(f"cancelled after {run.progress.done}/{run.progress.total} cells", "warning")

    def _finished(self, run: RunState, result: TraceResult) -> None:
        grid = GridData.from_result(run.mode, result)
        self.finished[run.mode] = (grid, result)
        run.progress.update(grid.done, grid.done)
        self.run_log.result(result)
        self.facts.show_result(result)
        self.done_note = f"done in {result.seconds:.1f} s ({grid.done} cells)."
        self.show_view()
        self.report(f"trace done in {result.seconds:.1f} s. {self.status_peak()}", "done")

    def _stopped(self, text: str, level: str) -> None:
        done = self.finished.get(self.view_mode)
        self.done_note = f"{text}; the previous grid stays." if done is not None and level != "error" else text
        self.report(text, level)
        if done is not None:
            self.facts.show_result(done[1])
        self.show_view()

    # ---- views ------------------------------------------------------------------------
    def _refresh(self) -> None:
        if not self.is_attached:
            return
        run = self.run
        if run is not None and run.active and run.progress.total:
            self.status.running(run.progress)
        if self._dirty:
            self.show_view()

    def shown_grid(self) -> GridData | None:
        """The running grid of this view, else the last finished one."""
        run = self.run
        if run is not None and not run.ended and run.mode == self.view_mode and run.grid is not None:
            return run.grid
        done = self.finished.get(self.view_mode)
        return done[0] if done else None

    def show_view(self) -> None:
        self._dirty = False
        grid = self.shown_grid()
        view = grid.view(self.view_kind, self.metric, auto=self.auto_scale) if grid else None
        hint = None
        if view is None:
            hint = f"No trace in the {MODES[self.view_mode]} view yet: press ctrl+r (or enter in the prompt) to run."
        with self.app.batch_update():
            self.pane.show(view, hint)
            self.table.show(view)
        run = self.run
        if run is None or not run.active:
            error = bool(self.done_note) and self.done_note.startswith("run failed")
            note = self.done_note if error or view is None else f"{self.done_note} {self.status_peak()}".strip()
            if run is not None or self.done_note:
                self.status.idle(note, error=error)

    def status_peak(self) -> str:
        """The peak of the view on screen (its kind and metric), for the status line."""
        view = self.pane.current
        return peak_sentence(view) if view is not None else ""

    def set_view(self, mode: str | None = None, kind: str | None = None, metric: str | None = None) -> None:
        """Change what the grid shows, at once (keys pressed right after run with it)."""
        self.view_mode = mode or self.view_mode
        self.view_kind = kind or self.view_kind
        self.metric = metric or self.metric
        self.viewbar.set_state(self.view_mode, self.view_kind, self.metric)
        done = self.finished.get(self.view_mode)
        if done is not None:
            self.facts.show_result(done[1])
        self.show_view()

    @on(ViewBar.Changed)
    def _view_changed(self, message: ViewBar.Changed) -> None:
        if (message.mode, message.kind, message.metric) != (self.view_mode, self.view_kind, self.metric):
            self.set_view(message.mode, message.kind, message.metric)

    @on(SettingsPanel.Changed)
    def _settings_changed(self) -> None:
        self.app.remember_settings(self.panel)

    @on(WarningBadge.Pressed)
    def _badge_pressed(self) -> None:
        self.action_show_warnings()

    # ---- actions ----------------------------------------------------------------------
    def action_run(self) -> None:
        error = getattr(self.app, "model_error", None)
        if error is not None:
            self.report(f"cannot run: no model loaded ({error})", "error")
            return
        request, problem, note = trace_actions.build_request(self)
        if note:
            self.report(note, "info", notify=False)
        if request is None:
            self.report(f"cannot run: {problem}", "error")
            return
        self.app.remember_settings(self.panel)
        self.start(request)

    def action_cancel(self) -> None:
        run = self.run
        if run is None or not run.active:
            return
        run.cancel.set()
        self.status.running(run.progress, "cancelling…")
        self.report("cancelling…", notify=False)

    def action_toggle_view(self) -> None:
        self.set_view(mode="all" if self.view_mode == "positions" else "positions")

    def action_next_kind(self) -> None:
        grid = self.shown_grid()
        kinds = grid.kinds if grid else self.panel.kinds()
        nxt = kinds[(kinds.index(self.view_kind) + 1) % len(kinds)] if self.view_kind in kinds else kinds[0]
        self.set_view(kind=nxt)
        if self.view_mode != "all":
            self.app.notify(f"kind {nxt} (shown in the all-tokens view: ctrl+o)", timeout=3)

    def action_next_metric(self) -> None:
        self.set_view(metric=METRICS[(METRICS.index(self.metric) + 1) % len(METRICS)])

    def action_toggle_scale(self) -> None:
        trace_actions.toggle_scale(self)

    def action_show_warnings(self) -> None:
        trace_actions.show_warnings(self)

    def action_show_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab

    def action_sweeps(self) -> None:
        trace_actions.open_sweeps(self)

    def action_robustness(self) -> None:
        trace_actions.open_robustness(self)

    def action_select_subject_last(self) -> None:
        self.strip.select_subject_last()

    def action_export(self) -> None:
        trace_actions.export_view(self)

    def action_inspect(self) -> None:
        trace_actions.inspect_cell(self)

    def on_cell_inspected(self, message: CellInspected) -> None:
        trace_actions.show_inspected(self, message)
