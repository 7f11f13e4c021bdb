"""Assembly: pasting tiles into windows, fill values, scale/offset, batch buffers.

Pure numpy on arrays the caller owns; no I/O, no event loop. Pasting follows
GDAL's boundless windowed read: pixels outside the raster and in sparse tiles
keep the fill the target was initialised with and are marked invalid, and a
sample equal to the file's nodata is invalid (NaN nodata compares as NaN), so
chips equal ``rasterio``'s ``read(window=..., boundless=True)``. Called from
the decode pool (numpy releases the GIL).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from catalog import Band, HeaderRecord

from ._windows import TileRef, Window

__all__ = [
    "PlacedTile",
    "apply_scale_offset",
    "batch_buffers",
    "empty",
    "fill_invalid",
    "fill_value",
    "native_fill",
    "paste",
]

#: A tile placed in a window: ``(tile, plane, tile_row, tile_col)`` (plane -1: every sample).
PlacedTile = tuple[TileRef, int, int, int]


def empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A zeroed, writable array for batch output, backed by a plain bytearray.

    numpy asks the kernel for transparent huge pages on allocations of 4 MiB and
    more; where THP defrag is ``madvise`` that triggers synchronous compaction and
    made cold reads 40% slower on the benchmark machines. Batches do not need
    huge pages, so they bypass numpy's allocator.
    """
    count = int(np.prod(shape, dtype=np.int64))
    return np.frombuffer(bytearray(count * dtype.itemsize), dtype=dtype).reshape(shape)


def batch_buffers(
    lead: tuple[int, ...], shape: tuple[int, int], dtype: np.dtype, fills: Sequence[float | int]
) -> tuple[np.ndarray, np.ndarray]:
    """Pixels ``[*lead, C, H, W]`` preset to each band's fill, and validity ``[*lead, H, W]``."""
    data = empty((*lead, len(fills), *shape), dtype)
    for ci, f in enumerate(fills):
        if f != 0:  # the buffer starts zeroed; NaN != 0 holds, as it should
            data[..., ci, :, :] = f
    return data, empty((*lead, *shape), np.dtype(bool))


def native_fill(header: HeaderRecord) -> float | int:
    """What a file's pixels outside its data read as, in its own dtype (its nodata, or 0)."""
    v = header.nodata_value
    if v is None:
        return 0
    if np.dtype(header.dtype).kind in "iu":
        info = np.iinfo(header.dtype)
        if not info.min <= v <= info.max:
            return 0
    return v


def fill_value(band: Band, out_dtype: np.dtype, scale_offset: bool) -> float | int:
    """What invalid pixels of ``band`` hold in the output: NaN when scaled, else its nodata or 0."""
    if scale_offset:
        return float("nan")
    nodata = band.nodata
    if nodata is None:
        return 0
    try:
        v = float(nodata)
    except ValueError:
        return 0
    if out_dtype.kind in "iu":
        if math.isnan(v) or not np.iinfo(out_dtype).min <= v <= np.iinfo(out_dtype).max:
            return 0
        return int(v)
    return v


def apply_scale_offset(region: np.ndarray, band: Band, header: HeaderRecord) -> None:
    """Scale and offset one band in place (header values first, then the Collection's)."""
    i = band.sample
    scale = header.scales[i] if header.scales and header.scales[i] is not None else band.scale
    offset = header.offsets[i] if header.offsets and header.offsets[i] is not None else band.offset
    if scale is not None:
        region *= scale
    if offset is not None:
        region += offset


def fill_invalid(region: np.ndarray, valid: np.ndarray, fills: Sequence[float | int]) -> None:
    """Set every band's invalid pixels of ``region`` (``[C, H, W]``) to its fill, in place.

    As ``rasterio.mask.mask``: every pixel that is not valid data gets the fill.
    """
    invalid = ~valid
    for bi, f in enumerate(fills):
        region[bi][invalid] = f


def _place(
    tiles: Mapping[Any, np.ndarray | None],
    placed: Sequence[PlacedTile],
    window: Window,
    tile_height: int,
    tile_width: int,
    height: int,
    width: int,
) -> list[tuple[np.ndarray, int, tuple[slice, slice], tuple[slice, slice]]]:
    """Each present tile's array, plane, and its slices in the window and in the tile."""
    out = []
    for ref, plane, tr, tc in placed:
        arr = tiles.get(ref.key)
        r0 = max(tr * tile_height, window.row_off)
        r1 = min(tr * tile_height + tile_height, window.row_off + window.height, height)
        c0 = max(tc * tile_width, window.col_off)
        c1 = min(tc * tile_width + tile_width, window.col_off + window.width, width)
        if r0 >= r1 or c0 >= c1 or arr is None:  # sparse tiles hold nodata, not data
            continue
        dst = (
            slice(r0 - window.row_off, r1 - window.row_off),
            slice(c0 - window.col_off, c1 - window.col_off),
        )
        src = (
            slice(r0 - tr * tile_height, r1 - tr * tile_height),
            slice(c0 - tc * tile_width, c1 - tc * tile_width),
        )
        out.append((arr, plane, dst, src))
    return out


def paste(
    header: HeaderRecord,
    level: int,
    window: Window,
    samples: Sequence[int],
    refs: Sequence[PlacedTile],
    mask_refs: Sequence[PlacedTile],
    tiles: Mapping[Any, np.ndarray | None],
    targets: Sequence[np.ndarray],
) -> np.ndarray:
    """Copy tile pixels into ``targets`` (one ``[h, w]`` per sample, converting dtype).

    Returns the window's validity: a pixel is valid when it comes from a
    non-sparse tile, is set in the internal mask (when the file has one), and no
    sample equals the nodata value.
    """
    img = header.levels[level]
    valid = np.zeros(window.shape, dtype=bool)
    placed = _place(tiles, refs, window, img.tile_height, img.tile_width, img.height, img.width)
    for arr, plane, dst, src in placed:
        if plane < 0:
            for k, s in enumerate(samples):
                targets[k][dst] = arr[src[0], src[1], s]
        else:
            for k, s in enumerate(samples):
                if s == plane:
                    targets[k][dst] = arr[src]
        valid[dst] = True
    mask_img = header.masks[level] if mask_refs else None
    if mask_img is not None:
        mask_valid = np.zeros(window.shape, dtype=bool)
        for arr, _plane, dst, src in _place(
            tiles,
            mask_refs,
            window,
            mask_img.tile_height,
            mask_img.tile_width,
            mask_img.height,
            mask_img.width,
        ):
            mask_valid[dst] = arr[src]
        valid &= mask_valid
    nodata = header.nodata_value
    if nodata is not None:
        for t in targets:
            if isinstance(nodata, float) and math.isnan(nodata):
                valid &= ~np.isnan(t)
            else:
                valid &= t != nodata
    return valid
