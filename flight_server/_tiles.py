"""Fetching and decoding tiles: coalesced range requests, a decode pool, one flight per tile.

Concurrency policy: at most ``max_requests`` range requests are in flight per
engine; decoding runs in a thread pool of ``decode_threads``; a tile requested
again while it is being fetched or decoded waits for that work instead of
repeating it (in-flight de-duplication), and decoded tiles go into the shared
:class:`TileCache`. All coroutines here run on the engine's event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import obstore

from catalog import (
    CogflightError,
    HeaderRecord,
    StoreRegistry,
    is_range_past_end,
    translate_storage_error,
)

from ._cache import TileCache
from ._decode import decode_mask_tile, decode_tile
from ._errors import ChipReadError, UpstreamError
from ._plan import TileRef

__all__ = ["FetchStats", "TileLoader"]

logger = logging.getLogger("cogflight.server")
TileKey = tuple[str, int, int, int, bool]
_CHANGED = (
    "the file is shorter than its indexed header says: it was truncated or replaced "
    "since the Collection was built; rebuild the Collection"
)


@dataclass
class FetchStats:
    """Counters of one engine (read and written on its event loop only)."""

    requests: int = 0
    bytes_fetched: int = 0
    tiles_decoded: int = 0
    decode_seconds: float = 0.0
    retries: int = 0
    errors: int = 0
    per_href_requests: dict[str, int] = field(default_factory=lambda: defaultdict(int))


class TileLoader:
    """Loads decoded tiles for the engine: cache, in-flight futures, coalesced fetches."""

    def __init__(
        self,
        *,
        cache: TileCache,
        executor: Executor,
        max_requests: int,
        coalesce_bytes: int,
        max_retries: int,
    ) -> None:
        self.cache = cache
        self.executor = executor
        self.coalesce_bytes = coalesce_bytes
        self.max_retries = max_retries
        self.stats = FetchStats()
        self._semaphore = asyncio.Semaphore(max_requests)
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
                for run in _coalesce(group, self.coalesce_bytes):
                    task = loop.create_task(self._fetch_run(registry, header, href, run))
                    task.add_done_callback(_consume_exception)
        for key, fut in waits:
            out[key] = await asyncio.shield(fut)
        return out

    async def _fetch_run(
        self, registry: StoreRegistry, header: HeaderRecord, href: str, run: list[TileRef]
    ) -> None:
        start = run[0].offset
        end = max(r.offset + r.length for r in run)
        try:
            view = await self._get(registry, href, start, end)
            loop = asyncio.get_running_loop()
            decodes = [
                loop.run_in_executor(
                    self.executor,
                    self._decode,
                    view[r.offset - start : r.offset - start + r.length],
                    r,
                    header,
                )
                for r in run
            ]
            results = await asyncio.gather(*decodes, return_exceptions=True)
        except BaseException as exc:  # fail every waiter of this run, then re-raise
            for r in run:
                self._settle(
                    r.key,
                    exc
                    if isinstance(exc, Exception)
                    else ChipReadError(href, "cancelled", (start, end)),
                )
            if not isinstance(exc, Exception):
                raise
            return
        for r, res in zip(run, results, strict=True):
            if isinstance(res, BaseException):
                self.stats.errors += 1
                self._settle(r.key, res)
            else:
                self.cache.put(r.key, res)
                self._settle(r.key, None, res)

    def _decode(self, data: memoryview, ref: TileRef, header: HeaderRecord) -> np.ndarray:
        t0 = time.perf_counter()
        arr = decode_mask_tile(data, ref, header) if ref.mask else decode_tile(data, ref, header)
        # Counters are only approximate under threads; they are statistics, not logic.
        self.stats.tiles_decoded += 1
        self.stats.decode_seconds += time.perf_counter() - t0
        return arr

    def _settle(self, key: TileKey, exc: BaseException | None, value: Any = None) -> None:
        fut = self._inflight.pop(key, None)
        if fut is None or fut.done():
            return
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(value)

    async def _get(self, registry: StoreRegistry, href: str, start: int, end: int) -> memoryview:
        """One range request (with our own retries on short bodies)."""
        attempt = 0
        while True:
            try:
                store, path = registry.resolve(href)
            except CogflightError as exc:
                raise UpstreamError(href, str(exc), (start, end)) from exc
            async with self._semaphore:
                self.stats.requests += 1
                self.stats.per_href_requests[href] += 1
                try:
                    data = await obstore.get_range_async(store, path, start=start, end=end)
                except Exception as exc:
                    self.stats.errors += 1
                    if is_range_past_end(exc):
                        raise UpstreamError(
                            href,
                            _CHANGED + " (the range starts past the end of the object)",
                            (start, end),
                        ) from exc
                    err = translate_storage_error(href, exc)
                    raise UpstreamError(href, err.reason, (start, end)) from exc
            view = memoryview(data)
            size = len(view)
            self.stats.bytes_fetched += size
            if size == end - start:
                return view
            attempt += 1
            self.stats.retries += 1
            if attempt > self.max_retries:
                self.stats.errors += 1
                raise UpstreamError(
                    href,
                    f"{_CHANGED} (the store returned {size} of {end - start} bytes, "
                    f"{attempt} attempts)",
                    (start, end),
                )
            await asyncio.sleep(min(0.1 * 2**attempt, 2.0))


def _consume_exception(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()  # errors were delivered to the waiters; do not log them twice


_MAX_RUN_BYTES = 4 * 1024 * 1024


def _coalesce(refs: list[TileRef], gap: int) -> list[list[TileRef]]:
    """Group tiles of one file whose byte ranges are within ``gap`` of each other.

    A group stops growing at 4 MiB: past that, one request saves little latency
    while its tiles would all wait for the last byte before decoding starts.
    """
    ordered = sorted(refs, key=lambda r: r.offset)
    runs: list[list[TileRef]] = []
    end = -1
    for r in ordered:
        if (
            runs
            and r.offset <= end + gap
            and r.offset + r.length - runs[-1][0].offset <= (_MAX_RUN_BYTES)
        ):
            runs[-1].append(r)
            end = max(end, r.offset + r.length)
        else:
            runs.append([r])
            end = r.offset + r.length
    return runs
