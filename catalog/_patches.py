"""Patch Collections: one row per training sample, over the assets of the scene it lies in.

"Tag patches, not files": a patch Collection is an ordinary Collection whose
rows are patches (their own footprint in ``geometry``, the user's columns such
as label and split) joined to the scene rows whose assets they read. Served
with the ``patches`` query field, each row becomes exactly one chip.
:func:`make_patches` builds one by a spatial join; :func:`with_columns` adds or
replaces columns while keeping a valid Collection.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import shapely

from cogflight_core import InvalidArgumentError

from ._collection import Collection
from ._footprint import geometry_to_crs84
from ._schema import ASSET_PREFIX, BBOX_TYPE, CORE_FIELDS, GEO_KEY, METADATA_KEY

__all__ = ["make_patches", "with_columns"]

logger = logging.getLogger("cogflight.catalog")

_CORE = {f.name for f in CORE_FIELDS}


def _as_table(patches: Any, geometry: str) -> tuple[pa.Table, str | None]:
    """An Arrow table of the patches (WKB geometry) and the CRS it declares, if any."""
    crs = None
    if hasattr(patches, "to_wkb") and hasattr(patches, "crs"):  # a GeoDataFrame
        crs = patches.crs.to_string() if patches.crs is not None else None
        patches = pa.Table.from_pandas(patches.to_wkb(), preserve_index=False)
    elif isinstance(patches, pa.RecordBatch):
        patches = pa.Table.from_batches([patches])
    elif not isinstance(patches, pa.Table):
        try:
            patches = pa.table(patches)
        except (TypeError, ValueError, pa.ArrowInvalid) as exc:
            raise InvalidArgumentError(
                "patches: expected a pyarrow Table, a GeoDataFrame or an Arrow stream, got "
                f"{type(patches).__name__}"
            ) from exc
    if geometry not in patches.column_names:
        raise InvalidArgumentError(
            f"patches: no geometry column {geometry!r} (columns: {', '.join(patches.column_names)})"
        )
    return patches, crs


def _geometries(table: pa.Table, column: str, crs: str) -> list[Any]:
    values = table.column(column).to_pylist()
    out = []
    for i, v in enumerate(values):
        if v is None:
            raise InvalidArgumentError(f"patches: patch {i} has no geometry")
        try:
            g = v if hasattr(v, "geom_type") else shapely.from_wkb(v)
        except (shapely.errors.GEOSException, TypeError) as exc:
            raise InvalidArgumentError(f"patches: patch {i} is not a WKB geometry") from exc
        if g.is_empty:
            raise InvalidArgumentError(f"patches: patch {i} has an empty geometry")
        out.append(geometry_to_crs84(g, crs))
    return out


def make_patches(
    collection: Collection,
    patches: Any,
    *,
    geometry: str = "geometry",
    crs: str | None = None,
    id_column: str | None = "id",
    predicate: Literal["within", "intersects"] = "within",
    unmatched: Literal["raise", "drop"] = "raise",
    name: str | None = None,
) -> Collection:
    """A patch Collection: every patch joined to every scene of ``collection`` it lies in.

    Args:
        collection: the scene Collection whose assets the patches read.
        patches: a pyarrow Table (``geometry`` as WKB), a GeoDataFrame, or any Arrow
            stream; its other columns (label, split, score...) are kept.
        geometry: the patches' geometry column.
        crs: the patches' CRS (default: the GeoDataFrame's, else EPSG:4326).
        id_column: the patches' id column (``patch_id``); absent: the patch's position.
        predicate: ``"within"`` keeps scenes whose footprint contains the patch (no
            chip reaches past its scene's edge); ``"intersects"`` any overlap.
        unmatched: a patch in no scene raises (default) or is dropped, with a warning
            saying how many.
        name: the new Collection's name (default: ``<name>-patches``).

    Each row is one (patch, scene) pair: ``id`` is ``"<patch_id>/<scene_id>"``, with
    ``patch_id`` and ``scene_id`` columns, the patch's footprint as ``geometry`` and
    ``bbox``, and the scene's datetime, CRS, properties and assets.

    Raises:
        InvalidArgumentError: a missing or invalid geometry, a user column named like a
            Collection column, or an unmatched patch under ``unmatched="raise"``.
    """
    if predicate not in ("within", "intersects"):
        raise InvalidArgumentError(
            f"predicate: expected 'within' or 'intersects', got {predicate!r}"
        )
    if unmatched not in ("raise", "drop"):
        raise InvalidArgumentError(f"unmatched: expected 'raise' or 'drop', got {unmatched!r}")
    table, declared = _as_table(patches, geometry)
    geoms = _geometries(table, geometry, crs or declared or "EPSG:4326")
    n = table.num_rows
    if id_column is not None and id_column in table.column_names:
        patch_ids = [str(v) for v in table.column(id_column).to_pylist()]
        user = [c for c in table.column_names if c not in (geometry, id_column)]
    else:
        patch_ids = [str(i) for i in range(n)]
        user = [c for c in table.column_names if c != geometry]
    scenes = collection.table
    clash = sorted(set(user) & (set(scenes.column_names) | {"patch_id", "scene_id"}))
    if clash:
        raise InvalidArgumentError(
            f"patches: column {clash[0]!r} is also a column of Collection "
            f"{collection.name!r}; rename it in the patches"
        )
    footprints = shapely.from_wkb(scenes.column("geometry").to_pylist())
    tree = shapely.STRtree(footprints)
    p_idx, s_idx = tree.query(geoms, predicate=predicate)
    order = np.lexsort((s_idx, p_idx))
    p_idx, s_idx = p_idx[order], s_idx[order]
    missing = sorted(set(range(n)) - set(p_idx.tolist()))
    if missing:
        where = ", ".join(patch_ids[i] for i in missing[:5])
        message = (
            f"{len(missing)} of {n} patches lie in no scene of {collection.name!r} "
            f"(predicate {predicate!r}): {where}"
        )
        if unmatched == "raise":
            raise InvalidArgumentError(
                f"patches: {message}; fix them, use predicate='intersects', or unmatched='drop'"
            )
        logger.warning("make_patches: dropped %s", message)
    out = scenes.take(pa.array(s_idx, pa.int64()))
    scene_ids = out.column("id")
    pids = [patch_ids[i] for i in p_idx.tolist()]
    ids = [f"{p}/{s}" for p, s in zip(pids, scene_ids.to_pylist(), strict=True)]
    chosen = [geoms[i] for i in p_idx.tolist()]
    bounds = [g.bounds for g in chosen]
    bbox = pa.array(
        [{"xmin": b[0], "ymin": b[1], "xmax": b[2], "ymax": b[3]} for b in bounds], BBOX_TYPE
    )
    out = _set(out, "id", pa.array(ids, pa.string()))
    out = _set(out, "geometry", pa.array(shapely.to_wkb(chosen).tolist(), pa.binary()))
    out = _set(out, "bbox", bbox)
    out = out.append_column("patch_id", pa.array(pids, pa.string()))
    out = out.append_column("scene_id", scene_ids)
    for column in user:
        out = out.append_column(column, table.column(column).take(pa.array(p_idx, pa.int64())))
    meta = collection.metadata
    meta["name"] = name or f"{collection.name}-patches"
    geo = json.loads((scenes.schema.metadata or {}).get(GEO_KEY, b"{}"))
    return Collection._from_parts(_ordered(out), meta, geo)


def _set(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    i = table.schema.get_field_index(name)
    return table.set_column(i, table.schema.field(name), values)


def _ordered(table: pa.Table) -> pa.Table:
    """Assets last, as builders write them (so the table reads well in any viewer)."""
    names = [c for c in table.column_names if not c.startswith(ASSET_PREFIX)]
    names += [c for c in table.column_names if c.startswith(ASSET_PREFIX)]
    return table.select(names)


def with_columns(collection: Collection, columns: Mapping[str, Any]) -> Collection:
    """``collection`` with columns added or replaced (labels, splits, scores), still valid.

    Values are anything ``pyarrow.array`` takes, one per row. The Collection's own
    columns (id, datetime, geometry, bbox, crs, assets) cannot be replaced: build a
    new Collection (or :func:`make_patches`) to change what rows read.

    Raises:
        InvalidArgumentError: a protected column, or a length other than the row count.
    """
    table = collection.table
    for name, values in columns.items():
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"columns: {name!r} is not a column name")
        if name in _CORE or name.startswith(ASSET_PREFIX):
            raise InvalidArgumentError(
                f"columns: {name!r} is a Collection column that says what rows read; it "
                "cannot be replaced"
            )
        try:
            array = values if isinstance(values, pa.Array | pa.ChunkedArray) else pa.array(values)
        except (TypeError, ValueError, pa.ArrowInvalid) as exc:
            raise InvalidArgumentError(f"columns: {name!r}: not an array ({exc})") from exc
        if len(array) != table.num_rows:
            raise InvalidArgumentError(
                f"columns: {name!r} has {len(array)} values for {table.num_rows} rows"
            )
        if name in table.column_names:
            table = table.set_column(table.schema.get_field_index(name), name, array)
        else:
            table = table.append_column(name, array)
    md = dict(table.schema.metadata or {})
    md.setdefault(METADATA_KEY, (collection.table.schema.metadata or {})[METADATA_KEY])
    return Collection(_ordered(table).replace_schema_metadata(md))
