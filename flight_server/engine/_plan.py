"""Planning: a request and a Collection in, the chips to produce out. No I/O.

Scene selection intersects each geometry (in lon/lat) with the scenes'
footprints through an STRtree; each geometry makes one chip per scene, or one
time-series chip over every scene ordered by date. Each chip gets an output
grid: the pixel window of the geometry in the scene's own grid (as rasterio's
``geometry_window``), a fixed-size window centred on it, or a grid in a target
CRS and resolution. Window and tile maths are in :mod:`._windows`.

Everything here reads only what the Collection holds in memory (its table and
indexed headers), so a bad request fails before any pixel is read.
Concurrency policy: pure functions; any thread may call them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import shapely
from shapely.geometry.base import BaseGeometry

from catalog import Band, Collection, HeaderRecord, geometry_to_crs84, same_crs
from cogflight_core import InvalidArgumentError, LimitExceededError

from ._arrow import band_metadata, chip_schema
from ._columns import meta_columns, meta_schema
from ._geometry import reproject_geometry
from ._locality import locality_keys, shard_members
from ._patches import PATCH_CRS, patch_groups
from ._plan_cache import PlanCache
from ._request import ChipRequest
from ._types import Chip, ChipPlan, Grid
from ._windows import GeoTransform, Window, centered_window, geometry_window, window_transform

__all__ = [
    "batch_rows",
    "chip_buffer_bytes",
    "chip_grid",
    "chip_keys",
    "output_dtype",
    "plan_request",
    "scene_groups",
    "select_bands",
]

HeaderOf = Callable[[int, Band], HeaderRecord]
_LAST = (1, dt.datetime.max.replace(tzinfo=dt.UTC))


def select_bands(collection: Collection, names: Sequence[str] | None) -> tuple[Band, ...]:
    """The Collection's bands by name, in the order asked (all of them for None)."""
    if names is None:
        return collection.bands
    known = {b.name: b for b in collection.bands}
    unknown = [b for b in names if b not in known]
    if unknown:
        raise InvalidArgumentError(
            f"bands: {', '.join(map(repr, unknown))} not in Collection {collection.name!r}; "
            f"it has {', '.join(known)}"
        )
    return tuple(known[b] for b in names)


def output_dtype(bands: Sequence[Band], dtype: str | None, scale_offset: bool) -> np.dtype:
    """The chips' dtype: the one asked for (when lossless or float), else the bands' common type."""
    native = np.result_type(*[np.dtype(b.dtype or "float32") for b in bands])
    if dtype is not None:
        target = np.dtype(dtype)
        if scale_offset and target.kind != "f":
            raise InvalidArgumentError("dtype: scale_offset output must be a float dtype")
        if target.kind != "f" and not np.can_cast(native, target, casting="safe"):
            raise InvalidArgumentError(
                f"dtype: casting {native} to {target} would lose values; choose a wider "
                "integer or a float dtype"
            )
        return target
    if scale_offset:
        return np.dtype("float64") if native == np.float64 else np.dtype("float32")
    return native


def scene_groups(
    footprints: Sequence[BaseGeometry] | np.ndarray,
    rows: Sequence[int] | np.ndarray,
    times: Sequence[Any],
    geometries84: Sequence[BaseGeometry],
    *,
    time_series: bool,
) -> list[tuple[int, tuple[int, ...]]]:
    """``(geometry index, scene rows)`` of every chip, in output order.

    ``footprints[i]`` is the lon/lat footprint of Collection row ``rows[i]``;
    ``times`` holds every row's datetime (by row). Without ``time_series`` each
    geometry makes one chip per intersecting scene (in row order); with it, one
    chip over all of them ordered by datetime (undated scenes last).
    """
    tree = shapely.STRtree(np.asarray(footprints, dtype=object))
    g_idx, f_idx = tree.query(list(geometries84), predicate="intersects")
    hits: dict[int, set[int]] = {}
    for gi, fi in zip(g_idx.tolist(), f_idx.tolist(), strict=True):
        hits.setdefault(gi, set()).add(int(rows[fi]))

    def when(r: int) -> tuple[int, Any]:
        t = times[r]
        return (0, t) if t is not None else _LAST

    groups: list[tuple[int, tuple[int, ...]]] = []
    for gi in range(len(geometries84)):
        scene_rows = sorted(hits.get(gi, ()))
        if time_series:
            if scene_rows:
                groups.append((gi, tuple(sorted(scene_rows, key=when))))
        else:
            groups.extend((gi, (r,)) for r in scene_rows)
    return groups


def chip_grid(
    geometry: BaseGeometry,
    request: ChipRequest,
    crs: str,
    geotransform: GeoTransform,
    geometry_crs: str | None = None,
) -> tuple[Grid, BaseGeometry | None]:
    """The output grid of one geometry over a scene whose grid is ``crs``/``geotransform``.

    ``geometry`` is in ``geometry_crs`` (default: the request's). Returns the grid
    and, when masking, the geometry in the grid's CRS.
    """
    source = geometry_crs or request.geometry_crs
    if request.crs is None and request.resolution is None:  # the scene's own pixels
        g = reproject_geometry(geometry, source, crs)
        if request.chip_size is not None:
            window = centered_window(g, geotransform, *request.chip_size)
        else:
            window = geometry_window(g, geotransform)
            if window.width == 0 or window.height == 0:  # points and lines: one pixel
                window = Window(
                    window.col_off, window.row_off, max(window.width, 1), max(window.height, 1)
                )
        grid = Grid(crs, window_transform(geotransform, window), window.height, window.width)
        return grid, (g if request.mask else None)
    target = request.crs or crs
    if request.resolution is None:
        if not same_crs(target, crs):
            raise InvalidArgumentError(
                "resolution: give a resolution (in units of crs) when crs differs from "
                "the rasters' CRS"
            )
        res_x, res_y = abs(geotransform[1]), abs(geotransform[5])
    else:
        res_x, res_y = request.resolution
    g = reproject_geometry(geometry, source, target)
    minx, miny, maxx, maxy = g.bounds
    if request.chip_size is not None:
        h, w = request.chip_size
        cx, cy = (minx + maxx) / 2, (miny + maxy) / 2
        x0, y0 = cx - w * res_x / 2, cy + h * res_y / 2
    else:
        w = max(1, round((maxx - minx) / res_x))
        h = max(1, round((maxy - miny) / res_y))
        x0, y0 = minx, maxy
    grid = Grid(target, (x0, res_x, 0.0, y0, 0.0, -res_y), h, w)
    return grid, (g if request.mask else None)


def _chips(
    collection: Collection,
    request: ChipRequest,
    bands: tuple[Band, ...],
    header_of: HeaderOf,
    *,
    max_chips: int,
    max_chip_pixels: int,
) -> list[Chip]:
    n = len(collection)
    rows = np.arange(n) if request.rows is None else np.asarray(request.rows, dtype=np.int64)
    if rows.size and (rows.min() < 0 or rows.max() >= n):
        raise InvalidArgumentError(f"rows: out of range for {n} scenes")
    table = collection.table
    try:
        geoms84 = [geometry_to_crs84(g, request.geometry_crs) for g in request.geometries]
    except Exception as exc:
        raise InvalidArgumentError(f"geometries: cannot project to lon/lat: {exc}") from exc
    geometries: Sequence[BaseGeometry] | Mapping[int, BaseGeometry] = request.geometries
    geometry_crs = request.geometry_crs
    if request.patches:
        groups, geometries = patch_groups(collection, request, rows, geoms84)
        geometry_crs = PATCH_CRS
    else:
        footprints = shapely.from_wkb(table.column("geometry").take(pa.array(rows)).to_pylist())
        groups = scene_groups(
            footprints,
            rows,
            table.column("datetime").to_pylist(),
            geoms84,
            time_series=request.time_series,
        )
    if request.geometry_scenes is not None:
        groups = _own_scenes(groups, request, table.column("id").to_pylist())
    if len(groups) > max_chips:
        raise LimitExceededError(
            f"the request makes {len(groups)} chips, over the limit of {max_chips} "
            "(max_chips); "
            "narrow the filter or split the geometries"
        )
    chips = []
    for i, (gi, chip_rows) in enumerate(groups):
        ref = header_of(chip_rows[0], bands[0])
        grid, poly = chip_grid(geometries[gi], request, ref.crs, ref.geotransform, geometry_crs)
        if grid.height * grid.width > max_chip_pixels:
            raise LimitExceededError(
                f"geometry {gi} needs a {grid.height}x{grid.width} chip, over the limit of "
                f"{max_chip_pixels} pixels (max_chip_pixels); use chip_size or a coarser "
                "resolution"
            )
        chips.append(Chip(i, gi, chip_rows, grid, poly))
    return chips


def _own_scenes(
    groups: list[tuple[int, tuple[int, ...]]], request: ChipRequest, ids: Sequence[str]
) -> list[tuple[int, tuple[int, ...]]]:
    """Keep each geometry's chips (time steps) over the scenes ``geometry_scenes`` names."""
    own = request.geometry_scenes
    assert own is not None
    if len(own) != len(request.geometries):
        raise InvalidArgumentError(
            f"geometry_scenes: {len(own)} lists for {len(request.geometries)} geometries; "
            "give one list of scene ids per geometry"
        )
    kept = [(gi, tuple(r for r in rows if ids[r] in own[gi])) for gi, rows in groups]
    return [(gi, rows) for gi, rows in kept if rows]


def chip_keys(chips: Sequence[Chip], bands: Sequence[Band], header_of: HeaderOf) -> list[int]:
    """Each chip's locality key (its first scene and the tile under its centre)."""
    return locality_keys(
        [c.grid for c in chips], [c.rows[0] for c in chips], lambda row: header_of(row, bands[0])
    )


def chip_buffer_bytes(shape: Sequence[int], dtype: np.dtype) -> int:
    """Bytes one chip takes in a batch: its pixels plus its validity mask (one byte a pixel)."""
    pixels = int(np.prod(shape, dtype=object))
    valid = pixels // shape[-3] if len(shape) >= 3 and shape[-3] else 0  # without bands
    return pixels * np.dtype(dtype).itemsize + valid


def batch_rows(plan: ChipPlan, asked: int, max_batch_bytes: int) -> int:
    """Chips per batch: ``asked``, lowered so one batch stays within ``max_batch_bytes``."""
    per_chip = chip_buffer_bytes(plan.shape, plan.dtype)
    return max(1, min(asked, max_batch_bytes // max(1, per_chip)))


def _check_chip_bytes(shape: Sequence[int], dtype: np.dtype, max_batch_bytes: int) -> None:
    size = chip_buffer_bytes(shape, dtype)
    if size > max_batch_bytes:
        raise LimitExceededError(
            f"one chip of shape {list(shape)} {np.dtype(dtype).name} takes {size} bytes, over the "
            f"limit of {max_batch_bytes} bytes per batch (max_batch_bytes); use a smaller "
            "chip_size, fewer bands or a narrower dtype"
        )


def plan_request(
    collection: Collection,
    request: ChipRequest,
    header_of: HeaderOf,
    *,
    max_chips: int,
    max_chip_pixels: int,
    max_batch_bytes: int | None = None,
    cache: PlanCache | None = None,
) -> ChipPlan:
    """Plan a request: its chips (of its shard), their common shape and dtype, the schema.

    ``cache`` keeps the chips (and shard splits) of recent requests, so that the
    streams of a planned query do not plan it again.

    Raises:
        InvalidArgumentError: a field does not fit this Collection.
        LimitExceededError: too many chips, chips too large, or one chip larger than
            ``max_batch_bytes`` (checked before any buffer is allocated).
    """
    bands = select_bands(collection, request.bands)
    dtype = output_dtype(bands, request.dtype, request.scale_offset)
    columns = meta_columns(collection, request.columns)

    def plan() -> list[Chip]:
        return _chips(
            collection,
            request,
            bands,
            header_of,
            max_chips=max_chips,
            max_chip_pixels=max_chip_pixels,
        )

    shards: dict[int, list[list[int]]] = {}
    if cache is None:
        chips = plan()
    else:
        chips, shards = cache.chips(collection, request, bands, plan)
    if request.chip_size is not None:
        hw = request.chip_size
    else:
        hw = (
            max((c.grid.height for c in chips), default=0),
            max((c.grid.width for c in chips), default=0),
        )
    t = max((len(c.rows) for c in chips), default=1) if request.time_series else None
    shape = ((t,) if t else ()) + (len(bands), *hw)
    if max_batch_bytes is not None and chips:
        _check_chip_bytes(shape, dtype, max_batch_bytes)
    total = len(chips)
    if request.shard is not None and request.shard[1] > 1:
        index, count = request.shard  # the chips of one locality shard, in ordinal order
        split = shards.get(count)
        if split is None:
            split = shards[count] = shard_members(chip_keys(chips, bands, header_of), count)
        chips = [chips[p] for p in split[index]]
    chips = chips[request.skip :]  # a resumed stream: what its client already has
    schema = chip_schema(
        meta_schema(columns, request.time_series),
        dtype,
        shape,
        request.time_series,
        band_metadata(bands),
    )
    return ChipPlan(
        collection.name,
        bands,
        dtype,
        shape,
        len(chips),
        total,
        request.time_series,
        schema,
        tuple(chips),
    )
