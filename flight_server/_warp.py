"""Resampling a source grid onto a target grid (reprojection), with pyproj and numpy.

Source coordinates for target pixel centres are computed the way GDAL's warper
does: target pixel -> target CRS -> source CRS -> source pixel, with GDAL's
approximate transformer (exact at the ends and middle of each row, linear in
between while the error stays under ``max_error`` pixels). Nearest takes the
source pixel containing that point, as GDAL's nearest kernel does; bilinear
interpolates the four surrounding pixel centres, renormalising over valid
neighbours (GDAL widens the kernel when downsampling; cogflight reads the
matching overview instead, so the two agree when upsampling or at the same
resolution and differ slightly when downsampling).
"""

from __future__ import annotations

import math

import numpy as np

from catalog import same_crs

from ._geometry import transform_points
from ._plan import GeoTransform

__all__ = [
    "nearest_index",
    "sample_bilinear",
    "source_coordinates",
    "take_nearest",
]


def _gdal_inverse(gt: GeoTransform) -> GeoTransform:
    """GDALInvGeoTransform, including its north-up shortcut."""
    x0, a, b, y0, d, e = gt
    if b == 0.0 and d == 0.0:
        return (-x0 / a, 1.0 / a, 0.0, -y0 / e, 0.0, 1.0 / e)
    det = a * e - b * d
    inv_det = 1.0 / det
    return (
        (b * y0 - x0 * e) * inv_det,
        e * inv_det,
        -b * inv_det,
        (-a * y0 + d * x0) * inv_det,
        -d * inv_det,
        a * inv_det,
    )


def _chain(
    px: np.ndarray,
    py: np.ndarray,
    dst_gt: GeoTransform,
    dst_crs: str,
    src_inv: GeoTransform,
    src_crs: str,
) -> tuple[np.ndarray, np.ndarray]:
    gx = dst_gt[0] + px * dst_gt[1] + py * dst_gt[2]
    gy = dst_gt[3] + px * dst_gt[4] + py * dst_gt[5]
    sx, sy = transform_points(gx, gy, dst_crs, src_crs)
    return (
        src_inv[0] + sx * src_inv[1] + sy * src_inv[2],
        src_inv[3] + sx * src_inv[4] + sy * src_inv[5],
    )


def source_coordinates(
    dst_gt: GeoTransform,
    height: int,
    width: int,
    dst_crs: str,
    src_gt: GeoTransform,
    src_crs: str,
    *,
    max_error: float = 0.125,
) -> tuple[np.ndarray, np.ndarray]:
    """Source pixel coordinates ``(x, y)`` of every target pixel centre, ``(height, width)``."""
    src_inv = _gdal_inverse(src_gt)
    cols = np.arange(width, dtype=np.float64) + 0.5
    sx = np.empty((height, width))
    sy = np.empty((height, width))
    if same_crs(dst_crs, src_crs):  # affine to affine: exact and cheap
        px, py = np.meshgrid(cols, np.arange(height, dtype=np.float64) + 0.5)
        return _chain(px, py, dst_gt, dst_crs, src_inv, src_crs)
    if width <= 5:
        px, py = np.meshgrid(cols, np.arange(height, dtype=np.float64) + 0.5)
        return _chain(px, py, dst_gt, dst_crs, src_inv, src_crs)
    # Exact transforms only at the points the approximation needs. The first step of
    # every row (its ends and middle) goes to PROJ in one call; only rows where the
    # line is not close enough recurse, row by row, exactly as GDAL does.
    ends = np.array([cols[0], cols[width // 2], cols[width - 1]])
    ys = np.arange(height, dtype=np.float64) + 0.5
    px, py = _chain(np.tile(ends, height), np.repeat(ys, 3), dst_gt, dst_crs, src_inv, src_crs)
    px, py = px.reshape(height, 3), py.reshape(height, 3)
    span = ends[2] - ends[0]
    dx = (px[:, 2] - px[:, 0]) / span
    dy = (py[:, 2] - py[:, 0]) / span
    off = ends[1] - ends[0]
    with np.errstate(invalid="ignore"):
        err = np.abs(px[:, 0] + dx * off - px[:, 1]) + np.abs(py[:, 0] + dy * off - py[:, 1])
        good = np.isfinite(err) & (err <= max_error)
    seg = cols - ends[0]
    sx[good] = px[good, :1] + dx[good, None] * seg
    sy[good] = py[good, :1] + dy[good, None] * seg
    for row in np.flatnonzero(~good):
        _approx_row(
            cols,
            ys[row],
            0,
            width - 1,
            dst_gt,
            dst_crs,
            src_inv,
            src_crs,
            max_error,
            sx[row],
            sy[row],
        )
    return sx, sy


def _approx_row(
    cols: np.ndarray,
    y: float,
    i0: int,
    i1: int,
    dst_gt: GeoTransform,
    dst_crs: str,
    src_inv: GeoTransform,
    src_crs: str,
    max_error: float,
    out_x: np.ndarray,
    out_y: np.ndarray,
) -> None:
    n = i1 - i0 + 1
    if n <= 5:
        xs, ys = _chain(cols[i0 : i1 + 1], np.full(n, y), dst_gt, dst_crs, src_inv, src_crs)
        out_x[i0 : i1 + 1], out_y[i0 : i1 + 1] = xs, ys
        return
    mid = i0 + n // 2
    pts = np.array([cols[i0], cols[mid], cols[i1]])
    xs, ys = _chain(pts, np.full(3, y), dst_gt, dst_crs, src_inv, src_crs)
    span = pts[2] - pts[0]
    dx = (xs[2] - xs[0]) / span
    dy = (ys[2] - ys[0]) / span
    err = abs(xs[0] + dx * (pts[1] - pts[0]) - xs[1]) + abs(ys[0] + dy * (pts[1] - pts[0]) - ys[1])
    if not (math.isfinite(err) and err <= max_error):
        _approx_row(cols, y, i0, mid, dst_gt, dst_crs, src_inv, src_crs, max_error, out_x, out_y)
        _approx_row(cols, y, mid, i1, dst_gt, dst_crs, src_inv, src_crs, max_error, out_x, out_y)
        return
    seg = cols[i0 : i1 + 1] - pts[0]
    out_x[i0 : i1 + 1] = xs[0] + dx * seg
    out_y[i0 : i1 + 1] = ys[0] + dy * seg


def needed_window(
    sx: np.ndarray, sy: np.ndarray, width: int, height: int, margin: int
) -> tuple[int, int, int, int] | None:
    """Source window ``(col0, row0, col1, row1)`` the coordinates need, clipped to the raster."""
    ok = np.isfinite(sx) & np.isfinite(sy)
    if not ok.any():
        return None
    c0 = max(math.floor(float(sx[ok].min())) - margin, 0)
    r0 = max(math.floor(float(sy[ok].min())) - margin, 0)
    c1 = min(math.floor(float(sx[ok].max())) + 1 + margin, width)
    r1 = min(math.floor(float(sy[ok].max())) + 1 + margin, height)
    if c0 >= c1 or r0 >= r1:
        return None
    return (c0, r0, c1, r1)


NearestIndex = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def nearest_index(
    sx: np.ndarray, sy: np.ndarray, col0: int, row0: int, h: int, w: int
) -> NearestIndex:
    """Which source pixel (of an ``h x w`` window at ``(col0, row0)``) each target takes.

    Depends only on the grids, so files sharing a grid (a scene's bands) share it.
    """
    with np.errstate(invalid="ignore"):
        ix = np.floor(sx + 1e-10)
        iy = np.floor(sy + 1e-10)
    ok = np.isfinite(ix) & np.isfinite(iy)
    ix = np.where(ok, ix, -1).astype(np.int64) - col0
    iy = np.where(ok, iy, -1).astype(np.int64) - row0
    inside = ok & (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
    iyc = np.clip(iy, 0, max(h - 1, 0))
    ixc = np.clip(ix, 0, max(w - 1, 0))
    return inside, iyc, ixc, iyc[inside], ixc[inside]


def take_nearest(
    src: np.ndarray, src_valid: np.ndarray, index: NearestIndex, fill: float | int
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest sampling of ``src`` (``[C, h, w]``) through a :func:`nearest_index`."""
    inside, iyc, ixc, iy_in, ix_in = index
    c, h, w = src.shape
    out = np.full((c, *inside.shape), fill, dtype=src.dtype)
    if h and w:
        out[:, inside] = src[:, iy_in, ix_in]
        valid = inside & src_valid[iyc, ixc]
    else:
        valid = np.zeros(inside.shape, dtype=bool)
    return out, valid


def sample_bilinear(
    src: np.ndarray,
    src_valid: np.ndarray,
    sx: np.ndarray,
    sy: np.ndarray,
    col0: int,
    row0: int,
    fill: float | int,
) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear sampling between pixel centres, ignoring invalid neighbours."""
    c, h, w = src.shape
    fx = sx - 0.5 - col0
    fy = sy - 0.5 - row0
    ok = np.isfinite(fx) & np.isfinite(fy)
    fx = np.where(ok, fx, -10.0)
    fy = np.where(ok, fy, -10.0)
    x0 = np.floor(fx).astype(np.int64)
    y0 = np.floor(fy).astype(np.int64)
    wx = fx - x0
    wy = fy - y0
    acc = np.zeros((c, *sx.shape), dtype=np.float64)
    wsum = np.zeros(sx.shape, dtype=np.float64)
    for dy_, dx_ in ((0, 0), (0, 1), (1, 0), (1, 1)):
        xi = x0 + dx_
        yi = y0 + dy_
        weight = (wx if dx_ else 1 - wx) * (wy if dy_ else 1 - wy)
        inside = ok & (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
        xc = np.clip(xi, 0, max(w - 1, 0))
        yc = np.clip(yi, 0, max(h - 1, 0))
        use = inside & src_valid[yc, xc] if h and w else inside
        wgt = np.where(use, weight, 0.0)
        if h and w:
            acc += src[:, yc, xc].astype(np.float64) * wgt
        wsum += wgt
    valid = wsum > 1e-12
    with np.errstate(invalid="ignore", divide="ignore"):
        res = acc / np.where(valid, wsum, 1.0)
    if np.dtype(src.dtype).kind in "iu":
        info = np.iinfo(src.dtype)
        res = np.clip(np.rint(res), info.min, info.max)
    out = np.where(valid, res, fill).astype(src.dtype)
    return out, valid
