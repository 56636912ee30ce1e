"""Beside the grid: what a researcher checks before trusting it (issues 16.3, 13.1, 15.1, 15.5).

The target, p_clean and p_corrupted, the clean and corrupted top-3, the corruption (the noise
rule with its absolute std, or the substituted prompt), the per-kind summary (peak and
top layers), and the trace's warnings as a badge (count + codes; click it, or F8,
for the messages)."""

from __future__ import annotations

from dataclasses import dataclass

from tracer.analyses.summary import summarize
from tracer.render.tokens import show_token

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widgets import Static


def warning_code(w) -> str:
    """A warning's stable code (tracer.guards.TraceWarning), "note" for a plain string."""
    return getattr(w, "code", "note")


def summary_lines(result) -> list[str]:
    """Per kind: the subject site and the late site (token, layer, value; tracer.analyses.summary.summarize,
    the CLI's summary: trivial cells and cells within noise are never sites)."""
    summary = summarize(result, top=3)
    lines = []

    def site(peak) -> str:
        if not peak:
            return "none above the noise"
        value = peak.get("value")
        return f"{show_token(peak.get('text', ''))[:12]} L{peak.get('layer')} {'' if value is None else f'{value:.3g}'}"

    for kind, s in summary.get("grids", {}).items():
        lines.append(f"{kind}: subject {site(s.get('subject_site'))}")
        lines.append(f"  late {site(s.get('late_site'))}")
    return lines


class WarningBadge(Static):
    """"⚠ 2: small-total-effect, weak-target" — hidden when the trace has no warnings."""

    DEFAULT_CSS = """
    WarningBadge { height: auto; background: $warning 30%; color: $text; text-style: bold; padding: 0 1; }
    WarningBadge.-none { display: none; }
    """

    @dataclass
    class Pressed(Message):
        """The badge was clicked: show the messages."""

        badge: "WarningBadge"

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id, classes="-none")
        self.warnings: list = []

    def set_warnings(self, warnings: list) -> None:
        self.warnings = list(warnings)
        self.set_class(not self.warnings, "-none")
        codes = ", ".join(dict.fromkeys(warning_code(w) for w in self.warnings))
        self.update(f"⚠ {len(self.warnings)} warning{'s' if len(self.warnings) != 1 else ''}: {codes} (F8)")
        self.tooltip = "\n".join(str(w) for w in self.warnings) or None

    def on_click(self) -> None:
        self.post_message(self.Pressed(self))


class TraceFacts(VerticalScroll):
    """The panel beside the grid."""

    DEFAULT_CSS = """
    TraceFacts { width: 38; height: 1fr; padding: 0 1; border-left: solid $panel; }
    TraceFacts > #facts-text { height: auto; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.badge = WarningBadge(id="badge")
        self.body = Static("", id="facts-text")
        self.plain = ""  # the text shown, for tests and export

    def compose(self) -> ComposeResult:
        yield self.badge
        yield self.body

    def _show(self, lines: list[tuple[str, str]]) -> None:
        text = Text()
        for i, (line, style) in enumerate(lines):
            text.append(("\n" if i else "") + line, style=style)
        self.plain = text.plain
        self.body.update(text)

    def clear(self, note: str = "") -> None:
        self.badge.set_warnings([])
        self._show([(note, "italic")] if note else [])

    def show_started(self, event, request) -> None:
        """While the cells run: the target and both probabilities (the top-k come with the result)."""
        self._show(self._head(event.target_text, event.clean_prob, event.corrupted_prob) + [
            ("", ""), (self._corruption(request, None), "")])

    def show_result(self, result) -> None:
        lines = self._head(result.target_text, result.clean_prob, result.corrupted_prob)
        if not getattr(result, "recovery_available", True):
            lines.append(("recovery %: n/a (total effect below 0.05)", "italic"))
        lines.append(("", ""))
        for title, preds in (("clean top-3", result.clean_top), ("corrupted top-3", result.corrupted_top)):
            lines.append((title, "bold"))
            lines += [(f"  {show_token(p.text):<14} {p.prob:.3f}", "") for p in preds[:3]]
        lines += [("", ""), (self._corruption(result.request, result), "")]
        summary = summary_lines(result)
        if summary:
            lines += [("", ""), ("summary", "bold")] + [(f"  {s}", "") for s in summary]
        self._show(lines)
        self.badge.set_warnings(result.warnings)

    def show_warnings(self, warnings: list) -> None:
        self.badge.set_warnings(warnings)

    @staticmethod
    def _head(target: str, p_clean: float, p_corrupted: float) -> list[tuple[str, str]]:
        return [(f"target {show_token(target)}", "bold"),
                (f"p_clean     {p_clean:.4f}", ""),
                (f"p_corrupted {p_corrupted:.4f}", ""),
                (f"effect      {p_clean - p_corrupted:+.4f}", "dim")]

    @staticmethod
    def _corruption(request, result) -> str:
        if request.corrupted_prompt is not None:
            return f"substitution: {request.corrupted_prompt!r}"
        rule = request.noise_rule
        std = f"{rule.describe(result.noise_std)}" if result is not None else f"{rule.text} (std when it starts)"
        return f"noise {std}; {request.samples} samples, seed {request.seed}"
