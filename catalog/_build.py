"""The builders' shared core: scene specs in, a Collection out.

Every builder reduces its input to scene specs (id, datetime, asset hrefs,
optional known footprint, pass-through columns) and hands them to
:func:`assemble`, which parses every distinct header concurrently, reports
failures without losing successes, and writes the Collection table. The
builders themselves are in ``_build_files``, ``_build_table`` and ``_stac``.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any, TypedDict

import numpy as np
import pyarrow as pa
import pyproj
import shapely
from shapely.geometry.base import BaseGeometry

from cogflight_core import (
    BuildError,
    BuildFailure,
    CogflightError,
    HeaderError,
    InvalidArgumentError,
    UnsupportedLayoutError,
)

from ._aio import synchronous
from ._collection import Collection
from ._dates import to_utc
from ._footprint import bounds_footprint
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
    asset_row,
    geo_metadata,
)
from ._stores import PERSISTED_OPTION_KEYS, StoreOptions, StoreRegistry

__all__ = [
    "BandSpec",
    "BuildOptions",
    "DatetimeArg",
    "SceneSpec",
    "assemble",
    "assemble_async",
    "build_failure",
    "href_sample",
    "rewrite_href",
    "to_utc",
]

logger = logging.getLogger("cogflight.catalog")
DatetimeArg = dt.datetime | dt.date | str | Mapping[str, Any] | Callable[[str], Any] | None


class BuildOptions(TypedDict, total=False):
    """How every builder reads headers and treats failures (keyword arguments of each)."""

    concurrency: int | None
    """Headers read at once (default ``COGFLIGHT_HEADER_CONCURRENCY``)."""
    read_ahead: int | None
    """Bytes of the first header request (default ``COGFLIGHT_READ_AHEAD``)."""
    progress: bool | None
    """Show a progress bar (default: when stderr is a terminal)."""
    strict: bool
    """Raise :class:`~cogflight_core.BuildError` if any scene fails instead of reporting it."""


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


def build_failure(scene_id: str | None, href: str | None, exc: CogflightError) -> BuildFailure:
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
    counts = Counter(b.name for b in out)
    dupes = sorted(n for n, k in counts.items() if k > 1)
    if dupes:
        raise InvalidArgumentError(f"band names must be unique; repeated: {', '.join(dupes)}")
    return out


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
    """Read every header of ``scenes`` and build the Collection (see module docs).

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
            [build_failure(None, r.href, r.error) for r in results.values() if r.error],
        )
    assets = list(dict.fromkeys(b.asset for b in resolved))
    needed_samples: dict[str, int] = {}
    for b in resolved:
        needed_samples[b.asset] = max(needed_samples.get(b.asset, 0), b.sample + 1)

    failures: list[BuildFailure] = []
    ok: list[_Scene] = []
    for scene in scenes:
        try:
            outcome = _scene_outcome(scene, assets, needed_samples, results)
        except Exception as exc:  # a bug or an odd value: this scene fails, the others stay
            logger.debug("scene %r failed unexpectedly", scene.id, exc_info=True)
            outcome = BuildFailure(scene.id, None, type(exc).__name__, _one_line(exc))
        if isinstance(outcome, BuildFailure):
            failures.append(outcome)
        else:
            ok.append(outcome)
    ok, unfit, arrays = _fit_assets(ok, assets)
    failures.extend(unfit)
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

    table = _scene_table(ok, arrays, passthrough)
    first = {a: ok[0].headers[a] for a in assets}
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


@dataclass
class _Scene:
    """A scene whose headers were read: its headers, footprint and CRS."""

    spec: SceneSpec
    headers: dict[str, HeaderRecord]
    geometry: BaseGeometry
    crs: str


_UNFIT = (pa.ArrowException, OverflowError, TypeError, ValueError)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().split("\n", 1)[0][:500]
    return text or type(exc).__name__


def _scene_outcome(
    scene: SceneSpec,
    assets: Sequence[str],
    needed_samples: Mapping[str, int],
    results: Mapping[str, HeaderResult],
) -> _Scene | BuildFailure:
    """The scene's headers and footprint, or why it cannot be indexed."""
    headers: dict[str, HeaderRecord] = {}
    for asset in assets:
        href = scene.assets.get(asset)
        if href is None:
            return BuildFailure(scene.id, None, "MissingAsset", f"scene has no asset {asset!r}")
        res = results[href]
        if res.error is not None:
            return build_failure(scene.id, href, res.error)
        assert res.record is not None
        if res.record.samples < needed_samples[asset]:
            return BuildFailure(
                scene.id,
                href,
                "BandMismatch",
                f"file has {res.record.samples} samples but bands need {needed_samples[asset]}",
            )
        headers[asset] = res.record
    crss = {h.crs for h in headers.values()}
    if len(crss) > 1:
        return BuildFailure(
            scene.id,
            None,
            "MixedCRS",
            f"assets of one scene use different CRSs ({', '.join(sorted(crss))[:300]})",
        )
    if scene.geometry is not None:
        return _Scene(scene, headers, scene.geometry, next(iter(crss)))
    h = headers[assets[0]]
    try:
        geometry = bounds_footprint(h.bounds, h.crs)
    except (pyproj.exceptions.ProjError, pyproj.exceptions.CRSError, ValueError) as exc:
        err = UnsupportedLayoutError(
            h.href,
            f"its CRS cannot be transformed to longitude/latitude (OGC:CRS84) for the "
            f"footprint: {_one_line(exc)[:300]}; cogflight indexes rasters of the Earth",
        )
        return build_failure(scene.id, h.href, err)
    if geometry.is_empty or not np.isfinite(geometry.bounds).all():
        err = UnsupportedLayoutError(h.href, "its footprint has no finite longitude/latitude")
        return build_failure(scene.id, h.href, err)
    return _Scene(scene, headers, geometry, h.crs)


def _fit_assets(
    scenes: Sequence[_Scene], assets: Sequence[str]
) -> tuple[list[_Scene], list[BuildFailure], dict[str, pa.Array]]:
    """The scenes whose headers fit the asset columns, failures for the rest, the columns.

    One conversion of all headers is the fast path; when it fails (an odd value in
    a header, e.g. one over a column's integer range), each scene is tried alone.
    """
    values = {a: [asset_row(sc.headers[a]) for sc in scenes] for a in assets}
    try:
        return list(scenes), [], {a: pa.array(values[a], ASSET_TYPE) for a in assets}
    except _UNFIT:
        pass
    kept: list[int] = []
    failures: list[BuildFailure] = []
    for i, sc in enumerate(scenes):
        for a in assets:
            try:
                pa.array([values[a][i]], ASSET_TYPE)
            except _UNFIT as exc:
                err = HeaderError(
                    sc.headers[a].href, f"a header value does not fit the index: {_one_line(exc)}"
                )
                failures.append(build_failure(sc.spec.id, sc.headers[a].href, err))
                break
        else:
            kept.append(i)
    arrays = {a: pa.array([values[a][i] for i in kept], ASSET_TYPE) for a in assets}
    return [scenes[i] for i in kept], failures, arrays


def _scene_table(
    ok: Sequence[_Scene], arrays: Mapping[str, pa.Array], passthrough: pa.Table | None
) -> pa.Table:
    geoms = [sc.geometry for sc in ok]
    bboxes = [dict(zip(("xmin", "ymin", "xmax", "ymax"), g.bounds, strict=True)) for g in geoms]
    columns: dict[str, pa.Array | pa.ChunkedArray] = {
        "id": pa.array([sc.spec.id for sc in ok], pa.string()),
        "datetime": pa.array([sc.spec.datetime for sc in ok], pa.timestamp("us", tz="UTC")),
        "geometry": pa.array(shapely.to_wkb(geoms).tolist(), pa.binary()),
        "bbox": pa.array(bboxes, BBOX_TYPE),
        "crs": pa.array([sc.crs for sc in ok], pa.string()),
    }
    if passthrough is not None:
        rows = pa.array([sc.spec.row for sc in ok], pa.int64())
        taken = passthrough.take(rows)
        for col in taken.column_names:
            if col in columns or col.startswith(ASSET_PREFIX):
                raise InvalidArgumentError(
                    f"pass-through column {col!r} clashes with a Collection column "
                    f"({', '.join(RESERVED_COLUMNS)}, asset:*); pass "
                    f"rename={{{col!r}: 'new_name'}} or leave it out with columns=[...]"
                )
            columns[col] = taken.column(col)
    for asset, array in arrays.items():
        columns[asset_column(asset)] = array
    return pa.table(columns)


def _version() -> str:
    try:
        return version("cogflight")
    except Exception:  # not installed (running from a source tree)
        return "0+unknown"


def href_sample(target: Any, where: str) -> tuple[str, int]:
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


assemble = synchronous(assemble_async)


def rewrite_href(href: str, rewrite: Mapping[str, str]) -> str:
    """``href`` with its first matching prefix replaced (``{"https://host/": "s3://bucket/"}``)."""
    for prefix, replacement in rewrite.items():
        if href.startswith(prefix):
            return replacement + href[len(prefix) :]
    return href
