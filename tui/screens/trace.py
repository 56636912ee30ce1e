"""The trace screen: prompt form, token strip, view bar, status, and the tabs (grid with the facts
beside it, number table, log, settings). It owns the trace flow and the run state (`RunState`).

Waiting on the engine has one shape (tui/runstate.py): `Engine.trace` gets the run's `on_event`
(engine thread: it only queues cells and posts messages) and its future the run's done-callback,
which posts `RunEnded`. The end of a run comes only from that callback; nothing polls.
"""

from __future__ import annotations

import dataclasses

from tracer.errors import user_message
from tracer.events import Estimate, Log, Recording, Started
from tracer.inputs.prompts import align_tokens
from tracer.render.terminal_plot import finite
from tracer.render.tokens import escape_controls
from tracer.settings import TraceSettings
from tracer.types import AUTO_CI_WIDTH, TraceRequest, TraceResult

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.coordinate import Coordinate
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, TabbedContent, TabPane

from .. import exporting
from ..gridmodel import METRICS, MODES, GridData, cell_readout, peak_sentence, running_sites_sentence, sites_sentence
from ..messages import CellInspected, CellsArrived, RunEnded, RunEvent
from ..runstate import RunState
from ..widgets.facts import TraceFacts, WarningBadge
from ..widgets.grid import GridPane, GridPlot, GridTable
from ..widgets.log import RunLog
from ..widgets.prompt_form import PromptForm
from ..widgets.run_status import RunStatus
from ..widgets.settings import SettingsError, SettingsPanel, ViewBar
from ..widgets.token_strip import TokenStrip
from .robustness import RobustnessScreen

REFRESH_SECONDS = 0.2  # the grid and the status redraw at most this often while cells arrive


def preview_tokens(engine, prompt: str, subject: str) -> tuple[list[str], tuple[int, int] | None, str]:
    """(tokens, subject range or None, note) for the token strip, on any thread (Engine.tokenize uses
    no MLX). Bad input comes back as the note."""
    try:
        tokens, _ = engine.tokenize(prompt)
    except Exception as exc:  # bad input (TracerError) or a bug: one line, never a crash
        return [], None, user_message(exc)
    if not subject.strip():
        return list(tokens), None, "the subject is empty"
    try:
        _, span = engine.tokenize(prompt, subject)
    except Exception as exc:
        return list(tokens), None, user_message(exc)
    return list(tokens), (tuple(span) if span else None), ""


def aligned_tokens(engine, clean: list[str], corrupted_prompt: str | None) -> tuple[list[str] | None, str]:
    """(the corrupted prompt's token(s) under each clean token, note) for the token strip, as the
    user types: tracer.inputs.prompts.align_tokens (shared prefix and suffix token by token, the differing
    spans as blocks with their last tokens together), compared on token texts. None without a
    corrupted prompt; the note says why there is no alignment."""
    if not corrupted_prompt or not clean:
        return None, ""
    try:
        corrupted, _ = engine.tokenize(corrupted_prompt)
    except Exception as exc:  # bad input: one line under the strip
        return None, f"corrupted prompt: {user_message(exc)}"
    corrupted = list(corrupted)
    try:
        mapping = align_tokens(list(clean), corrupted)["clean_to_corrupted"]
    except Exception as exc:  # InputError: no alignment makes sense; its message says what to do
        return None, f"corrupted prompt: {user_message(exc)}"
    out, last = [], -1
    for j in mapping:
        if j is None:
            out.append("")
            continue
        out.append("".join(corrupted[last + 1:j + 1]) or corrupted[j])  # untaken tokens go with the next chip
        last = max(last, j)
    return out, ""


def started_positions(request: TraceRequest, event: Started) -> tuple[int, ...]:
    """The positions the running request restores, as token indices (empty for all tokens)."""
    positions = request.positions
    if positions == "all":
        return ()
    if positions == "subject-last":
        return (event.subject_range[1] - 1,)
    n = len(event.tokens)
    return tuple(sorted({p % n for p in positions}))


APP_WORDS = {"--target": "the Target field", "--samples": "Samples (F5)", "--noise": "the noise rule (F5)",
             "--window": "Window (F5)", "--seed": "Seed (F5)", "--kinds": "the kinds (F5)",
             "--positions": "the token strip's chosen positions", "--corrupted": "the Corrupted field"}


def in_app_words(text: str) -> str:
    """A guard's advice with the CLI's flags named as the app's fields and keys."""
    for flag, words in APP_WORDS.items():
        text = text.replace(f"with {flag}", f"in {words}").replace(flag, words)
    return text


def result_at(result: TraceResult, token: int) -> TraceResult:
    """An all-tokens result as the chosen-positions result of one token: its rows of every grid."""
    grids = {kind: {metric: [rows[token]] for metric, rows in grid.items()} for kind, grid in result.grids.items()}
    request = dataclasses.replace(result.request, positions=(token,))
    return dataclasses.replace(result, positions=[token], request=request, grids=grids)


def noise_samples(request: TraceRequest) -> int | None:
    """Noise samples per cell of a request (adaptive samples: the most); None for substitution (one
    corrupted run)."""
    return None if request.corrupted_prompt is not None else request.samples


def set_samples(grid: GridData, request: TraceRequest) -> None:
    """What the grid's readout says of its samples: the request's count, or adaptive samples' most
    and target width (each cell's own count comes with the finished grids)."""
    grid.samples, grid.ci_width = noise_samples(request), request.ci_width


def describe_patched(run) -> str:
    """A patched run (tracer.api.PatchedRun) in one line: "' Paris' 0.412, ' Rome' 0.051, …; P(target) …"."""
    preds = [(p.text, p.prob) if hasattr(p, "text") else tuple(p) for p in getattr(run, "top", [])]
    text = ", ".join(f"{t!r} {p:.3f}" for t, p in preds)
    target = (getattr(run, "restored", None) or {}).get("target") or {}
    if target.get("prob") is not None:
        text += f"; P({target.get('text', 'target')!r}) {target['prob']:.4f}"
    return text or str(run)


class TraceScreen(Screen):
    """Trace one prompt and show its grid. The App hands it the engine and tells it when the
    model is ready (`model_ready`) or failed (`model_failed`)."""

    BINDINGS = [
        # first, so that a narrow footer never cuts it (the App's F1 is last in the footer's order)
        Binding("f1", "app.help", "Help", key_display="F1", tooltip="Keys and how to read the grid"),
        Binding("ctrl+r", "run", "Run", id="run", tooltip="Trace the prompt for the current view"),
        Binding("escape", "cancel", "Cancel", id="cancel", tooltip="Stop the running trace"),
        # shown while a Samples-auto trace refines (check_action); the palette's "stop_refining(True)" always runs
        Binding("ctrl+f", "stop_refining", "Enough samples", id="stop-refining",
                tooltip="Stop refining: every cell keeps the samples it has and the trace finishes"),
        Binding("f9", "inspect", "Top-5", id="inspect", tooltip="The patched run's top-5 at the cursor's cell"),
        Binding("ctrl+s", "export", "Export", id="export", tooltip="Write the grid as .txt/.csv/.json (+ .svg)"),
        Binding("ctrl+o", "toggle_view", "View", id="view", tooltip="All tokens <-> chosen positions"),
        Binding("ctrl+g", "next_kind", "Kind", id="kind", tooltip="Next kind in the all-tokens view"),
        Binding("ctrl+n", "next_metric", "Metric", id="metric", tooltip="Next metric"),
        Binding("f7", "toggle_scale", "Scale", id="scale", tooltip="Fixed (ROME's) colour scale <-> auto scale"),
        Binding("ctrl+y", "toggle_estimate_error", "Est−exact", id="estimate-error", show=False,
                tooltip="A finished grid <-> its first-order estimate minus the exact values"),
        Binding("f8", "show_warnings", "Warnings", id="warnings", show=False, tooltip="The trace's warnings"),
        Binding("question_mark", "app.help", "Help", show=False),  # Inputs keep '?': F1 always works
        Binding("f2", "show_tab('tab-grid')", "Grid", show=False, priority=True),
        Binding("f3", "show_tab('tab-table')", "Table", show=False, priority=True),
        Binding("f4", "show_tab('tab-log')", "Log", show=False, priority=True),
        Binding("f5", "show_tab('tab-settings')", "Settings", show=False, priority=True),
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
    TraceScreen.-short GridPane > #peak, TraceScreen.-short GridPane > #legend { max-height: 1; }
    TraceScreen.-tall #form, TraceScreen.-tall #strip, TraceScreen.-tall #viewbar { margin-top: 1; }
    """

    def __init__(self, engine, *, settings: TraceSettings | None = None, export_dir: str = "exports",
                 view_mode: str = "all", view_kind: str = "hidden", auto_samples: bool = False,
                 ci_width: float = AUTO_CI_WIDTH) -> None:
        super().__init__()
        self.engine = engine
        self.settings = settings or TraceSettings()
        self.export_dir = export_dir
        self.run: RunState | None = None
        self.run_count = 0
        self.finished: dict[str, tuple[GridData, TraceResult] | None] = {m: None for m in MODES}
        self.view_mode, self.view_kind, self.metric, self.auto_scale = view_mode, view_kind, "recovery", False
        self.estimate = "progressive"  # runs show the first-order estimate first (TraceRequest.estimate)
        self.estimate_error = False  # a finished grid shown as estimate minus exact (ctrl+y)
        self.last_export: dict[str, str] | None = None
        self.cursor: tuple[int, int] | None = None  # (row, layer) of the view on screen: grid and table
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
        self.panel = SettingsPanel(self.settings, export_dir=export_dir, auto_samples=auto_samples,
                                   ci_width=ci_width, id="settings")

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
        """A log line, and for warnings and errors a notification too ("done" goes to the status
        line and the log only: a toast would cover the grid's late layers)."""
        text = escape_controls(text, keep_newlines=True)  # a token's ESC or CR never reaches the terminal
        self.run_log.line(text, level)
        if notify and level in ("warning", "error"):
            self.app.notify(text, severity=level, timeout=8 if level == "error" else 5)

    # ---- the model (told by the App) ------------------------------------------------
    def model_ready(self, info) -> None:
        self._model = info
        if not self._composed:
            return  # on_mount shows it
        self.model_ready_flag = True
        self.pane.loading = False
        self.status.idle(f"ready: {info.name}, {info.n_layers} layers. Enter or ctrl+r traces the example; then "
                         "type your own fact (Prompt, Subject), or ctrl+o: the components at the subject's last token.")
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
        self._dirty = True  # the grid on screen may have become stale
        if self._preview_timer is not None:
            self._preview_timer.stop()
        self._preview_timer = self.set_timer(0.25, self.request_preview)

    def request_preview(self) -> None:
        """Tokenize on the UI thread (Engine.tokenize uses no MLX), so the strip follows typing mid-run."""
        if not self.model_ready_flag or not self.is_attached:
            return
        values = self.form.values()
        tokens, span, note = preview_tokens(self.engine, values.prompt, values.subject)
        aligned, align_note = aligned_tokens(self.engine, tokens, values.corrupted)
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
        run.progress.work.cost = getattr(self.engine, "cost_per_token_layer", None)
        self.run_log.settings(run.id, request, MODES[run.mode])
        self.status.running(run.progress, "recording clean and corrupted runs…")
        future = self.engine.trace(request, run.on_event, run.cancel, settle=run.settle)
        future.add_done_callback(run.on_done)
        self.refresh_bindings()  # ctrl+f while it refines
        if self.finished.get(run.mode) is None:
            self.show_view()  # the first trace of this view: say it is recording
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
            run.progress.add_work(event)
        self._dirty = True

    def on_run_event(self, message: RunEvent) -> None:
        run, event = self._current(message.run_id), message.event
        if run is None:
            return
        if isinstance(event, Started):
            run.grid = GridData.from_started(run.mode, event, started_positions(run.request, event))
            set_samples(run.grid, run.request)
            run.progress.update(0, event.total_cells)
            if tuple(event.tokens) != self.strip.tokens:
                v = self.form.values()
                self.strip.set_tokens(event.tokens, tuple(event.subject_range), source=(v.prompt, v.subject))
            self.facts.show_started(event, run.request)
            self.report(f"  {len(event.tokens)} tokens, {event.total_cells} cells, target {event.target_text!r}: "
                        f"clean P = {event.clean_prob:.4f}, corrupted P = {event.corrupted_prob:.4f}", notify=False)
            self.show_view()
        elif isinstance(event, Recording):
            run.progress.add_work(event)
            batches = f", samples batch {event.batch}/{event.n_batches}" if event.n_batches > 1 else ""
            self.status.running(run.progress, f"recording the {event.phase} run: layer {event.layer}/{event.n_layers}{batches}")
        elif isinstance(event, Estimate):
            if run.grid is not None:
                run.grid.apply_estimate(event)
                self._dirty = True
        elif isinstance(event, Log):
            self.report(event.text, event.level)

    def on_run_ended(self, message: RunEnded) -> None:
        run = self._current(message.run_id)
        if run is None:
            return
        run.ended = True
        self.refresh_bindings()
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
        set_samples(grid, result.request)
        self.finished[run.mode] = (grid, result)
        run.progress.update(grid.done, grid.done)
        self.run_log.result(result)
        self.facts.show_result(result)
        self.done_note = f"done in {result.seconds:.1f} s ({grid.done} cells)."
        if self.run_count == 1 and run.mode == "all":  # a newcomer's first grid: what to do next
            self.report("next: your own fact in Prompt and Subject (enter traces it), or ctrl+o for the components "
                        "(hidden, mlp, attn) at the subject's last token; F1 explains the grid", notify=False)
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
        run = self.run
        grid = self.shown_grid()
        view = grid.view(self.view_kind, self.metric, auto=self.auto_scale) if grid else None
        done = self.finished.get(self.view_mode)
        error_view = grid.estimate_error_view(self.view_kind, self.metric) if grid and self.estimate_error else None
        if error_view is not None:
            view = error_view
        elif view is not None and done is not None and done[0] is grid:
            kinds = grid.kinds if grid.mode == "positions" else (view.kind,)
            view.headline = sites_sentence(done[1], kinds, view.metric)
            stale = self.stale_reason(done[1].request)
            if stale:
                view.title = f"STALE: {stale}; ctrl+r traces it · {view.title}"
                view.headline = f"stale ({stale}): this grid is {done[1].request.prompt[:40]!r} · {view.headline}"
        elif view is not None and not grid.final:  # a running grid: its sites so far, by the same rules
            view.headline = running_sites_sentence(grid, grid.kinds if grid.mode == "positions" else (view.kind,),
                                                   view.metric) or None
        self.pane.set_class(view is not None and view.title.startswith("STALE"), "-stale")
        hint = None
        if view is None and run is not None and run.active and run.mode == self.view_mode:
            hint = "Recording the clean and corrupted runs: the grid fills in as cells finish (esc cancels)."
        elif view is None:
            hint = f"No trace in the {MODES[self.view_mode]} view yet: press ctrl+r (or enter in the prompt) to run."
        drawn = view
        if view is not None and view.metric == "recovery" and view.final and not any(
                finite(v) for row in view.values for v in row):  # no empty recovery heatmap: P instead, said so
            drawn = grid.view(self.view_kind, "prob", auto=self.auto_scale)
            drawn.title = f"recovery n/a, P shown · {drawn.title}"
            drawn.headline = view.headline
        with self.app.batch_update():
            self.pane.show(drawn, hint)
            self.table.show(view)  # the table lists the view's own cells ("n/a")
            self.show_cursor(grid, view)
        if run is None or not run.active:
            error = bool(self.done_note) and self.done_note.startswith("run failed")
            note = self.done_note if error or view is None else f"{self.done_note} {self.status_peak()}".strip()
            if run is not None or self.done_note:
                self.status.idle(note, error=error)

    def show_cursor(self, grid: GridData | None, view) -> None:
        """The cursor on the grid and the table, and its cell in words (kept inside the view)."""
        if view is None or not view.values:
            self.pane.plot.set_cursor(None)
            self.pane.show_readout("")
            return
        if self.cursor is not None:
            row, layer = self.cursor
            self.cursor = (min(row, len(view.values) - 1), min(layer, len(view.values[0]) - 1))
        self.pane.plot.set_cursor(self.cursor)
        self.pane.show_readout(cell_readout(grid, view, *self.cursor) + " · F9 top-5" if self.cursor else "")
        if self.cursor is not None:
            target = Coordinate(self.cursor[0], self.cursor[1] + 1)
            if self.table.row_count and self.table.cursor_coordinate != target:
                self.table.cursor_coordinate = target

    def set_cursor(self, row: int, layer: int) -> None:
        if self.cursor != (row, layer):
            self.cursor = (row, layer)
            grid = self.shown_grid()
            self.show_cursor(grid, grid.view(self.view_kind, self.metric, auto=self.auto_scale) if grid else None)

    @on(GridPlot.CursorMoved)
    def _plot_cursor(self, message: GridPlot.CursorMoved) -> None:
        self.set_cursor(message.row, message.layer)

    @on(DataTable.CellHighlighted, "#table")
    def _table_cursor(self, message: DataTable.CellHighlighted) -> None:
        row, column = message.coordinate
        on_view = self.table.has_focus or self.query_one(TabbedContent).active == "tab-table"
        if column >= 1 and self.table.row_count and on_view:  # not a rebuild behind the grid
            self.set_cursor(row, column - 1)

    def positions_from_all(self) -> None:
        """The chosen-positions grid read from the all-tokens trace where that covers it: one chosen
        token is row of the all-tokens grid (the same restoration), for the same prompt and settings."""
        done = self.finished.get("all")
        form = self.form.values()
        if self.view_mode != "positions" or done is None or self.stale_reason(done[1].request):
            return
        if not self.strip.is_current(form.prompt, form.subject) or len(self.strip.positions) != 1:
            return
        token = self.strip.positions[0]
        current = self.finished.get("positions")
        if current is not None and list(current[1].positions) == [token] and not self.stale_reason(current[1].request):
            return
        derived = result_at(done[1], token)
        grid = GridData.from_result("positions", derived)
        set_samples(grid, derived.request)
        self.finished["positions"] = (grid, derived)
        self.facts.show_result(derived)
        self.report(f"chosen positions: {derived.tokens[token]!r} read from the all-tokens trace (no re-run)",
                    notify=False)

    @on(TokenStrip.Toggled)
    def _strip_toggled(self) -> None:
        if self.view_mode == "positions":
            self.positions_from_all()
            self._dirty = True

    def stale_reason(self, request: TraceRequest) -> str:
        """Why a finished grid no longer matches the form and the settings ("the prompt changed",
        …), or "" when it still does."""
        form = self.form.values()
        for name, now, then in (("prompt", form.prompt, request.prompt), ("subject", form.subject, request.subject),
                                ("corrupted prompt", form.corrupted, request.corrupted_prompt),
                                ("target", form.target, request.target)):
            if (now or None) != (then or None):
                return f"the {name} changed"
        try:
            panel = self.panel.read()
        except SettingsError:
            return ""  # a half-typed field: the run will say what is wrong
        changed = [k for k, v in panel.trace.as_kwargs().items() if k != "kinds" and getattr(request, k, v) != v]
        if request.corrupted_prompt is None and panel.ci_width != request.ci_width and "samples" not in changed:
            changed.append("CI width" if request.ci_width and panel.ci_width else "samples auto")
        return f"{', '.join(changed)} changed" if changed else ""

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
        self.positions_from_all()
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
        self._dirty = True
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
        request, problem, note = self.build_request()
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
        self.refresh_bindings()
        self.status.running(run.progress, "cancelling…")
        self.report("cancelling…", notify=False)

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        """ctrl+f (stop refining) only while a Samples-auto trace refines: the footer shows it then;
        the palette's call (a parameter) always runs, to say why when there is nothing to stop."""
        if action == "stop_refining" and not parameters:
            return self.run is not None and self.run.refining
        return True

    def action_stop_refining(self, asked: bool = False) -> None:
        """ctrl+f: no more samples for the running adaptive trace; every cell keeps the ones it has
        and the trace finishes (the engine's settle). `asked`: from the palette (check_action)."""
        run = self.run
        if run is None or not run.refining:
            self.report("nothing to stop refining: no trace with Samples auto (F5) is running", "warning")
            return
        run.settle.set()
        self.refresh_bindings()
        self.status.running(run.progress, "no more samples: finishing with the ones each cell has…")
        self.report("stop refining: every cell keeps the samples it has; the trace finishes with them", notify=False)

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

    def build_request(self) -> tuple[TraceRequest | None, str, str]:
        """(request, problem, note) from the form, token strip and settings panel: the request,
        or None and the problem in words; the note is a log line (e.g. the strip was not ready)."""
        form = self.form.values()
        problem = None
        if not form.prompt.strip():
            problem = "the prompt is empty"
        elif not form.subject.strip():
            problem = "the subject is empty"
        elif form.subject.strip() not in form.prompt:
            problem = f"subject {form.subject!r} is not in the prompt"
        if problem is None:
            try:
                settings = self.panel.read()
            except SettingsError as exc:
                problem = str(exc)
        if problem:
            return None, problem, ""
        positions: str | tuple[int, ...] = "all"
        note = ""
        if self.view_mode == "positions":
            strip = self.strip
            if strip.is_current(form.prompt, form.subject):
                positions = strip.positions
                if not positions:
                    return None, "choose at least one token in the strip (click or space)", ""
            else:
                positions = "subject-last"
                note = "token strip not ready: restoring the subject's last token"
        try:
            ci_width = settings.ci_width if not form.corrupted else None  # substitution: one corrupted run
            request = TraceRequest(form.prompt, form.subject, corrupted_prompt=form.corrupted, target=form.target,
                                   positions=positions, estimate=self.estimate, ci_width=ci_width,
                                   **settings.trace.as_kwargs())
        except Exception as exc:  # InputError from the request's own checks
            return None, user_message(exc), note
        return request, "", note

    def action_toggle_estimate_error(self) -> None:
        """A finished grid <-> its first-order estimate minus the exact values (the estimate's error)."""
        grid = self.shown_grid()
        if not self.estimate_error and (grid is None or grid.estimate_error_view(self.view_kind, self.metric) is None):
            self.report("no estimate minus exact yet: it needs a finished trace that showed an estimate "
                        "(ctrl+r runs one)", "warning")
            return
        self.estimate_error = not self.estimate_error
        self.show_view()

    def action_toggle_scale(self) -> None:
        """F7: ROME's fixed colour scales <-> the cells' own range."""
        self.auto_scale = not self.auto_scale
        self.show_view()
        self.app.notify("colour scale: " + ("auto (the cells' own range)" if self.auto_scale else
                                              "fixed (recovery 0-100%, probability p_corrupted..p_clean)"), timeout=3)

    def action_show_warnings(self) -> None:
        """F8 / the badge: each warning of the trace on screen as a notification titled with its code."""
        warnings = self.facts.badge.warnings
        if not warnings:
            self.app.notify("no warnings for this trace", timeout=3)
            return
        self.app.clear_notifications()  # one toast per press, never a stack
        text = "\n".join(f"• {getattr(w, 'code', 'note')}: {in_app_words(str(w))}" for w in warnings)
        self.app.notify(text, title=f"{len(warnings)} warning{'s' if len(warnings) != 1 else ''}",
                        severity="warning", timeout=10)

    def action_show_tab(self, tab: str) -> None:
        """F2-F5. Focus leaves the old tab first: a focused widget left in a hidden tab (a Settings
        checkbox) passed focus to its neighbour there, and TabbedContent switched back to it."""
        focused = self.focused
        tabs = self.query_one(TabbedContent)
        if focused is not None and tabs in focused.ancestors:
            self.set_focus(None)
        tabs.active = tab

    def action_sweeps(self) -> None:
        """F6: the sweep screen, with the settings panel's trace settings."""
        try:
            values = self.panel.read()
        except SettingsError as exc:
            self.report(f"settings: {exc}", "error")
            return
        if values.ci_width is not None:
            self.report(f"Samples auto is for traces: a sweep gives every cell {values.trace.samples} samples",
                        notify=False)
        self.app.open_sweeps(values.trace, values.export_dir)

    def action_robustness(self) -> None:
        """The robustness view for the form's prompt and subject, with the settings' samples, seed,
        window and kinds."""
        form = self.form.values()
        if not form.prompt.strip() or not form.subject.strip() or form.subject.strip() not in form.prompt:
            self.report("robustness: give a prompt and a subject inside it", "error")
            return
        try:
            values = self.panel.read()
        except SettingsError as exc:
            self.report(f"settings: {exc}", "error")
            return
        trace = values.trace
        if values.ci_width is not None:
            self.report(f"Samples auto is for traces: robustness gives every cell {trace.samples} samples",
                        notify=False)
        options = {"samples": trace.samples, "seed": trace.seed, "window": trace.window, "kinds": trace.kinds}
        if form.target:
            options["target"] = form.target
        self.app.push_screen(RobustnessScreen(self.engine, form.prompt, form.subject, options=options))

    def action_select_subject_last(self) -> None:
        self.strip.select_subject_last()

    def action_export(self) -> None:
        """ctrl+s: the finished grid of the view on screen (a cancelled re-run keeps the previous one)
        as text, CSV, JSON and, where tracer.render.figures is there, SVG/PDF; the folder and names announced."""
        done = self.finished.get(self.view_mode)
        if done is None:
            self.report(f"nothing to export: no finished {MODES[self.view_mode]} trace yet", "warning")
            return
        grid, result = done
        try:
            folder = self.panel.read().export_dir
        except SettingsError:
            folder = self.export_dir
        view = grid.view(self.view_kind, self.metric, auto=self.auto_scale)
        outcome = exporting.export_all(result, view, folder, self.view_kind, self.metric)
        if outcome.error:
            self.report(f"export failed: {outcome.error}", "error")
            return
        self.last_export = outcome.paths
        for note in outcome.notes:
            self.report(note, "info", notify=False)
        self.report(outcome.announcement, "done")
        self.app.notify(outcome.announcement, timeout=5)

    def action_inspect(self) -> None:
        """F9: the top-5 of the patched run at the cursor's cell (Engine.inspect), shown as a
        notification and a log line."""
        done = self.finished.get(self.view_mode)
        if done is None:
            self.report("nothing to inspect: no finished trace in this view yet", "warning")
            return
        grid, result = done
        row, layer = self.cursor or (-1, -1)
        if not (0 <= row < len(grid.kinds if grid.mode == "positions" else grid.tokens) and 0 <= layer < grid.n_layers):
            self.report("put the cursor on a cell first: click the grid, or focus it (tab) and use the arrow keys",
                        "warning")
            return
        kind, token = (grid.kinds[row], None) if grid.mode == "positions" else (self.view_kind, row)
        where = f"{kind} layer {layer}" + (f" at {grid.tokens[token]!r}" if token is not None else "")

        def done_callback(future) -> None:  # engine thread: post only
            try:
                run = future.result()
            except Exception as exc:
                self.post_message(CellInspected(where, None, user_message(exc)))
                return
            self.post_message(CellInspected(where, run))

        try:
            future = self.engine.inspect(result.request, kind, layer, token=token, k=5)
        except Exception as exc:  # a signature other than the one coded against: say so
            self.report(f"inspect failed: {user_message(exc)}", "error")
            return
        future.add_done_callback(done_callback)
        self.report(f"inspecting {where}…", notify=False)

    def on_cell_inspected(self, message) -> None:
        """Engine.inspect's answer (a CellInspected message) as a log line and a notification."""
        if message.error:
            self.report(f"inspect {message.where}: {message.error}", "error")
        else:
            text = f"top-5 restoring {message.where}: {describe_patched(message.run)}"
            self.report(text, "done")
            self.app.notify(text, timeout=8)
            self.pane.show_readout(text)
