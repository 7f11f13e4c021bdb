"""CRSs and reprojection of query geometries, with densified edges.

Pure geometry, no I/O. Reading geometries from their many input forms is
:func:`catalog.to_geometries` (one normaliser, one set of rules); this module
only parses CRSs and moves coordinates between them. pyproj objects come from
catalog's per-thread caches, so any thread may call these functions.
"""

from __future__ import annotations

import numpy as np
import pyproj
import shapely
from shapely.geometry.base import BaseGeometry

from catalog import cached_crs as proj_crs
from catalog import cached_transformer as proj_transformer
from catalog import same_crs
from cogflight_core import InvalidArgumentError

__all__ = ["parse_crs", "reproject_geometry", "transform_points"]

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
