"""App-wide messages. Engine-side callbacks (on the engine thread) only ever post these.

A widget's own messages live in the widget (`TokenStrip.Toggled`, `PromptForm.Submitted`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from textual.message import Message

from tracer.engine import ModelInfo
from tracer.events import TraceEvent


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
    """One trace event other than CellsDone (Started, Log, Finished, Failed, Cancelled)."""

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
class RunCrashed(Message):
    """The engine raised without reporting Failed (a bug, not bad input)."""

    run_id: int
    message: str
    detail: str = ""  # for an internal error: where it was raised (a log line)


@dataclass
class TokensPreviewed(Message):
    """The tokenizer's view of the prompt, for the token strip before a run."""

    prompt: str
    subject: str
    tokens: list[str] = field(default_factory=list)
    subject_range: tuple[int, int] | None = None
    error: str | None = None
