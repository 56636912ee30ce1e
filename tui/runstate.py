"""One run's state, and the two callbacks the engine thread calls for it: `on_event` (queues cells,
posts the other events) and `on_done` (the future's done-callback: posts RunEnded). They never wait
for the UI and never touch a widget; `post` is the screen's thread-safe post_message."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from tracer.errors import TracerError, error_location, user_message
from tracer.events import CellsDone, Estimate, Log, Recording, Started
from tracer.types import TraceRequest

from .gridmodel import GridData, Progress
from .messages import CellsArrived, RunEnded, RunEvent

RECORDING_POST_EVERY = 0.1  # seconds between the Recording events posted to the UI (each phase's ends always)


@dataclass
class RunState:
    """One run: what was asked, its cancel switch, its progress and its grid, filled live."""

    id: int
    request: TraceRequest
    mode: str  # the view it fills: "positions" or "all"
    cancel: threading.Event = field(default_factory=threading.Event)
    settle: threading.Event = field(default_factory=threading.Event)  # adaptive samples: stop refining, keep the cells
    progress: Progress = field(default_factory=Progress)
    cells: deque = field(default_factory=deque)  # CellsDone from the engine thread, drained on the UI
    grid: GridData | None = None
    ended: bool = False
    post: Callable = field(default=lambda message: None, repr=False)
    _recording_posted: float = 0.0  # time.monotonic() of the last Recording posted (engine thread)

    @property
    def active(self) -> bool:
        return not self.ended and not self.cancel.is_set()

    @property
    def refining(self) -> bool:
        """An adaptive-samples run still giving cells more samples (not settled)."""
        return self.active and self.request.ci_width is not None and not self.settle.is_set()

    def on_event(self, event) -> None:  # engine thread
        """Cells wait in `cells` behind one coalescing CellsArrived; Recording, Started, Estimate and
        Log are posted; Finished, Failed and Cancelled are left to `on_done` (the future says how it ended)."""
        if isinstance(event, CellsDone):
            self.cells.append(event)
            self.post(CellsArrived(self.id))
        elif isinstance(event, Recording):
            # one a layer is 60 messages in the first second, when the engine needs the CPU: a few
            # a second say as much (each carries the work done by then), each phase's ends always
            now = time.monotonic()
            if now - self._recording_posted >= RECORDING_POST_EVERY or event.layer in (0, event.n_layers):
                self._recording_posted = now
                self.post(RunEvent(self.id, event))
        elif isinstance(event, (Started, Estimate, Log)):
            self.post(RunEvent(self.id, event))

    def on_done(self, future) -> None:  # engine thread (or the UI's, if it was done already)
        """RunEnded with the result, with the error in one line (and where an internal one was
        raised), or with neither when the run was cancelled (the future gives None)."""
        try:
            result = future.result()
        except Exception as exc:
            detail = "" if isinstance(exc, TracerError) else error_location(exc)
            self.post(RunEnded(self.id, None, user_message(exc), detail))
            return
        self.post(RunEnded(self.id, result))
