"""Engine worker threads, each owning an MLX CPU stream.

MLX's CPU elementwise kernels (the activation, softmax, `where`) run on one
core; two threads with their own streams run them in parallel, while sharing
the model's already-evaluated weights read-only. The workers are long-lived and
only ever run engine code (never the UI's threads). With one worker, chunks run
on the calling (engine) thread.

Every thread that used MLX must end through `release_thread_state` and be waited
for with `join_thread` (see there): the workers here do both, and so does the engine.
"""

from __future__ import annotations

import os
import queue
import threading
import time
import weakref
from concurrent.futures import FIRST_COMPLETED, Future, wait

import mlx.core as mx


def default_workers() -> int:
    """Two on a multi-core CPU, one otherwise (a GPU runs one stream well)."""
    env = os.environ.get("TRACER_WORKERS")
    if env:
        return max(1, int(env))
    if mx.default_device() != mx.cpu:
        return 1
    return 2 if (os.cpu_count() or 1) >= 2 else 1


def release_thread_state() -> None:
    """Free what MLX keeps for the calling thread; call it last on a thread that used MLX.

    MLX's Python extension keeps C++ thread-locals, destroyed by the C runtime after the
    thread's Python code has ended: the thread's `mx.random` key (a Python list, created by
    the first `mx.random` call without a key, e.g. in `nn.Linear.__init__`), its `mx.compile`
    cache (whose entries hold Python objects) and its streams. The key's destructor takes the
    GIL (PyGILState_Ensure). When the main thread has meanwhile begun finalising the
    interpreter, that call ends the thread with a forced unwind, inside a noexcept destructor:
    std::terminate, "terminate called without an active exception", exit code 134.
    `mx.clear_streams()` empties all three for the calling thread while it holds the GIL, so
    the destructors find nothing to free."""
    try:
        mx.synchronize()  # nothing left queued on this thread's stream
    finally:
        mx.clear_streams()


def join_thread(thread: threading.Thread, timeout: float | None = None) -> bool:
    """Join `thread` and, on Linux, wait until the OS thread is gone as well: Thread.join()
    returns once the thread's Python code is done, before its C-level thread-local
    destructors have run, and an interpreter finalising beside those can abort the process.
    True when the thread has ended within `timeout` seconds."""
    deadline = None if timeout is None else time.monotonic() + timeout
    thread.join(timeout)
    if thread.is_alive():
        return False
    task = f"/proc/self/task/{thread.native_id}"
    while os.path.exists(task):
        if deadline is not None and time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def serve_jobs(jobs) -> None:
    """Run `(fn, args, future)` jobs from the queue `jobs` until it yields None: each result or
    exception goes to its future (unless the future was cancelled). Nothing of a job is held
    while waiting for the next. The loop of the engine thread and of every worker."""
    while True:
        job = jobs.get()
        if job is None:
            return
        fn, args, future = job
        job = None
        if future.set_running_or_notify_cancel():
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # handed to the caller through the future
                future.set_exception(exc)
        fn = args = future = None  # hold no request or arrays while idle


def _worker(jobs: queue.SimpleQueue) -> None:
    mx.set_default_stream(mx.new_stream(mx.cpu))
    try:
        serve_jobs(jobs)
    finally:
        release_thread_state()


def _stop(jobs: queue.SimpleQueue, threads: list[threading.Thread], timeout: float | None) -> None:
    for _ in threads:
        jobs.put(None)
    for t in threads:
        if t is not threading.current_thread():
            join_thread(t, timeout)


class Workers:
    def __init__(self, n: int):
        self.n = max(1, n)
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        if self.n > 1:
            if mx.default_device() == mx.cpu:
                from ..blas import set_blas_threads

                set_blas_threads((os.cpu_count() or 1) // self.n)
            self._threads = [
                threading.Thread(target=_worker, args=(self._jobs,), name=f"tracer-worker-{i}", daemon=True)
                for i in range(self.n)
            ]
            for t in self._threads:
                t.start()
        # stops the threads when this object is collected, or at interpreter exit (atexit runs
        # before finalisation) if nobody called close(), e.g. a CLI run that just returns
        self._finalizer = weakref.finalize(self, _stop, self._jobs, self._threads, 30.0)

    def submit(self, fn, item) -> Future:
        """Run fn(item) on a worker thread (n > 1: with one, `map` runs items on the caller's
        thread): its Future."""
        future: Future = Future()
        self._jobs.put((fn, (item,), future))
        return future

    def map(self, fn, items, cancel: threading.Event | None = None):
        """Yield (item, fn(item)) as each finishes, keeping at most `n` items in flight so
        a cancel takes effect within one batch per worker. Yielding in completion order
        keeps every worker busy: in submission order, a worker whose item finished first
        would wait for the slower one ahead of it."""
        cancelled = lambda: cancel is not None and cancel.is_set()  # noqa: E731
        if not self._threads:
            for item in items:
                if cancelled():
                    return
                yield item, fn(item)
            return
        if not self._finalizer.alive:
            raise RuntimeError("the workers are closed")
        pending: dict = {}  # future -> item
        iterator = iter(items)
        try:
            while True:
                while len(pending) < self.n and not cancelled():
                    item = next(iterator, None)
                    if item is None:
                        break
                    pending[self.submit(fn, item)] = item
                if not pending:
                    return
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    yield pending.pop(future), future.result()
        finally:
            for future in pending:
                future.cancel()
            for future in pending:
                if not future.cancelled():
                    future.exception()  # wait: no worker may still be using this trace's arrays

    def close(self) -> None:
        """Stop the worker threads and wait until they are gone (each frees its MLX state
        first). Idempotent."""
        self._finalizer()
