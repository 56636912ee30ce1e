"""The bridge between the engine thread and the app: plain Python, no MLX, no widgets.

`RunChannel.on_event` runs on the engine thread. It never waits for the UI: CellsDone
events go into a thread-safe deque and a coalescing `CellsArrived` marker is posted;
every other event is posted as a `RunEvent`. `App.post_message` is thread-safe.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from tracer.errors import user_message
from tracer.events import Cancelled, CellsDone, Failed, Finished, TraceEvent

from .messages import CellsArrived, RunEvent, TokensPreviewed


class RunChannel:
    """One run's events, from the engine thread to the app."""

    def __init__(self, app, run_id: int):
        self.app = app
        self.run_id = run_id
        self.cells: deque[CellsDone] = deque()
        self.finished = False  # a Finished/Failed/Cancelled event was posted
        self.started_at = time.monotonic()

    def on_event(self, event: TraceEvent) -> None:  # engine thread
        if isinstance(event, CellsDone):
            self.cells.append(event)
            self.app.post_message(CellsArrived(self.run_id))
            return
        if isinstance(event, (Finished, Failed, Cancelled)):
            self.finished = True
        self.app.post_message(RunEvent(self.run_id, event))

    def drain(self) -> list[CellsDone]:  # UI thread
        out = []
        while True:
            try:
                out.append(self.cells.popleft())
            except IndexError:
                return out


@dataclass
class Progress:
    """Cells done, rate and ETA of the running trace, measured on the UI side."""

    done: int = 0
    total: int = 0
    started: float = field(default_factory=time.monotonic)
    first_cell_at: float | None = None
    first_done: int = 0

    def update(self, done: int, total: int) -> None:
        if self.first_cell_at is None and done > 0:
            self.first_cell_at, self.first_done = time.monotonic(), done
        self.done, self.total = done, total

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def rate(self) -> float | None:
        """Cells per second since the first batch (the clean/corrupted runs come before it)."""
        if self.first_cell_at is None:
            return None
        span = time.monotonic() - self.first_cell_at
        counted = self.done - self.first_done
        if span < 0.05 or counted <= 0:
            return None
        return counted / span

    @property
    def eta(self) -> float | None:
        rate = self.rate
        if not rate or self.total <= 0:
            return None
        return max(0.0, (self.total - self.done) / rate)


def preview_tokens(engine, prompt: str, subject: str) -> TokensPreviewed:
    """Tokenize for the token strip, on any thread (Engine.tokenize uses no MLX).
    Bad input comes back as `error`."""
    try:
        tokens, _ = engine.tokenize(prompt)
    except Exception as exc:  # bad input (TracerError) or a bug: one line, never a crash
        return TokensPreviewed(prompt, subject, error=user_message(exc))
    if not subject.strip():
        return TokensPreviewed(prompt, subject, list(tokens), None, "the subject is empty")
    try:
        _, span = engine.tokenize(prompt, subject)
    except Exception as exc:
        return TokensPreviewed(prompt, subject, list(tokens), None, user_message(exc))
    return TokensPreviewed(prompt, subject, list(tokens), tuple(span) if span else None)


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 60:
        return f"{seconds:.0f}s" if seconds >= 10 else f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds + 0.5), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
