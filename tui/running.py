"""Running a trace: build the request from the form, hand it to the engine from a thread
worker, and turn the engine's events (posted by tui.runner.RunChannel) into grid updates,
progress, log lines and notifications. Mixed into TracerApp."""

from __future__ import annotations

import threading
from concurrent.futures import TimeoutError as FutureTimeout
from functools import wraps

from textual import work
from textual.css.query import NoMatches
from textual.worker import get_current_worker

from tracer.errors import TracerError, error_location, user_message
from tracer.events import Cancelled, Failed, Finished, Log, Recording, Started
from tracer.types import TraceRequest, TraceResult

from .messages import CellsArrived, RunCrashed, RunEvent
from .runner import Progress, RunChannel
from .widgets.grid import MODES, GridData, GridPane, peak_sentence
from .widgets.log import RunLog
from .widgets.prompt_form import PromptForm
from .widgets.run_status import RunStatus
from .widgets.settings import SettingsError, SettingsPanel
from .widgets.token_strip import TokenStrip


def while_ui(handler):
    """For handlers of messages from the engine thread: one that arrives while the app is
    closing (its widgets already gone) is dropped instead of raising NoMatches."""

    @wraps(handler)
    def wrapper(self, *args):
        try:
            return handler(self, *args)
        except NoMatches:
            if self.screen_stack and self.query(PromptForm):
                raise  # a real bug: the widgets are there
            return None

    return wrapper


class RunMixin:
    """The run lifecycle. Expects the app's state: engine, run_id, channel, cancel_event,
    progress, grids, results, view_mode, and the helpers report() and _show_view()."""

    running_positions: str | tuple[int, ...] = "all"

    def action_run(self) -> None:
        if self.model_error is not None:
            self.report(f"cannot run: no model loaded ({self.model_error})", "error")
            return
        request = self._build_request()
        if request is None:
            return
        if self.cancel_event is not None:
            self.cancel_event.set()  # the old run stops at its next batch; its events are ignored
        self.run_id += 1
        self.last_request = request
        self.cancel_event = threading.Event()
        self.channel = RunChannel(self, self.run_id)
        self.running_mode = self.view_mode
        self.running_positions = request.positions
        self.progress = Progress()
        self.query_one(RunLog).settings(self.run_id, request, MODES[self.view_mode])
        self.query_one(RunStatus).running(self.progress, "recording clean and corrupted runs…")
        self._trace(request, self.run_id, self.channel, self.cancel_event)

    def _build_request(self) -> TraceRequest | None:
        form = self.query_one(PromptForm).values()
        problem = None
        if not form.prompt.strip():
            problem = "the prompt is empty"
        elif not form.subject.strip():
            problem = "the subject is empty"
        elif form.subject.strip() not in form.prompt:
            problem = f"subject {form.subject!r} is not in the prompt"
        if problem is None:
            try:
                settings = self.query_one(SettingsPanel).read()
            except SettingsError as exc:
                problem = str(exc)
        if problem:
            self.report(f"cannot run: {problem}", "error")
            return None
        positions: str | tuple[int, ...] = "all"
        if self.view_mode == "positions":
            strip = self.query_one(TokenStrip)
            if strip.is_current(form.prompt, form.subject):
                positions = strip.positions
                if not positions:
                    self.report("cannot run: choose at least one token in the strip (click or space)", "error")
                    return None
            else:
                positions = "subject-last"
                self.report("token strip not ready: restoring the subject's last token", "info", notify=False)
        return TraceRequest(form.prompt, form.subject, corrupted_prompt=form.corrupted, target=form.target,
                            positions=positions, **settings.trace.as_kwargs())

    @work(thread=True, exclusive=True, group="trace", exit_on_error=False)
    def _trace(self, request: TraceRequest, run_id: int, channel: RunChannel, cancel: threading.Event) -> None:
        """Submit to the engine and wait; never touches MLX."""
        worker = get_current_worker()
        future = self.engine.trace(request, channel.on_event, cancel)
        while True:
            if worker.is_cancelled:
                cancel.set()
                return
            try:
                future.result(timeout=0.1)
                return
            except FutureTimeout:
                continue
            except Exception as exc:
                if not channel.finished:  # Failed was not reported through on_event
                    detail = "" if isinstance(exc, TracerError) else error_location(exc)
                    self.post_message(RunCrashed(run_id, user_message(exc), detail))
                return

    def action_cancel(self) -> None:
        if self.cancel_event is None or self.cancel_event.is_set():
            return
        self.cancel_event.set()
        self.query_one(RunStatus).running(self.progress, "cancelling…")
        self.report("cancelling…", notify=False)

    @property
    def trace_active(self) -> bool:
        return self.cancel_event is not None and not self.cancel_event.is_set()

    @while_ui
    def on_cells_arrived(self, message: CellsArrived) -> None:
        if message.run_id != self.run_id or self.channel is None:
            return
        grid = self.grids.get(self.running_mode or "")
        for event in self.channel.drain():
            if grid is not None:
                grid.apply(event)
            self.progress.update(event.done, event.total)
        self._dirty = True

    @while_ui
    def on_run_event(self, message: RunEvent) -> None:
        if message.run_id != self.run_id:
            return
        event, mode = message.event, self.running_mode or self.view_mode
        if isinstance(event, Started):
            positions = self._started_positions(event)
            self.grids[mode] = GridData.from_started(mode, event, positions)
            self.results[mode] = None
            self.progress.update(0, event.total_cells)
            strip = self.query_one(TokenStrip)
            if tuple(event.tokens) != strip.tokens:
                form = self.query_one(PromptForm).values()
                strip.set_tokens(event.tokens, tuple(event.subject_range), source=(form.prompt, form.subject))
            self.report(f"  {len(event.tokens)} tokens, {event.total_cells} cells, target {event.target_text!r}: "
                        f"clean P = {event.clean_prob:.4f}, corrupted P = {event.corrupted_prob:.4f}", notify=False)
            self._show_view()
        elif isinstance(event, Recording):  # before Started: the clean and corrupted runs, block by block
            batches = f", samples batch {event.batch}/{event.n_batches}" if event.n_batches > 1 else ""
            self.query_one(RunStatus).running(
                self.progress, f"recording the {event.phase} run: layer {event.layer}/{event.n_layers}{batches}")
        elif isinstance(event, Log):
            self.report(event.text, event.level)
        elif isinstance(event, Finished):
            self._finished(mode, event.result)
        elif isinstance(event, Failed):
            self._stopped(f"run failed: {event.message}", "error")
        elif isinstance(event, Cancelled):
            self._stopped(f"cancelled after {self.progress.done}/{self.progress.total} cells", "warning")

    def _started_positions(self, event: Started) -> tuple[int, ...]:
        """The positions the running request restores, as token indices."""
        positions = self.running_positions
        if positions == "all":
            return ()
        if positions == "subject-last":
            return (event.subject_range[1] - 1,)
        return tuple(positions)

    @while_ui
    def on_run_crashed(self, message: RunCrashed) -> None:
        if message.run_id == self.run_id:
            self._stopped(f"run failed: {message.message}", "error")
            if message.detail:
                self.report(f"  {message.detail} (please report this bug)", "error", notify=False)

    def _finished(self, mode: str, result: TraceResult) -> None:
        positions = [] if result.positions == "all" else list(result.positions)
        grid = GridData.from_result(mode, result)
        grid.positions = positions
        self.grids[mode], self.results[mode] = grid, result
        self.progress.update(grid.done, grid.done)
        self.cancel_event = None
        self.query_one(RunLog).result(result)
        self._show_view()
        view = self.query_one(GridPane).current
        summary = peak_sentence(view) if view and self.view_mode == mode else ""
        self.query_one(RunStatus).idle(f"done in {result.seconds:.1f} s ({grid.done} cells). {summary}")
        self.report(f"trace done in {result.seconds:.1f} s. {summary}", "done")

    def _stopped(self, text: str, level: str) -> None:
        self.cancel_event = None
        self.query_one(RunStatus).idle(text, error=level == "error")
        self.report(text, level)
        self._dirty = True
