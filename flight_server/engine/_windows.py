"""Window and tile maths: geometry -> pixel window -> tiles -> byte ranges. No I/O.

Pixel arithmetic follows rasterio (``~transform`` then floor/ceil, as
``rasterio.features.geometry_window``), so windows agree with GDAL-based reads
pixel for pixel, with one difference: pixel coordinates within :data:`SNAP_PX`
of a whole pixel are snapped to it first (as odc-geo's ``snap_grid``), so a bbox
whose edges were computed from the raster's own grid gives exactly its window
instead of one more row or column from floating-point noise (1e-13 to 4e-9 px
seen in real transforms).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from catalog import HeaderRecord, ImageRecord

__all__ = [
    "SNAP_PX",
    "GeoTransform",
    "TileRef",
    "Window",
    "centered_window",
    "choose_level",
    "geometry_window",
    "inverse",
    "snap",
    "tiles_in_window",
    "to_pixels",
    "window_transform",
]

GeoTransform = tuple[float, float, float, float, float, float]  # GDAL order


@dataclass(frozen=True, slots=True)
class Window:
    """A pixel window; may extend past the raster (boundless reads fill it)."""

    col_off: int
    row_off: int
    width: int
    height: int

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)``."""
        return (self.height, self.width)

    def clip(self, width: int, height: int) -> tuple[int, int, int, int] | None:
        """``(col0, row0, col1, row1)`` of the part inside a ``width x height`` raster."""
        c0, r0 = max(self.col_off, 0), max(self.row_off, 0)
        c1 = min(self.col_off + self.width, width)
        r1 = min(self.row_off + self.height, height)
        if c0 >= c1 or r0 >= r1:
            return None
        return (c0, r0, c1, r1)


@dataclass(frozen=True, slots=True)
class TileRef:
    """One tile of one image of one file, with its byte range."""

    href: str
    level: int
    index: int  # into tile_offsets (plane-major for band-interleaved files)
    offset: int
    length: int
    mask: bool = False

    @property
    def key(self) -> tuple[str, int, int, int, bool]:
        """Cache key (the offset too, so a rewritten file never hits stale tiles)."""
        return (self.href, self.level, self.index, self.offset, self.mask)

    @property
    def sparse(self) -> bool:
        """Sparse tiles (offset or count 0) hold no bytes and read as nodata."""
        return self.offset == 0 or self.length == 0


def inverse(gt: GeoTransform) -> GeoTransform:
    """The inverse affine, computed as the ``affine`` package does (bit-identical)."""
    x0, a, b, y0, d, e = gt
    det = a * e - b * d
    if det == 0:
        raise ValueError(f"degenerate geotransform {gt}")
    idet = 1.0 / det
    ra, rb, rd, re = e * idet, -b * idet, -d * idet, a * idet
    return (-x0 * ra - y0 * rb, ra, rb, -x0 * rd - y0 * re, rd, re)


def to_pixels(xs: np.ndarray, ys: np.ndarray, gt: GeoTransform) -> tuple[np.ndarray, np.ndarray]:
    """Map coordinates to fractional ``(col, row)`` with the inverse of ``gt``."""
    c, ra, rb, f, rd, re = inverse(gt)
    return xs * ra + ys * rb + c, xs * rd + ys * re + f


SNAP_PX = 1e-6
"""Pixel coordinates this close to a whole pixel are that pixel (grid snapping)."""


def snap(values: np.ndarray) -> np.ndarray:
    """``values`` (pixel coordinates) with those within :data:`SNAP_PX` of an integer made it."""
    nearest = np.round(values)
    return np.where(np.abs(values - nearest) <= SNAP_PX, nearest, values)


def window_transform(gt: GeoTransform, window: Window) -> GeoTransform:
    """Geotransform of a window's top-left pixel."""
    x0, a, b, y0, d, e = gt
    c, r = window.col_off, window.row_off
    return (x0 + c * a + r * b, a, b, y0 + c * d + r * e, d, e)


def geometry_window(geom: BaseGeometry, gt: GeoTransform) -> Window:
    """The outermost pixels containing ``geom`` (in the raster CRS): floor/ceil of its extent.

    Same as ``rasterio.features.geometry_window(..., boundless=True)``, after
    grid snapping (:func:`snap`).
    """
    coords = shapely.get_coordinates(geom)
    cols, rows = to_pixels(coords[:, 0], coords[:, 1], gt)
    cols, rows = snap(cols), snap(rows)
    c0, c1 = math.floor(cols.min()), math.ceil(cols.max())
    r0, r1 = math.floor(rows.min()), math.ceil(rows.max())
    return Window(int(c0), int(r0), max(int(c1 - c0), 0), max(int(r1 - r0), 0))


def centered_window(geom: BaseGeometry, gt: GeoTransform, height: int, width: int) -> Window:
    """A ``height x width`` window centred on the geometry's bounds, snapped to the grid."""
    minx, miny, maxx, maxy = geom.bounds
    cols, rows = to_pixels(np.array([(minx + maxx) / 2]), np.array([(miny + maxy) / 2]), gt)
    col = math.floor(float(snap(cols - width / 2 + 0.5)[0]))
    row = math.floor(float(snap(rows - height / 2 + 0.5)[0]))
    return Window(col, row, width, height)


def tiles_in_window(
    header: HeaderRecord, level: int, window: Window, samples: list[int], *, mask: bool = False
) -> Iterator[tuple[TileRef, int, int, int]]:
    """Tiles a window touches: ``(tile, plane, tile_row, tile_col)`` (clipped to the raster).

    Pixel-interleaved files yield each tile once (plane -1: every sample);
    band-interleaved files yield one tile per requested sample plane.
    """
    img: ImageRecord | None = header.masks[level] if mask else header.levels[level]
    if img is None:
        return
    inside = window.clip(img.width, img.height)
    if inside is None:
        return
    c0, r0, c1, r1 = inside
    tr0, tr1 = r0 // img.tile_height, (r1 - 1) // img.tile_height
    tc0, tc1 = c0 // img.tile_width, (c1 - 1) // img.tile_width
    planes = sorted(set(samples)) if (img.planar_config == 2 and not mask) else [-1]
    for plane in planes:
        for tr in range(tr0, tr1 + 1):
            for tc in range(tc0, tc1 + 1):
                idx = img.tile_index(tr, tc, max(plane, 0))
                yield (
                    TileRef(
                        header.href,
                        level,
                        idx,
                        int(img.tile_offsets[idx]),
                        int(img.tile_byte_counts[idx]),
                        mask,
                    ),
                    plane,
                    tr,
                    tc,
                )


def level_resolution(header: HeaderRecord, level: int) -> tuple[float, float]:
    """Absolute pixel size ``(x, y)`` of a level in the raster's CRS units."""
    gt = header.level_geotransform(level)
    return (abs(gt[1]), abs(gt[5]))


def choose_level(header: HeaderRecord, res_x: float, res_y: float) -> int:
    """The coarsest level whose pixels are no larger than the target resolution.

    With a target at or finer than native resolution this is level 0. A small
    tolerance keeps exact overview factors (2, 4, ...) on their overview.
    """
    best = 0
    for level in range(len(header.levels)):
        lx, ly = level_resolution(header, level)
        if lx <= res_x * (1 + 1e-6) and ly <= res_y * (1 + 1e-6):
            best = level
    return best
