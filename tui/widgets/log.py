"""The run log: settings, predictions, warnings, errors and timings of every run."""

from __future__ import annotations

import time

from tracer.render.tokens import escape_controls
from tracer.render.trace_text import estimate_error_lines
from tracer.types import TraceRequest, TraceResult

from rich.text import Text
from textual.widgets import RichLog

LEVEL_STYLES = {"info": "", "warning": "bold yellow", "error": "bold red", "done": "bold green"}


class RunLog(RichLog):
    DEFAULT_CSS = """
    RunLog { height: 1fr; padding: 0 1; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, wrap=True, markup=False, highlight=False, max_lines=5000, min_width=20)
        self.lines_text: list[str] = []  # plain copies, for tests and export
        self._written: list[Text] = []  # what was written, to wrap again at a new width
        self._wrapped_at = 0

    def line(self, text: str, level: str = "info") -> None:
        text = escape_controls(text, keep_newlines=True)  # a token's ESC or CR never reaches the terminal raw
        stamp = time.strftime("%H:%M:%S")
        label = "" if level in ("info", "done") else f"{level}: "
        self.lines_text.append(f"{stamp} {label}{text}")
        out = Text(f"{stamp} ", style="dim")
        out.append(f"{label}{text}", style=LEVEL_STYLES.get(level, ""))
        self._written = (self._written + [out])[-5000:]
        self.write(out, expand=True)  # wrap at the pane's width, not the console's measure (80 headless)

    def on_resize(self, event) -> None:
        """RichLog wraps a line once, at the width it had then (78 columns while its tab was hidden):
        wrap everything again when the width changes."""
        first = not self._size_known
        super().on_resize(event)  # the first known size renders the deferred writes
        width = self.scrollable_content_region.width
        if first:
            self._wrapped_at = width
        elif width and width != self._wrapped_at:
            self._wrapped_at = width
            self.clear()
            for line in self._written:
                self.write(line, expand=True)

    def settings(self, run_id: int, req: TraceRequest, mode: str) -> None:
        corruption = (f"substitution with {req.corrupted_prompt!r}" if req.corrupted_prompt is not None
                      else f"noise {req.noise}{' replacing' if req.replace else ''}, {_samples(req)}, seed {req.seed}")
        where = "all tokens" if req.positions == "all" else f"positions {list(req.positions) if not isinstance(req.positions, str) else req.positions}"
        self.line(f"run {run_id}: prompt {req.prompt!r}, subject {req.subject!r}, target {req.target or '(clean top)'!r}")
        severed = f"; severed {', '.join(req.sever)}" if req.sever else ""
        self.line(f"  {corruption}; kinds {', '.join(req.kinds)}{severed}; window {req.window}; {where} ({mode} view)")

    def result(self, res: TraceResult) -> None:
        def top(preds):
            return ", ".join(f"{p.text!r} {p.prob:.3f}" for p in preds)

        if res.corruption == "noise":
            self.line(f"  noise {res.request.noise_rule.describe(res.noise_std)}")
        self.line(f"  clean top-{len(res.clean_top)}: {top(res.clean_top)}")
        self.line(f"  corrupted top-{len(res.corrupted_top)}: {top(res.corrupted_top)}")
        for line in estimate_error_lines(res):  # a progressive trace: how good its estimate was (ctrl+y: per cell)
            self.line(f"  {line}")
        self.line(f"  finished in {res.seconds:.2f} s", "done")


def _samples(req: TraceRequest) -> str:
    """A noise run's samples in words: "10 samples", or adaptive samples' most and target width."""
    if req.ci_width is None:
        return f"{req.samples} samples"
    return f"samples auto (up to {req.samples} per cell, to a 95% interval {req.ci_width:g} wide)"
