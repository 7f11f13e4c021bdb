"""Builders shared core, and Collections from files and from tables.

Every builder reduces its input to scene specs (id, datetime, asset hrefs,
optional known footprint, pass-through columns) and hands them to
:func:`assemble`, which parses every distinct header concurrently, reports
failures without losing successes, and writes the Collection table.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import obstore
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pyproj
import shapely
from shapely.geometry.base import BaseGeometry

from ._aio import run_sync
from ._collection import Collection
from ._errors import (
    BuildError,
    BuildFailure,
    CogflightError,
    InvalidArgumentError,
)
from ._footprint import bounds_footprint, geometry_to_crs84
from ._header import HeaderRecord
from ._read import HeaderResult, read_headers_async
from ._schema import (
    ASSET_PREFIX,
    ASSET_TYPE,
    BBOX_TYPE,
    RESERVED_COLUMNS,
    SCHEMA_VERSION,
    Band,
    asset_column,
    geo_metadata,
    header_to_dict,
)
from ._stores import PERSISTED_OPTION_KEYS, StoreOptions, StoreRegistry, normalize_href

__all__ = ["BandSpec", "SceneSpec", "assemble", "build_from_files", "build_from_table"]

logger = logging.getLogger("cogflight.catalog")
DatetimeArg = dt.datetime | dt.date | str | Mapping[str, Any] | Callable[[str], Any] | None


@dataclass
class SceneSpec:
    """A scene before its headers are read."""

    id: str
    datetime: dt.datetime | None
    assets: dict[str, str]
    geometry: BaseGeometry | None = None
    row: int | None = None  # row of the pass-through table


@dataclass(frozen=True, slots=True)
class BandSpec:
    """A band to expose: its name, the asset holding it, and the sample index."""

    name: str
    asset: str
    sample: int = 0


@dataclass
class _Progress:
    bar: Any = None
    done: int = 0
    failed: int = 0
    started: float = field(default_factory=time.perf_counter)

    def update(self, result: HeaderResult) -> None:
        self.done += 1
        self.failed += result.error is not None
        if self.bar is not None:
            self.bar.update(1)
            if result.error is not None:
                self.bar.set_postfix(failed=self.failed, refresh=False)


def to_utc(value: Any, field_name: str = "datetime") -> dt.datetime | None:
    """A timezone-aware UTC datetime from a datetime, date, ISO string, year or None."""
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dt.datetime):
        out = value
    elif isinstance(value, dt.date):
        out = dt.datetime(value.year, value.month, value.day)
    elif isinstance(value, int | np.integer) and not isinstance(value, bool) and 0 < value < 10000:
        out = dt.datetime(int(value), 1, 1)
    elif isinstance(value, str):
        text = value.strip().replace("Z", "+00:00")
        try:
            out = (
                dt.datetime(int(text), 1, 1)
                if text.isdigit() and len(text) == 4
                else dt.datetime.fromisoformat(text)
            )
        except ValueError as exc:
            raise InvalidArgumentError(
                f"{field_name}: cannot read {value!r} as a date/time (use ISO 8601)"
            ) from exc
    else:
        raise InvalidArgumentError(f"{field_name}: expected a date/time, got {value!r}")
    if out.tzinfo is None:
        out = out.replace(tzinfo=dt.UTC)
    return out.astimezone(dt.UTC)


def _failure(scene_id: str | None, href: str | None, exc: CogflightError) -> BuildFailure:
    reason = getattr(exc, "reason", None) or str(exc)
    return BuildFailure(scene_id, href, type(exc).__name__, reason)


def _resolve_bands(
    bands: Sequence[BandSpec],
    auto: Mapping[str, Callable[[int], list[str]]],
    scenes: Sequence[SceneSpec],
    results: Mapping[str, HeaderResult],
) -> list[BandSpec]:
    out = list(bands)
    for asset, namer in auto.items():
        header = next(
            (
                results[s.assets[asset]].record
                for s in scenes
                if asset in s.assets and results[s.assets[asset]].record is not None
            ),
            None,
        )
        if header is None:
            continue
        out.extend(BandSpec(n, asset, i) for i, n in enumerate(namer(header.samples)))
    names = [b.name for b in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InvalidArgumentError(f"band names must be unique; repeated: {', '.join(dupes)}")
    return out


def assemble(
    scenes: Sequence[SceneSpec],
    *,
    name: str,
    bands: Sequence[BandSpec] = (),
    auto_bands: Mapping[str, Callable[[int], list[str]]] | None = None,
    passthrough: pa.Table | None = None,
    store_options: StoreOptions | None = None,
    registry: StoreRegistry | None = None,
    source: Mapping[str, Any] | None = None,
    band_info: Mapping[tuple[str, int], Mapping[str, Any]] | None = None,
    concurrency: int | None = None,
    read_ahead: int | None = None,
    progress: bool | None = None,
    strict: bool = False,
) -> Collection:
    """Read every header of ``scenes`` and build the Collection (see module docs)."""
    return run_sync(
        assemble_async(
            scenes,
            name=name,
            bands=bands,
            auto_bands=auto_bands,
            passthrough=passthrough,
            store_options=store_options,
            registry=registry,
            source=source,
            band_info=band_info,
            concurrency=concurrency,
            read_ahead=read_ahead,
            progress=progress,
            strict=strict,
        )
    )


async def assemble_async(
    scenes: Sequence[SceneSpec],
    *,
    name: str,
    bands: Sequence[BandSpec] = (),
    auto_bands: Mapping[str, Callable[[int], list[str]]] | None = None,
    passthrough: pa.Table | None = None,
    store_options: StoreOptions | None = None,
    registry: StoreRegistry | None = None,
    source: Mapping[str, Any] | None = None,
    band_info: Mapping[tuple[str, int], Mapping[str, Any]] | None = None,
    concurrency: int | None = None,
    read_ahead: int | None = None,
    progress: bool | None = None,
    strict: bool = False,
) -> Collection:
    """Async :func:`assemble`.

    ``band_info`` maps ``(asset, sample)`` to fallback ``scale``/``offset``/``nodata``/
    ``description`` (e.g. from STAC ``raster:bands``) used where the file's own header
    has none.
    """
    if not isinstance(name, str) or not name.strip():
        raise InvalidArgumentError("name: a Collection needs a non-empty name")
    if not scenes:
        raise BuildError(f"nothing to build: Collection {name!r} has no input scenes")
    auto = dict(auto_bands or {})
    registry = registry or StoreRegistry(store_options)
    hrefs = list(dict.fromkeys(h for s in scenes for h in s.assets.values()))
    logger.info("building Collection %r: %d scenes, %d files", name, len(scenes), len(hrefs))

    prog = _Progress()
    show = progress if progress is not None else os.isatty(2)
    if show:
        from tqdm.auto import tqdm

        prog.bar = tqdm(total=len(hrefs), unit="file", desc=f"headers of {name}", leave=False)
    try:
        results = await read_headers_async(
            hrefs,
            registry=registry,
            concurrency=concurrency,
            read_ahead=read_ahead,
            on_done=prog.update,
        )
    finally:
        if prog.bar is not None:
            prog.bar.close()
    elapsed = time.perf_counter() - prog.started

    resolved = _resolve_bands(bands, auto, scenes, results)
    if not resolved:
        raise BuildError(
            f"no scene of Collection {name!r} could be indexed: no header could be read",
            [_failure(None, r.href, r.error) for r in results.values() if r.error],
        )
    assets = list(dict.fromkeys(b.asset for b in resolved))
    needed_samples: dict[str, int] = {}
    for b in resolved:
        needed_samples[b.asset] = max(needed_samples.get(b.asset, 0), b.sample + 1)

    failures: list[BuildFailure] = []
    ok: list[tuple[SceneSpec, dict[str, HeaderRecord]]] = []
    for scene in scenes:
        headers: dict[str, HeaderRecord] = {}
        problem: BuildFailure | None = None
        for asset in assets:
            href = scene.assets.get(asset)
            if href is None:
                problem = BuildFailure(
                    scene.id, None, "MissingAsset", f"scene has no asset {asset!r}"
                )
                break
            res = results[href]
            if res.error is not None:
                problem = _failure(scene.id, href, res.error)
                break
            assert res.record is not None
            if res.record.samples < needed_samples[asset]:
                problem = BuildFailure(
                    scene.id,
                    href,
                    "BandMismatch",
                    f"file has {res.record.samples} samples but bands need {needed_samples[asset]}",
                )
                break
            headers[asset] = res.record
        if problem is None:
            crss = {h.crs for h in headers.values()}
            if len(crss) > 1:
                problem = BuildFailure(
                    scene.id,
                    None,
                    "MixedCRS",
                    f"assets of one scene use different CRSs ({', '.join(sorted(crss))[:300]})",
                )
        if problem is not None:
            failures.append(problem)
        else:
            ok.append((scene, headers))
    # Files read but not used by any band still count if they failed.
    if failures:
        logger.warning(
            "Collection %r: %d of %d scenes failed, e.g. %s",
            name,
            len(failures),
            len(scenes),
            failures[0],
        )
    if not ok:
        raise BuildError(f"no scene of Collection {name!r} could be indexed", failures)
    if strict and failures:
        raise BuildError(
            f"{len(failures)} scenes of Collection {name!r} failed (strict=True)", failures
        )

    table = _scene_table(ok, assets, passthrough)
    first = {a: ok[0][1][a] for a in assets}
    info = band_info or {}
    band_meta = []
    for b in resolved:
        h = first[b.asset]
        extra = dict(info.get((b.asset, b.sample), {}))
        band_meta.append(
            Band(
                name=b.name,
                asset=b.asset,
                sample=b.sample,
                dtype=h.dtype,
                nodata=h.nodata
                if h.nodata is not None
                else (None if extra.get("nodata") is None else str(extra["nodata"])),
                scale=h.scales[b.sample]
                if h.scales and h.scales[b.sample] is not None
                else extra.get("scale"),
                offset=h.offsets[b.sample]
                if h.offsets and h.offsets[b.sample] is not None
                else extra.get("offset"),
                description=(
                    h.descriptions[b.sample]
                    if h.descriptions and h.descriptions[b.sample]
                    else extra.get("description")
                ),
            ).to_json()
        )
    persisted = {k: v for k, v in dict(store_options or {}).items() if k in PERSISTED_OPTION_KEYS}
    requests = [results[h].requests for h in hrefs]
    meta = {
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "bands": band_meta,
        "store_options": persisted,
        "source": dict(source or {}),
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "producer": f"cogflight {_version()}",
        "build": {
            "files": len(hrefs),
            "failed_scenes": len(failures),
            "seconds": round(elapsed, 3),
            "requests_median": float(np.median(requests)) if requests else 0.0,
            "requests_max": int(max(requests)) if requests else 0,
        },
    }
    geoms = shapely.from_wkb(table.column("geometry").to_pylist())
    bounds = shapely.total_bounds(geoms)
    geo = geo_metadata([g.geom_type for g in geoms], bounds.tolist())
    logger.info(
        "built Collection %r: %d scenes, %d bands, %d failures in %.2f s",
        name,
        len(ok),
        len(resolved),
        len(failures),
        elapsed,
    )
    return Collection._from_parts(table, meta, geo, failures)


def _scene_table(
    ok: Sequence[tuple[SceneSpec, dict[str, HeaderRecord]]],
    assets: Sequence[str],
    passthrough: pa.Table | None,
) -> pa.Table:
    ids = [s.id for s, _ in ok]
    dts = [s.datetime for s, _ in ok]
    geoms: list[BaseGeometry] = []
    crs: list[str] = []
    for scene, headers in ok:
        h = headers[assets[0]]
        crs.append(h.crs)
        geoms.append(
            scene.geometry if scene.geometry is not None else bounds_footprint(h.bounds, h.crs)
        )
    bboxes = [dict(zip(("xmin", "ymin", "xmax", "ymax"), g.bounds, strict=True)) for g in geoms]
    columns: dict[str, pa.Array | pa.ChunkedArray] = {
        "id": pa.array(ids, pa.string()),
        "datetime": pa.array(dts, pa.timestamp("us", tz="UTC")),
        "geometry": pa.array(shapely.to_wkb(geoms).tolist(), pa.binary()),
        "bbox": pa.array(bboxes, BBOX_TYPE),
        "crs": pa.array(crs, pa.string()),
    }
    if passthrough is not None:
        rows = pa.array([s.row for s, _ in ok], pa.int64())
        taken = passthrough.take(rows)
        for col in taken.column_names:
            if col in columns or col.startswith(ASSET_PREFIX):
                raise InvalidArgumentError(
                    f"pass-through column {col!r} clashes with a Collection column "
                    f"({', '.join(RESERVED_COLUMNS)}, asset:*); pass "
                    f"rename={{{col!r}: 'new_name'}} or leave it out with columns=[...]"
                )
            columns[col] = taken.column(col)
    for asset in assets:
        values = [{"href": hs[asset].href, "header": header_to_dict(hs[asset])} for _, hs in ok]
        columns[asset_column(asset)] = pa.array(values, ASSET_TYPE)
    return pa.table(columns)


def _version() -> str:
    try:
        return version("cogflight")
    except Exception:  # not installed (running from a source tree)
        return "0+unknown"


def _datetime_for(arg: DatetimeArg, scene_id: str, href: str) -> dt.datetime | None:
    if arg is None:
        return None
    if callable(arg):
        return to_utc(arg(href), "datetime")
    if isinstance(arg, Mapping):
        return to_utc(arg.get(scene_id), f"datetime[{scene_id!r}]")
    return to_utc(arg, "datetime")


def _stem(href: str) -> str:
    path = urlsplit(href).path if "://" in href else href
    name = PurePosixPath(path).name
    for suffix in (".tiff", ".tif", ".TIF", ".TIFF"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def build_from_files(
    sources: Sequence[str | os.PathLike[str]] | Mapping[str, Mapping[str, Any]],
    *,
    name: str = "collection",
    bands: Sequence[str] | None = None,
    datetime: DatetimeArg = None,
    store_options: StoreOptions | None = None,
    concurrency: int | None = None,
    read_ahead: int | None = None,
    progress: bool | None = None,
    strict: bool = False,
) -> Collection:
    """Build a Collection from GeoTIFF paths or URLs.

    Args:
        sources: a list of files, one scene each (scene id = file name without
            extension, bands = the file's samples), or a mapping
            ``{scene_id: {band: href or (href, sample)}}`` with one file per band.
        name: the Collection's name.
        bands: names for the samples of list-mode files (default ``b1``, ``b2``...).
        datetime: one date for all scenes, ``{scene_id: date}``, or a callable
            ``href -> date``; ISO strings, dates, datetimes or years.
        store_options: how to reach remote files (anonymous, region, endpoint...).
        concurrency: headers read at once (default ``COGFLIGHT_HEADER_CONCURRENCY``).
        read_ahead: bytes of the first header request (default ``COGFLIGHT_READ_AHEAD``).
        progress: show a progress bar (default: when stderr is a terminal).
        strict: raise :class:`BuildError` if any scene fails instead of reporting it.

    Raises:
        InvalidArgumentError: bad arguments (duplicate scene ids, empty input...).
        BuildError: no scene could be indexed (or ``strict`` and one failed).
    """
    scenes: list[SceneSpec] = []
    band_specs: list[BandSpec] = []
    auto: dict[str, Callable[[int], list[str]]] = {}
    if isinstance(sources, Mapping):
        if bands is not None:
            raise InvalidArgumentError("bands: not used with a {scene: {band: href}} mapping")
        order: list[str] = []
        samples: dict[str, int] = {}
        for scene_id, band_map in sources.items():
            if not isinstance(band_map, Mapping) or not band_map:
                raise InvalidArgumentError(
                    f"sources[{scene_id!r}]: expected a non-empty {{band: href}} mapping"
                )
            assets: dict[str, str] = {}
            for band, target in band_map.items():
                href, sample = _href_sample(target, f"sources[{scene_id!r}][{band!r}]")
                if band not in order:
                    order.append(band)
                    samples[band] = sample
                elif samples[band] != sample:
                    raise InvalidArgumentError(
                        f"sources[{scene_id!r}][{band!r}]: sample {sample} differs from "
                        f"sample {samples[band]} used for this band in other scenes"
                    )
                assets[band] = normalize_href(href)
            first = next(iter(assets.values()))
            scenes.append(
                SceneSpec(str(scene_id), _datetime_for(datetime, str(scene_id), first), assets)
            )
        band_specs = [BandSpec(b, b, samples[b]) for b in order]
    else:
        if isinstance(sources, str | os.PathLike) or not isinstance(sources, Sequence):
            raise InvalidArgumentError(
                "sources: expected a list of paths/URLs or a {scene: {band: href}} mapping"
            )
        hrefs = [normalize_href(s) for s in sources]
        if not hrefs:
            raise InvalidArgumentError("sources: no files given")
        stems = [_stem(h) for h in hrefs]
        dupes = sorted({s for s in stems if stems.count(s) > 1})
        if dupes:
            raise InvalidArgumentError(
                f"several files share the scene id {', '.join(dupes[:5])!s} (file name without "
                "extension); pass a {scene_id: {band: href}} mapping to name scenes yourself"
            )
        for stem, href in zip(stems, hrefs, strict=True):
            scenes.append(SceneSpec(stem, _datetime_for(datetime, stem, href), {"image": href}))
        if bands is not None:
            if isinstance(bands, str) or not bands:
                raise InvalidArgumentError("bands: expected a non-empty list of band names")
            band_specs = [BandSpec(str(b), "image", i) for i, b in enumerate(bands)]
        else:
            auto["image"] = lambda n: [f"b{i + 1}" for i in range(n)]
    return assemble(
        scenes,
        name=name,
        bands=band_specs,
        auto_bands=auto,
        store_options=store_options,
        source={"kind": "files", "files": sum(len(s.assets) for s in scenes)},
        concurrency=concurrency,
        read_ahead=read_ahead,
        progress=progress,
        strict=strict,
    )


def _href_sample(target: Any, where: str) -> tuple[str, int]:
    if isinstance(target, str | os.PathLike):
        return str(target), 0
    if (
        isinstance(target, Sequence)
        and len(target) == 2
        and isinstance(target[0], str | os.PathLike)
        and isinstance(target[1], int)
    ):
        if target[1] < 0:
            raise InvalidArgumentError(f"{where}: sample index must be >= 0")
        return str(target[0]), int(target[1])
    raise InvalidArgumentError(f"{where}: expected an href or (href, sample), got {target!r}")


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
    concurrency: int | None = None,
    read_ahead: int | None = None,
    progress: bool | None = None,
    strict: bool = False,
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
        column, sample = _href_sample(target, f"bands[{band!r}]")
        if column not in asset_of:
            key = (
                band
                if sum(1 for t in bands.values() if _href_sample(t, "")[0] == column) == 1
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
            for prefix, repl in rewrite.items():
                if href.startswith(prefix):
                    href = repl + href[len(prefix) :]
                    break
            try:
                assets[key] = normalize_href(href)
            except InvalidArgumentError as exc:
                bad = _failure(scene_id, href, exc)
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
        concurrency=concurrency,
        read_ahead=read_ahead,
        progress=progress,
        strict=strict,
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
