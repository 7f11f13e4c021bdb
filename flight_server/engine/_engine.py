"""The chip engine's facade: a Collection plus a request in, exact chips out.

:class:`ChipEngine` wires the stages together: planning (:mod:`._plan`, pure),
the stream (:mod:`._stream`) fed by the producer (:mod:`._produce`), which
renders chips (:mod:`._render`) from tiles the loader fetches and decodes
(:mod:`._tiles`) and assembles them (:mod:`._assemble`, :mod:`._warp`). The
runtime (:mod:`._runtime`) owns the event loop thread, the decode pool and the
store registries; the decoded-tile cache and the header cache are shared by
every request of the engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

from catalog import AccessPolicy, Collection
from catalog import settings as catalog_settings
from cogflight_core import EngineSettings, InvalidArgumentError
from cogflight_core._config import with_updates

from ._allocator import tune_allocator
from ._assemble import fill_value
from ._cache import TileCache
from ._headers import HeaderCache
from ._locality import place_shards, shard_key, shard_members
from ._plan import batch_rows, chip_keys, plan_request
from ._plan_cache import PlanCache
from ._produce import produce
from ._render import Render
from ._request import ChipRequest
from ._runtime import Runtime
from ._settings import engine_settings
from ._stream import ChipStream, Producer
from ._types import ChipBatch, ChipPlan, ChipResult, EngineStats, concat_batches

__all__ = ["ChipEngine"]


class ChipEngine:
    """Produces chips from Collections; thread-safe and shared by all requests.

    Args:
        settings: the engine settings (default: the process's, from ``COGFLIGHT_*``).
        cache_bytes: decoded-tile cache budget (default 1 GiB).
        max_requests: concurrent range requests (default 64).
        decode_threads: decode pool size (default: cores).
        coalesce_bytes: merge ranges of one file closer than this (default 64 KiB).
        max_run_bytes: largest coalesced request (default 4 MiB).
        max_chip_pixels, max_chips: request limits.
        policy: the data access policy every read is checked against (None: every
            href is allowed, as for an engine reading its user's own files; a server
            passes ``AccessPolicy.for_root(root, allow)``).

    Explicit arguments win over ``settings``; every value is checked against the
    bounds of :class:`~cogflight_core.EngineSettings`.

    Concurrency policy: I/O runs on one event loop thread owned by the engine;
    decoding and assembly run in a thread pool (imagecodecs and numpy release
    the GIL). Public methods may be called from any thread; the async ones from
    any event loop, without blocking a thread while they wait.
    """

    def __init__(
        self,
        settings: EngineSettings | None = None,
        *,
        cache_bytes: int | None = None,
        max_requests: int | None = None,
        decode_threads: int | None = None,
        coalesce_bytes: int | None = None,
        max_run_bytes: int | None = None,
        max_chip_pixels: int | None = None,
        max_chips: int | None = None,
        policy: AccessPolicy | None = None,
    ) -> None:
        self.settings: EngineSettings = with_updates(
            engine_settings() if settings is None else settings,
            cache_bytes=cache_bytes,
            max_requests=max_requests,
            decode_threads=decode_threads,
            coalesce_bytes=coalesce_bytes,
            max_run_bytes=max_run_bytes,
            max_chip_pixels=max_chip_pixels,
            max_chips=max_chips,
        )
        s = self.settings
        tune_allocator(s.allocator_retain_bytes)
        self.cache = TileCache(s.cache_bytes)
        self.plans = PlanCache()
        self.headers = HeaderCache()
        self.policy = policy if policy is not None else AccessPolicy.open()
        self._runtime = Runtime(
            self.cache, s, max_retries=catalog_settings().max_retries, policy=self.policy
        )

    # Settings under their historical attribute names.
    @property
    def max_requests(self) -> int:
        """Concurrent range requests."""
        return self.settings.max_requests

    @property
    def decode_threads(self) -> int:
        """Decode pool size."""
        return self.settings.decode_threads

    @property
    def coalesce_bytes(self) -> int:
        """Ranges of one file closer than this are fetched together."""
        return self.settings.coalesce_bytes

    @property
    def max_chip_pixels(self) -> int:
        """Largest chip (height x width) a request may ask for."""
        return self.settings.max_chip_pixels

    @property
    def max_chips(self) -> int:
        """Most chips one request may produce."""
        return self.settings.max_chips

    # -- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the loop thread and the decode pool (the engine can be restarted)."""
        self._runtime.close()

    def __enter__(self) -> ChipEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats(self) -> EngineStats:
        """Requests, bytes, tiles decoded, chips, errors and cache hit rate so far."""
        started = self._runtime.started
        fetched = started.loader.fetcher.stats if started else None
        decoded = started.loader.decoding if started else None
        return EngineStats(
            requests=fetched.requests if fetched else 0,
            bytes_fetched=fetched.bytes if fetched else 0,
            tiles_decoded=decoded.tiles_decoded if decoded else 0,
            decode_seconds=decoded.decode_seconds if decoded else 0.0,
            chips=self._runtime.chips,
            errors=(fetched.errors if fetched else 0) + (decoded.errors if decoded else 0),
            retries=fetched.retries if fetched else 0,
            cache=self.cache.stats(),
        )

    # -- public API --------------------------------------------------------------------------
    def plan(self, collection: Collection, request: ChipRequest) -> ChipPlan:
        """Plan a request without reading pixels: chip count, shape, dtype, Arrow schema.

        Raises:
            InvalidArgumentError: a field does not fit this Collection.
            LimitExceededError: too many chips, chips too large, or one chip over
                ``max_batch_bytes`` (batches of smaller chips hold fewer rows than
                ``batch_rows`` asks when needed, to stay within it).
        """
        if not isinstance(request, ChipRequest):
            raise InvalidArgumentError("request: build it with ChipRequest.create(...)")
        s = self.settings
        return plan_request(
            collection,
            request,
            lambda row, band: self.headers.get(collection, row, band),
            max_chips=s.max_chips,
            max_chip_pixels=s.max_chip_pixels,
            max_batch_bytes=s.max_batch_bytes,
            cache=self.plans,
        )

    def place(
        self,
        collection: Collection,
        plan: ChipPlan,
        count: int,
        locations: Sequence[str],
        request: ChipRequest | None = None,
    ) -> tuple[list[list[str]], list[int]]:
        """Where each of ``count`` shards of an unsharded ``plan`` should be read, and its chips.

        Shards keep chips over the same tiles together; each is placed by rendezvous
        hashing of its tiles over ``locations`` (the rest of each list: failover order).
        See :mod:`._locality`.
        """
        keys = chip_keys(
            plan.items, plan.bands, lambda row, band: self.headers.get(collection, row, band)
        )
        # The split its streams will cut (kept with the plan of ``request``, when given).
        shards = self.plans.shards(collection, request, plan.bands) if request else None
        members = shards.get(count) if shards is not None else None
        if members is None:
            members = shard_members(keys, count)
            if shards is not None:
                shards[count] = members
        places = place_shards([shard_key(keys, m) for m in members], locations)
        return places, [len(m) for m in members]

    def stream(
        self, collection: Collection, request: ChipRequest, *, prefetch: int = 2
    ) -> ChipStream:
        """Chips in batches of ``request.batch_rows``, produced ahead while you consume.

        Planning happens here, in the caller's thread, so a bad request raises
        before any pixel is read.
        """
        plan = self.plan(collection, request)
        loop, producer = self._producer(collection, request, plan)
        return ChipStream.open(loop, plan, producer, prefetch)

    def read(self, collection: Collection, request: ChipRequest) -> ChipResult:
        """Every chip of the request, concatenated in memory."""
        with self.stream(collection, request) as stream:
            batches = list(stream)
        return concat_batches(batches, list(stream.failures), stream.plan)

    async def stream_async(
        self, collection: Collection, request: ChipRequest, *, prefetch: int = 2
    ) -> AsyncIterator[ChipBatch]:
        """Async :meth:`stream`: planning runs in the decode pool, batches are awaited."""
        async with await self._open_async(collection, request, prefetch) as stream:
            async for batch in stream:
                yield batch

    async def read_async(self, collection: Collection, request: ChipRequest) -> ChipResult:
        """Async :meth:`read`: awaitable from any event loop, no thread waits for it."""
        async with await self._open_async(collection, request, 2) as stream:
            batches = [batch async for batch in stream]
        started = self._runtime.ensure()
        return await asyncio.wrap_future(
            started.executor.submit(concat_batches, batches, list(stream.failures), stream.plan)
        )

    # -- wiring ------------------------------------------------------------------------------
    async def _open_async(
        self, collection: Collection, request: ChipRequest, prefetch: int
    ) -> ChipStream:
        started = self._runtime.ensure()
        plan = await asyncio.wrap_future(started.executor.submit(self.plan, collection, request))
        loop, producer = self._producer(collection, request, plan)
        return await ChipStream.open_async(loop, plan, producer, prefetch)

    def _producer(
        self, collection: Collection, request: ChipRequest, plan: ChipPlan
    ) -> tuple[asyncio.AbstractEventLoop, Producer]:
        """The engine loop and the producer of one planned request."""
        runtime = self._runtime
        started = runtime.ensure()
        render = Render(
            collection=collection,
            registry=runtime.registry(collection.store_options),
            request=request,
            bands=plan.bands,
            fills=tuple(fill_value(b, plan.dtype, request.scale_offset) for b in plan.bands),
            headers=self.headers,
            loader=started.loader,
            executor=started.executor,
        )

        def delivered(n: int) -> None:
            runtime.chips += n

        rows = batch_rows(plan, request.batch_rows, self.settings.max_batch_bytes)

        def producer(queue: asyncio.Queue[Any]) -> Any:
            return produce(
                render,
                plan,
                queue,
                batch_rows=rows,
                batch_numbers=runtime.batch_numbers,
                delivered=delivered,
            )

        return started.loop, producer
