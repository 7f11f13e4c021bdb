"""Scene footprints in OGC:CRS84: densified, antimeridian-aware. Pure geometry, no I/O."""

from __future__ import annotations

import numpy as np
import pyproj
import shapely
from shapely.geometry.base import BaseGeometry

from ._proj import CRS84, same_crs, transformer

__all__ = ["bounds_footprint", "geometry_to_crs84", "transformer_to_crs84"]

_DENSIFY = 21  # points per edge: reprojected edges curve, straight lines would cut corners


def transformer_to_crs84(crs: str) -> pyproj.Transformer:
    """A transformer from ``crs`` to longitude/latitude (x=lon, y=lat), cached per thread."""
    return transformer(crs, CRS84)


def _ring(bounds: tuple[float, float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    xmin, ymin, xmax, ymax = bounds
    t = np.linspace(0.0, 1.0, _DENSIFY)[:-1]
    xs = np.concatenate(
        [
            xmin + (xmax - xmin) * t,
            np.full_like(t, xmax),
            xmax - (xmax - xmin) * t,
            np.full_like(t, xmin),
        ]
    )
    ys = np.concatenate(
        [
            np.full_like(t, ymin),
            ymin + (ymax - ymin) * t,
            np.full_like(t, ymax),
            ymax - (ymax - ymin) * t,
        ]
    )
    return xs, ys


def bounds_footprint(bounds: tuple[float, float, float, float], crs: str) -> BaseGeometry:
    """The footprint of a raster's bounds (in ``crs``) as a CRS84 (multi)polygon."""
    xs, ys = _ring(bounds)
    lon, lat = transformer_to_crs84(crs).transform(xs, ys)
    return _lonlat_polygon(np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64))


def _lonlat_polygon(lon: np.ndarray, lat: np.ndarray) -> BaseGeometry:
    ok = np.isfinite(lon) & np.isfinite(lat)
    lon, lat = lon[ok], lat[ok]
    if lon.size < 3:
        raise ValueError("the footprint does not project to longitude/latitude")
    if lon.min() >= -180.0 and lon.max() <= 180.0 and np.all(np.abs(np.diff(lon)) <= 180.0):
        return shapely.make_valid(shapely.Polygon(np.column_stack([lon, lat])))
    # Unwrap longitudes so the ring is continuous, then cut it at +-180.
    wrapped = (lon + 180.0) % 360.0 - 180.0
    steps = np.diff(wrapped)
    unwrapped = np.concatenate(
        [[wrapped[0]], wrapped[0] + np.cumsum(steps - 360.0 * np.round(steps / 360.0))]
    )
    closing = unwrapped[-1] + ((wrapped[0] - unwrapped[-1] + 180.0) % 360.0 - 180.0)
    if abs(closing - unwrapped[0]) > 180.0:  # the ring encircles a pole
        north = lat.mean() > 0
        edge = 90.0 if north else -90.0
        poly = shapely.box(-180.0, min(lat.min(), edge), 180.0, max(lat.max(), edge))
        return poly
    poly = shapely.make_valid(shapely.Polygon(np.column_stack([unwrapped, lat])))
    parts = []
    for shift in (-360.0, 0.0, 360.0):
        window = shapely.box(-180.0 + shift, -90.0, 180.0 + shift, 90.0)
        piece = shapely.intersection(poly, window)
        if not piece.is_empty and piece.area > 0:
            parts.append(shapely.affinity.translate(piece, xoff=-shift))
    merged = shapely.union_all(parts)
    return merged


def geometry_to_crs84(geom: BaseGeometry, crs: str) -> BaseGeometry:
    """Reproject a geometry given in ``crs`` to CRS84, densifying its edges first."""
    if same_crs(crs, CRS84):
        return geom
    minx, miny, maxx, maxy = geom.bounds
    step = max(maxx - minx, maxy - miny) / (_DENSIFY - 1) or 1.0
    dense = shapely.segmentize(geom, step)
    transformer = transformer_to_crs84(crs)

    def fn(coords: np.ndarray) -> np.ndarray:
        x, y = transformer.transform(coords[:, 0], coords[:, 1])
        return np.column_stack([x, y])

    return shapely.transform(dense, fn)
