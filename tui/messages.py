"""App-wide messages. Engine-side callbacks (on the engine thread) only ever post these.

A widget's own messages live in the widget (`TokenStrip.Toggled`, `PromptForm.Submitted`).
"""

from __future__ import annotations

from dataclasses import dataclass

from tracer.engine import ModelInfo
from tracer.events import TraceEvent
from tracer.types import TraceResult

from textual.message import Message


@dataclass
class EngineReady(Message):
    """The model has loaded."""

    info: ModelInfo


@dataclass
class EngineFailed(Message):
    """The model could not be loaded."""

    message: str
    detail: str = ""  # for an internal error: where it was raised (a log line)


@dataclass
class RunEvent(Message):
    """One trace event other than CellsDone (Recording, Started, Log), from the engine thread."""

    run_id: int
    event: TraceEvent


@dataclass
class CellsArrived(Message):
    """New CellsDone events wait in the run's queue. A burst collapses into one message:
    the handler drains the queue, so dropping a duplicate marker loses nothing."""

    run_id: int

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, CellsArrived) and message.run_id == self.run_id


@dataclass
class RunEnded(Message):
    """The engine's future for a run is done (its done-callback posts this): `result` when it
    finished, `error` (one line; `detail` says where an internal error was raised) when it
    failed, neither when it was cancelled."""

    run_id: int
    result: TraceResult | None
    error: str | None = None
    detail: str = ""


@dataclass
class CellInspected(Message):
    """Engine.inspect answered for one cell (`where` in words): its patched run, or an error line."""

    where: str
    run: object | None
    error: str | None = None
