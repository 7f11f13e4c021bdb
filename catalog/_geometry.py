"""Query geometries: one normaliser, one set of rules, for every caller.

``Collection.subset``/:func:`~catalog.select_rows` and the engine's
``ChipRequest`` both read geometries through :func:`to_geometries`, so a
geometry one accepts the other accepts too. Accepted inputs:

- a bbox ``(xmin, ymin, xmax, ymax)`` or an ``(x, y)`` point (Python or numpy numbers);
- a shapely geometry, WKB bytes, WKT text;
- a GeoJSON geometry, Feature or FeatureCollection (as a dict);
- a pyarrow WKB array (binary, or the ``geoarrow.wkb`` extension type);
- a list (or numpy array) of any of these.

The rules: at least one geometry; every geometry non-empty, with finite
coordinates, of a supported type (:data:`GEOMETRY_TYPES`); a bbox needs
``xmin <= xmax`` and ``ymin <= ymax``, and a degenerate bbox (zero width and/or
height) is the point or line it describes. Errors are
:class:`~catalog.InvalidArgumentError` naming the input (``geometries[2]``).

Pure functions over shapely; no I/O, no CRS handling (callers reproject).
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import shapely
from shapely.geometry.base import BaseGeometry

from cogflight_core import InvalidArgumentError

__all__ = ["GEOMETRY_TYPES", "as_geometry", "bbox_geometry", "check_lonlat", "to_geometries"]

#: Geometry types a query may use (polygons select and mask; points and lines select).
GEOMETRY_TYPES = (
    "Polygon",
    "MultiPolygon",
    "Point",
    "MultiPoint",
    "LineString",
    "MultiLineString",
)
_FORMS = "a bbox, (x, y) point, shapely geometry, WKB, WKT or GeoJSON"


def _numbers(value: Any, n: int) -> bool:
    """Whether ``value`` is ``n`` real numbers (Python or numpy) in a sequence or 1-d array."""
    if isinstance(value, np.ndarray):
        return value.ndim == 1 and value.shape[0] == n and value.dtype.kind in "iuf"
    return (
        isinstance(value, Sequence)
        and not isinstance(value, str | bytes)
        and len(value) == n
        and all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value)
    )


def _finite(coords: Sequence[float]) -> bool:
    return bool(np.isfinite(np.asarray(coords, dtype=np.float64)).all())


def bbox_geometry(value: Sequence[float], where: str = "bbox") -> BaseGeometry:
    """The geometry of ``(xmin, ymin, xmax, ymax)``: a box, or the point or line it describes.

    Raises:
        InvalidArgumentError: not four finite numbers with ``min <= max``.
    """
    if not _numbers(value, 4):
        raise InvalidArgumentError(
            f"{where}: expected [xmin, ymin, xmax, ymax] (4 numbers), got {_show(value)}"
        )
    xmin, ymin, xmax, ymax = (float(v) for v in value)
    if not _finite((xmin, ymin, xmax, ymax)):
        raise InvalidArgumentError(
            f"{where}: the bbox has non-finite coordinates, got {[xmin, ymin, xmax, ymax]}"
        )
    if not (xmin <= xmax and ymin <= ymax):
        raise InvalidArgumentError(
            f"{where}: a bbox must be [xmin, ymin, xmax, ymax] with min <= max, "
            f"got {[xmin, ymin, xmax, ymax]}"
        )
    if xmin == xmax and ymin == ymax:
        return shapely.Point(xmin, ymin)
    if xmin == xmax or ymin == ymax:
        return shapely.LineString([(xmin, ymin), (xmax, ymax)])
    return shapely.box(xmin, ymin, xmax, ymax)


def check_lonlat(geometries: Sequence[BaseGeometry], where: str) -> None:
    """Refuse EPSG:4326 coordinates outside longitude -180..180 / latitude -90..90.

    Such values are almost always metres (UTM) sent without their CRS, or swapped axes;
    projected, they would silently match nothing.
    """
    for i, g in enumerate(geometries):
        xmin, ymin, xmax, ymax = g.bounds
        if xmin < -180 or xmax > 180 or ymin < -90 or ymax > 90:
            at = f" (geometry {i})" if len(geometries) > 1 else ""
            raise InvalidArgumentError(
                f"{where}: {_show(list(g.bounds))}{at} is outside EPSG:4326's range (longitude "
                "-180..180, latitude -90..90); coordinates in metres need their CRS (the "
                "query's geometries.crs, geometry_crs= in Python, e.g. 'EPSG:32633'), and "
                "EPSG:4326 takes (longitude, latitude)"
            )


def _show(value: Any) -> str:
    text = repr(list(value)) if isinstance(value, Sequence | np.ndarray) else repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _parse(value: Any, where: str) -> BaseGeometry:
    """One geometry from one input (not a collection of them)."""
    try:
        if isinstance(value, BaseGeometry):
            return value
        if isinstance(value, bytes | bytearray | memoryview):
            return shapely.from_wkb(bytes(value))
        if isinstance(value, str):
            return shapely.from_wkt(value)
        if isinstance(value, Mapping):
            if value.get("type") == "Feature":
                value = value.get("geometry") or {}
            return shapely.from_geojson(json.dumps(value))
    except (shapely.errors.ShapelyError, ValueError, TypeError) as exc:
        raise InvalidArgumentError(f"{where}: not a valid geometry ({exc})") from exc
    if _numbers(value, 4):
        return bbox_geometry(value, where)
    if _numbers(value, 2):
        x, y = (float(v) for v in value)
        if not _finite((x, y)):
            raise InvalidArgumentError(f"{where}: the point has non-finite coordinates")
        return shapely.Point(x, y)
    raise InvalidArgumentError(f"{where}: expected {_FORMS}, got {type(value).__name__}")


def _checked(geom: BaseGeometry | None, where: str) -> BaseGeometry:
    """Apply the rules every geometry follows, whatever form it came in."""
    if geom is None or geom.is_empty:
        raise InvalidArgumentError(f"{where}: the geometry is empty")
    if geom.geom_type not in GEOMETRY_TYPES:
        raise InvalidArgumentError(
            f"{where}: {geom.geom_type} geometries are not supported; use "
            f"{', '.join(GEOMETRY_TYPES)}"
        )
    if not np.all(np.isfinite(shapely.get_coordinates(geom))):
        raise InvalidArgumentError(f"{where}: the geometry has non-finite coordinates")
    return geom


def _one(value: Any, where: str) -> BaseGeometry:
    return _checked(_parse(value, where), where)


def _arrow_wkb(value: pa.Array | pa.ChunkedArray, where: str) -> list[Any]:
    if isinstance(value, pa.ChunkedArray):
        value = value.combine_chunks()
    if isinstance(value, pa.ExtensionArray):
        value = value.storage
    kind = value.type
    if not (
        pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_binary_view(kind)
    ):
        raise InvalidArgumentError(
            f"{where}: Arrow geometries must be WKB (binary or geoarrow.wkb), got {kind}"
        )
    if value.null_count:
        raise InvalidArgumentError(f"{where}: the geometry array holds nulls")
    return value.to_pylist()  # type: ignore[no-any-return]


def to_geometries(value: Any, where: str = "geometries") -> list[BaseGeometry]:
    """Every geometry of an input, normalised and checked (see the module docstring).

    Raises:
        InvalidArgumentError: the input is of no accepted form, holds no geometry, or a
            geometry breaks a rule; the message names the input and item.
    """
    items: list[Any]
    if isinstance(value, pa.Array | pa.ChunkedArray):
        items = _arrow_wkb(value, where)
    elif isinstance(value, Mapping) and value.get("type") == "FeatureCollection":
        features = value.get("features") or []
        if not isinstance(features, Sequence) or isinstance(features, str):
            raise InvalidArgumentError(f"{where}.features: expected a list of Features")
        out = [_one(f, f"{where}.features[{i}]") for i, f in enumerate(features)]
        if not out:
            raise InvalidArgumentError(f"{where}: no geometries given (no features)")
        return out
    elif (
        isinstance(value, BaseGeometry | bytes | bytearray | memoryview | str | Mapping)
        or _numbers(value, 4)
        or _numbers(value, 2)
    ):
        return [_one(value, where)]
    elif isinstance(value, Sequence | np.ndarray):
        items = list(value)
    else:
        raise InvalidArgumentError(
            f"{where}: expected {_FORMS}, or a list of them; got {type(value).__name__}"
        )
    if not items:
        raise InvalidArgumentError(f"{where}: no geometries given")
    return [_one(v, f"{where}[{i}]") for i, v in enumerate(items)]


def as_geometry(value: Any, where: str = "geometry") -> BaseGeometry:
    """One geometry covering every geometry of an input (their union when there are several).

    Scene selection asks "does a footprint intersect the query"; for several
    geometries that is "does it intersect their union".
    """
    geoms = to_geometries(value, where)
    return geoms[0] if len(geoms) == 1 else shapely.union_all(geoms)
