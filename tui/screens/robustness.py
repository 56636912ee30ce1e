"""The robustness view (issue 13.5): the prompt's fact traced under several corruptions (noise at
three strengths, uniform noise, replacement, substituted subjects) by Engine.robustness, and whether
each kind's peak moves: tracer.render.robustness's table, peak plot and verdict, in one scrollable page.

Waiting on the engine has the app's one shape: `on_event` (engine thread) and the future's
done-callback only post messages. Escape goes back and stops the run.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from tracer.errors import TracerError, error_location, user_message
from tracer.render.robustness import render

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Static

from ..gridmodel import WorkClock, format_seconds


def robustness_eta(elapsed: float, finished: int, total: int, clock: WorkClock | None = None) -> str:
    """"ETA 1m20s (12s elapsed)": from the work the engine reports (`clock`: token-layers of all the
    corruptions' traces done and in all, each trace weighed by its own size: a substitution has one
    corrupted run, not the samples) by the time elapsed; without it, the mean time per finished
    corruption times those left."""
    if clock is not None and clock.eta is not None:
        return f"ETA {format_seconds(clock.eta)} ({format_seconds(elapsed)} elapsed)"
    if finished <= 0:
        return f"ETA after the first corruption ({format_seconds(elapsed)} elapsed)"
    return f"ETA {format_seconds(elapsed / finished * (total - finished))} ({format_seconds(elapsed)} elapsed)"


class RobustnessScreen(Screen):
    """Runs Engine.robustness for one prompt and subject and shows its report."""

    BINDINGS = [Binding("escape", "close", "Back", id="robust-back", tooltip="Back to the trace (stops the run)")]
    DEFAULT_CSS = """
    RobustnessScreen #robust-status { height: auto; padding: 0 1; color: $text-muted; }
    RobustnessScreen #robust-status.-error { color: $error; }
    RobustnessScreen VerticalScroll { height: 1fr; padding: 0 1; }
    """

    @dataclass
    class Progressed(Message):
        """A RobustnessProgress event, from the engine thread."""

        event: object

    @dataclass
    class Ended(Message):
        """The engine's future is done: the result, or an error line (None, None: cancelled)."""

        result: object | None
        error: str | None = None
        detail: str = ""

    def __init__(self, engine, prompt: str, subject: str, *, options: dict | None = None) -> None:
        super().__init__()
        self.engine, self.prompt, self.subject = engine, prompt, subject
        self.options = options or {}
        self.cancel = threading.Event()
        self.status = Static("", id="robust-status")
        self.body = Static("", id="robust-body")
        self.result = None
        self.text = ""  # the report shown, for tests

    def compose(self) -> ComposeResult:
        yield self.status
        with VerticalScroll():
            yield self.body
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.started = time.monotonic()
        self.clock = WorkClock(cost=getattr(self.engine, "cost_per_token_layer", None))
        self.corruption = ""  # the status line's "corruption i/n: name (state)"
        self.finished = self.n_corruptions = 0
        self._say(f"tracing {self.subject!r} in {self.prompt!r} under several corruptions…")
        try:
            future = self.engine.robustness(self.prompt, self.subject, on_event=self._on_event, cancel=self.cancel,
                                            **self.options)
        except Exception as exc:  # a signature other than the one coded against
            self._say(f"robustness failed: {user_message(exc)}", error=True)
            return
        future.add_done_callback(self._on_done)

    def on_unmount(self) -> None:
        self.cancel.set()

    def _say(self, text: str, error: bool = False) -> None:
        self.status.set_class(error, "-error")
        self.status.update(text)

    # ---- engine thread: post, never wait ----------------------------------------------
    def _on_event(self, event) -> None:
        self.post_message(self.Progressed(event))

    def _on_done(self, future) -> None:
        try:
            result = future.result()
        except Exception as exc:
            detail = "" if isinstance(exc, TracerError) else error_location(exc)
            self.post_message(self.Ended(None, user_message(exc), detail))
            return
        self.post_message(self.Ended(result))

    # ---- back on the UI thread --------------------------------------------------------
    def on_robustness_screen_progressed(self, message: Progressed) -> None:
        e = message.event
        self.clock.update(getattr(e, "work_done", 0), getattr(e, "work_total", 0))
        if hasattr(e, "name") and hasattr(e, "total"):  # RobustnessProgress: a corruption starts or ends
            state = "done" if getattr(e, "done", False) else "running"
            self.finished, self.n_corruptions = e.index, e.total  # a done event counts them, a start the ones before
            self.corruption = f"corruption {e.index + (0 if e.done else 1)}/{e.total}: {e.name} ({state})"
        if self.corruption:
            eta = robustness_eta(time.monotonic() - self.started, self.finished, self.n_corruptions, self.clock)
            self._say(f"{self.corruption} · {eta}")

    def on_robustness_screen_ended(self, message: Ended) -> None:
        if message.error:
            self._say(f"robustness failed: {message.error}", error=True)
            if message.detail:
                self.app.notify(f"{message.detail} (please report this bug)", severity="error")
            return
        if message.result is None:
            self._say("stopped")
            return
        self.result = message.result
        self.text = render(message.result)
        self._say("done: does each kind's peak stay where it is when the corruption changes?")
        self.body.update(Text(self.text))

    def action_close(self) -> None:
        self.cancel.set()
        self.app.pop_screen()
