"""The chip engine: a Collection plus a request in, exact chips out, concurrently.

Planning (pure) turns each geometry and scene into an output grid; rendering
reads every band onto that grid, directly from tiles when the grid is the
file's own (or an overview's), or by resampling otherwise; assembly applies
nodata, internal masks, polygon masks and padding, and yields batches in
order as soon as each is complete. The engine owns one event loop thread,
one decode pool, one tile cache and one store registry per set of store
options; every request in the process shares them.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import contextvars
import datetime as dt
import itertools
import logging
import math
import os
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import shapely
from shapely.geometry.base import BaseGeometry

from catalog import (
    Band,
    Collection,
    HeaderRecord,
    StoreRegistry,
    asset_column,
    geometry_to_crs84,
    same_crs,
)
from catalog import settings as catalog_settings

from ._arrow import band_metadata, chip_schema
from ._cache import CacheStats, TileCache
from ._errors import ChipReadError, CogflightError, InvalidArgumentError, LimitExceededError
from ._geometry import reproject_geometry
from ._plan import (
    GeoTransform,
    Window,
    centered_window,
    choose_level,
    geometry_window,
    tiles_in_window,
    window_transform,
)
from ._pool import PRIORITY, PriorityExecutor
from ._rasterize import rasterize_polygon
from ._request import ChipRequest
from ._settings import engine_settings
from ._tiles import TileLoader
from ._warp import (
    nearest_index,
    needed_window,
    sample_bilinear,
    source_coordinates,
    take_nearest,
)

__all__ = [
    "ChipBatch",
    "ChipEngine",
    "ChipPlan",
    "ChipResult",
    "ChipStream",
    "EngineStats",
    "Grid",
]

logger = logging.getLogger("cogflight.server")


@dataclass(frozen=True, slots=True)
class Grid:
    """An output pixel grid: CRS, GDAL-order geotransform and size."""

    crs: str
    transform: GeoTransform
    height: int
    width: int

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(xmin, ymin, xmax, ymax)`` in the grid CRS."""
        x0, dx, _, y0, _, dy = self.transform
        xs = (x0, x0 + dx * self.width)
        ys = (y0, y0 + dy * self.height)
        return (min(xs), min(ys), max(xs), max(ys))


@dataclass(frozen=True, slots=True)
class _Chip:
    index: int
    geometry_index: int
    rows: tuple[int, ...]  # one scene, or a time series ordered by datetime
    grid: Grid
    polygon: BaseGeometry | None  # in the grid CRS, when masking


@dataclass
class ChipBatch:
    """A batch of chips: pixels, validity and per-chip metadata.

    ``chips`` is ``[N, C, H, W]`` (``[N, T, C, H, W]`` for time series),
    ``valid`` is ``[N, H, W]`` (``[N, T, H, W]``) with True where a pixel holds
    data: inside the raster, inside the polygon when masking, set in the
    file's internal mask, and no band equal to its nodata.
    """

    chips: np.ndarray
    valid: np.ndarray
    meta: pa.Table
    bands: tuple[Band, ...]
    time_series: bool = False

    def __len__(self) -> int:
        return int(self.chips.shape[0])

    def to_record_batch(self) -> pa.RecordBatch:
        """The batch as Arrow, pixels as ``arrow.fixed_shape_tensor`` (zero-copy)."""
        from ._arrow import batch_to_arrow

        return batch_to_arrow(self)


@dataclass
class ChipResult:
    """Every chip of a request in memory, plus the failures of ``on_error="skip"``."""

    chips: np.ndarray
    valid: np.ndarray
    meta: pa.Table
    bands: tuple[Band, ...]
    failures: list[ChipReadError] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.chips.shape[0])


@dataclass(frozen=True)
class EngineStats:
    """A snapshot of what an engine did since it started."""

    requests: int
    bytes_fetched: int
    tiles_decoded: int
    decode_seconds: float
    chips: int
    errors: int
    retries: int
    cache: CacheStats


@dataclass(frozen=True)
class ChipPlan:
    """What a request will produce, decided before any pixel is read.

    ``shape`` is every chip's shape (``[C, H, W]`` or ``[T, C, H, W]``), computed over
    all chips of the request so that every shard of it agrees; ``chips`` counts the
    chips of this shard (``total_chips`` those of the whole request).
    """

    collection: str
    bands: tuple[Band, ...]
    dtype: np.dtype
    shape: tuple[int, ...]
    chips: int
    total_chips: int
    time_series: bool
    schema: pa.Schema
    items: tuple[_Chip, ...] = field(repr=False, default=())

    @property
    def chip_bytes(self) -> int:
        """Bytes of one chip's pixels."""
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


class ChipStream:
    """An iterator of :class:`ChipBatch` produced in the background, in order.

    Closing it (or abandoning iteration) cancels the remaining work and frees
    its memory. ``failures`` lists chips skipped with ``on_error="skip"``.
    """

    def __init__(
        self, engine: ChipEngine, collection: Collection, request: ChipRequest, prefetch: int
    ) -> None:
        self.failures: list[ChipReadError] = []
        self.plan = engine.plan(collection, request)  # bad requests fail here, not mid-stream
        self.chip_count: int = self.plan.chips
        self.shape: tuple[int, ...] = self.plan.shape
        self._engine = engine
        self._loop = engine._ensure_loop()
        self._queue: asyncio.Queue[Any] | None = None
        self._done = False
        ready = concurrent.futures.Future[asyncio.Queue[Any]]()

        def start() -> None:
            q: asyncio.Queue[Any] = asyncio.Queue(maxsize=max(1, prefetch))
            self._task = self._loop.create_task(
                engine._produce(collection, request, self.plan, q, self)
            )
            ready.set_result(q)

        self._loop.call_soon_threadsafe(start)
        self._queue = ready.result()

    def __iter__(self) -> Iterator[ChipBatch]:
        return self

    def __next__(self) -> ChipBatch:
        if self._done or self._queue is None:
            raise StopIteration
        item = asyncio.run_coroutine_threadsafe(self._queue.get(), self._loop).result()
        if item is None:
            self._done = True
            raise StopIteration
        if isinstance(item, BaseException):
            self._done = True
            raise item
        return item  # type: ignore[no-any-return]

    def close(self) -> None:
        """Stop producing: cancel outstanding reads and drop queued batches."""
        if not self._done:
            self._done = True
            self._loop.call_soon_threadsafe(self._task.cancel)

    def __enter__(self) -> ChipStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


class ChipEngine:
    """Produces chips from Collections; thread-safe and shared by all requests.

    Args:
        cache_bytes: decoded-tile cache budget (``COGFLIGHT_CACHE_BYTES``, default 1 GiB).
        max_requests: concurrent range requests (``COGFLIGHT_MAX_REQUESTS``, default 64).
        decode_threads: decode pool size (``COGFLIGHT_DECODE_THREADS``, default: cores).
        coalesce_bytes: merge ranges of one file closer than this (default 64 KiB).
        max_chip_pixels, max_chips: request limits.

    Concurrency policy: I/O runs on one event loop thread owned by the engine;
    decoding and assembly run in a thread pool (imagecodecs and numpy release
    the GIL). Public methods may be called from any thread.
    """

    def __init__(
        self,
        *,
        cache_bytes: int | None = None,
        max_requests: int | None = None,
        decode_threads: int | None = None,
        coalesce_bytes: int | None = None,
        max_chip_pixels: int | None = None,
        max_chips: int | None = None,
    ) -> None:
        s = engine_settings()
        self.cache = TileCache(s.cache_bytes if cache_bytes is None else cache_bytes)
        self.max_requests = s.max_requests if max_requests is None else max_requests
        self.decode_threads = s.decode_threads if decode_threads is None else decode_threads
        self.coalesce_bytes = s.coalesce_bytes if coalesce_bytes is None else coalesce_bytes
        self.max_chip_pixels = s.max_chip_pixels if max_chip_pixels is None else max_chip_pixels
        self.max_chips = s.max_chips if max_chips is None else max_chips
        if self.max_requests < 1 or self.decode_threads < 1:
            raise InvalidArgumentError("max_requests and decode_threads must be >= 1")
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._executor: PriorityExecutor | None = None
        self._loader: TileLoader | None = None
        self._pid = os.getpid()
        self._registries: dict[tuple[Any, ...], StoreRegistry] = {}
        self._headers: OrderedDict[tuple[str, int, int], HeaderRecord] = OrderedDict()
        self._chips = 0
        self._batch_seq = itertools.count(1)  # 0: work outside any batch, first

    # -- lifecycle ---------------------------------------------------------------------------
    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._pid != os.getpid():  # forked: the parent's threads and stores are gone
                self._loop = self._thread = self._executor = self._loader = None
                self._registries.clear()
                self._pid = os.getpid()
            if self._loop is None:
                loop = asyncio.new_event_loop()
                self._executor = PriorityExecutor(
                    self.decode_threads, thread_name_prefix="cogflight-decode"
                )
                started = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    started.set()
                    loop.run_forever()

                self._thread = threading.Thread(target=run, name="cogflight-engine", daemon=True)
                self._thread.start()
                started.wait()
                self._loop = loop

                async def make_loader() -> TileLoader:
                    assert self._executor is not None
                    return TileLoader(
                        cache=self.cache,
                        executor=self._executor,
                        max_requests=self.max_requests,
                        coalesce_bytes=self.coalesce_bytes,
                        max_retries=catalog_settings().max_retries,
                    )

                self._loader = asyncio.run_coroutine_threadsafe(make_loader(), loop).result()
            return self._loop

    def close(self) -> None:
        """Stop the loop thread and the decode pool (the engine can be restarted)."""
        with self._lock:
            loop, thread, executor = self._loop, self._thread, self._executor
            self._loop = self._thread = self._executor = self._loader = None
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
            if thread is not None:
                thread.join(timeout=10)
            loop.close()
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> ChipEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats(self) -> EngineStats:
        """Requests, bytes, tiles decoded, chips, errors and cache hit rate so far."""
        loader = self._loader
        f = loader.stats if loader is not None else None
        return EngineStats(
            requests=f.requests if f else 0,
            bytes_fetched=f.bytes_fetched if f else 0,
            tiles_decoded=f.tiles_decoded if f else 0,
            decode_seconds=f.decode_seconds if f else 0.0,
            chips=self._chips,
            errors=f.errors if f else 0,
            retries=f.retries if f else 0,
            cache=self.cache.stats(),
        )

    # -- public API --------------------------------------------------------------------------
    def stream(
        self, collection: Collection, request: ChipRequest, *, prefetch: int = 2
    ) -> ChipStream:
        """Chips in batches of ``request.batch_rows``, produced ahead while you consume.

        Planning happens here, in the caller's thread, so a bad request raises
        before any pixel is read.
        """
        return ChipStream(self, collection, request, prefetch)

    def read(self, collection: Collection, request: ChipRequest) -> ChipResult:
        """Every chip of the request, concatenated in memory."""
        with self.stream(collection, request) as stream:
            batches = list(stream)
            failures = list(stream.failures)
        return _concat(batches, failures, stream.plan)

    async def read_async(self, collection: Collection, request: ChipRequest) -> ChipResult:
        """Async :meth:`read`: runs on the engine's loop, awaitable from any loop."""
        return await asyncio.to_thread(self.read, collection, request)

    async def stream_async(
        self, collection: Collection, request: ChipRequest
    ) -> AsyncIterator[ChipBatch]:
        """Async :meth:`stream`."""
        stream = self.stream(collection, request)
        try:
            while True:
                batch = await asyncio.to_thread(next, stream, None)
                if batch is None:
                    return
                yield batch
        finally:
            stream.close()

    # -- planning ------------------------------------------------------------------------------
    def _registry(self, collection: Collection) -> StoreRegistry:
        opts = collection.store_options
        key = tuple(sorted((k, str(v)) for k, v in opts.items()))
        reg = self._registries.get(key)
        if reg is None:
            reg = self._registries[key] = StoreRegistry(opts)
        return reg

    def _header(self, collection: Collection, row: int, band: Band) -> HeaderRecord:
        """Parsed header of a scene's asset, cached by href and header bytes' identity."""
        value = collection.table.column(asset_column(band.asset))[row]
        if not value.is_valid:
            raise InvalidArgumentError(f"scene {row} has no asset {band.asset!r}")
        offsets = value["header"]["levels"][0]["tile_offsets"]
        key = (str(value["href"].as_py()), len(offsets), offsets[0].as_py() if len(offsets) else 0)
        h = self._headers.get(key)
        if h is None:
            try:
                h = collection.header(row, band.name)
            except CogflightError as exc:
                raise InvalidArgumentError(str(exc)) from exc
            self._headers[key] = h
            if len(self._headers) > 8192:
                self._headers.popitem(last=False)
        return h

    def _bands(self, collection: Collection, request: ChipRequest) -> tuple[Band, ...]:
        if request.bands is None:
            return collection.bands
        known = {b.name: b for b in collection.bands}
        unknown = [b for b in request.bands if b not in known]
        if unknown:
            raise InvalidArgumentError(
                f"bands: {', '.join(map(repr, unknown))} not in Collection {collection.name!r}; "
                f"it has {', '.join(known)}"
            )
        return tuple(known[b] for b in request.bands)

    def _plan(
        self, collection: Collection, request: ChipRequest, bands: tuple[Band, ...]
    ) -> list[_Chip]:
        for col in request.columns:
            if col not in collection.table.column_names or col.startswith("asset:"):
                raise InvalidArgumentError(
                    f"columns: Collection {collection.name!r} has no column {col!r}"
                )
        n = len(collection)
        rows = np.arange(n) if request.rows is None else np.asarray(request.rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= n):
            raise InvalidArgumentError(f"rows: out of range for {n} scenes")
        wkb = collection.table.column("geometry").take(pa.array(rows)).to_pylist()
        footprints = shapely.from_wkb(wkb)
        tree = shapely.STRtree(footprints)
        try:
            geoms84 = [geometry_to_crs84(g, request.geometry_crs) for g in request.geometries]
        except Exception as exc:
            raise InvalidArgumentError(f"geometries: cannot project to lon/lat: {exc}") from exc
        g_idx, f_idx = tree.query(geoms84, predicate="intersects")
        hits: dict[int, list[int]] = {}
        for gi, fi in zip(g_idx.tolist(), f_idx.tolist(), strict=True):
            hits.setdefault(gi, []).append(int(rows[fi]))
        times = collection.table.column("datetime").to_pylist()

        def when(r: int) -> tuple[int, Any]:
            t = times[r]
            return (0, t) if t is not None else (1, dt.datetime.max.replace(tzinfo=dt.UTC))

        groups: list[tuple[int, tuple[int, ...]]] = []
        for gi in range(len(request.geometries)):
            scene_rows = sorted(set(hits.get(gi, [])))
            if request.time_series:
                if scene_rows:
                    groups.append((gi, tuple(sorted(scene_rows, key=when))))
            else:
                groups.extend((gi, (r,)) for r in scene_rows)
        if len(groups) > self.max_chips:
            raise LimitExceededError(
                f"the request makes {len(groups)} chips, over the limit of {self.max_chips}; "
                "narrow the filter or split the geometries"
            )
        chips = []
        for i, (gi, chip_rows) in enumerate(groups):
            grid, poly = self._grid(collection, request, bands, gi, chip_rows[0])
            if grid.height * grid.width > self.max_chip_pixels:
                raise LimitExceededError(
                    f"geometry {gi} needs a {grid.height}x{grid.width} chip, over the limit of "
                    f"{self.max_chip_pixels} pixels; use chip_size or a coarser resolution"
                )
            chips.append(_Chip(i, gi, chip_rows, grid, poly))
        return chips

    def _grid(
        self,
        collection: Collection,
        request: ChipRequest,
        bands: tuple[Band, ...],
        gi: int,
        row: int,
    ) -> tuple[Grid, BaseGeometry | None]:
        geom = request.geometries[gi]
        ref = self._header(collection, row, bands[0])
        if request.crs is None and request.resolution is None:
            g = reproject_geometry(geom, request.geometry_crs, ref.crs)
            if request.chip_size is not None:
                window = centered_window(g, ref.geotransform, *request.chip_size)
            else:
                window = geometry_window(g, ref.geotransform)
                if window.width == 0 or window.height == 0:  # points and lines: one pixel
                    window = Window(
                        window.col_off, window.row_off, max(window.width, 1), max(window.height, 1)
                    )
            grid = Grid(
                ref.crs, window_transform(ref.geotransform, window), window.height, window.width
            )
            return grid, (g if request.mask else None)
        crs = request.crs or ref.crs
        if request.resolution is None:
            if not same_crs(crs, ref.crs):
                raise InvalidArgumentError(
                    "resolution: give a resolution (in units of crs) when crs differs from "
                    "the rasters' CRS"
                )
            res_x, res_y = abs(ref.geotransform[1]), abs(ref.geotransform[5])
        else:
            res_x, res_y = request.resolution
        g = reproject_geometry(geom, request.geometry_crs, crs)
        minx, miny, maxx, maxy = g.bounds
        if request.chip_size is not None:
            h, w = request.chip_size
            cx, cy = (minx + maxx) / 2, (miny + maxy) / 2
            x0, y0 = cx - w * res_x / 2, cy + h * res_y / 2
        else:
            w = max(1, round((maxx - minx) / res_x))
            h = max(1, round((maxy - miny) / res_y))
            x0, y0 = minx, maxy
        return Grid(crs, (x0, res_x, 0.0, y0, 0.0, -res_y), h, w), (g if request.mask else None)

    # -- production ----------------------------------------------------------------------------
    def plan(self, collection: Collection, request: ChipRequest) -> ChipPlan:
        """Plan a request without reading pixels: chip count, shape, dtype, Arrow schema.

        Raises:
            InvalidArgumentError: a field does not fit this Collection.
            LimitExceededError: too many chips, or chips too large.
        """
        if not isinstance(request, ChipRequest):
            raise InvalidArgumentError("request: build it with ChipRequest.create(...)")
        bands = self._bands(collection, request)
        out_dtype = _output_dtype(bands, collection, request)
        chips = self._plan(collection, request, bands)
        if request.chip_size is not None:
            hw = request.chip_size
        else:
            hw = (
                max((c.grid.height for c in chips), default=0),
                max((c.grid.width for c in chips), default=0),
            )
        t = max((len(c.rows) for c in chips), default=1) if request.time_series else None
        shape = ((t,) if t else ()) + (len(bands), *hw)
        total = len(chips)
        if request.shard is not None:
            index, count = request.shard
            chips = chips[index * total // count : (index + 1) * total // count]
        meta = _meta_schema(collection, request)
        schema = chip_schema(meta, out_dtype, shape, request.time_series, band_metadata(bands))
        return ChipPlan(
            collection.name,
            bands,
            out_dtype,
            shape,
            len(chips),
            total,
            request.time_series,
            schema,
            tuple(chips),
        )

    async def _produce(
        self,
        collection: Collection,
        request: ChipRequest,
        plan: ChipPlan,
        queue: asyncio.Queue[Any],
        stream: ChipStream,
    ) -> None:
        try:
            loop = asyncio.get_running_loop()
            bands, out_dtype, chips = plan.bands, plan.dtype, list(plan.items)
            shape = (plan.shape[-2], plan.shape[-1])
            t = plan.shape[0] if plan.time_series else None
            registry = self._registry(collection)
            logger.info(
                "collection %r: %d chips of %s, bands %s",
                collection.name,
                len(chips),
                plan.shape,
                ",".join(b.name for b in bands),
            )
            columns = _Columns.of(collection, request)
            fills = [_fill_value(b, out_dtype, request) for b in bands]
            headers: dict[tuple[int, str], HeaderRecord] = {}
            # Keep about two batches of chips in flight so decoding never waits at a
            # batch boundary; chips render straight into their batch's buffer, and
            # batches are emitted strictly in order.
            batches: collections.deque[_PendingBatch] = collections.deque()
            size = request.batch_rows
            for first in range(0, len(chips), size):
                part = chips[first : first + size]
                lead = (len(part), t) if t else (len(part),)
                buf = _empty((*lead, len(bands), *shape), out_dtype)
                for ci, f in enumerate(fills):
                    if f != 0:  # the buffer starts zeroed; NaN != 0 holds, as it should
                        buf[..., ci, :, :] = f
                vbuf = _empty((*lead, *shape), np.dtype(bool))
                # The batch's tasks carry its sequence number: the pool decodes for the
                # oldest batch first, so batch 1 never waits for batch 2's tiles.
                context = contextvars.copy_context()
                context.run(PRIORITY.set, next(self._batch_seq))
                tasks = [
                    loop.create_task(
                        self._render(
                            collection,
                            registry,
                            request,
                            bands,
                            c,
                            buf[k],
                            vbuf[k],
                            t,
                            fills,
                            headers,
                        ),
                        context=context,
                    )
                    for k, c in enumerate(part)
                ]
                batches.append(_PendingBatch(part, buf, vbuf, tasks))
                if len(batches) >= 2:
                    await self._emit(
                        batches.popleft(), columns, request, bands, shape, t, queue, stream
                    )
            while batches:
                await self._emit(
                    batches.popleft(), columns, request, bands, shape, t, queue, stream
                )
            await queue.put(None)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            if not isinstance(exc, CogflightError):
                logger.exception("chip production failed")
            await queue.put(exc)
        finally:
            for pb in locals().get("batches", ()):
                pb.cancel()

    async def _emit(
        self,
        pb: _PendingBatch,
        columns: _Columns,
        request: ChipRequest,
        bands: tuple[Band, ...],
        shape: tuple[int, int],
        steps: int | None,
        queue: asyncio.Queue[Any],
        stream: ChipStream,
    ) -> None:
        keep = np.ones(len(pb.chips), dtype=bool)
        try:
            for k, task in enumerate(pb.tasks):
                try:
                    await task
                except ChipReadError as err:
                    if request.on_error == "raise":
                        raise
                    stream.failures.append(err)
                    keep[k] = False
                    logger.warning("skipped chip %d: %s", pb.chips[k].index, err)
        except BaseException:
            pb.cancel()
            raise
        if not keep.any():
            return
        kept = [c for c, ok in zip(pb.chips, keep, strict=True) if ok]
        data = pb.data if keep.all() else pb.data[keep]
        valid = pb.valid if keep.all() else pb.valid[keep]
        loop = asyncio.get_running_loop()
        meta = await loop.run_in_executor(
            self._executor, _batch_meta, columns, request, kept, shape, steps, columns.schema
        )
        self._chips += len(kept)
        await queue.put(ChipBatch(data, valid, meta, bands, time_series=steps is not None))

    async def _render(
        self,
        collection: Collection,
        registry: StoreRegistry,
        request: ChipRequest,
        bands: tuple[Band, ...],
        chip: _Chip,
        dest: np.ndarray,
        dest_valid: np.ndarray,
        steps: int | None,
        fills: list[float | int],
        headers: dict[tuple[int, str], HeaderRecord],
    ) -> None:
        """Render one chip into ``dest`` (``[T?, C, H, W]``) and ``dest_valid``, in place."""
        loop = asyncio.get_running_loop()
        grid = chip.grid
        gh, gw = grid.height, grid.width
        poly_mask = None
        if chip.polygon is not None:
            poly_mask = await loop.run_in_executor(
                self._executor,
                lambda: rasterize_polygon(
                    chip.polygon, grid.transform, gh, gw, all_touched=request.all_touched
                ),
            )
        by_asset: dict[str, list[int]] = {}
        for bi, b in enumerate(bands):
            by_asset.setdefault(b.asset, []).append(bi)

        warps: dict[Any, asyncio.Future[Any]] = {}

        async def one_file(si: int, row: int, asset_bands: list[int]) -> np.ndarray:
            region = (dest[si] if steps else dest)[:, :gh, :gw]
            header = headers.get((row, bands[asset_bands[0]].asset))
            if header is None:
                header = self._header(collection, row, bands[asset_bands[0]])
                headers[(row, bands[asset_bands[0]].asset)] = header
            samples = [bands[bi].sample for bi in asset_bands]
            targets = [region[bi] for bi in asset_bands]
            valid = await self._on_grid(registry, header, samples, grid, request, targets, warps)
            if request.scale_offset:
                for bi in asset_bands:
                    _apply_scale_offset(region[bi], bands[bi], header)
            return valid

        # Every file of every time step at once: a chip costs one round trip, not one
        # per file and step (15 dates x 4 band files at 50 ms would be 3 s).
        jobs = [  # per time step, one task per file
            [asyncio.ensure_future(one_file(si, row, ab)) for ab in by_asset.values()]
            for si, row in enumerate(chip.rows)
        ]
        try:
            await asyncio.gather(*(task for step in jobs for task in step))
        except BaseException:
            for step in jobs:
                for task in step:
                    task.cancel()
            raise
        for si, step in enumerate(jobs):
            region = (dest[si] if steps else dest)[:, :gh, :gw]
            step_valid = np.ones((gh, gw), dtype=bool)
            for task in step:
                step_valid &= task.result()
            if poly_mask is not None:
                step_valid &= poly_mask
            if poly_mask is not None or request.scale_offset:
                # As rasterio.mask.mask: every pixel that is not valid data gets the fill.
                invalid = ~step_valid
                for bi in range(len(bands)):
                    region[bi][invalid] = fills[bi]
            (dest_valid[si] if steps else dest_valid)[:gh, :gw] = step_valid

    async def _on_grid(
        self,
        registry: StoreRegistry,
        header: HeaderRecord,
        samples: list[int],
        grid: Grid,
        request: ChipRequest,
        targets: list[np.ndarray],
        warps: dict[Any, asyncio.Future[Any]],
    ) -> np.ndarray:
        """Write one file's samples on the grid into ``targets``; return validity.

        A direct window read when the grid is the file's own (or an overview's),
        resampling otherwise.
        """
        if same_crs(grid.crs, header.crs):
            for level in range(len(header.levels)):
                window = _aligned_window(header.level_geotransform(level), grid)
                if window is not None:
                    return await self._read_window(
                        registry, header, level, window, samples, targets
                    )
        loop = asyncio.get_running_loop()
        # Files of one scene usually share a grid (one file per band): where their
        # pixels come from is worked out once per chip and grid, not once per file.
        key = (
            header.crs,
            tuple(header.geotransform),
            tuple((lv.width, lv.height) for lv in header.levels),
        )
        plan = warps.get(key)
        if plan is None:
            plan = warps[key] = loop.run_in_executor(
                self._executor, _warp_plan, grid, header, request
            )
        sx0, sy0, level, need, index = await asyncio.shield(plan)
        if need is None:
            return np.zeros((grid.height, grid.width), dtype=bool)
        c0, r0, c1, r1 = need
        src = np.full((len(samples), r1 - r0, c1 - c0), _native_fill(header), dtype=header.dtype)
        src_valid = await self._read_window(
            registry, header, level, Window(c0, r0, c1 - c0, r1 - r0), samples, list(src)
        )
        if index is not None:
            out, valid = await loop.run_in_executor(
                self._executor, take_nearest, src, src_valid, index, _native_fill(header)
            )
        else:
            out, valid = await loop.run_in_executor(
                self._executor,
                sample_bilinear,
                src,
                src_valid,
                sx0,
                sy0,
                c0,
                r0,
                _native_fill(header),
            )
        for k, target in enumerate(targets):
            target[valid] = out[k][valid]
        return valid

    async def _read_window(
        self,
        registry: StoreRegistry,
        header: HeaderRecord,
        level: int,
        window: Window,
        samples: list[int],
        targets: list[np.ndarray],
    ) -> np.ndarray:
        """A boundless window read into ``targets`` (one ``[h, w]`` per sample); validity."""
        loader = self._loader
        assert loader is not None
        refs = list(tiles_in_window(header, level, window, samples))
        mask_refs = (
            list(tiles_in_window(header, level, window, samples, mask=True))
            if (header.masks and header.masks[level] is not None)
            else []
        )
        tiles = await loader.load(registry, header, [r[0] for r in refs + mask_refs])
        return _paste(header, level, window, samples, refs, mask_refs, tiles, targets)


@dataclass
class _PendingBatch:
    chips: list[_Chip]
    data: np.ndarray
    valid: np.ndarray
    tasks: list[asyncio.Task[None]]

    def cancel(self) -> None:
        for task in self.tasks:
            if task.done() and not task.cancelled():
                task.exception()  # already settled: retrieve so it is not logged
            else:
                task.cancel()


# -- pure helpers (run in the decode pool) -------------------------------------------------------


def _empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A zeroed, writable array for batch output, backed by a plain bytearray.

    numpy asks the kernel for transparent huge pages on allocations of 4 MiB and
    more; where THP defrag is ``madvise`` that triggers synchronous compaction and
    made cold reads 40% slower on the benchmark machines. Batches do not need
    huge pages, so they bypass numpy's allocator.
    """
    count = int(np.prod(shape, dtype=np.int64))
    return np.frombuffer(bytearray(count * dtype.itemsize), dtype=dtype).reshape(shape)


def _aligned_window(gt: GeoTransform, grid: Grid) -> Window | None:
    """The window of a level matching the grid exactly, or None."""
    x0, dx, rx, y0, ry, dy = grid.transform
    if rx or ry or gt[2] or gt[4]:
        return None
    if not (math.isclose(dx, gt[1], rel_tol=1e-9) and math.isclose(dy, gt[5], rel_tol=1e-9)):
        return None
    col = (x0 - gt[0]) / gt[1]
    row = (y0 - gt[3]) / gt[5]
    if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
        return None
    return Window(round(col), round(row), grid.width, grid.height)


def _warp_plan(
    grid: Grid, header: HeaderRecord, request: ChipRequest
) -> tuple[np.ndarray, np.ndarray, int, tuple[int, int, int, int] | None, Any]:
    """Where a grid's pixels come from in a file: coordinates, level, window, index.

    The index (nearest only) says which pixel of the window each target pixel takes.
    """
    sx0, sy0 = source_coordinates(
        grid.transform, grid.height, grid.width, grid.crs, header.geotransform, header.crs
    )
    level = choose_level(header, *_source_pixel_size(sx0, sy0, header))
    img = header.levels[level]
    if level:
        fx, fy = img.width / header.width, img.height / header.height
        sx0, sy0 = sx0 * fx, sy0 * fy
    margin = 1 if request.resampling == "bilinear" else 0
    need = needed_window(sx0, sy0, img.width, img.height, margin)
    index = None
    if need is not None and request.resampling != "bilinear":
        c0, r0, c1, r1 = need
        index = nearest_index(sx0, sy0, c0, r0, r1 - r0, c1 - c0)
    return sx0, sy0, level, need, index


def _source_pixel_size(sx: np.ndarray, sy: np.ndarray, header: HeaderRecord) -> tuple[float, float]:
    """Source pixels per target pixel, in source units, measured at the grid centre."""
    h, w = sx.shape
    if h < 2 or w < 2:
        return (abs(header.geotransform[1]), abs(header.geotransform[5]))
    r, c = h // 2, w // 2
    step_x = math.hypot(sx[r, c] - sx[r, c - 1], sy[r, c] - sy[r, c - 1])
    step_y = math.hypot(sx[r, c] - sx[r - 1, c], sy[r, c] - sy[r - 1, c])
    if not (math.isfinite(step_x) and math.isfinite(step_y)):
        return (abs(header.geotransform[1]), abs(header.geotransform[5]))
    return (step_x * abs(header.geotransform[1]), step_y * abs(header.geotransform[5]))


def _native_fill(header: HeaderRecord) -> float | int:
    v = header.nodata_value
    if v is None:
        return 0
    if np.dtype(header.dtype).kind in "iu":
        info = np.iinfo(header.dtype)
        if not info.min <= v <= info.max:
            return 0
    return v


def _paste(
    header: HeaderRecord,
    level: int,
    window: Window,
    samples: list[int],
    refs: list[Any],
    mask_refs: list[Any],
    tiles: dict[Any, np.ndarray | None],
    targets: list[np.ndarray],
) -> np.ndarray:
    """Copy tile pixels into ``targets`` (converting dtype on the way); return validity.

    Valid pixels come from a non-sparse tile, are set in the internal mask, and
    have no sample equal to nodata.
    """
    img = header.levels[level]
    h, w = window.height, window.width
    present = np.zeros((h, w), dtype=bool)
    th, tw = img.tile_height, img.tile_width
    for ref, plane, tr, tc in refs:
        arr = tiles.get(ref.key)
        r0 = max(tr * th, window.row_off)
        r1 = min(tr * th + th, window.row_off + h, img.height)
        c0 = max(tc * tw, window.col_off)
        c1 = min(tc * tw + tw, window.col_off + w, img.width)
        if r0 >= r1 or c0 >= c1 or arr is None:  # sparse tiles hold nodata, not data
            continue
        dst = (
            slice(r0 - window.row_off, r1 - window.row_off),
            slice(c0 - window.col_off, c1 - window.col_off),
        )
        src = (slice(r0 - tr * th, r1 - tr * th), slice(c0 - tc * tw, c1 - tc * tw))
        if plane < 0:
            for k, s in enumerate(samples):
                targets[k][dst] = arr[src[0], src[1], s]
        else:
            for k, s in enumerate(samples):
                if s == plane:
                    targets[k][dst] = arr[src]
        present[dst] = True
    valid = present
    mimg = header.masks[level] if mask_refs else None
    if mimg is not None:
        mvalid = np.zeros((h, w), dtype=bool)
        mth, mtw = mimg.tile_height, mimg.tile_width
        for ref, _plane, tr, tc in mask_refs:
            arr = tiles.get(ref.key)
            r0 = max(tr * mth, window.row_off)
            r1 = min(tr * mth + mth, window.row_off + h, mimg.height)
            c0 = max(tc * mtw, window.col_off)
            c1 = min(tc * mtw + mtw, window.col_off + w, mimg.width)
            if r0 >= r1 or c0 >= c1 or arr is None:
                continue
            mvalid[
                r0 - window.row_off : r1 - window.row_off, c0 - window.col_off : c1 - window.col_off
            ] = arr[r0 - tr * mth : r1 - tr * mth, c0 - tc * mtw : c1 - tc * mtw]
        valid &= mvalid
    nodata = header.nodata_value
    if nodata is not None:
        for t in targets:
            if isinstance(nodata, float) and math.isnan(nodata):
                valid &= ~np.isnan(t)
            else:
                valid &= t != nodata
    return valid


def _output_dtype(bands: Sequence[Band], collection: Collection, request: ChipRequest) -> np.dtype:
    native = np.result_type(*[np.dtype(b.dtype or "float32") for b in bands])
    if request.dtype is not None:
        target = np.dtype(request.dtype)
        if request.scale_offset and target.kind != "f":
            raise InvalidArgumentError("dtype: scale_offset output must be a float dtype")
        if target.kind != "f" and not np.can_cast(native, target, casting="safe"):
            raise InvalidArgumentError(
                f"dtype: casting {native} to {target} would lose values; choose a wider "
                "integer or a float dtype"
            )
        return target
    if request.scale_offset:
        return np.dtype("float64") if native == np.float64 else np.dtype("float32")
    return native


def _fill_value(band: Band, out_dtype: np.dtype, request: ChipRequest) -> float | int:
    if request.scale_offset:
        return float("nan")
    nodata = band.nodata
    if nodata is None:
        return 0
    try:
        v = float(nodata)
    except ValueError:
        return 0
    if out_dtype.kind in "iu":
        if math.isnan(v) or not np.iinfo(out_dtype).min <= v <= np.iinfo(out_dtype).max:
            return 0
        return int(v)
    return v


def _apply_scale_offset(region: np.ndarray, band: Band, header: HeaderRecord) -> None:
    """Scale and offset one band in place (header values first, then the Collection's)."""
    i = band.sample
    scale = header.scales[i] if header.scales and header.scales[i] is not None else band.scale
    offset = header.offsets[i] if header.offsets and header.offsets[i] is not None else band.offset
    if scale is not None:
        region *= scale
    if offset is not None:
        region += offset


def _meta_schema(collection: Collection, request: ChipRequest) -> pa.Schema:
    """Schema of the metadata columns of a chip stream (before ``chip`` and ``valid``)."""
    ts = pa.timestamp("us", tz="UTC")
    many = request.time_series
    fields = [
        pa.field("id", pa.list_(pa.string()) if many else pa.string()),
        pa.field("datetime", pa.list_(ts) if many else ts),
        pa.field("geometry_index", pa.int32()),
        pa.field("crs", pa.string()),
        pa.field("transform", pa.list_(pa.float64(), 6)),
        pa.field("bounds", pa.list_(pa.float64(), 4)),
    ]
    for c in request.columns:
        t = collection.table.schema.field(c).type
        fields.append(pa.field(c, pa.list_(t) if many else t))
    return pa.schema(fields)


@dataclass(frozen=True)
class _Columns:
    """Per-scene metadata of a request as Python lists, read from the table once."""

    ids: list[Any]
    times: list[Any]
    extra: dict[str, list[Any]]
    types: dict[str, pa.DataType]
    schema: pa.Schema

    @classmethod
    def of(cls, collection: Collection, request: ChipRequest) -> _Columns:
        t = collection.table
        return cls(
            t.column("id").to_pylist(),
            t.column("datetime").to_pylist(),
            {c: t.column(c).to_pylist() for c in request.columns},
            {c: t.schema.field(c).type for c in request.columns},
            _meta_schema(collection, request),
        )


def _batch_meta(
    columns: _Columns,
    request: ChipRequest,
    kept: list[_Chip],
    shape: tuple[int, int],
    steps: int | None,
    meta_schema: pa.Schema,
) -> pa.Table:
    """The metadata table of a batch: ids, datetimes, grids, pass-through columns."""
    cols: dict[str, list[Any]] = {
        "id": [],
        "datetime": [],
        "geometry_index": [],
        "crs": [],
        "transform": [],
        "bounds": [],
    }
    extra: dict[str, list[Any]] = {c: [] for c in request.columns}
    for chip in kept:
        if steps is None:
            r = chip.rows[0]
            cols["id"].append(columns.ids[r])
            cols["datetime"].append(columns.times[r])
            for c in request.columns:
                extra[c].append(columns.extra[c][r])
        else:
            pad = [None] * (steps - len(chip.rows))
            cols["id"].append([columns.ids[r] for r in chip.rows] + pad)
            cols["datetime"].append([columns.times[r] for r in chip.rows] + pad)
            for c in request.columns:
                extra[c].append([columns.extra[c][r] for r in chip.rows] + pad)
        cols["geometry_index"].append(chip.geometry_index)
        cols["crs"].append(chip.grid.crs)
        cols["transform"].append(list(chip.grid.transform))
        g = Grid(chip.grid.crs, chip.grid.transform, shape[0], shape[1])
        cols["bounds"].append(list(g.bounds))
    ts = pa.timestamp("us", tz="UTC")
    arrays: dict[str, pa.Array] = {
        "id": pa.array(cols["id"], pa.list_(pa.string()) if steps else pa.string()),
        "datetime": pa.array(cols["datetime"], pa.list_(ts) if steps else ts),
        "geometry_index": pa.array(cols["geometry_index"], pa.int32()),
        "crs": pa.array(cols["crs"], pa.string()),
        "transform": pa.array(cols["transform"], pa.list_(pa.float64(), 6)),
        "bounds": pa.array(cols["bounds"], pa.list_(pa.float64(), 4)),
    }
    for c in request.columns:
        col_type = columns.types[c]
        arrays[c] = pa.array(extra[c], pa.list_(col_type) if steps else col_type)
    return pa.table(arrays, schema=meta_schema)


def _concat(batches: list[ChipBatch], failures: list[ChipReadError], plan: ChipPlan) -> ChipResult:
    if not batches:
        lead = (0,)
        valid_shape = (plan.shape[0], *plan.shape[2:]) if plan.time_series else plan.shape[1:]
        meta = pa.schema([f for f in plan.schema if f.name not in ("chip", "valid")])
        return ChipResult(
            np.zeros((*lead, *plan.shape), dtype=plan.dtype),
            np.zeros((*lead, *valid_shape), dtype=bool),
            meta.empty_table(),
            plan.bands,
            failures,
        )
    return ChipResult(
        np.concatenate([b.chips for b in batches]),
        np.concatenate([b.valid for b in batches]),
        pa.concat_tables([b.meta for b in batches]),
        plan.bands,
        failures,
    )
