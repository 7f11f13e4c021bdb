"""A thread pool that runs work in batch order, not in arrival order.

The engine keeps about two batches of chips in flight. With a plain FIFO pool
the tiles of batch 2 arriving early are decoded between those of batch 1, so
batch 1 (and the time to the first batch) waits for both. Every batch gets a
sequence number when it is started, carried by a context variable into the
tasks that render it; the pool always runs the lowest number first (FIFO
within a number). Numbers grow across all streams of an engine, so an older
batch of one stream is never starved by newer streams.
"""

from __future__ import annotations

import contextvars
import heapq
import itertools
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

__all__ = ["PRIORITY", "PriorityExecutor"]

T = TypeVar("T")

#: The sequence number of the batch the current task works for (lower runs first).
PRIORITY: contextvars.ContextVar[int] = contextvars.ContextVar("cogflight_priority", default=0)


class PriorityExecutor(Executor):
    """``max_workers`` threads taking the lowest :data:`PRIORITY` first."""

    def __init__(self, max_workers: int, thread_name_prefix: str = "cogflight-pool") -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be >= 1")
        self._heap: list[
            tuple[int, int, Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]
        ] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._shutdown = False
        self._threads = [
            threading.Thread(target=self._work, name=f"{thread_name_prefix}_{i}", daemon=True)
            for i in range(max_workers)
        ]
        for t in self._threads:
            t.start()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Queue ``fn(*args, **kwargs)`` at the caller's :data:`PRIORITY`."""
        future: Future[T] = Future()
        with self._cond:
            if self._shutdown:
                raise RuntimeError("cannot schedule new work after shutdown")
            heapq.heappush(self._heap, (PRIORITY.get(), next(self._seq), future, fn, args, kwargs))
            self._cond.notify()
        return future

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._heap and not self._shutdown:
                    self._cond.wait()
                if not self._heap:  # shut down and drained
                    return
                _, _, future, fn, args, kwargs = heapq.heappop(self._heap)
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args, **kwargs))
                except BaseException as exc:
                    future.set_exception(exc)
            # An idle thread must not keep its last task's buffers alive.
            del future, fn, args, kwargs

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking work; run (or with ``cancel_futures``, cancel) what is queued."""
        with self._cond:
            self._shutdown = True
            if cancel_futures:
                for item in self._heap:
                    item[2].cancel()
                self._heap.clear()
            self._cond.notify_all()
        if wait:
            for t in self._threads:
                if t is not threading.current_thread():
                    t.join()
