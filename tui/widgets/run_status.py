"""One line under the token strip: progress bar, cells done, cells/s and ETA, or the state."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import ProgressBar, Static

from ..gridmodel import Progress, format_seconds


class RunStatus(Horizontal):
    DEFAULT_CSS = """
    RunStatus { height: 1; padding: 0 1; }
    RunStatus ProgressBar { width: 24; }
    RunStatus ProgressBar Bar { width: 16; }
    RunStatus #status-text { width: 1fr; padding-left: 1; }
    RunStatus.-idle ProgressBar { display: none; }
    RunStatus.-idle #status-text { padding-left: 0; }
    RunStatus.-error #status-text { color: $error; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.bar = ProgressBar(total=None, show_eta=False, id="progress")
        self.status_text = Static("", id="status-text")
        self.plain = ""  # the text shown, for tests

    def compose(self) -> ComposeResult:
        yield self.bar
        yield self.status_text

    def _say(self, text: str) -> None:
        self.plain = text
        self.status_text.update(text)

    def on_mount(self) -> None:
        self.add_class("-idle")

    def idle(self, text: str, error: bool = False) -> None:
        self.add_class("-idle")
        self.set_class(error, "-error")
        self._say(text)

    def running(self, progress: Progress, note: str = "") -> None:
        self.remove_class("-idle", "-error")
        bar = self.bar
        if progress.total:
            bar.update(total=progress.total, progress=progress.done)
        rate = progress.rate
        parts = [f"{progress.done}/{progress.total or '?'} cells"]
        parts.append(f"{rate:.1f} cells/s" if rate else "– cells/s")
        parts.append(f"ETA {format_seconds(progress.eta)}")
        parts.append(f"{format_seconds(progress.elapsed)} elapsed")
        if note:
            parts.append(note)
        self._say(" · ".join(parts))
