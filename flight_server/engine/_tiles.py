"""Loading decoded tiles: cache, then in-flight futures, then coalesced fetches.

A tile already decoded comes from the shared :class:`TileCache`; a tile being
fetched or decoded for another chip (or another request) is waited for, not
fetched again (in-flight de-duplication); the rest are grouped per file into
coalesced runs and fetched by catalog's :class:`~catalog.RangeFetcher` (the
same fetcher header reads use), and each run's tiles decode as soon as the run
arrives. A failure reaches every waiter of the tiles it concerns.

Concurrency policy: every coroutine here runs on the engine's event loop; at
most ``max_requests`` range requests are in flight per loop (one semaphore);
decoding runs in the engine's decode pool.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np

from catalog import HeaderRecord, RangeFetcher, Run, StorageError, StoreRegistry
from cogflight_core import ChipReadError, CogflightError, UpstreamError

from ._cache import TileCache
from ._decode import decode_mask_tile, decode_tile
from ._windows import TileRef

__all__ = ["DecodeStats", "TileLoader"]

logger = logging.getLogger("cogflight.server")
TileKey = tuple[str, int, int, int, bool]


@dataclass
class DecodeStats:
    """Decoding counters of one engine (approximate under threads: statistics, not logic)."""

    tiles_decoded: int = 0
    decode_seconds: float = 0.0
    errors: int = 0


class TileLoader:
    """Loads decoded tiles for the engine: cache, in-flight futures, coalesced fetches.

    Build it on the engine's event loop (its semaphore belongs to that loop).
    """

    def __init__(
        self,
        *,
        cache: TileCache,
        executor: Executor,
        max_requests: int,
        coalesce_bytes: int,
        max_run_bytes: int,
        max_retries: int,
    ) -> None:
        self.cache = cache
        self.executor = executor
        self.fetcher = RangeFetcher(
            gap=coalesce_bytes,
            max_run_bytes=max_run_bytes,
            max_retries=max_retries,
            limit=asyncio.Semaphore(max_requests),
        )
        self.decoding = DecodeStats()
        self._inflight: dict[TileKey, asyncio.Future[np.ndarray]] = {}

    async def load(
        self, registry: StoreRegistry, header: HeaderRecord, refs: Sequence[TileRef]
    ) -> dict[TileKey, np.ndarray | None]:
        """Decoded tiles by key; sparse tiles map to None.

        Raises:
            ChipReadError: a tile could not be fetched or decoded (names href and range).
        """
        out: dict[TileKey, np.ndarray | None] = {}
        waits: list[tuple[TileKey, asyncio.Future[np.ndarray]]] = []
        missing: list[TileRef] = []
        loop = asyncio.get_running_loop()
        for ref in refs:
            key = ref.key
            if key in out:
                continue
            if ref.sparse:
                out[key] = None
                continue
            hit = self.cache.get(key)
            if hit is not None:
                out[key] = hit
                continue
            fut = self._inflight.get(key)
            if fut is None:
                fut = loop.create_future()
                self._inflight[key] = fut
                missing.append(ref)
            waits.append((key, fut))
            out[key] = None  # placeholder, filled below
        if missing:
            by_href: dict[str, list[TileRef]] = defaultdict(list)
            for ref in missing:
                by_href[ref.href].append(ref)
            for href, group in by_href.items():
                runs = self.fetcher.plan([(r.offset, r.offset + r.length) for r in group])
                for run in runs:
                    members = [group[i] for i in run.members]
                    task = loop.create_task(self._fetch_run(registry, header, href, run, members))
                    task.add_done_callback(_consume_exception)
        for key, fut in waits:
            out[key] = await asyncio.shield(fut)
        return out

    async def _fetch_run(
        self,
        registry: StoreRegistry,
        header: HeaderRecord,
        href: str,
        run: Run,
        refs: list[TileRef],
    ) -> None:
        try:
            view = await self._get(registry, href, run)
            loop = asyncio.get_running_loop()
            decodes = [
                loop.run_in_executor(
                    self.executor,
                    self._decode,
                    view[r.offset - run.start : r.offset - run.start + r.length],
                    r,
                    header,
                )
                for r in refs
            ]
            results = await asyncio.gather(*decodes, return_exceptions=True)
        except BaseException as exc:  # fail every waiter of this run, then re-raise
            for r in refs:
                self._settle(
                    r.key,
                    exc
                    if isinstance(exc, Exception)
                    else ChipReadError(href, "cancelled", (run.start, run.end)),
                )
            if not isinstance(exc, Exception):
                raise
            return
        for r, res in zip(refs, results, strict=True):
            if isinstance(res, BaseException):
                self.decoding.errors += 1
                self._settle(r.key, res)
            else:
                self.cache.put(r.key, res)
                self._settle(r.key, None, res)

    async def _get(self, registry: StoreRegistry, href: str, run: Run) -> memoryview:
        """The bytes of one run, exactly; storage failures as :class:`UpstreamError`."""
        span = (run.start, run.end)
        try:
            store, path = registry.resolve(href)
        except CogflightError as exc:
            raise UpstreamError(href, str(exc), span) from exc
        try:
            return await self.fetcher.get(store, path, href, run.start, run.end, exact=True)
        except StorageError as exc:
            raise UpstreamError(href, exc.reason, span) from exc

    def _decode(self, data: memoryview, ref: TileRef, header: HeaderRecord) -> np.ndarray:
        t0 = time.perf_counter()
        arr = decode_mask_tile(data, ref, header) if ref.mask else decode_tile(data, ref, header)
        self.decoding.tiles_decoded += 1
        self.decoding.decode_seconds += time.perf_counter() - t0
        return arr

    def _settle(self, key: TileKey, exc: BaseException | None, value: Any = None) -> None:
        fut = self._inflight.pop(key, None)
        if fut is None or fut.done():
            return
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(value)


def _consume_exception(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()  # errors were delivered to the waiters; do not log them twice
