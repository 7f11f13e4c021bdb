"""Grid snapping (issue 13): a bbox whose edges lie on the raster's pixel edges, computed from
its transform, gives exactly that window; floating-point noise no longer adds a row or column."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import shapely

from flight_server.engine._windows import (
    SNAP_PX,
    Window,
    centered_window,
    geometry_window,
    to_pixels,
)

# Origins and pixel sizes like real rasters': UTM metres, degrees, non-square, south-up.
TRANSFORMS = [
    (499980.0, 10.0, 0.0, 5300040.0, 0.0, -10.0),
    (600000.0, 30.0, 0.0, 4200000.0, 0.0, -30.0),
    (11.0, 0.000269494585236, 0.0, 47.0, 0.0, -0.000269494585236),
    (-180.0, 0.1, 0.0, 90.0, 0.0, -0.1),
    (123456.789, 0.3, 0.0, 987654.321, 0.0, -0.7),  # non-square pixels
    (-73.987, 1 / 3600, 0.0, 40.75, 0.0, -1 / 3600),  # arc-seconds
    (300000.5, 2.5, 0.0, 100000.25, 0.0, 2.5),  # south-up (rows grow northwards)
    (16.2, 8.983152841195214e-05, 0.0, -33.9, 0.0, 8.983152841195214e-05),  # south-up, degrees
]


def _edge_bboxes(gt: tuple[float, ...], n: int, seed: int) -> list[tuple[Window, list[float]]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        c0, r0 = rng.randrange(0, 20000), rng.randrange(0, 20000)
        w, h = rng.randrange(1, 600), rng.randrange(1, 600)
        xa, xb = gt[0] + c0 * gt[1], gt[0] + (c0 + w) * gt[1]
        ya, yb = gt[3] + r0 * gt[5], gt[3] + (r0 + h) * gt[5]
        out.append((Window(c0, r0, w, h), [min(xa, xb), min(ya, yb), max(xa, xb), max(ya, yb)]))
    return out


@pytest.mark.parametrize("gt", TRANSFORMS, ids=str)
def test_edge_aligned_bboxes_give_exactly_their_window(gt: tuple[float, ...]) -> None:
    for window, bbox in _edge_bboxes(gt, 300, seed=hash(gt) & 0xFFFF):
        assert geometry_window(shapely.box(*bbox), gt) == window, (gt, bbox)


def test_without_snapping_the_noise_adds_pixels() -> None:
    # The reason: floor/ceil of the same pixel coordinates, as rasterio does, is off by one
    # in a share of these windows (this test fails if the noise ever disappears).
    off = total = 0
    for gt in TRANSFORMS:
        for window, bbox in _edge_bboxes(gt, 300, seed=hash(gt) & 0xFFFF):
            cols, rows = to_pixels(np.array(bbox[0::2]), np.array(bbox[1::2]), gt)
            w = math.ceil(cols.max()) - math.floor(cols.min())
            h = math.ceil(rows.max()) - math.floor(rows.min())
            off += (w, h) != (window.width, window.height)
            total += 1
    assert off > 0, "no floating-point noise in the sample: the test would prove nothing"
    assert off < total


def test_bboxes_off_the_grid_keep_rasterios_rule() -> None:
    gt = TRANSFORMS[0]
    # A quarter pixel inside and outside: floor/ceil as before (the outermost pixels).
    inner = shapely.box(gt[0] + 2.5, gt[3] - 10 * 10 + 2.5, gt[0] + 10 * 10 - 2.5, gt[3] - 2.5)
    assert geometry_window(inner, gt) == Window(0, 0, 10, 10)
    outer = shapely.box(gt[0] - 2.5, gt[3] - 10 * 10 - 2.5, gt[0] + 10 * 10 + 2.5, gt[3] + 2.5)
    assert geometry_window(outer, gt) == Window(-1, -1, 12, 12)
    # Just beyond the tolerance is not snapped.
    eps = 10.0 * SNAP_PX * 4
    beyond = shapely.box(gt[0], gt[3] - 100.0, gt[0] + 100.0 + eps, gt[3])
    assert geometry_window(beyond, gt).width == 11


def test_centred_windows_snap_too() -> None:
    gt = TRANSFORMS[2]
    for window, bbox in _edge_bboxes(gt, 200, seed=3):
        if window.width % 2 or window.height % 2:
            continue  # an even chip centred on an edge-aligned even bbox is that bbox
        got = centered_window(shapely.box(*bbox), gt, window.height, window.width)
        assert got == window, (bbox, got, window)
