"""tracer.core.workers: results come back as they finish, at most n in flight, cancel stops feeding."""

import threading
import time

import tracer  # noqa: F401
from tracer.core.workers import Workers


def test_results_in_completion_order_with_at_most_n_in_flight():
    workers = Workers(2)
    running, most = [0], [0]
    lock = threading.Lock()

    def job(seconds):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(seconds)
        with lock:
            running[0] -= 1
        return seconds * 10

    try:
        out = list(workers.map(job, [0.3, 0.05, 0.05, 0.05]))
    finally:
        workers.close()
    # the slow first item does not hold back the other worker's three
    assert [item for item, _ in out] == [0.05, 0.05, 0.05, 0.3]
    assert [result for _, result in out] == [0.5, 0.5, 0.5, 3.0]
    assert most[0] == 2


def test_cancel_stops_submitting_and_waits_for_running_items():
    workers = Workers(2)
    cancel = threading.Event()
    started = []

    def job(i):
        started.append(i)
        time.sleep(0.05)
        return i

    try:
        got = []
        for item, _ in workers.map(job, range(20), cancel):
            got.append(item)
            cancel.set()
    finally:
        workers.close()
    assert sorted(started) == [0, 1] and sorted(got) == [0, 1]  # the two in flight finish; nothing more starts


def test_one_worker_runs_on_the_calling_thread_in_order():
    workers = Workers(1)
    names = []
    out = list(workers.map(lambda i: names.append(threading.current_thread().name) or i * 2, [3, 1, 2]))
    assert out == [(3, 6), (1, 2), (2, 4)]
    assert set(names) == {threading.current_thread().name}
