"""Collections from tables that already carry asset hrefs (stac-geoparquet, DuckDB results)."""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any, Unpack

import obstore
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pyproj
import shapely
from shapely.geometry.base import BaseGeometry

from cogflight_core import BuildError, BuildFailure, CogflightError, InvalidArgumentError

from ._build import (
    BandSpec,
    BuildOptions,
    SceneSpec,
    assemble,
    build_failure,
    href_sample,
    rewrite_href,
    to_utc,
)
from ._collection import Collection
from ._footprint import geometry_to_crs84
from ._stores import StoreOptions, StoreRegistry, normalize_href

__all__ = ["build_from_table", "read_table"]


def read_table(
    table_or_path: Any, *, store_options: StoreOptions | None = None
) -> tuple[pa.Table, str | None]:
    """An Arrow table from a table-like object or a Parquet path/URL, and where it came from."""
    if isinstance(table_or_path, pa.Table):
        return table_or_path, None
    if isinstance(table_or_path, pa.RecordBatch):
        return pa.Table.from_batches([table_or_path]), None
    if hasattr(table_or_path, "__arrow_c_stream__"):
        return pa.table(table_or_path), None
    if isinstance(table_or_path, str | os.PathLike):
        where = normalize_href(table_or_path)
        try:
            if "://" in where:
                store, path = StoreRegistry(store_options).resolve(where)
                data = obstore.get(store, path).bytes()
                return pq.read_table(pa.BufferReader(memoryview(data))), where
            return pq.read_table(where), where
        except CogflightError:
            raise
        except Exception as exc:
            raise InvalidArgumentError(f"cannot read table {where}: {exc}") from exc
    raise InvalidArgumentError(
        f"table_or_path: expected an Arrow table or a Parquet path/URL, got "
        f"{type(table_or_path).__name__}"
    )


def _get_path(table: pa.Table, path: str) -> pa.ChunkedArray:
    """A column, or a field inside struct columns with a dotted path (``assets.red.href``)."""
    if path in table.column_names:
        return table.column(path)
    head, *rest = path.split(".")
    if head not in table.column_names or not rest:
        raise InvalidArgumentError(f"the table has no column {path!r}")
    col = table.column(head)
    for part in rest:
        if not pa.types.is_struct(col.type) or col.type.get_field_index(part) < 0:
            raise InvalidArgumentError(f"the table has no field {path!r}")
        col = pc.struct_field(col, part)
    return col


def _stac_geoparquet_bands(table: pa.Table) -> dict[str, str]:
    t = table.schema.field("assets").type
    out = {}
    for f in t:
        if pa.types.is_struct(f.type) and f.type.get_field_index("href") >= 0:
            types = (
                pc.struct_field(table.column("assets"), [f.name, "type"]).drop_null()
                if f.type.get_field_index("type") >= 0
                else None
            )
            media = str(types[0]) if types is not None and len(types) else ""
            if "tiff" in media.lower() or media == "":
                out[f.name] = f"assets.{f.name}.href"
    return out


def build_from_table(
    table_or_path: Any,
    *,
    name: str = "collection",
    bands: Mapping[str, str | tuple[str, int]] | None = None,
    id_column: str = "id",
    datetime_column: str | None = "datetime",
    geometry_column: str | None = None,
    columns: Sequence[str] | None = None,
    rename: Mapping[str, str] | None = None,
    href_rewrite: Mapping[str, str] | None = None,
    store_options: StoreOptions | None = None,
    **options: Unpack[BuildOptions],
) -> Collection:
    """Build a Collection from rows that already carry asset hrefs.

    Works with stac-geoparquet exports (bands default to the GeoTIFF assets of
    the ``assets`` struct column), GeoParquet and DuckDB results.

    Args:
        table_or_path: an Arrow table (or anything with ``__arrow_c_stream__``) or a
            Parquet path/URL.
        bands: ``{band: column}`` or ``{band: (column, sample)}``; columns may be
            dotted paths into structs (``"assets.B04.href"``). Bands sharing a
            column share one asset (a multi-band file).
        id_column, datetime_column: where scene ids and dates are (dates may be
            timestamps, dates, ISO strings or years).
        geometry_column: a WKB footprint column to keep (default ``geometry``
            when present, reprojected to CRS84 if its GeoParquet CRS says so);
            without one, footprints come from the rasters.
        columns: pass-through columns to keep (default: every column not used above).
        rename: ``{old: new}`` names for pass-through columns (e.g. one called ``crs``).
        href_rewrite: ``{prefix: replacement}`` applied to hrefs (e.g. https -> s3).

    Raises:
        InvalidArgumentError: a named column is missing or has the wrong type.
        BuildError: no scene could be indexed (or ``strict`` and one failed).
    """
    table, where = read_table(table_or_path)
    if table.num_rows == 0:
        raise InvalidArgumentError("the table has no rows")
    if bands is None:
        if "assets" in table.column_names and pa.types.is_struct(table.schema.field("assets").type):
            bands = _stac_geoparquet_bands(table)
        if not bands:
            raise InvalidArgumentError(
                "bands: give {band: href_column}; the table has no stac-geoparquet 'assets' column"
            )
    consumed: set[str] = {id_column}
    ids_col = _get_path(table, id_column)
    ids = [None if v is None else str(v) for v in ids_col.to_pylist()]
    if any(i is None for i in ids):
        raise InvalidArgumentError(f"id_column {id_column!r} has null values")
    if len(set(ids)) != len(ids):
        raise InvalidArgumentError(f"id_column {id_column!r} has duplicate values")
    dts: list[dt.datetime | None] = [None] * table.num_rows
    if datetime_column is not None and datetime_column in table.column_names:
        consumed.add(datetime_column)
        dts = [to_utc(v, datetime_column) for v in table.column(datetime_column).to_pylist()]
    elif datetime_column not in (None, "datetime"):
        raise InvalidArgumentError(f"datetime_column: the table has no column {datetime_column!r}")

    geoms: list[BaseGeometry | None] = [None] * table.num_rows
    gcol = geometry_column or ("geometry" if "geometry" in table.column_names else None)
    if gcol is not None:
        if gcol not in table.column_names:
            raise InvalidArgumentError(f"geometry_column: the table has no column {gcol!r}")
        consumed.add(gcol)
        col = table.column(gcol)
        if not pa.types.is_binary(col.type) and not pa.types.is_large_binary(col.type):
            raise InvalidArgumentError(f"geometry_column {gcol!r} must hold WKB (binary)")
        crs = _geoparquet_crs(table.schema, gcol)
        wkbs = col.to_pylist()
        parsed = shapely.from_wkb(wkbs)
        geoms = [
            None if g is None else (g if crs is None else geometry_to_crs84(g, crs)) for g in parsed
        ]
    if "bbox" in table.column_names:
        consumed.add("bbox")

    rewrite = dict(href_rewrite or {})
    asset_of: dict[str, str] = {}
    specs: list[BandSpec] = []
    href_cols: dict[str, list[Any]] = {}
    for band, target in bands.items():
        column, sample = href_sample(target, f"bands[{band!r}]")
        if column not in asset_of:
            key = (
                band
                if sum(1 for t in bands.values() if href_sample(t, "")[0] == column) == 1
                else _asset_key(column)
            )
            asset_of[column] = key
            values = _get_path(table, column)
            if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
                raise InvalidArgumentError(f"bands[{band!r}]: column {column!r} must hold strings")
            href_cols[key] = values.to_pylist()
            consumed.add(column.split(".", 1)[0])
        specs.append(BandSpec(str(band), asset_of[column], sample))

    scenes: list[SceneSpec] = []
    failures: list[BuildFailure] = []
    for i, scene_id in enumerate(ids):
        assert scene_id is not None
        assets: dict[str, str] = {}
        bad: BuildFailure | None = None
        for key, values in href_cols.items():
            href = values[i]
            if href is None:
                continue
            href = rewrite_href(href, rewrite)
            try:
                assets[key] = normalize_href(href)
            except InvalidArgumentError as exc:
                bad = build_failure(scene_id, href, exc)
        if bad is not None:
            failures.append(bad)
        else:
            scenes.append(SceneSpec(scene_id, dts[i], assets, geoms[i], row=i))
    if not scenes:
        raise BuildError(f"no row of the table has usable hrefs for Collection {name!r}", failures)
    keep = (
        list(columns)
        if columns is not None
        else [c for c in table.column_names if c not in consumed]
    )
    for c in keep:
        if c not in table.column_names:
            raise InvalidArgumentError(f"columns: the table has no column {c!r}")
    renames = dict(rename or {})
    for old in renames:
        if old not in keep:
            raise InvalidArgumentError(f"rename: {old!r} is not a pass-through column")
    passthrough = table.select(keep)
    passthrough = passthrough.rename_columns([renames.get(c, c) for c in keep])
    collection = assemble(
        scenes,
        name=name,
        bands=specs,
        passthrough=passthrough,
        store_options=store_options,
        source={"kind": "table", "table": where},
        **options,
    )
    if failures:
        return Collection(collection.table, failures=[*failures, *collection.failures])
    return collection


def _asset_key(column: str) -> str:
    parts = column.split(".")
    if len(parts) >= 3 and parts[0] == "assets":
        return parts[1]
    return column.removesuffix("_href").removesuffix(".href")


def _geoparquet_crs(schema: pa.Schema, column: str) -> str | None:
    raw = (schema.metadata or {}).get(b"geo")
    if not raw:
        return None
    try:
        crs = json.loads(raw)["columns"][column].get("crs", None)
    except (ValueError, KeyError, TypeError):
        return None
    if crs is None:
        return None
    parsed = pyproj.CRS.from_user_input(crs)
    if parsed.equals(pyproj.CRS("OGC:CRS84"), ignore_axis_order=True):
        return None
    return str(parsed.to_string())
