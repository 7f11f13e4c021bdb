"""Loading decoded tiles: cache, then in-flight futures, then coalesced fetches.

A tile already decoded comes from the shared :class:`TileCache`; a tile being
fetched or decoded for another chip (or another request) is waited for, not
fetched again (in-flight de-duplication); the rest are grouped per file into
coalesced runs and fetched by catalog's :class:`~catalog.RangeFetcher` (the
same fetcher header reads use), and each run's tiles decode as soon as the run
arrives. A failure reaches every waiter of the tiles it concerns.

Every request goes through the engine's data access policy (checked by the
fetcher before each request; ``http(s)`` through the policy-checked
:class:`~catalog.HttpReader`, whose redirects and addresses it checks too) and
names the object's indexed identity, so a replaced file is an error. A tile
that does not decode is fetched again within the retry budget (its bytes may
have been damaged on the way; each re-fetch counts as a retry), then fails with
:class:`~cogflight_core.DecodeError`. Cached tiles are keyed by the object's
identity too: a Collection rebuilt over a replaced file never hits old tiles.

Concurrency policy: every coroutine here runs on the engine's event loop; at
most ``max_requests`` range requests are in flight per loop (one semaphore);
decoding runs in the engine's decode pool. A tile larger than ``max_tile_bytes``
(the storage settings) decoded is refused before it is decoded.
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

from catalog import (
    AccessPolicy,
    HeaderRecord,
    HttpReader,
    ObjectIdentity,
    RangeFetcher,
    Run,
    StorageError,
    StoreRegistry,
)
from catalog import settings as storage_settings
from cogflight_core import ChipReadError, CogflightError, DecodeError, UpstreamError

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

    Build it on the engine's event loop (its semaphore and HTTP connections belong
    to that loop) and close it there (:meth:`aclose`). ``policy``: the data access
    policy of every read (None: every href is allowed, for in-process use).
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
        max_tile_bytes: int | None = None,
        policy: AccessPolicy | None = None,
    ) -> None:
        self.cache = cache
        self.executor = executor
        storage = storage_settings()
        self.max_tile_bytes = storage.max_tile_bytes if max_tile_bytes is None else max_tile_bytes
        self.policy = policy if policy is not None else AccessPolicy.open()
        self.http = HttpReader(self.policy, timeout_s=storage.request_timeout_s)
        self.fetcher = RangeFetcher(
            gap=coalesce_bytes,
            max_run_bytes=max_run_bytes,
            max_retries=max_retries,
            limit=asyncio.Semaphore(max_requests),
            policy=self.policy,
            http=self.http,
        )
        self.decoding = DecodeStats()
        self._inflight: dict[Any, asyncio.Future[np.ndarray]] = {}

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
        version = _version(header.identity)
        for ref in refs:
            key = ref.key
            if key in out:
                continue
            if ref.sparse:
                out[key] = None
                continue
            ck = _cache_key(ref, version)
            hit = self.cache.get(ck)
            if hit is not None:
                out[key] = hit
                continue
            fut = self._inflight.get(ck)
            if fut is None:
                fut = loop.create_future()
                self._inflight[ck] = fut
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

    async def aclose(self) -> None:
        """Close the HTTP connections (on the engine loop)."""
        await self.http.aclose()

    async def _fetch_run(
        self,
        registry: StoreRegistry,
        header: HeaderRecord,
        href: str,
        run: Run,
        refs: list[TileRef],
    ) -> None:
        version = _version(header.identity)
        pending = refs
        attempt = 0
        try:
            while True:
                results = await self._fetch_decode(registry, header, href, run, pending)
                damaged = [
                    r
                    for r, res in zip(pending, results, strict=True)
                    if isinstance(res, DecodeError)
                ]
                for r, res in zip(pending, results, strict=True):
                    if isinstance(res, DecodeError) and attempt < self.fetcher.max_retries:
                        continue  # fetched again below
                    if isinstance(res, BaseException):
                        self.decoding.errors += 1
                        self._settle(_cache_key(r, version), _after(res, attempt))
                    else:
                        self.cache.put(_cache_key(r, version), res)
                        self._settle(_cache_key(r, version), None, res)
                if not damaged or attempt >= self.fetcher.max_retries:
                    return
                attempt += 1
                self.fetcher.stats.retries += 1
                logger.info(
                    "re-fetching %d tiles of %s that did not decode (retry %d)",
                    len(damaged),
                    href,
                    attempt,
                )
                await asyncio.sleep(self.fetcher.backoff_s * 2 ** (attempt - 1))
                pending = damaged
                start = min(r.offset for r in pending)
                end = max(r.offset + r.length for r in pending)
                run = Run(start, end, tuple(range(len(pending))))
        except BaseException as exc:  # fail every waiter still waiting, then re-raise
            for r in pending:
                self._settle(
                    _cache_key(r, version),
                    exc
                    if isinstance(exc, Exception)
                    else ChipReadError(href, "cancelled", (run.start, run.end)),
                )
            if not isinstance(exc, Exception):
                raise

    async def _fetch_decode(
        self,
        registry: StoreRegistry,
        header: HeaderRecord,
        href: str,
        run: Run,
        refs: list[TileRef],
    ) -> list[Any]:
        """Fetch one run and decode its tiles: an array or the exception of each."""
        view = await self._get(registry, header, href, run)
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
        return list(await asyncio.gather(*decodes, return_exceptions=True))

    async def _get(
        self, registry: StoreRegistry, header: HeaderRecord, href: str, run: Run
    ) -> memoryview:
        """The bytes of one run, exactly; storage failures as :class:`UpstreamError`.

        A refusal of the data access policy stays a ``PermissionDeniedError``.
        """
        span = (run.start, run.end)
        try:
            store, path = registry.resolve(href)
        except CogflightError as exc:
            raise UpstreamError(href, str(exc), span) from exc
        try:
            return await self.fetcher.get(
                store, path, href, run.start, run.end, exact=True, identity=header.identity
            )
        except StorageError as exc:
            raise UpstreamError(href, exc.reason, span) from exc

    def _decode(self, data: memoryview, ref: TileRef, header: HeaderRecord) -> np.ndarray:
        t0 = time.perf_counter()
        limit = self.max_tile_bytes
        decode = decode_mask_tile if ref.mask else decode_tile
        arr = decode(data, ref, header, limit)
        self.decoding.tiles_decoded += 1
        self.decoding.decode_seconds += time.perf_counter() - t0
        return arr

    def _settle(self, key: Any, exc: BaseException | None, value: Any = None) -> None:
        fut = self._inflight.pop(key, None)
        if fut is None or fut.done():
            return
        if exc is not None:
            fut.set_exception(exc)
            fut.exception()  # delivered to every waiter still waiting; never "unretrieved"
        else:
            fut.set_result(value)


def _version(identity: ObjectIdentity | None) -> tuple[Any, ...] | None:
    """What tells two versions of an object apart (None: nothing recorded)."""
    if identity is None:
        return None
    return (identity.size, identity.etag, identity.last_modified)


def _cache_key(ref: TileRef, version: tuple[Any, ...] | None) -> Any:
    return ref.key if version is None else (*ref.key, version)


def _after(exc: BaseException, attempts: int) -> BaseException:
    """A decode error that survived re-fetches, saying so."""
    if attempts and isinstance(exc, DecodeError):
        more = DecodeError(
            exc.href,
            f"{exc.cause} (the same after {attempts} re-fetch{'es' if attempts > 1 else ''})",
            exc.byte_range,
        )
        more.__cause__ = exc
        return more
    return exc


def _consume_exception(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()  # errors were delivered to the waiters; do not log them twice
