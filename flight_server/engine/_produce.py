"""Batch scheduling: renders a plan's chips batch by batch, delivering them in order.

Batches start small and double up to ``batch_rows`` (1, 2, 4, ... chips), and
the first chip is fetched alone (up to :data:`LEAD_S`) before the rest start, so
it is delivered about one round trip to storage after the request, not after
``batch_rows`` chips that share the bandwidth with it; steady-state batches are
full. About ``2 x batch_rows`` chips are in flight at once (the
ramp's batches start together) so decoding never waits at a batch boundary;
chips render straight into their batch's buffer, and batches are delivered
strictly in order into a bounded queue (the stream's prefetch), so the producer
runs at most that far ahead of its consumer. Each batch's tasks carry a batch
number (:data:`~._pool.PRIORITY`): the decode pool works for the oldest batch
first, so batch 1 never waits for batch 2's tiles.

What goes into the queue: a :class:`Delivery` per batch (its chips and the
chips skipped under ``on_error="skip"``), then ``None`` at the end, or the
exception that stopped production. The producer knows nothing of the stream
reading the queue.

Concurrency policy: runs on the engine loop; cancelling the producer task
cancels every chip task of the batches it holds.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from cogflight_core import ChipReadError, CogflightError

from ._assemble import batch_buffers
from ._columns import MetaRows, meta_columns
from ._pool import PRIORITY
from ._render import Render
from ._types import Chip, ChipBatch, ChipPlan

__all__ = ["Delivery", "batch_sizes", "produce"]

logger = logging.getLogger("cogflight.server")

#: Longest the first chip of a stream is fetched alone before the rest start (seconds).
LEAD_S = 0.5


@dataclass(frozen=True, slots=True)
class Delivery:
    """One batch's outcome: its chips (None when every chip was skipped), and the skipped."""

    batch: ChipBatch | None
    skipped: tuple[ChipReadError, ...] = ()


@dataclass
class _Pending:
    chips: list[Chip]
    data: np.ndarray
    valid: np.ndarray
    tasks: list[asyncio.Task[None]]

    def cancel(self) -> None:
        for task in self.tasks:
            if task.done() and not task.cancelled():
                task.exception()  # already settled: retrieve so it is not logged
            else:
                task.cancel()


def batch_sizes(total: int, rows: int) -> Iterator[int]:
    """Chips per batch for ``total`` chips: 1, 2, 4, ... doubling up to ``rows``, then ``rows``.

    The ramp costs about log2(rows) extra batches per stream; it makes the first
    batch of every stream (and of every endpoint, each its own stream) one chip.
    """
    size, left = 1, total
    while left > 0:
        take = min(size, rows, left)
        yield take
        left -= take
        size *= 2


def _full(total: int, rows: int) -> Iterator[int]:
    """Chips per batch without the ramp: ``rows`` each, the rest last."""
    for first in range(0, total, rows):
        yield min(rows, total - first)


async def produce(
    render: Render,
    plan: ChipPlan,
    queue: asyncio.Queue[Any],
    *,
    batch_rows: int | None = None,
    batch_numbers: Iterator[int],
    delivered: Callable[[int], None],
) -> None:
    """Render every chip of ``plan`` and put its batches into ``queue``, in order.

    ``batch_rows`` is the chips per batch (default: the request's; the engine lowers
    it to keep batches within ``max_batch_bytes``). ``batch_numbers`` gives each batch
    its decode priority (shared by every stream of an engine, so older batches go
    first); ``delivered`` counts the chips delivered.
    """
    rows = batch_rows or render.request.batch_rows
    await _Producer(render, plan, queue, batch_numbers, delivered, rows).run()


@dataclass
class _Producer:
    render: Render
    plan: ChipPlan
    queue: asyncio.Queue[Any]
    batch_numbers: Iterator[int]
    delivered: Callable[[int], None]
    batch_rows: int

    async def run(self) -> None:
        plan, render = self.plan, self.render
        pending: collections.deque[_Pending] = collections.deque()
        try:
            chips = list(plan.items)
            logger.info(
                "collection %r: %d chips of %s, bands %s",
                plan.collection,
                len(chips),
                plan.shape,
                ",".join(b.name for b in plan.bands),
            )
            columns = meta_columns(render.collection, render.request.columns)
            rows = MetaRows(render.collection, columns, plan.steps)
            window = 2 * self.batch_rows  # chips in flight
            first = inflight = 0
            ramp = render.request.ramp
            rows_per = self.batch_rows
            sizes = batch_sizes(len(chips), rows_per) if ramp else _full(len(chips), rows_per)
            for size in sizes:
                pending.append(self._start(chips[first : first + size]))
                first += size
                inflight += size
                if ramp and first == size and len(chips) > size:
                    await self._lead(pending, rows)
                    inflight = sum(len(p.chips) for p in pending)
                while inflight >= window:
                    done = pending.popleft()
                    inflight -= len(done.chips)
                    await self._deliver(done, rows)
            while pending:
                await self._deliver(pending.popleft(), rows)
            await self.queue.put(None)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            if not isinstance(exc, CogflightError):
                logger.exception("chip production failed")
            await self.queue.put(exc)
        finally:
            for batch in pending:
                batch.cancel()

    async def _lead(self, pending: collections.deque[_Pending], rows: MetaRows) -> None:
        """Give the first chip the storage to itself for a moment, then deliver it.

        With every chip of the window started at once, the first one's ranges share
        the bandwidth (and the loop) with ~2 x ``batch_rows`` others and arrive with
        them; alone, they arrive after one round trip. Waiting costs the stream at
        most :data:`LEAD_S` once, and nothing when its tiles are cached.
        """
        lead = pending[0]
        await asyncio.wait(lead.tasks, timeout=LEAD_S)
        if all(task.done() for task in lead.tasks):
            pending.popleft()
            await self._deliver(lead, rows)

    def _start(self, part: list[Chip]) -> _Pending:
        """Start rendering one batch's chips into a fresh buffer, at the next priority."""
        plan, render = self.plan, self.render
        steps = plan.steps
        lead = (len(part), steps) if steps else (len(part),)
        data, valid = batch_buffers(lead, plan.grid_shape, plan.dtype, render.fills)
        context = contextvars.copy_context()
        context.run(PRIORITY.set, next(self.batch_numbers))
        loop = asyncio.get_running_loop()
        tasks = [
            loop.create_task(render.chip(c, data[k], valid[k]), context=context)
            for k, c in enumerate(part)
        ]
        return _Pending(part, data, valid, tasks)

    async def _deliver(self, batch: _Pending, rows: MetaRows) -> None:
        """Wait for one batch's chips, then queue it (without the chips skipped)."""
        keep = np.ones(len(batch.chips), dtype=bool)
        skipped: list[ChipReadError] = []
        try:
            for k, task in enumerate(batch.tasks):
                try:
                    await task
                except ChipReadError as err:
                    if self.render.request.on_error == "raise":
                        raise
                    skipped.append(err)
                    keep[k] = False
                    logger.warning("skipped chip %d: %s", batch.chips[k].index, err)
        except BaseException:
            batch.cancel()
            raise
        if not keep.any():
            await self.queue.put(Delivery(None, tuple(skipped)))
            return
        plan = self.plan
        kept = [c for c, ok in zip(batch.chips, keep, strict=True) if ok]
        data = batch.data if keep.all() else batch.data[keep]
        valid = batch.valid if keep.all() else batch.valid[keep]
        loop = asyncio.get_running_loop()
        meta = await loop.run_in_executor(self.render.executor, rows.table, kept, plan.grid_shape)
        self.delivered(len(kept))
        chips = ChipBatch(data, valid, meta, plan.bands, time_series=plan.time_series)
        await self.queue.put(Delivery(chips, tuple(skipped)))
