"""Engine worker threads, each owning an MLX CPU stream.

MLX's CPU elementwise kernels (the activation, softmax, `where`) run on one
core; two threads with their own streams run them in parallel, while sharing
the model's already-evaluated weights read-only. The workers are long-lived and
only ever run engine code (never the UI's threads). With one worker, chunks run
on the calling (engine) thread.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

import mlx.core as mx


def default_workers() -> int:
    """Two on a multi-core CPU, one otherwise (a GPU runs one stream well)."""
    env = os.environ.get("TRACER_WORKERS")
    if env:
        return max(1, int(env))
    if mx.default_device() != mx.cpu:
        return 1
    return 2 if (os.cpu_count() or 1) >= 2 else 1


def _own_stream() -> None:
    mx.set_default_stream(mx.new_stream(mx.cpu))


class Workers:
    def __init__(self, n: int):
        self.n = max(1, n)
        if self.n > 1 and mx.default_device() == mx.cpu:
            from .blas import set_blas_threads

            set_blas_threads((os.cpu_count() or 1) // self.n)
        self._pool = (
            ThreadPoolExecutor(self.n, thread_name_prefix="tracer-worker", initializer=_own_stream)
            if self.n > 1
            else None
        )

    def map(self, fn, items, cancel: threading.Event | None = None):
        """Yield (item, fn(item)) as each finishes, keeping at most `n` items in flight so
        a cancel takes effect within one batch per worker. Yielding in completion order
        keeps every worker busy: in submission order, a worker whose item finished first
        would wait for the slower one ahead of it."""
        cancelled = lambda: cancel is not None and cancel.is_set()  # noqa: E731
        if self._pool is None:
            for item in items:
                if cancelled():
                    return
                yield item, fn(item)
            return
        pending: dict = {}  # future -> item
        iterator = iter(items)
        try:
            while True:
                while len(pending) < self.n and not cancelled():
                    item = next(iterator, None)
                    if item is None:
                        break
                    pending[self._pool.submit(fn, item)] = item
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
        if self._pool is not None:
            self._pool.shutdown(wait=True)
