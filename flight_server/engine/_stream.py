"""The chip stream: batches produced on the engine loop, consumed from any thread or loop.

The producer (:func:`~._produce.produce`) runs as a task on the engine's event
loop and fills a bounded :class:`asyncio.Queue`. :class:`ChipStream` reads that
queue from the consumer's side:

- synchronously (``for batch in stream``): the calling thread waits on the
  engine loop's future for the next item;
- asynchronously (``async for batch in stream``): the awaiting coroutine wraps
  that future (:func:`asyncio.wrap_future`), so no thread waits on its behalf,
  and cancelling the coroutine cancels the read on the engine loop.

A consumer that must stay responsive (the Flight service checks for a client
that went away, a deadline and shutdown) waits with :meth:`ChipStream.next_batch`
and a timeout: a wait that times out keeps its pending read for the next call.

Concurrency policy: one consumer at a time per stream; closing it from any
thread cancels the producer (and every read it has in flight), drops the
batches already queued and wakes a consumer waiting for the next batch (it gets
:class:`concurrent.futures.CancelledError`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from cogflight_core import ChipReadError

from ._produce import Delivery
from ._types import ChipBatch, ChipPlan

__all__ = ["ChipStream"]

Producer = Callable[[asyncio.Queue[Any]], Coroutine[Any, Any, None]]


async def _start(
    producer: Producer, prefetch: int
) -> tuple[asyncio.Queue[Any], asyncio.Task[None]]:
    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=max(1, prefetch))
    return queue, asyncio.get_running_loop().create_task(producer(queue))


class ChipStream:
    """An iterator (sync or async) of :class:`ChipBatch` produced in the background, in order.

    Closing it (or abandoning iteration) cancels the remaining work and frees
    its memory. ``failures`` lists chips skipped with ``on_error="skip"`` (as
    the batches that held them are consumed). Streams come from
    :meth:`ChipEngine.stream <flight_server.ChipEngine.stream>`.
    """

    def __init__(
        self,
        plan: ChipPlan,
        loop: asyncio.AbstractEventLoop,
        queue: asyncio.Queue[Any],
        task: asyncio.Task[None],
    ) -> None:
        self.plan = plan
        self.chip_count: int = plan.chips
        self.shape: tuple[int, ...] = plan.shape
        self.failures: list[ChipReadError] = []
        self._loop = loop
        self._queue = queue
        self._task = task
        self._done = False
        self._pending: concurrent.futures.Future[Any] | None = None

    @classmethod
    def open(
        cls,
        loop: asyncio.AbstractEventLoop,
        plan: ChipPlan,
        producer: Producer,
        prefetch: int,
    ) -> ChipStream:
        """Start ``producer`` on ``loop`` and return the stream reading its queue."""
        queue, task = asyncio.run_coroutine_threadsafe(_start(producer, prefetch), loop).result()
        return cls(plan, loop, queue, task)

    @classmethod
    async def open_async(
        cls,
        loop: asyncio.AbstractEventLoop,
        plan: ChipPlan,
        producer: Producer,
        prefetch: int,
    ) -> ChipStream:
        """:meth:`open`, awaitable from any event loop without blocking a thread."""
        started = asyncio.run_coroutine_threadsafe(_start(producer, prefetch), loop)
        queue, task = await asyncio.wrap_future(started)
        return cls(plan, loop, queue, task)

    # -- consuming ---------------------------------------------------------------------------
    def _get(self) -> concurrent.futures.Future[Any]:
        return asyncio.run_coroutine_threadsafe(self._queue.get(), self._loop)

    def _take(self, item: Any) -> ChipBatch | None:
        """The batch an item carries (None: nothing to yield; check ``_done``)."""
        if item is None:
            self._done = True
            return None
        if isinstance(item, BaseException):
            self._done = True
            raise item
        assert isinstance(item, Delivery)
        self.failures.extend(item.skipped)
        return item.batch

    def next_batch(self, timeout: float | None = None) -> ChipBatch | None:
        """The next batch, or None at the end of the stream.

        Raises:
            TimeoutError: no batch arrived within ``timeout`` seconds; the read stays
                pending and the next call goes on waiting for it.
            concurrent.futures.CancelledError: the stream was closed while waiting.
        """
        while not self._done:
            if self._pending is None:
                self._pending = self._get()
                if self._done:  # closed meanwhile, from another thread
                    self._pending.cancel()
            item = self._pending.result(timeout)
            self._pending = None
            batch = self._take(item)
            if batch is not None:
                return batch
        return None

    def __iter__(self) -> Iterator[ChipBatch]:
        return self

    def __next__(self) -> ChipBatch:
        batch = self.next_batch()
        if batch is None:
            raise StopIteration
        return batch

    def __aiter__(self) -> ChipStream:
        return self

    async def __anext__(self) -> ChipBatch:
        while not self._done:
            batch = self._take(await asyncio.wrap_future(self._get()))
            if batch is not None:
                return batch
        raise StopAsyncIteration

    # -- closing -----------------------------------------------------------------------------
    def close(self) -> None:
        """Stop producing: cancel outstanding reads and drop queued batches."""
        if self._done:
            return
        self._done = True
        pending = self._pending
        if pending is not None:
            pending.cancel()  # wakes a consumer waiting in next_batch
        if not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self._loop.call_soon_threadsafe(self._stop)

    def _stop(self) -> None:  # on the engine loop
        self._task.cancel()
        while not self._queue.empty():
            self._queue.get_nowait()

    async def aclose(self) -> None:
        """:meth:`close`, for ``async with``."""
        self.close()

    def __enter__(self) -> ChipStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> ChipStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()
