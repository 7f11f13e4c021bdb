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

Warp planning sits here too: :func:`aligned_window` says when a grid is a
file's own (or an overview's) so no resampling is needed, and :func:`warp_plan`
works out, once per grid and file layout, which level and window to read and
where each target pixel comes from. Pure numpy and pyproj, no I/O; called from
the decode pool.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from catalog import HeaderRecord, same_crs

from ._geometry import transform_points
from ._types import Grid
from ._windows import SNAP_PX, GeoTransform, Window, choose_level

__all__ = [
    "NearestIndex",
    "WarpPlan",
    "aligned_window",
    "nearest_index",
    "needed_window",
    "sample_bilinear",
    "source_coordinates",
    "source_pixel_size",
    "take_nearest",
    "warp_plan",
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


# -- warp planning ---------------------------------------------------------------------------


def aligned_window(gt: GeoTransform, grid: Grid) -> Window | None:
    """The window of a level (geotransform ``gt``) matching the grid exactly, or None.

    Same pixel size, no rotation, and an offset of whole pixels (within ``SNAP_PX``):
    then the grid's pixels are the file's and a direct window read is exact.
    """
    x0, dx, rx, y0, ry, dy = grid.transform
    if rx or ry or gt[2] or gt[4]:
        return None
    if not (math.isclose(dx, gt[1], rel_tol=1e-9) and math.isclose(dy, gt[5], rel_tol=1e-9)):
        return None
    col = (x0 - gt[0]) / gt[1]
    row = (y0 - gt[3]) / gt[5]
    if abs(col - round(col)) > SNAP_PX or abs(row - round(row)) > SNAP_PX:
        return None
    return Window(round(col), round(row), grid.width, grid.height)


def source_pixel_size(sx: np.ndarray, sy: np.ndarray, header: HeaderRecord) -> tuple[float, float]:
    """Source pixels per target pixel, in source units, measured at the grid centre."""
    h, w = sx.shape
    if h < 2 or w < 2:
        return (abs(header.geotransform[1]), abs(header.geotransform[5]))
    r, c = h // 2, w // 2
    step_x = math.hypot(sx[r, c] - sx[r, c - 1], sy[r, c] - sy[r, c - 1])
    step_y = math.hypot(sx[r, c] - sx[r - 1, c], sy[r, c] - sy[r - 1, c])
    if not (math.isfinite(step_x) and math.isfinite(step_y)):
        return (abs(header.geotransform[1]), abs(header.geotransform[5]))
    return (step_x * abs(header.geotransform[1]), step_y * abs(header.geotransform[5]))


@dataclass(frozen=True, slots=True)
class WarpPlan:
    """Where a grid's pixels come from in one file layout.

    ``sx``/``sy`` are source pixel coordinates (of ``level``) of every target pixel
    centre; ``need`` is the source window ``(col0, row0, col1, row1)`` to read (None:
    the grid misses the raster); ``index`` is the nearest-neighbour index into that
    window (None for bilinear).
    """

    sx: np.ndarray
    sy: np.ndarray
    level: int
    need: tuple[int, int, int, int] | None
    index: NearestIndex | None


def warp_plan(grid: Grid, header: HeaderRecord, resampling: str) -> WarpPlan:
    """Plan resampling a file onto ``grid``: coordinates, overview level, window, index.

    Depends only on the grids (CRS, geotransform, level sizes), so the files of a
    scene that share a grid share the plan.
    """
    sx, sy = source_coordinates(
        grid.transform, grid.height, grid.width, grid.crs, header.geotransform, header.crs
    )
    level = choose_level(header, *source_pixel_size(sx, sy, header))
    img = header.levels[level]
    if level:
        fx, fy = img.width / header.width, img.height / header.height
        sx, sy = sx * fx, sy * fy
    bilinear = resampling == "bilinear"
    need = needed_window(sx, sy, img.width, img.height, 1 if bilinear else 0)
    index = None
    if need is not None and not bilinear:
        c0, r0, c1, r1 = need
        index = nearest_index(sx, sy, c0, r0, r1 - r0, c1 - c0)
    return WarpPlan(sx, sy, level, need, index)
