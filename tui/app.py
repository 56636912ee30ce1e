"""The Textual app. It presents; the Engine (its own thread) does every bit of MLX work.

Workers here only submit to the engine and wait on futures; engine callbacks only post
messages (tui.runner). `make_app` builds the app for the command line and for tests.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import TimeoutError as FutureTimeout

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, Header, TabbedContent, TabPane
from textual.worker import get_current_worker

from tracer.engine import Engine, ModelInfo
from tracer.events import KINDS
from tracer.types import TraceRequest, TraceResult
from tracer.errors import TracerError, error_location, user_message
from tracer.export import escape_controls
from tracer.metrics import VIEW_ORDER

from . import exporting
from .commands import TracerCommands
from .running import RunMixin, while_ui
from .config import load_config, save_config
from .messages import EngineFailed, EngineReady, TokensPreviewed
from .runner import Progress, RunChannel, preview_tokens
from .screens.help import HelpScreen
from .themes import DEFAULT_THEME, load_themes
from .widgets.grid import MODES, GridData, GridPane, GridTable
from .widgets.log import RunLog
from .widgets.prompt_form import PromptForm
from .widgets.run_status import RunStatus
from .widgets.settings import SettingsError, SettingsPanel, ViewBar
from .widgets.token_strip import TokenStrip

METRIC_ORDER = VIEW_ORDER
THEME_CYCLE = ("dark", "light", "high-contrast")


# the paper's known facts: the copy shipped in tracer/data (tracer.facts.resolve_facts)
DEFAULT_FACTS = "known_1000"


class TracerApp(RunMixin, App):
    CSS_PATH = "app.tcss"
    TITLE = "tracer-tui"
    COMMANDS = App.COMMANDS | {TracerCommands}
    VERTICAL_BREAKPOINTS = [(0, "-short"), (32, "-tall")]
    BINDINGS = [
        Binding("ctrl+r", "run", "Run", id="run", tooltip="Trace the prompt for the current view"),
        Binding("escape", "cancel", "Cancel", id="cancel", tooltip="Stop the running trace"),
        Binding("ctrl+s", "export", "Export", id="export", tooltip="Write the grid as .txt, .csv and .json"),
        Binding("ctrl+o", "toggle_view", "View", id="view", tooltip="Chosen positions <-> all tokens"),
        Binding("ctrl+g", "next_kind", "Kind", id="kind", tooltip="Next kind in the all-tokens view"),
        Binding("ctrl+n", "next_metric", "Metric", id="metric", tooltip="Next metric"),
        Binding("ctrl+t", "next_theme", "Theme", id="theme", show=False, tooltip="Next theme"),
        Binding("f1,question_mark", "help", "Help", id="help", key_display="?/f1", tooltip="Keys and how to read the grid"),
        Binding("f2", "show_tab('tab-grid')", "Grid", show=False),
        Binding("f3", "show_tab('tab-table')", "Table", show=False),
        Binding("f4", "show_tab('tab-log')", "Log", show=False),
        Binding("f5", "show_tab('tab-settings')", "Settings", show=False),
        Binding("f6", "sweeps", "Sweeps", id="sweeps", tooltip="Average indirect effect over many facts (open or run a sweep)"),
    ]

    def __init__(self, engine: Engine | None = None, model_spec: str | None = None, theme: str | None = None,
                 keep_quantized: bool = False, export_dir: str = "exports") -> None:
        super().__init__()
        self.owns_engine = engine is None
        self.engine = engine or Engine(model_spec, keep_quantized=keep_quantized)
        self.model_spec = model_spec if engine is None else engine.model_spec
        self.export_dir = export_dir
        self.model_info: ModelInfo | None = None
        self.model_error: str | None = None
        self.run_id = 0
        self.channel: RunChannel | None = None
        self.cancel_event: threading.Event | None = None
        self.running_mode: str | None = None
        self.progress = Progress()
        self.grids: dict[str, GridData | None] = {m: None for m in MODES}
        self.results: dict[str, TraceResult | None] = {m: None for m in MODES}
        self.view_mode, self.view_kind, self.metric = "positions", "mlp", "recovery"
        self.last_export: dict[str, str] | None = None
        self.last_request: TraceRequest | None = None
        self._dirty = False
        self._startup_notes: list[tuple[str, str]] = []
        self._setup_themes(theme)

    # ---- layout ---------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Header()
        yield PromptForm(id="form")
        yield TokenStrip(id="strip")
        yield ViewBar(id="viewbar")
        yield RunStatus(id="status")
        with TabbedContent(id="tabs"):
            with TabPane("Grid", id="tab-grid"):
                yield GridPane(id="grid")
            with TabPane("Table", id="tab-table"):
                yield GridTable(id="table")
            with TabPane("Log", id="tab-log"):
                yield RunLog(id="log")
            with TabPane("Settings", id="tab-settings"):
                yield SettingsPanel(export_dir=self.export_dir, id="settings")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.sub_title = f"loading {self.model_spec or 'the embedded SmolLM2-135M'}…"
        self.query_one(GridPane).loading = True
        self.query_one(TokenStrip).show_note("(loading the model…)")
        self.query_one(RunStatus).idle("loading the model…")
        for level, text in self._startup_notes:
            self.report(text, level)
        self.watch(self, "theme", self._theme_changed, init=False)  # persist choices from now on
        self.set_interval(0.2, self._tick)
        self.query_one("#prompt").focus()
        self._load_model()

    def on_unmount(self) -> None:
        if self.cancel_event is not None:
            self.cancel_event.set()
        if self.owns_engine:
            self.engine.close()

    # ---- reporting ------------------------------------------------------------------
    def report(self, text: str, level: str = "info", notify: bool = True) -> None:
        """A log line, and for warnings/errors a notification too. Never raises. Control
        characters (a token's ESC or CR, a path's) are escaped (tracer.export.escape_controls)."""
        text = escape_controls(text, keep_newlines=True)
        try:
            self.query_one(RunLog).line(text, level)
        except Exception:  # before compose: keep it for on_mount
            self._startup_notes.append((level, text))
            return
        if notify and level in ("warning", "error"):
            self.notify(text, severity=level, timeout=8 if level == "error" else 5)
        elif notify and level == "done":
            self.notify(text, timeout=4)

    # ---- themes -----------------------------------------------------------------------
    def _setup_themes(self, requested: str | None) -> None:
        loaded = load_themes()
        for theme in loaded.themes.values():
            self.register_theme(theme)
        self.tracer_theme_names = sorted(loaded.themes, key=lambda n: (n not in THEME_CYCLE, THEME_CYCLE.index(n) if n in THEME_CYCLE else 0, n))
        for error in loaded.errors:
            self._startup_notes.append(("error", error))
        config, error = load_config()
        if error:
            self._startup_notes.append(("warning", error))
        name = requested or config.get("theme") or DEFAULT_THEME
        if name not in self.available_themes:
            self._startup_notes.append(("warning", f"unknown theme {name!r}; themes: {', '.join(self.tracer_theme_names)}"))
            name = DEFAULT_THEME if DEFAULT_THEME in self.available_themes else "textual-dark"
        self.theme = name

    def _theme_changed(self, name: str) -> None:
        error = save_config({"theme": name})
        if error:
            self.report(error, "warning")

    def action_set_theme(self, name: str) -> None:
        if name in self.available_themes:
            self.theme = name
        else:
            self.report(f"unknown theme {name!r}", "warning")

    def action_next_theme(self) -> None:
        names = self.tracer_theme_names or list(self.available_themes)
        i = names.index(self.theme) + 1 if self.theme in names else 0
        self.theme = names[i % len(names)]
        self.notify(f"theme: {self.theme}", timeout=2)

    # ---- model ------------------------------------------------------------------------
    @work(thread=True, group="load", exit_on_error=False)
    def _load_model(self) -> None:
        worker = get_current_worker()
        future = self.engine.load()
        while not worker.is_cancelled:
            try:
                info = future.result(timeout=0.2)
            except FutureTimeout:
                continue
            except Exception as exc:  # ModelError and anything else: shown, never raised
                detail = "" if isinstance(exc, TracerError) else error_location(exc)
                self.post_message(EngineFailed(user_message(exc), detail))
                return
            self.post_message(EngineReady(info))
            return

    @while_ui
    def on_engine_ready(self, message: EngineReady) -> None:
        info = self.model_info = message.info
        self.sub_title = f"{info.name} · {info.n_layers} layers · BLAS: {info.blas.split(' (')[0]}"
        self.query_one(GridPane).loading = False
        self.query_one(RunStatus).idle(f"ready: {info.name}, {info.n_layers} layers. Press enter or ctrl+r to trace.")
        self.report(f"model: {info.summary}; BLAS: {info.blas}; device {info.device}")
        if not info.blas_fast:
            self.report(f"no fast BLAS: tracing will be slow ({info.blas})", "warning")
        self._request_preview()

    @while_ui
    def on_engine_failed(self, message: EngineFailed) -> None:
        self.model_error = message.message
        self.sub_title = "no model loaded"
        self.query_one(GridPane).loading = False
        self.query_one(RunStatus).idle(f"model failed to load: {message.message}", error=True)
        self.query_one(TokenStrip).show_note("(no model)")
        self.report(f"model failed to load: {message.message}", "error")
        if message.detail:
            self.report(f"  {message.detail} (please report this bug)", "error", notify=False)

    # ---- token strip preview ----------------------------------------------------------
    @on(PromptForm.Changed)
    def _form_changed(self) -> None:
        if hasattr(self, "_preview_timer"):
            self._preview_timer.stop()
        self._preview_timer = self.set_timer(0.25, self._request_preview)

    @while_ui
    def _request_preview(self) -> None:
        if self.model_info is None:
            return
        values = self.query_one(PromptForm).values()
        # tokenizing needs no MLX (Engine.tokenize is thread-safe), so the strip follows typing even mid-run
        self.post_message(preview_tokens(self.engine, values.prompt, values.subject))

    @while_ui
    def on_tokens_previewed(self, message: TokensPreviewed) -> None:
        values = self.query_one(PromptForm).values()
        if (message.prompt, message.subject) != (values.prompt, values.subject):
            return  # stale: the user kept typing
        strip = self.query_one(TokenStrip)
        strip.set_tokens(message.tokens, message.subject_range, source=(message.prompt, message.subject),
                         note=message.error or "")

    def action_select_subject_last(self) -> None:
        strip = self.query_one(TokenStrip)
        if strip.subject_range:
            strip.selected = frozenset({strip.subject_range[1] - 1})

    def on_prompt_form_submitted(self, message: PromptForm.Submitted) -> None:
        self.action_run()

    # ---- views ------------------------------------------------------------------------
    @while_ui
    def _tick(self) -> None:
        if self.trace_active and self.progress.total:
            self.query_one(RunStatus).running(self.progress)
        if self._dirty:
            self._show_view()

    def _show_view(self) -> None:
        self._dirty = False
        grid = self.grids.get(self.view_mode)
        view = grid.view(self.view_kind, self.metric) if grid else None
        hint = None
        if view is None:
            hint = f"No trace in the {MODES[self.view_mode]} view yet: press ctrl+r (or enter in the prompt) to run."
        with self.batch_update():
            self.query_one(GridPane).show(view, hint)
            self.query_one(GridTable).show(view)

    def set_view(self, mode: str | None = None, kind: str | None = None, metric: str | None = None) -> None:
        """Change what the grid shows, at once (keys pressed right after run with it)."""
        self.view_mode = mode or self.view_mode
        self.view_kind = kind or self.view_kind
        self.metric = metric or self.metric
        self.query_one(ViewBar).set_state(self.view_mode, self.view_kind, self.metric)
        self._show_view()

    @on(ViewBar.Changed)
    def _view_changed(self, message: ViewBar.Changed) -> None:
        if (message.mode, message.kind, message.metric) != (self.view_mode, self.view_kind, self.metric):
            self.set_view(message.mode, message.kind, message.metric)

    def action_toggle_view(self) -> None:
        self.set_view(mode="all" if self.view_mode == "positions" else "positions")

    def action_next_kind(self) -> None:
        grid = self.grids.get("all")
        kinds = grid.kinds if grid else KINDS
        nxt = kinds[(kinds.index(self.view_kind) + 1) % len(kinds)] if self.view_kind in kinds else kinds[0]
        self.set_view(kind=nxt)
        if self.view_mode != "all":
            self.notify(f"kind {nxt} (shown in the all-tokens view: ctrl+o)", timeout=3)

    def action_next_metric(self) -> None:
        self.set_view(metric=METRIC_ORDER[(METRIC_ORDER.index(self.metric) + 1) % len(METRIC_ORDER)])

    def action_show_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab

    def action_sweeps(self) -> None:
        """The sweep screen, with the settings pane's kinds/samples/noise/window/seed."""
        from tracer.sweeps import SweepConfig

        from .widgets.sweep_view import SweepScreen

        if isinstance(self.screen, SweepScreen):
            return
        try:
            config = SweepConfig(**self.query_one(SettingsPanel).read().trace.as_kwargs())
        except SettingsError as exc:
            self.report(f"settings: {exc}", "error")
            return
        self.push_screen(SweepScreen(engine=self.engine, results="results.jsonl", facts=DEFAULT_FACTS, config=config))

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    # ---- export -----------------------------------------------------------------------
    def action_export(self) -> None:
        result = self.results.get(self.view_mode)
        if result is None:
            self.report(f"nothing to export: no finished {MODES[self.view_mode]} trace yet", "warning")
            return
        try:
            folder = self.query_one(SettingsPanel).read().export_dir
        except SettingsError:
            folder = self.export_dir
        view = self.grids[self.view_mode].view(self.view_kind, self.metric)  # type: ignore[union-attr]
        try:
            paths = exporting.write_exports(result, view, folder, stamp=time.strftime("%Y%m%d-%H%M%S"))
        except OSError as exc:
            self.report(f"export failed: {exc}", "error")
            return
        self.last_export = paths
        self.report(f"exported {paths['txt']} (+ .csv, .json)", "done")


def make_app(engine: Engine | None = None, model_spec: str | None = None, theme: str | None = None,
             keep_quantized: bool = False, export_dir: str = "exports") -> TracerApp:
    """Build the app; the command line and the tests both come through here."""
    return TracerApp(engine=engine, model_spec=model_spec, theme=theme, keep_quantized=keep_quantized,
                     export_dir=export_dir)


def run_app(args) -> int:
    app = make_app(model_spec=getattr(args, "model", None), theme=getattr(args, "theme", None),
                   keep_quantized=bool(getattr(args, "keep_quantized", False)),
                   export_dir=getattr(args, "export_dir", None) or "exports")
    app.run()
    return int(app.return_code or 0)
