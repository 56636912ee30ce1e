"""The engine thread: one long-lived thread owns every MLX array and stream.

MLX streams are thread-local, so arrays made on one thread cannot be evaluated
on another. The UI (or CLI) never touches `mx`: it submits work here and gets
plain Python values back, through futures and `on_event` callbacks (which run
on the engine thread and must only hand data on, e.g. `App.post_message`).
"""

from __future__ import annotations

import queue
import threading
import time
import weakref
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Callable

from .blas import load_fast_blas
from .errors import ModelError, TraceCancelled, TracerError, check_cancel
from .events import Cancelled, Failed, Finished, TraceEvent
from .types import TraceRequest, TraceResult
from .work import trace_work


@dataclass
class ModelInfo:
    name: str
    n_layers: int
    summary: str
    blas: str
    blas_fast: bool
    device: str
    head_layers: int = 0  # a forward row's logits in token-layers (tracer.work.head_layers): the app's predictions


class Engine:
    """Loads a model and runs traces on its own thread, one job at a time."""

    def __init__(self, model_spec: str | None = None, *, keep_quantized: bool = False):
        self.model_spec = model_spec
        self.keep_quantized = keep_quantized
        self._jobs: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="tracer-engine", daemon=True)
        self._tracer = None  # tracer.core.tracing.Tracer, only touched on the engine thread
        # seconds per token-layer (trace_work's unit) of the last finished trace: the app's estimates
        self.cost_per_token_layer: float | None = None
        self._thread.start()
        # closes the engine at interpreter exit (atexit runs before finalisation) if nobody did
        weakref.finalize(self, _stop, self._jobs, self._thread)

    # ---- public API (any thread) -------------------------------------------------
    def load(self, model_spec: str | None = None) -> Future:
        """Load (or reload) a model; the future gives a ModelInfo."""
        if model_spec is not None:
            self.model_spec = model_spec
        return self.submit(self._load)

    def call(self, name: str, *args, **kwargs) -> Future:
        """Run a front-door function on the engine thread: `tracer.<name>(model, *args, **kwargs)` with
        the loaded model (loaded first if needed), e.g. `engine.call("predict", prompt, k=5)`. The
        future gives its result or raises its error. The named verbs below are this call with the
        events a UI needs (Failed, Cancelled, Finished) reported."""
        return self.submit(self._run, name, args, kwargs)

    def trace(
        self,
        request: TraceRequest,
        on_event: Callable[[TraceEvent], None] | None = None,
        cancel: threading.Event | None = None,
        *,
        settle: threading.Event | None = None,
    ) -> Future:
        """Run one trace (tracer.trace); the future gives a TraceResult (or None when cancelled/failed).

        `on_event` receives Started, CellsDone, Log and then exactly one of
        Finished, Failed or Cancelled. `settle` (adaptive samples, request.ci_width): set, the cells
        stop getting more samples and the trace finishes with what each has (a complete result)."""
        options = {**request.options(), **({"settle": settle} if settle is not None else {})}
        return self.submit(self._run_reported, "trace", (request.prompt, request.subject), options,
                           on_event or (lambda e: None), cancel or threading.Event(), True)

    def sweep(self, facts, output: str, config, on_event=None, cancel: threading.Event | None = None) -> Future:
        """Run a sweep (tracer.sweeps.run_sweep) on the engine thread, loading the model first
        if needed; the future gives the SweepSummary. `on_event` runs on the engine thread."""
        return self.submit(self._sweep, facts, output, config, on_event, cancel)

    def count_known(self, facts, rule: str, on_event=None) -> Future:
        """Check which facts the model predicts correctly under the fact filter `rule`, on the
        engine thread; the future gives (known, skipped by reason, checks)."""
        return self.submit(self._count_known, facts, rule, on_event)

    def tokenize(self, prompt: str, subject: str | None = None):
        """(token texts, subject range or None), computed on the calling thread: tokenizing
        uses only the model's `tokenizers` tokenizer, no MLX, so the UI may call it while a
        trace runs. Raises ModelError before a model is loaded, InputError for bad input."""
        tracer = self._tracer
        if tracer is None:
            raise ModelError("the model is not loaded")
        return tracer.tokenize(prompt, subject)

    def submit(self, fn: Callable, *args) -> Future:
        """Run `fn(*args)` on the engine thread (for engine-internal use and tests)."""
        future: Future = Future()
        self._jobs.put((fn, args, future))
        return future

    def close(self, wait: bool = True, timeout: float | None = 30.0) -> None:
        """Stop the engine thread after the job in hand; with `wait` (the default), wait until
        the thread is gone, its MLX state freed (see workers.release_thread_state). Without
        it, the engine stops at interpreter exit at the latest."""
        self._jobs.put(None)
        if wait and threading.current_thread() is not self._thread:
            _join(self._thread, timeout)

    # ---- engine thread ----------------------------------------------------------
    def _loop(self) -> None:
        from .core.workers import release_thread_state, serve_jobs  # here: the UI imports this module, not mlx

        try:
            serve_jobs(self._jobs)
        finally:
            if self._tracer is not None:
                self._tracer.workers.close()
            release_thread_state()

    def _load(self) -> ModelInfo:
        import mlx.core as mx

        from . import api  # here, on the engine thread: the UI imports this module and must not import mlx

        old, self._tracer = self._tracer, None
        if old is not None:
            old.workers.close()  # a reload: the old model's workers go
        self._tracer = api.load(self.model_spec, keep_quantized=self.keep_quantized)
        lm, blas = self._tracer.lm, load_fast_blas()
        return ModelInfo(
            name=lm.name,
            n_layers=lm.n_layers,
            summary=lm.summary(),
            blas=blas.describe(),
            blas_fast=blas.fast,
            device=str(mx.default_device()),
            head_layers=self._tracer.head_layers,
        )

    def _loaded(self):
        if self._tracer is None:
            self._load()
        return self._tracer

    def _sweep(self, facts, output, config, on_event, cancel):
        from .sweeps.distributed import sweep
        from .sweeps.run import TracerBackend

        # sharded over the ranks under mlx.launch; a plain run_sweep otherwise
        return sweep(lambda: TracerBackend(self._loaded(), config.filter), facts, output, config,
                     on_event=on_event, cancel=cancel)

    def _count_known(self, facts, rule, on_event):
        from .sweeps.run import TracerBackend, count_known

        return count_known(TracerBackend(self._loaded(), rule), facts, on_event=on_event)

    def inspect(self, request, kind: str, layer: int, *, token: int | None = None, k: int = 5) -> Future:
        """The top-k next tokens of one patched cell of a trace (tracer.api.inspect), on the engine
        thread, loading the model first if needed; the future gives a PatchedRun (numpy and plain
        values) or raises InputError. `request`: the TraceRequest or the TraceResult."""
        return self.call("inspect", request, kind, layer, token=token, k=k)

    def robustness(self, prompt: str, subject: str, on_event=None, cancel: threading.Event | None = None,
                   **options) -> Future:
        """Trace one fact under several corruptions (tracer.robustness) on the engine thread, loading
        the model first if needed; the future gives a RobustnessResult (None when cancelled; a failure raises from it).
        `on_event` (on the engine thread) receives RobustnessProgress events (before and after each
        corruption's trace) and RobustnessWork events (while one runs), then Failed or Cancelled if it ends so; the result comes by the future."""
        return self.submit(self._run_reported, "robustness", (prompt, subject), options, on_event or (lambda e: None),
                           cancel or threading.Event())

    def _run(self, name: str, args: tuple, kwargs: dict):
        from . import api  # here, on the engine thread: the UI imports this module and must not import mlx

        return getattr(api, name)(self._loaded(), *args, **kwargs)

    def _run_reported(self, name: str, args: tuple, kwargs: dict, on_event, cancel: threading.Event,
                  finished: bool = False):
        """`tracer.<name>` with `on_event` and `cancel`, its end reported as an event (_reported)."""
        counted = {"work": 0, "first": None}  # the work in all; (time, work done) at the first event counting it

        def relay(event):
            total = getattr(event, "work_total", 0)
            if total and hasattr(event, "work_done"):
                counted["work"] = total
                counted["first"] = counted["first"] or (time.perf_counter(), event.work_done)
            on_event(event)

        result = _reported(lambda: self._run(name, args, {**kwargs, "on_event": relay, "cancel": cancel}),
                           on_event, cancel)
        if finished and result is not None:
            request = result.request
            work = counted["work"] or trace_work(len(result.tokens), result_layers(result), settings=request,
                                                 positions=request.positions, first=_first_position(result),
                                                 free_before=result.subject_range[0], head=self._tracer.head_layers)
            self.cost_per_token_layer = _cost(result.seconds, work, counted["first"])  # the app's time estimates
            on_event(Finished(result, result.seconds))
        return result


def _cost(seconds: float, work: int, first: tuple[float, int] | None) -> float:
    """Seconds per token-layer of a finished trace: from its first event counting work to its end
    (what came before, preparing the run and once per model the noise's scale, is not the work's
    and is not in an ETA's time either), else its whole time."""
    if first is not None and work > first[1]:
        return (time.perf_counter() - first[0]) / (work - first[1])
    return seconds / max(1, work)


def result_layers(result: TraceResult) -> int:
    """The number of layers of a finished trace's grids."""
    grid = next(iter(result.grids.values()), {}).get("prob") or [[]]
    return len(grid[0])


def _first_position(result: TraceResult) -> int:
    positions = result.positions
    if positions == "all" or not positions:
        return 0
    n = len(result.tokens)
    return min(p % n for p in positions)


def _reported(work, on_event, cancel: threading.Event):
    """`work()` unless cancelled while queued (then neither load nor run); a cancel ends it as
    Cancelled and None, an input or model error as Failed, raised again for the future."""
    try:
        check_cancel(cancel)
        return work()
    except TraceCancelled:
        on_event(Cancelled())
        return None
    except TracerError as exc:
        on_event(Failed(str(exc)))
        raise


def _join(thread: threading.Thread, timeout: float | None) -> None:
    # imported here, not at the top: the UI imports this module and must not import mlx
    from .core.workers import join_thread

    join_thread(thread, timeout)


def _stop(jobs: queue.Queue, thread: threading.Thread) -> None:
    jobs.put(None)
    if threading.current_thread() is not thread:
        _join(thread, 30.0)
