"""Polygon masks on a pixel grid, following GDAL's rasterization rules.

``all_touched=False``: a pixel is inside when its centre is (scanlines through
pixel centres; an edge counts on ``[y0, y1)``; a span covers centres in
``(x_a, x_b]``). ``all_touched=True`` adds every pixel a ring edge passes
through. This is what ``rasterio.features.geometry_mask`` (GDAL) computes, so
masked chips equal ``rasterio.mask.mask``. Pure numpy, no I/O.
"""

from __future__ import annotations

import math

import numpy as np
from shapely.geometry.base import BaseGeometry

from ._windows import GeoTransform, to_pixels

__all__ = ["rasterize_polygon"]


def _rings(geom: BaseGeometry) -> list[np.ndarray]:
    polys = [geom] if geom.geom_type == "Polygon" else list(getattr(geom, "geoms", []))
    rings = []
    for p in polys:
        if p.geom_type != "Polygon" or p.is_empty:
            continue
        rings.append(np.asarray(p.exterior.coords))
        rings.extend(np.asarray(r.coords) for r in p.interiors)
    return rings


def rasterize_polygon(
    geom: BaseGeometry,
    transform: GeoTransform,
    height: int,
    width: int,
    *,
    all_touched: bool = False,
) -> np.ndarray:
    """Boolean ``(height, width)`` mask, True inside ``geom`` (in the grid's CRS)."""
    out = np.zeros((height, width), dtype=bool)
    if height == 0 or width == 0 or geom.is_empty:
        return out
    if geom.geom_type not in ("Polygon", "MultiPolygon"):
        geom = geom.buffer(0) if geom.area > 0 else geom
    rings = []
    for ring in _rings(geom):
        cols, rows = to_pixels(ring[:, 0], ring[:, 1], transform)
        rings.append((cols, rows))
    if not rings:
        if all_touched:
            for line in _lines(geom):
                cols, rows = to_pixels(line[:, 0], line[:, 1], transform)
                _touch(out, cols, rows)
        return out
    _fill(out, rings)
    if all_touched:
        for cols, rows in rings:
            _touch(out, cols, rows)
    return out


def _lines(geom: BaseGeometry) -> list[np.ndarray]:
    parts = list(getattr(geom, "geoms", [geom]))
    return [np.asarray(p.coords) for p in parts if p.geom_type in ("LineString", "LinearRing")]


def _fill(out: np.ndarray, rings: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """Even-odd scanline fill through pixel centres (all rings of all parts together)."""
    height, width = out.shape
    x1 = np.concatenate([c[:-1] for c, _ in rings])
    y1 = np.concatenate([r[:-1] for _, r in rings])
    x2 = np.concatenate([c[1:] for c, _ in rings])
    y2 = np.concatenate([r[1:] for _, r in rings])
    flat = y1 == y2
    # Orient every non-horizontal edge upwards (y1 < y2).
    swap = y1 > y2
    x1, x2 = np.where(swap, x2, x1), np.where(swap, x1, x2)
    y1, y2 = np.where(swap, y2, y1), np.where(swap, y1, y2)
    keep = ~flat
    ex1, ey1, ex2, ey2 = x1[keep], y1[keep], x2[keep], y2[keep]
    ymin, ymax = float(min(y1.min(), y2.min())), float(max(y1.max(), y2.max()))
    r0 = max(0, math.floor(ymin))
    r1 = min(height - 1, math.floor(ymax))
    if r1 < r0:
        return
    rows = np.arange(r0, r1 + 1)
    centre = rows[:, None] + 0.5
    crosses = (centre >= ey1[None, :]) & (centre < ey2[None, :])
    with np.errstate(divide="ignore", invalid="ignore"):
        xs = (centre - ey1) * (ex2 - ex1) / (ey2 - ey1) + ex1
    xs = np.where(crosses, xs, np.inf)
    xs.sort(axis=1)
    counts = crosses.sum(axis=1)
    diff = np.zeros((rows.size, width + 1), dtype=np.int32)
    for k in range(0, int(counts.max(initial=0)) - 1, 2):
        pair = counts >= k + 2
        if not pair.any():
            break
        a = np.floor(xs[pair, k] + 0.5)
        b = np.floor(xs[pair, k + 1] + 0.5)
        a = np.clip(a, 0, width).astype(np.int64)
        b = np.clip(b, 0, width).astype(np.int64)
        ok = a < b
        idx = np.flatnonzero(pair)[ok]
        np.add.at(diff, (idx, a[ok]), 1)
        np.add.at(diff, (idx, b[ok]), -1)
    filled = np.cumsum(diff[:, :width], axis=1) > 0
    # Horizontal edges lying exactly on a centre line: GDAL fills those traversed
    # right-to-left separately.
    for i in np.flatnonzero(flat):
        yc = y1[i] - 0.5
        if yc == math.floor(yc) and r0 <= yc <= r1 and x1[i] > x2[i]:
            a_, b_ = math.floor(x2[i] + 0.5), math.floor(x1[i] + 0.5)
            a_, b_ = max(a_, 0), min(b_, width)
            if a_ < b_:
                filled[int(yc) - r0, a_:b_] = True
    out[r0 : r1 + 1] |= filled


def _touch(out: np.ndarray, cols: np.ndarray, rows: np.ndarray) -> None:
    """Mark every pixel each segment of a line passes through (GDAL ALL_TOUCHED lines)."""
    height, width = out.shape
    for i in range(len(cols) - 1):
        x, y, xe, ye = float(cols[i]), float(rows[i]), float(cols[i + 1]), float(rows[i + 1])
        if (
            (y < 0 and ye < 0)
            or (y > height and ye > height)
            or (x < 0 and xe < 0)
            or (x > width and xe > width)
        ):
            continue
        if x > xe:
            x, y, xe, ye = xe, ye, x, y
        if math.floor(x) == math.floor(xe):  # within one pixel column
            if ye < y:
                y, ye = ye, y
            ix = math.floor(x)
            if ix >= width or ix < 0:
                continue
            iy0, iy1 = max(math.floor(y), 0), min(math.floor(ye), height - 1)
            out[iy0 : iy1 + 1, ix] = True
            continue
        if math.floor(y) == math.floor(ye):  # within one pixel row
            iy = math.floor(y)
            if iy >= height or iy < 0:
                continue
            ix0, ix1 = max(math.floor(x), 0), min(math.floor(xe), width - 1)
            out[iy, ix0 : ix1 + 1] = True
            continue
        slope = (ye - y) / (xe - x)
        if xe > width:
            ye -= (xe - width) * slope
            xe = width
        if x < 0:
            y += (0 - x) * slope
            x = 0.0
        if ye > y:
            if y < 0:
                x += (0 - y) / slope
                y = 0.0
            if ye >= height:
                xe += (ye - height) / slope
                ye = height
        else:
            if y >= height:
                x += (height - y) / slope
                y = height
            if ye < 0:
                xe -= (ye - 0) / slope
                ye = 0
        while x < xe:
            ix, iy = math.floor(x), math.floor(y)
            if 0 <= iy < height and 0 <= ix < width:
                out[iy, ix] = True
            step_x = math.floor(x + 1.0) - x
            step_y = step_x * slope
            if math.floor(y + step_y) == iy:
                x += step_x
                y += step_y
            elif slope < 0:
                step_y = iy - y
                step_y = min(step_y, -1e-9)
                x += step_y / slope
                y += step_y
            else:
                step_y = (iy + 1) - y
                step_y = max(step_y, 1e-9)
                x += step_y / slope
                y += step_y
