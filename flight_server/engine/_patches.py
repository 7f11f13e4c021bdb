"""Patch mode: one chip per selected Collection row, from the row's own geometry.

A patch Collection has one row per training sample (its footprint, label,
split...) over the assets of the scene it was cut from; see
:func:`catalog.make_patches`. In patch mode each selected row is exactly one
chip, cut from that row's geometry (the ``geometry`` column, or a named lon/lat
WKB column) over that row's assets only, so neighbouring patches of the same
scene never leak into each other's samples. Pure planning, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import shapely
from shapely.geometry.base import BaseGeometry

from catalog import Collection
from cogflight_core import InvalidArgumentError

from ._request import ChipRequest

__all__ = ["PATCH_CRS", "patch_groups"]

#: Collection geometries are lon/lat (GeoParquet's default CRS, OGC:CRS84 axis order).
PATCH_CRS = "EPSG:4326"


def _column(collection: Collection, request: ChipRequest) -> str:
    name = "geometry" if request.patches is True else str(request.patches)
    schema = collection.table.schema
    if name not in schema.names:
        raise InvalidArgumentError(
            f"patches: Collection {collection.name!r} has no column {name!r}; give true (the "
            "row's geometry) or the name of a WKB geometry column"
        )
    kind = schema.field(name).type
    if not (pa.types.is_binary(kind) or pa.types.is_large_binary(kind)):
        raise InvalidArgumentError(
            f"patches: column {name!r} holds {kind}, not WKB geometries (binary)"
        )
    return name


def _refuse(request: ChipRequest) -> None:
    if request.time_series:
        raise InvalidArgumentError(
            "patches: each row is one chip of its own scene; time_series stacks scenes and "
            "cannot be combined with it (make one row per date instead)"
        )
    if request.geometry_scenes is not None:
        raise InvalidArgumentError(
            "patches: each row already takes its own assets; leave out geometry_scenes "
            "(select rows with filter.ids or filter.where)"
        )


def patch_groups(
    collection: Collection,
    request: ChipRequest,
    rows: np.ndarray,
    geometries84: Sequence[BaseGeometry],
) -> tuple[list[tuple[int, tuple[int, ...]]], dict[int, BaseGeometry]]:
    """``(row, (row,))`` of every chip in row order, and each row's lon/lat geometry.

    With ``geometries`` in the request, only the rows whose patch intersects one
    of them are kept.

    Raises:
        InvalidArgumentError: the column is missing or not WKB, a selected row has no
            or an invalid geometry, or a field that cannot apply to patches was given.
    """
    _refuse(request)
    name = _column(collection, request)
    values = collection.table.column(name).take(pa.array(rows, pa.int64())).to_pylist()
    out: dict[int, BaseGeometry] = {}
    ids = collection.table.column("id")
    for row, wkb in zip(rows.tolist(), values, strict=True):
        if wkb is None:
            raise InvalidArgumentError(
                f"patches: row {row} ({ids[row].as_py()!r}) has no geometry in column "
                f"{name!r}; fill it or leave the row out with filter"
            )
        try:
            geom = shapely.from_wkb(wkb)
        except shapely.errors.GEOSException as exc:
            raise InvalidArgumentError(
                f"patches: row {row} ({ids[row].as_py()!r}) holds no valid WKB in {name!r}"
            ) from exc
        if geom.is_empty:
            raise InvalidArgumentError(
                f"patches: row {row} ({ids[row].as_py()!r}) has an empty geometry in {name!r}"
            )
        out[int(row)] = geom
    kept = list(out)
    if geometries84:
        tree = shapely.STRtree(np.asarray([out[r] for r in kept], dtype=object))
        _, hit = tree.query(list(geometries84), predicate="intersects")
        keep = set(hit.tolist())
        kept = [r for i, r in enumerate(kept) if i in keep]
    return [(r, (r,)) for r in kept], out
