"""PriorityExecutor: lowest batch number first, FIFO within one, errors and shutdown."""

from __future__ import annotations

import threading
import time

import pytest

from flight_server.engine._pool import PRIORITY, PriorityExecutor


def test_runs_lowest_priority_first_fifo_within() -> None:
    pool = PriorityExecutor(1)
    gate = threading.Event()
    order: list[str] = []
    blocker = pool.submit(gate.wait)  # holds the only thread while the queue fills
    futures = []
    for priority, name in [(3, "c1"), (1, "a1"), (2, "b1"), (1, "a2"), (3, "c2")]:
        token = PRIORITY.set(priority)
        futures.append(pool.submit(order.append, name))
        PRIORITY.reset(token)
    gate.set()
    blocker.result(timeout=5)
    for f in futures:
        f.result(timeout=5)
    assert order == ["a1", "a2", "b1", "c1", "c2"]
    pool.shutdown()


def test_results_exceptions_and_cancel() -> None:
    pool = PriorityExecutor(2)
    assert pool.submit(sum, [1, 2, 3]).result(timeout=5) == 6
    with pytest.raises(ZeroDivisionError):
        pool.submit(lambda: 1 / 0).result(timeout=5)
    gate = threading.Event()
    busy = [pool.submit(gate.wait) for _ in range(2)]
    queued = pool.submit(time.sleep, 0)
    assert queued.cancel()  # still queued: cancellable, never runs
    gate.set()
    for f in busy:
        f.result(timeout=5)
    assert queued.cancelled()
    pool.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(time.sleep, 0)


def test_shutdown_cancels_queued_work() -> None:
    pool = PriorityExecutor(1)
    gate, started = threading.Event(), threading.Event()

    def hold() -> bool:
        started.set()
        return gate.wait()

    running = pool.submit(hold)
    assert started.wait(timeout=5)  # the thread has taken it: only the rest is queued
    waiting = [pool.submit(time.sleep, 0) for _ in range(3)]
    threading.Timer(0.2, gate.set).start()
    pool.shutdown(wait=True, cancel_futures=True)
    assert running.result(timeout=5) is True
    assert all(f.cancelled() for f in waiting)
