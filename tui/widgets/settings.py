"""Trace settings (kinds, samples, noise rule, window, seed, replace, sever, export folder) and the view bar
(which grid is shown: chosen positions or all tokens, which kind, which metric)."""

from __future__ import annotations

from dataclasses import dataclass, fields

from tracer.errors import InputError
from tracer.metrics import METRIC_LABELS, VIEW_ORDER
from tracer.settings import KINDS, SEVERABLE, TraceSettings
from tracer.types import AUTO_CI_WIDTH, AUTO_SAMPLES, valid_ci_width

from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import Checkbox, Input, Label, Select, Static

METRIC_CHOICES = [(METRIC_LABELS[name], name) for name in VIEW_ORDER]
MODE_CHOICES = [("all tokens", "all"), ("chosen positions", "positions")]
KIND_CHOICES = [(k, k) for k in KINDS]


@dataclass
class PanelSettings:
    trace: TraceSettings  # validated by the engine's one settings record
    export_dir: str
    ci_width: float | None = None  # Samples auto: each cell run to this 95% interval width (trace.samples the most)


SAMPLES_TYPED = r"\d*|a(u(t(o)?)?)?"  # what the Samples field takes as it is typed: a whole number or "auto"


class SettingsError(ValueError):
    """A setting the user typed is unusable; the message says which and why."""


_FIELDS = {f.name: f for f in fields(TraceSettings)}
_DEFAULT = TraceSettings()


def _help(name: str) -> str:
    return _FIELDS[name].metadata["help"]


class SettingsPanel(VerticalScroll):
    """The trace settings' fields (defaults and help from tracer.settings.TraceSettings) and the
    export folder."""

    DEFAULT_CSS = """
    SettingsPanel { padding: 0 1; }
    SettingsPanel > Horizontal { height: auto; margin-bottom: 1; }
    SettingsPanel Label { width: 14; color: $text-muted; }
    SettingsPanel Input { width: 12; }
    SettingsPanel #export-dir { width: 1fr; }
    SettingsPanel Checkbox { margin-right: 2; }
    SettingsPanel .hint { color: $text-muted; padding-left: 2; width: 1fr; }
    """

    def __init__(self, settings: TraceSettings | None = None, *, export_dir: str = "exports",
                 auto_samples: bool = False, ci_width: float = AUTO_CI_WIDTH, id: str | None = None) -> None:
        super().__init__(id=id)
        self._initial = settings or _DEFAULT
        self._export_dir = export_dir
        self._auto = (auto_samples, ci_width)

    def compose(self) -> ComposeResult:
        start = self._initial
        with Horizontal():
            yield Label("Kinds")
            for kind in KINDS:
                yield Checkbox(kind, kind in start.kinds, id=f"kind-{kind}", compact=True)
        yield from self._samples_rows()
        for name, label, kind in (("noise", "Noise rule", "text"), ("window", "Window", "integer"),
                                  ("seed", "Seed", "integer")):
            with Horizontal():
                yield Label(label)
                yield Input(str(getattr(start, name)), type=kind, id=name, compact=True, tooltip=_help(name))
                yield Static(_help(name), classes="hint")
        with Horizontal():
            yield Label("Corruption")
            yield Checkbox("replace", start.replace, id="replace", compact=True, tooltip=_help("replace"))
            yield Static(_help("replace"), classes="hint")
        with Horizontal():
            yield Label("Sever")
            for kind in SEVERABLE:
                yield Checkbox(kind, kind in start.sever, id=f"sever-{kind}", compact=True)
            yield Static(_help("sever"), classes="hint")
        with Horizontal():
            yield Label("Export folder")
            yield Input(self._export_dir, id="export-dir", compact=True, tooltip="where ctrl+s writes .txt/.csv/.json")

    def _samples_rows(self) -> ComposeResult:
        """Samples (a whole number, or auto: adaptive samples) and the CI width auto runs cells to."""
        auto, width = self._auto
        samples_help = (f"{_help('samples')}, or auto: 3, 6, 12, … up to {AUTO_SAMPLES} per cell, until its "
                        "95% interval of P is the CI width")
        with Horizontal():
            yield Label("Samples")
            yield Input("auto" if auto else str(self._initial.samples), restrict=SAMPLES_TYPED, id="samples",
                        compact=True, tooltip=samples_help)
            yield Static(samples_help, classes="hint")
        with Horizontal():
            yield Label("CI width")
            width_help = ("Samples auto: the width of each cell's 95% interval of P it is run to, between 0 and 1 "
                          f"(default {AUTO_CI_WIDTH}); ctrl+f stops refining")
            yield Input(f"{width:g}", type="number", id="ci-width", compact=True, disabled=not auto,
                        tooltip=width_help)
            yield Static(width_help, classes="hint")

    class Changed(Message):
        """A field changed (the app keeps valid settings for the next launch)."""

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        if event.input.id == "samples":  # the CI width counts only for auto
            self.query_one("#ci-width", Input).disabled = not self.auto_samples()
        self.post_message(self.Changed())

    def auto_samples(self) -> bool:
        """Samples says auto (adaptive samples)."""
        return self.query_one("#samples", Input).value.strip().lower() == "auto"

    def ci_width(self) -> float:
        """The CI width field's value; SettingsError unless a number between 0 and 1."""
        text = self.query_one("#ci-width", Input).value.strip()
        try:
            width = float(text)
        except ValueError:
            width = None
        if not valid_ci_width(width):
            raise SettingsError(f"CI width: {text!r:.20} is not a number between 0 and 1 (e.g. {AUTO_CI_WIDTH})")
        return width

    def adaptive(self) -> dict:
        """What the config keeps of adaptive samples: {"auto": bool, "ci_width": the field's width, or the
        default while it does not read as one}."""
        try:
            width = self.ci_width()
        except SettingsError:
            width = AUTO_CI_WIDTH
        return {"auto": self.auto_samples(), "ci_width": width}

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        event.stop()
        self.post_message(self.Changed())

    def read(self) -> PanelSettings:
        """The settings, checked; raises SettingsError naming the bad field."""
        values = {
            "kinds": tuple(k for k in KINDS if self.query_one(f"#kind-{k}", Checkbox).value),
            "noise": self.query_one("#noise", Input).value,
            "replace": self.query_one("#replace", Checkbox).value,
            "sever": tuple(k for k in SEVERABLE if self.query_one(f"#sever-{k}", Checkbox).value),
        }
        auto = self.auto_samples()
        for name in ("window", "seed") if auto else ("samples", "window", "seed"):
            text = self.query_one(f"#{name}", Input).value.strip()
            try:
                values[name] = int(text)
            except ValueError:
                also = " or auto" if name == "samples" else ""
                raise SettingsError(f"{name}: {text!r} is not a whole number{also}") from None
        if auto:
            values["samples"] = AUTO_SAMPLES
        ci_width = self.ci_width() if auto else None
        try:
            trace = TraceSettings(**values)
        except InputError as exc:
            raise SettingsError(str(exc)) from None
        export_dir = self.query_one("#export-dir", Input).value.strip() or "exports"
        return PanelSettings(trace, export_dir, ci_width)

    def kinds(self) -> tuple[str, ...]:
        """The kinds checked now (all kinds when none is)."""
        return tuple(k for k in KINDS if self.query_one(f"#kind-{k}", Checkbox).value) or KINDS

    def set_value(self, field: str, value) -> None:
        widget = self.query_one(f"#{field}")
        widget.value = value


class ViewBar(Horizontal):
    """One line: view (chosen positions / all tokens), kind (all-tokens view), metric."""

    DEFAULT_CSS = """
    ViewBar { height: 1; padding: 0 1; }
    ViewBar Label { padding: 0 1 0 0; color: $text-muted; }
    ViewBar Select { margin-right: 2; }
    ViewBar #view-mode { width: 22; }
    ViewBar #view-kind { width: 12; }
    ViewBar #view-metric { width: 22; }
    """

    @dataclass
    class Changed(Message):
        bar: "ViewBar"
        mode: str
        kind: str
        metric: str

    def __init__(self, mode: str = "all", kind: str = "hidden", metric: str = "recovery", *,
                 id: str | None = None) -> None:
        super().__init__(id=id)
        self._initial = (mode, kind, metric)

    def compose(self) -> ComposeResult:
        mode, kind, metric = self._initial
        yield Label("View")
        yield Select(MODE_CHOICES, value=mode, allow_blank=False, id="view-mode", compact=True)
        yield Label("Kind")
        yield Select(KIND_CHOICES, value=kind, allow_blank=False, id="view-kind", compact=True)
        yield Label("Metric")
        yield Select(METRIC_CHOICES, value=metric, allow_blank=False, id="view-metric", compact=True)

    def state(self) -> tuple[str, str, str]:
        return tuple(self.query_one(f"#view-{n}", Select).value for n in ("mode", "kind", "metric"))  # type: ignore[return-value]

    def set_state(self, mode: str | None = None, kind: str | None = None, metric: str | None = None) -> None:
        for name, value in (("mode", mode), ("kind", kind), ("metric", metric)):
            if value is not None:
                self.query_one(f"#view-{name}", Select).value = value

    def on_select_changed(self, event: Select.Changed) -> None:
        event.stop()
        mode, kind, metric = self.state()
        self.post_message(self.Changed(self, mode, kind, metric))
