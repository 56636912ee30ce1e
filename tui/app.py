"""The Textual app: the engine's start and stop, model loading, themes, settings kept between
launches, the command palette and help. The trace flow is the TraceScreen's (tui/screens/trace.py);
sweeps are the SweepScreen's. The Engine (its own thread) does every bit of MLX work; its futures'
done-callbacks only post messages. `make_app` builds the app for the command line and for tests.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from tracer.engine import Engine, ModelInfo
from tracer.errors import TracerError, error_location, user_message
from tracer.settings import TraceSettings, settings_given
from tracer.types import AUTO_SAMPLES

from textual.app import App
from textual.binding import Binding

from .commands import TracerCommands
from .config import load_config, save_config, saved_adaptive, saved_settings
from .messages import EngineFailed, EngineReady
from .screens.help import HelpScreen
from .screens.trace import TraceScreen
from .themes import DEFAULT_THEME, load_themes

THEME_CYCLE = ("dark", "light", "high-contrast")
DEFAULT_FACTS = "known_1000"  # the paper's known facts: the copy shipped in tracer/data


class TracerApp(App):
    TITLE = "tracer-tui"
    # toasts at the top right, over the form: never over the grid's cells (its late layers are on the right)
    CSS = """
    ToastRack { align: right top; }
    """
    COMMANDS = App.COMMANDS | {TracerCommands}
    VERTICAL_BREAKPOINTS = [(0, "-short"), (32, "-tall")]
    BINDINGS = [
        Binding("f1", "help", "Help", id="help", key_display="F1", tooltip="Keys and how to read the grid"),
        Binding("ctrl+t", "next_theme", "Theme", id="theme", show=False, tooltip="Next theme"),
    ]

    def __init__(self, engine: Engine | None = None, model_spec: str | None = None, theme: str | None = None,
                 keep_quantized: bool = False, export_dir: str | None = None,
                 settings: TraceSettings | None = None, autorun: bool = False,
                 auto_samples: bool | None = None) -> None:
        super().__init__()
        self.owns_engine = engine is None
        # True where the process ends with os._exit once the app has closed (tui.__main__.leave, as
        # `tracer-tui` does): closing then only tells the engine to stop, without waiting for the
        # forward in hand (up to ~0.8 s for a 200-sample trace), since nothing outlives the process
        self.leaves_at_once = False
        self.engine = engine or Engine(model_spec, keep_quantized=keep_quantized)
        self.model_spec = model_spec if engine is None else engine.model_spec
        self.model_info: ModelInfo | None = None
        self.model_error: str | None = None
        self.autorun = autorun
        self._startup_notes: list[tuple[str, str]] = []
        config = self._setup_themes(theme)
        if settings is None:
            settings, warning = saved_settings(config)
            if warning:
                self._startup_notes.append(("warning", warning))
        saved_dir = config.get("export_dir") if isinstance(config.get("export_dir"), str) else None
        auto, ci_width, warning = saved_adaptive(config)
        if warning:
            self._startup_notes.append(("warning", warning))
        if auto_samples is not None:  # `--samples auto` or `--samples N` given
            auto = auto_samples
        auto = auto and settings.samples == AUTO_SAMPLES  # settings given with other samples: fixed
        self._screen_args = {"settings": settings, "export_dir": export_dir or saved_dir or "exports",
                             "auto_samples": auto, "ci_width": ci_width}
        self.trace_screen: TraceScreen | None = None  # made with the app's context (get_default_screen)

    def get_default_screen(self) -> TraceScreen:
        self.trace_screen = TraceScreen(self.engine, **self._screen_args)
        return self.trace_screen

    def on_mount(self) -> None:
        self.sub_title = f"loading {self.model_spec or 'the embedded SmolLM2-135M'}…"
        for level, text in self._startup_notes:
            self.trace_screen.report(text, level)
        self.watch(self, "theme", self._theme_changed, init=False)  # persist choices from now on
        self.engine.load().add_done_callback(self._on_loaded)

    def _cancel_run(self) -> None:
        run = self.trace_screen.run if self.trace_screen is not None else None
        if run is not None:
            run.cancel.set()

    async def action_quit(self) -> None:
        """Quit: the engine is told to stop first, so it is done by the time the widgets are gone."""
        self._cancel_run()
        self.exit()

    def on_unmount(self) -> None:
        self._cancel_run()
        if self.owns_engine:
            self.engine.close(wait=not self.leaves_at_once, timeout=5.0)

    # ---- model ------------------------------------------------------------------------
    def _on_loaded(self, future) -> None:  # engine thread: post, never wait
        try:
            info = future.result()
        except Exception as exc:  # ModelError and anything else: shown, never raised
            detail = "" if isinstance(exc, TracerError) else error_location(exc)
            self.post_message(EngineFailed(user_message(exc), detail))
            return
        self.post_message(EngineReady(info))

    def on_engine_ready(self, message: EngineReady) -> None:
        info = self.model_info = message.info
        self.sub_title = f"{info.name} · {info.n_layers} layers · BLAS: {info.blas.split(' (')[0]}"
        self.trace_screen.model_ready(info)
        if self.autorun:
            self.call_after_refresh(self.trace_screen.action_run)

    def on_engine_failed(self, message: EngineFailed) -> None:
        self.model_error = message.message
        self.sub_title = "no model loaded"
        self.trace_screen.model_failed(message.message, message.detail)

    # ---- settings and themes ------------------------------------------------------------
    def remember_settings(self, panel) -> None:
        """Keep the settings panel's values for the next launch (a write error is one warning)."""
        try:
            values = panel.read()
        except Exception:  # the run reports a bad field itself
            return
        error = save_config({"trace": values.trace.to_dict(), "export_dir": values.export_dir,
                             "adaptive": panel.adaptive()})
        if error:
            self.trace_screen.report(error, "warning")

    def _setup_themes(self, requested: str | None) -> dict:
        loaded = load_themes()
        for theme in loaded.themes.values():
            self.register_theme(theme)
        self.tracer_theme_names = sorted(
            loaded.themes, key=lambda n: (n not in THEME_CYCLE, THEME_CYCLE.index(n) if n in THEME_CYCLE else 0, n))
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
        return config

    def _theme_changed(self, name: str) -> None:
        error = save_config({"theme": name})
        if error:
            self.trace_screen.report(error, "warning")

    def action_set_theme(self, name: str) -> None:
        if name in self.available_themes:
            self.theme = name
        else:
            self.trace_screen.report(f"unknown theme {name!r}", "warning")

    def action_next_theme(self) -> None:
        names = self.tracer_theme_names or list(self.available_themes)
        i = names.index(self.theme) + 1 if self.theme in names else 0
        self.theme = names[i % len(names)]
        self.notify(f"theme: {self.theme}", timeout=2)

    # ---- other screens ------------------------------------------------------------------
    def open_sweeps(self, settings: TraceSettings, export_dir: str) -> None:
        """The sweep screen, idle, with the trace settings (kinds, samples, noise, window, seed) and
        the results file in the export folder."""
        from tracer.sweeps.results import SweepConfig

        from .screens.sweep import SweepScreen

        if isinstance(self.screen, SweepScreen):
            return
        results = str(Path(export_dir).expanduser() / "results.jsonl")
        self.push_screen(SweepScreen(engine=self.engine, results=results, facts=DEFAULT_FACTS,
                                     config=SweepConfig(**settings.as_kwargs()),
                                     export_dir=export_dir))

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())


def make_app(engine: Engine | None = None, model_spec: str | None = None, theme: str | None = None,
             keep_quantized: bool = False, export_dir: str | None = None, settings: TraceSettings | None = None,
             autorun: bool = False, auto_samples: bool | None = None) -> TracerApp:
    """Build the app; the command line and the tests both come through here.

    Args:
        engine: a running Engine to use (tests share one); None: the app starts and stops its own.
        model_spec: the model for a new engine (None: the embedded SmolLM2-135M).
        theme: a theme name (None: the saved one). export_dir: where ctrl+s writes (None: saved, or ./exports).
        settings: the trace settings (None: the saved ones). autorun: trace the prefilled example once loaded.
        auto_samples: Samples auto (adaptive samples, up to settings.samples = AUTO_SAMPLES); None: as saved.

    Returns:
        The TracerApp, not yet running.
    """
    return TracerApp(engine=engine, model_spec=model_spec, theme=theme, keep_quantized=keep_quantized,
                     export_dir=export_dir, settings=settings, autorun=autorun, auto_samples=auto_samples)


def settings_overrides(args) -> dict:
    """The trace settings given as flags (`tracer-tui --samples 20 --kinds mlp`), by field name, read
    as the CLI reads them (tracer.settings.settings_given); `--samples auto` is the most samples
    (AUTO_SAMPLES) of the app's Samples auto (run_app)."""
    if getattr(args, "samples", None) == "auto":
        return {**settings_given(SimpleNamespace(**{**vars(args), "samples": None})), "samples": AUTO_SAMPLES}
    return settings_given(args)


def run_app(args) -> int:
    """Open the app with the command line's options; the first launch traces the example at once."""
    config, _ = load_config()
    settings, _warning = saved_settings(config, settings_overrides(args))  # the app reports the warning itself
    first_launch = not config.get("launched")
    if first_launch:
        save_config({"launched": True})
    app = make_app(model_spec=getattr(args, "model", None), theme=getattr(args, "theme", None),
                   keep_quantized=bool(getattr(args, "keep_quantized", False)),
                   export_dir=getattr(args, "export_dir", None), settings=settings, autorun=first_launch,
                   auto_samples=None if getattr(args, "samples", None) is None else args.samples == "auto")
    app.leaves_at_once = True  # tui.__main__.main ends the process with leave() after this returns
    app.run()
    return int(app.return_code or 0)
