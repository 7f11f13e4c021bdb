"""Query geometries: accept every common form, reproject with densified edges.

Pure geometry, no I/O. Inputs: ``(xmin, ymin, xmax, ymax)`` tuples, shapely
geometries, WKB bytes, WKT, GeoJSON dicts (geometry, Feature,
FeatureCollection), pyarrow WKB arrays or GeoArrow (``geoarrow.wkb``)
columns, or a list of any of these, each with a CRS (default EPSG:4326).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyproj
import shapely
from shapely.geometry.base import BaseGeometry

from catalog import cached_crs as proj_crs
from catalog import cached_transformer as proj_transformer
from catalog import same_crs

from ._errors import InvalidArgumentError

__all__ = ["parse_crs", "reproject_geometry", "to_geometries"]

_DENSIFY_POINTS = 21


def parse_crs(value: str) -> pyproj.CRS:
    """A CRS from ``"EPSG:4326"``, WKT, PROJ JSON or a PROJ string (cached per thread)."""
    try:
        return proj_crs(value)
    except pyproj.exceptions.CRSError as exc:
        raise InvalidArgumentError(f"crs: cannot read {value!r} as a CRS ({exc})") from exc


def _transformer(src: str, dst: str) -> pyproj.Transformer:
    parse_crs(src)
    parse_crs(dst)
    return proj_transformer(src, dst)


def transform_points(
    xs: np.ndarray, ys: np.ndarray, src: str, dst: str
) -> tuple[np.ndarray, np.ndarray]:
    """Transform coordinate arrays between CRSs (x = easting/longitude)."""
    if same_crs(src, dst):
        return xs, ys
    x, y = _transformer(src, dst).transform(xs, ys)
    return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)


def reproject_geometry(geom: BaseGeometry, src: str, dst: str) -> BaseGeometry:
    """Reproject a geometry, segmentizing edges first so curved edges stay right."""
    if same_crs(src, dst):
        return geom
    minx, miny, maxx, maxy = geom.bounds
    span = max(maxx - minx, maxy - miny)
    dense = shapely.segmentize(geom, span / (_DENSIFY_POINTS - 1)) if span > 0 else geom
    transformer = _transformer(src, dst)

    def fn(coords: np.ndarray) -> np.ndarray:
        x, y = transformer.transform(coords[:, 0], coords[:, 1])
        return np.column_stack([x, y])

    out = shapely.transform(dense, fn)
    if not np.all(np.isfinite(shapely.get_coordinates(out))):
        raise InvalidArgumentError(
            f"geometry does not project from {src} to {dst} (outside the CRS's area of use)"
        )
    return out


def _one(value: Any, where: str) -> BaseGeometry:
    try:
        if isinstance(value, BaseGeometry):
            geom = value
        elif isinstance(value, bytes | bytearray | memoryview):
            geom = shapely.from_wkb(bytes(value))
        elif isinstance(value, str):
            geom = shapely.from_wkt(value)
        elif isinstance(value, Mapping):
            if value.get("type") == "Feature":
                value = value.get("geometry") or {}
            geom = shapely.from_geojson(json.dumps(value))
        elif (
            isinstance(value, Sequence)
            and len(value) == 4
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        ):
            xmin, ymin, xmax, ymax = (float(v) for v in value)
            if not (np.isfinite([xmin, ymin, xmax, ymax]).all() and xmin < xmax and ymin < ymax):
                raise InvalidArgumentError(
                    f"{where}: a bbox must be [xmin, ymin, xmax, ymax] with xmin < xmax and "
                    f"ymin < ymax, got {list(value)}"
                )
            geom = shapely.box(xmin, ymin, xmax, ymax)
        else:
            raise InvalidArgumentError(
                f"{where}: expected a bbox, shapely geometry, WKB, WKT or GeoJSON, got "
                f"{type(value).__name__}"
            )
    except InvalidArgumentError:
        raise
    except (shapely.errors.ShapelyError, ValueError, TypeError) as exc:
        raise InvalidArgumentError(f"{where}: not a valid geometry ({exc})") from exc
    if geom is None or geom.is_empty:
        raise InvalidArgumentError(f"{where}: the geometry is empty")
    if not np.all(np.isfinite(shapely.get_coordinates(geom))):
        raise InvalidArgumentError(f"{where}: the geometry has non-finite coordinates")
    if geom.geom_type not in (
        "Polygon",
        "MultiPolygon",
        "Point",
        "MultiPoint",
        "LineString",
        "MultiLineString",
    ):
        raise InvalidArgumentError(f"{where}: {geom.geom_type} geometries are not supported")
    return geom


def to_geometries(value: Any, where: str = "geometries") -> list[BaseGeometry]:
    """Normalize any accepted geometry input into a list of shapely geometries."""
    if isinstance(value, pa.ChunkedArray):
        value = value.combine_chunks()
    if isinstance(value, pa.ExtensionArray):
        value = value.storage
    if isinstance(value, pa.Array):
        if not (
            pa.types.is_binary(value.type)
            or pa.types.is_large_binary(value.type)
            or pa.types.is_binary_view(value.type)
        ):
            raise InvalidArgumentError(
                f"{where}: Arrow geometries must be WKB (binary or geoarrow.wkb), got {value.type}"
            )
        if value.null_count:
            raise InvalidArgumentError(f"{where}: the geometry array holds nulls")
        return [_one(v, f"{where}[{i}]") for i, v in enumerate(value.to_pylist())]
    if isinstance(value, Mapping) and value.get("type") == "FeatureCollection":
        feats = value.get("features") or []
        return [_one(f, f"{where}.features[{i}]") for i, f in enumerate(feats)]
    if isinstance(value, BaseGeometry | bytes | bytearray | str | Mapping):
        return [_one(value, where)]
    if (
        isinstance(value, Sequence)
        and len(value) == 4
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    ):
        return [_one(value, where)]
    if isinstance(value, Sequence | np.ndarray) and not isinstance(value, str):
        out = [_one(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if not out:
            raise InvalidArgumentError(f"{where}: no geometries given")
        return out
    raise InvalidArgumentError(f"{where}: unsupported geometry input {type(value).__name__}")
