"""Row selection over a Collection table: ids, dates, cloud cover, space, predicates.

Pure functions over Arrow tables; the same rules serve ``Collection.subset``
and the Flight ticket's ``filter``. Geometries are read by the one normaliser,
:func:`catalog.to_geometries` (the engine's ``ChipRequest`` uses it too). Every
bad argument raises :class:`~catalog.InvalidArgumentError` naming the argument.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypedDict, Unpack

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import shapely
from shapely.geometry.base import BaseGeometry

from cogflight_core import InvalidArgumentError

from ._dates import parse_date_range
from ._footprint import geometry_to_crs84
from ._geometry import as_geometry, bbox_geometry, check_lonlat
from ._proj import same_crs

__all__ = ["WHERE_OPS", "SceneFilter", "parse_date_range", "select_rows"]

WHERE_OPS = ("==", "!=", "<", "<=", ">", ">=", "in", "not in", "is null", "is not null")
CLOUD_COVER = "eo:cloud_cover"


def _column(table: pa.Table, name: str, field: str) -> pa.ChunkedArray:
    if name not in table.column_names:
        raise InvalidArgumentError(
            f"{field}: the Collection has no column {name!r}; columns are "
            f"{', '.join(c for c in table.column_names if not c.startswith('asset:'))}"
        )
    return table.column(name)


def _where_mask(table: pa.Table, where: Sequence[Any]) -> pa.ChunkedArray | pa.Array | None:
    if isinstance(where, str | bytes) or not isinstance(where, Sequence):
        raise InvalidArgumentError("where: expected a list of [column, op, value] predicates")
    mask = None
    for i, pred in enumerate(where):
        f = f"where[{i}]"
        if (
            isinstance(pred, str | bytes)
            or not isinstance(pred, Sequence)
            or len(pred) not in (2, 3)
        ):
            raise InvalidArgumentError(f"{f}: expected [column, op, value], got {pred!r}")
        name, op = pred[0], pred[1]
        if not isinstance(name, str) or not isinstance(op, str):
            raise InvalidArgumentError(f"{f}: column and op must be strings, got {pred!r}")
        op = op.strip().lower()
        if op not in WHERE_OPS:
            raise InvalidArgumentError(f"{f}: unknown op {op!r}; use one of {', '.join(WHERE_OPS)}")
        col = _column(table, name, f)
        if op in ("is null", "is not null"):
            m = pc.is_null(col) if op == "is null" else pc.is_valid(col)
        else:
            if len(pred) != 3:
                raise InvalidArgumentError(f"{f}: op {op!r} needs a value")
            value = pred[2]
            try:
                if op in ("in", "not in"):
                    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
                        raise InvalidArgumentError(f"{f}: op {op!r} needs a list of values")
                    values = pa.array(list(value)).cast(col.type)
                    m = pc.is_in(col, value_set=values)
                    if op == "not in":
                        m = pc.invert(m)
                else:
                    scalar = pa.scalar(value).cast(col.type) if value is not None else None
                    if scalar is None:
                        raise InvalidArgumentError(f"{f}: use 'is null' to compare with null")
                    fn = {
                        "==": pc.equal,
                        "!=": pc.not_equal,
                        "<": pc.less,
                        "<=": pc.less_equal,
                        ">": pc.greater,
                        ">=": pc.greater_equal,
                    }[op]
                    m = fn(col, scalar)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
                raise InvalidArgumentError(
                    f"{f}: cannot compare column {name!r} ({col.type}) with {value!r}: {exc}"
                ) from exc
        m = pc.fill_null(m, False)
        mask = m if mask is None else pc.and_(mask, m)
    return mask


class SceneFilter(TypedDict, total=False):
    """Which scenes to keep: every given condition must hold (``Collection.subset``)."""

    ids: Sequence[str] | None
    """Keep these scene ids."""
    date_range: object
    """``"2024-01-01/2024-06-30"`` or ``(start, end)``, inclusive; dates without a time
    cover the whole day; ``None``/``".."`` is open."""
    cloud_cover_lt: float | None
    """Keep scenes whose ``eo:cloud_cover`` is below this."""
    bbox: Sequence[float] | None
    """``(xmin, ymin, xmax, ymax)`` in ``geometry_crs``; keep intersecting footprints (a
    zero-width or zero-height bbox is the line or point it describes)."""
    geometry: object
    """Any form :func:`catalog.to_geometries` reads (shapely, WKB, WKT, GeoJSON, bbox, Arrow
    WKB, a list of these) in ``geometry_crs``; keep footprints intersecting any of them."""
    geometry_crs: str
    """CRS of ``bbox`` and ``geometry`` (default EPSG:4326)."""
    where: Sequence[Any] | None
    """``[[column, op, value], ...]``, ops ``== != < <= > >= in``, ``not in``, ``is null``,
    ``is not null``."""


def select_rows(table: pa.Table, **filters: Unpack[SceneFilter]) -> np.ndarray:
    """Indices of the rows that satisfy every condition of :class:`SceneFilter` given."""
    unknown = sorted(set(filters) - set(SceneFilter.__annotations__))
    if unknown:
        raise InvalidArgumentError(
            f"{unknown[0]}: not a scene filter; use {', '.join(SceneFilter.__annotations__)}"
        )
    ids = filters.get("ids")
    date_range = filters.get("date_range")
    cloud_cover_lt = filters.get("cloud_cover_lt")
    bbox = filters.get("bbox")
    geometry = filters.get("geometry")
    geometry_crs = filters.get("geometry_crs") or "EPSG:4326"
    where = filters.get("where")
    n = table.num_rows
    keep = np.ones(n, dtype=bool)

    def apply(mask: pa.ChunkedArray | pa.Array) -> None:
        nonlocal keep
        arr = pc.fill_null(mask, False)
        keep &= np.asarray(arr.to_numpy(zero_copy_only=False), dtype=bool)

    if ids is not None:
        if isinstance(ids, str) or not isinstance(ids, Sequence):
            raise InvalidArgumentError("ids: expected a list of scene ids")
        apply(pc.is_in(table.column("id"), value_set=pa.array([str(i) for i in ids], pa.string())))
    if date_range is not None:
        start, end = parse_date_range(date_range)
        col = table.column("datetime")
        if start is not None:
            apply(pc.greater_equal(col, pa.scalar(start, col.type)))
        if end is not None:
            apply(pc.less_equal(col, pa.scalar(end, col.type)))
    if cloud_cover_lt is not None:
        if isinstance(cloud_cover_lt, bool) or not isinstance(cloud_cover_lt, int | float):
            raise InvalidArgumentError(f"cloud_cover_lt: expected a number, got {cloud_cover_lt!r}")
        col = _column(table, CLOUD_COVER, "cloud_cover_lt")
        apply(pc.less(col, pa.scalar(float(cloud_cover_lt)).cast(col.type)))
    if where is not None:
        m = _where_mask(table, where)
        if m is not None:
            apply(m)
    query: BaseGeometry | None = None
    if bbox is not None:
        query = as_geometry(bbox, "bbox") if isinstance(bbox, BaseGeometry) else bbox_geometry(bbox)
    if geometry is not None:
        g = as_geometry(geometry, "geometry")
        query = g if query is None else shapely.intersection(query, g)
    if query is not None:
        try:
            q84 = geometry_to_crs84(query, geometry_crs)
        except Exception as exc:
            raise InvalidArgumentError(f"geometry_crs: cannot use {geometry_crs!r}: {exc}") from exc
        if same_crs(geometry_crs, "EPSG:4326"):
            check_lonlat([query], "bbox" if geometry is None else "geometry")
        qxmin, qymin, qxmax, qymax = q84.bounds
        bb = table.column("bbox")
        pre = pc.and_(
            pc.and_(
                pc.less_equal(pc.struct_field(bb, "xmin"), qxmax),
                pc.greater_equal(pc.struct_field(bb, "xmax"), qxmin),
            ),
            pc.and_(
                pc.less_equal(pc.struct_field(bb, "ymin"), qymax),
                pc.greater_equal(pc.struct_field(bb, "ymax"), qymin),
            ),
        )
        apply(pre)
        candidates = np.flatnonzero(keep)
        if candidates.size:
            wkb = table.column("geometry").take(pa.array(candidates)).to_pylist()
            geoms = shapely.from_wkb(wkb)
            hit = shapely.intersects(geoms, q84)
            keep[candidates[~np.asarray(hit, dtype=bool)]] = False
    return np.flatnonzero(keep)
