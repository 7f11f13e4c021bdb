"""Chip engine pixels against GDAL (rasterio): windows, masks, overviews, reprojection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.features
import rasterio.mask
import shapely
from affine import Affine
from rasterio.warp import Resampling, reproject
from rasterio.windows import Window as RioWindow

import catalog
from flight_server import ChipEngine, ChipRequest
from tests.support.corpus import CASES, Case

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")

# JPEG with YCbCr colour: the engine reproduces the rasterio wheel's libjpeg 9 chroma
# reconstruction; bit-exact on this corpus file (quality 90). tests/server/test_jpeg.py
# holds the general bound (up to 2 DN at quality 90-95, 4 DN at 100).
YCBCR_TOLERANCE = 0


@pytest.fixture(scope="module")
def engine():
    with ChipEngine(cache_bytes=256 * 1024**2) as e:
        yield e


@pytest.fixture(scope="module")
def collections(corpus: dict[str, tuple[Case, Path]]) -> dict[str, catalog.Collection]:
    return {name: catalog.build_from_files([path], name=name, progress=False)
            for name, (_, path) in corpus.items()}


def _box_for_window(gt: tuple[float, ...], col: int, row: int, w: int, h: int):
    """A box whose geometry_window is exactly (col, row, w, h): shrunk by a quarter pixel."""
    x0, x1 = gt[0] + col * gt[1], gt[0] + (col + w) * gt[1]
    y0, y1 = gt[3] + row * gt[5], gt[3] + (row + h) * gt[5]
    ex, ey = abs(gt[1]) / 4, abs(gt[5]) / 4
    return shapely.box(min(x0, x1) + ex, min(y0, y1) + ey, max(x0, x1) - ex, max(y0, y1) - ey)


def _windows(width: int, height: int, tile: int) -> list[tuple[int, int, int, int]]:
    inside = (min(1, width - 1), min(1, height - 1), max(min(width - 1, tile // 3), 1),
              max(min(height - 1, tile // 4), 1))
    across = (min(max(tile - 7, 0), width - 1), min(max(tile - 5, 0), height - 1),
              min(19, width), min(13, height))
    edge = (width - 11, height - 9, 40, 30)  # past the right and bottom edges
    before = (-6, -4, 25, 20)  # past the left and top edges
    big = (width // 4, height // 4, min(width, 2 * tile), min(height, 2 * tile))
    return [inside, across, edge, before, big]


def _assert_same(case: Case, got: np.ndarray, ref: np.ndarray) -> None:
    if got.dtype == np.float16:  # GDAL 3.10 reads float16 as float32
        got = got.astype(np.float32)
    assert got.shape == ref.shape
    if case.name == "comp_jpeg_ycbcr":
        assert np.abs(got.astype(int) - ref.astype(int)).max() <= YCBCR_TOLERANCE
        return
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_windows_equal_rasterio(engine, collections, corpus, case: Case) -> None:
    """Inside one tile, across tile edges, across the raster edge (boundless, same fill)."""
    col = collections[case.name]
    h = col.header(0, col.band_names[0])
    wins = _windows(h.width, h.height, h.levels[0].tile_width)
    geoms = [_box_for_window(h.geotransform, *w) for w in wins]
    res = engine.read(col, ChipRequest.create(geometries=geoms, geometry_crs=h.crs))
    assert res.meta.column("geometry_index").to_pylist() == list(range(len(wins)))
    with rasterio.open(corpus[case.name][1]) as ds:
        fill = ds.nodata if ds.nodata is not None else 0
        for i, (c0, r0, w, hh) in enumerate(wins):
            ref = ds.read(window=RioWindow(c0, r0, w, hh), boundless=True, fill_value=fill)
            _assert_same(case, res.chips[i][:, :hh, :w], ref)
            # Outside the raster is invalid; padding up to the common shape is invalid.
            valid = res.valid[i]
            assert not valid[hh:, :].any() and not valid[:, w:].any()
            rows = np.arange(r0, r0 + hh)[:, None]
            cols_ = np.arange(c0, c0 + w)[None, :]
            outside = (rows < 0) | (rows >= h.height) | (cols_ < 0) | (cols_ >= h.width)
            assert not valid[:hh, :w][outside].any()


def _random_polygon(rng: np.random.Generator, b: tuple[float, ...]) -> shapely.Geometry:
    cx = rng.uniform(b[0] + (b[2] - b[0]) * 0.2, b[0] + (b[2] - b[0]) * 0.8)
    cy = rng.uniform(b[1] + (b[3] - b[1]) * 0.2, b[1] + (b[3] - b[1]) * 0.8)
    ang = np.sort(rng.uniform(0, 2 * np.pi, 9))
    rad = rng.uniform(0.03, 0.15, 9) * min(b[2] - b[0], b[3] - b[1])
    poly = shapely.make_valid(shapely.Polygon(np.column_stack([cx + rad * np.cos(ang),
                                                               cy + rad * np.sin(ang)])))
    return poly.difference(shapely.Point(cx, cy).buffer(rad.min() / 3))


MASK_CASES = ["tile_256", "interleave_band", "dtype_float32_nan", "dtype_int16", "mask",
              "mask_overviews", "south_up", "crs_4326", "bigendian", "comp_lerc_zstd"]


@pytest.mark.parametrize("name", MASK_CASES)
@pytest.mark.parametrize("all_touched", [False, True])
def test_masked_reads_equal_rasterio_mask(engine, collections, corpus, name: str,
                                          all_touched: bool) -> None:
    col = collections[name]
    h = col.header(0, "b1")
    rng = np.random.default_rng(len(name) + all_touched)
    geoms = [_random_polygon(rng, h.bounds) for _ in range(6)]
    res = engine.read(col, ChipRequest.create(geometries=geoms, geometry_crs=h.crs, mask=True,
                                              all_touched=all_touched))
    with rasterio.open(corpus[name][1]) as ds:
        for i, g in enumerate(geoms):
            ref, _ = rasterio.mask.mask(ds, [g], crop=True, all_touched=all_touched, filled=True)
            masked, _ = rasterio.mask.mask(ds, [g], crop=True, all_touched=all_touched,
                                           filled=False)
            # rasterio crops its window to the raster; ours covers the whole geometry.
            win = rasterio.features.geometry_window(ds, [g])
            ours = rasterio.features.geometry_window(ds, [g], boundless=True)
            dr, dc = int(win.row_off - ours.row_off), int(win.col_off - ours.col_off)
            hh, ww = ref.shape[1:]
            got = res.chips[i][:, dr : dr + hh, dc : dc + ww]
            if got.dtype == np.float16:
                got = got.astype(np.float32)
            np.testing.assert_array_equal(got, ref)
            ref_valid = ~np.ma.getmaskarray(masked).any(axis=0)
            np.testing.assert_array_equal(res.valid[i][dr : dr + hh, dc : dc + ww], ref_valid)


OVERVIEW_CASES = ["tile_256", "tile_512", "tile_1024", "cog_driver", "cog_driver_512",
                  "interleave_band", "bigtiff", "mask_overviews"]


@pytest.mark.parametrize("name", OVERVIEW_CASES)
def test_overview_reads_equal_gdal_overviews(engine, collections, corpus, name: str) -> None:
    """Asking for an overview's resolution reads that overview, as GDAL reads it."""
    col = collections[name]
    h = col.header(0, "b1")
    for level in range(1, len(h.levels)):
        gt = h.level_geotransform(level)
        img = h.levels[level]
        wins = [(0, 0, min(40, img.width), min(30, img.height)),
                (img.width // 3, img.height // 3, min(100, img.width), min(90, img.height))]
        for c0, r0, w, hh in wins:
            x0, y0 = gt[0] + c0 * gt[1], gt[3] + r0 * gt[5]
            box = shapely.box(x0, y0 + hh * gt[5], x0 + w * gt[1], y0)  # exactly the window
            res = engine.read(col, ChipRequest.create(geometries=[box], geometry_crs=h.crs,
                                                      resolution=(abs(gt[1]), abs(gt[5]))))
            assert res.chips.shape[2:] == (hh, w)
            assert res.meta.column("transform")[0].as_py() == pytest.approx(
                [x0, gt[1], 0, y0, 0, gt[5]])
            with rasterio.open(corpus[name][1], overview_level=level - 1) as ds:
                ref = ds.read(window=RioWindow(c0, r0, w, hh), boundless=True,
                              fill_value=ds.nodata or 0)
            np.testing.assert_array_equal(res.chips[0], ref)


REPROJECT = [
    ("tile_512", "EPSG:32634", 10.0),
    ("tile_512", "EPSG:4326", 0.0001),
    ("crs_3035_laea", "EPSG:32632", 100.0),
    ("tile_256", "EPSG:32633", 7.0),
    ("south_up", "EPSG:32633", 8.0),
    ("crs_custom_aea", "EPSG:3857", 40.0),
    ("interleave_band", "EPSG:3857", 12.0),
]


@pytest.mark.parametrize(("name", "crs", "res"), REPROJECT, ids=str)
def test_nearest_reprojection_equals_rasterio_warp(engine, collections, corpus, name: str,
                                                   crs: str, res: float) -> None:
    col = collections[name]
    h = col.header(0, "b1")
    b = h.bounds
    g = shapely.box(b[0] + (b[2] - b[0]) * 0.2, b[1] + (b[3] - b[1]) * 0.25,
                    b[0] + (b[2] - b[0]) * 0.7, b[1] + (b[3] - b[1]) * 0.8)
    r = engine.read(col, ChipRequest.create(geometries=[g], geometry_crs=h.crs, crs=crs,
                                            resolution=res))
    gt = r.meta.column("transform")[0].as_py()
    assert r.meta.column("crs")[0].as_py() == crs
    hh, ww = r.chips.shape[2:]
    with rasterio.open(corpus[name][1]) as ds:
        for band in range(ds.count):
            dst = np.zeros((hh, ww), dtype=r.chips.dtype)
            reproject(rasterio.band(ds, band + 1), dst,
                      dst_transform=Affine(gt[1], gt[2], gt[0], gt[4], gt[5], gt[3]),
                      dst_crs=crs, resampling=Resampling.nearest, dst_nodata=ds.nodata or 0)
            equal = np.mean(r.chips[0, band] == dst)
            assert equal >= 0.999, f"{equal:.5f} of pixels equal"


def test_bilinear_same_crs_upsampling_within_rounding(engine, collections, corpus) -> None:
    """Bilinear agrees with GDAL's when upsampling in the source CRS (to 1 DN of rounding)."""
    col = collections["tile_512"]
    h = col.header(0, "b1")
    b = h.bounds
    g = shapely.box(b[0] + 3000, b[1] + 3000, b[0] + 6000, b[1] + 5000)
    r = engine.read(col, ChipRequest.create(geometries=[g], geometry_crs=h.crs, resolution=4.0,
                                            resampling="bilinear"))
    gt = r.meta.column("transform")[0].as_py()
    dst = np.zeros(r.chips.shape[2:], dtype=r.chips.dtype)
    with rasterio.open(corpus["tile_512"][1]) as ds:
        reproject(rasterio.band(ds, 1), dst,
                  dst_transform=Affine(gt[1], 0, gt[0], 0, gt[5], gt[3]), dst_crs=h.crs,
                  resampling=Resampling.bilinear)
    diff = np.abs(r.chips[0, 0].astype(int) - dst.astype(int))
    assert diff.max() <= 1
    assert np.mean(diff == 0) > 0.98


def test_chip_size_centred_and_snapped(engine, collections, corpus) -> None:
    col = collections["tile_512"]
    h = col.header(0, "b1")
    gt = h.geotransform
    point = shapely.Point(gt[0] + 333.3 * gt[1], gt[3] + 444.4 * gt[5])
    r = engine.read(col, ChipRequest.create(geometries=[point, point.buffer(50)],
                                            geometry_crs=h.crs, chip_size=64))
    assert r.chips.shape == (2, 1, 64, 64)
    for i in range(2):
        t = r.meta.column("transform")[i].as_py()
        col_off = (t[0] - gt[0]) / gt[1]
        row_off = (t[3] - gt[3]) / gt[5]
        assert col_off == round(col_off) and row_off == round(row_off)  # on the pixel grid
        assert (round(col_off), round(row_off)) == (301, 412)  # centre 333.3, 444.4 - 32
        with rasterio.open(corpus["tile_512"][1]) as ds:
            ref = ds.read(window=RioWindow(round(col_off), round(row_off), 64, 64))
        np.testing.assert_array_equal(r.chips[i], ref)
    r2 = engine.read(col, ChipRequest.create(geometries=[point], geometry_crs=h.crs,
                                             chip_size=(16, 48)))
    assert r2.chips.shape == (1, 1, 16, 48)
