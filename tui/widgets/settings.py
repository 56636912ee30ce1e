"""Trace settings (kinds, samples, noise k, window, seed, export folder) and the view bar
(which grid is shown: chosen positions or all tokens, which kind, which metric)."""

from __future__ import annotations

from dataclasses import dataclass

from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import Checkbox, Input, Label, Select, Static

from tracer.events import KINDS

METRIC_CHOICES = [("recovery %", "recovery"), ("probability", "prob"), ("logit difference", "logit_diff")]
MODE_CHOICES = [("chosen positions", "positions"), ("all tokens", "all")]
KIND_CHOICES = [(k, k) for k in KINDS]


@dataclass
class TraceSettings:
    kinds: tuple[str, ...]
    samples: int
    noise: float
    window: int
    seed: int
    export_dir: str


class SettingsError(ValueError):
    """A setting the user typed is unusable; the message says which and why."""


class SettingsPanel(VerticalScroll):
    DEFAULT_CSS = """
    SettingsPanel { padding: 0 1; }
    SettingsPanel > Horizontal { height: auto; margin-bottom: 1; }
    SettingsPanel Label { width: 14; color: $text-muted; }
    SettingsPanel Input { width: 12; }
    SettingsPanel #export-dir { width: 1fr; }
    SettingsPanel Checkbox { margin-right: 2; }
    SettingsPanel .hint { color: $text-muted; padding-left: 2; width: 1fr; }
    """

    def __init__(self, *, export_dir: str = "exports", id: str | None = None) -> None:
        super().__init__(id=id)
        self._export_dir = export_dir

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield Label("Kinds")
            for kind in KINDS:
                yield Checkbox(kind, True, id=f"kind-{kind}", compact=True)
        with Horizontal():
            yield Label("Samples")
            yield Input("10", type="integer", id="samples", compact=True, tooltip="noise draws averaged per cell")
            yield Static("noise draws per cell (noise mode)", classes="hint")
        with Horizontal():
            yield Label("Noise k")
            yield Input("3.0", type="number", id="noise", compact=True, tooltip="noise std = k x embedding std")
            yield Static("noise std = k × std of the embeddings", classes="hint")
        with Horizontal():
            yield Label("Window")
            yield Input("10", type="integer", id="window", compact=True, tooltip="layers restored around each mlp/attn cell")
            yield Static("layers restored around each mlp/attn cell", classes="hint")
        with Horizontal():
            yield Label("Seed")
            yield Input("0", type="integer", id="seed", compact=True)
            yield Static("noise seed (same draws for every cell)", classes="hint")
        with Horizontal():
            yield Label("Export folder")
            yield Input(self._export_dir, id="export-dir", compact=True, tooltip="where ctrl+s writes .txt/.csv/.json")

    def read(self) -> TraceSettings:
        """The settings, checked; raises SettingsError naming the bad field."""
        kinds = tuple(k for k in KINDS if self.query_one(f"#kind-{k}", Checkbox).value)
        if not kinds:
            raise SettingsError("choose at least one kind (hidden, mlp, attn) in Settings")
        samples = self._number("samples", int, 1)
        noise = self._number("noise", float, 0.0)
        window = self._number("window", int, 1)
        seed = self._number("seed", int, None)
        export_dir = self.query_one("#export-dir", Input).value.strip() or "exports"
        return TraceSettings(kinds, samples, noise, window, seed, export_dir)

    def _number(self, field: str, kind, minimum):
        text = self.query_one(f"#{field}", Input).value.strip()
        try:
            value = kind(text)
        except ValueError:
            raise SettingsError(f"{field}: {text!r} is not {'a whole number' if kind is int else 'a number'}") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise SettingsError(f"{field}: {text!r} is not a finite number")
        if minimum is not None and value < minimum:
            raise SettingsError(f"{field} must be at least {minimum} (got {text})")
        return value

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

    def compose(self) -> ComposeResult:
        yield Label("View")
        yield Select(MODE_CHOICES, value="positions", allow_blank=False, id="view-mode", compact=True)
        yield Label("Kind")
        yield Select(KIND_CHOICES, value="mlp", allow_blank=False, id="view-kind", compact=True)
        yield Label("Metric")
        yield Select(METRIC_CHOICES, value="recovery", allow_blank=False, id="view-metric", compact=True)

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
