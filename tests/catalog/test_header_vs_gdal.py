"""Parsed header records agree with GDAL (through rasterio) and tifffile over the corpus."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyproj
import pytest
import rasterio
import tifffile
from rasterio.enums import MaskFlags

from catalog import HeaderRecord, read_header
from tests.support.corpus import CASES, Case

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")


def _same_crs(ours: str, gdal_crs: rasterio.crs.CRS, bounds: tuple[float, ...]) -> None:
    a = pyproj.CRS.from_user_input(ours)
    b = pyproj.CRS.from_user_input(gdal_crs.to_wkt())
    if a.equals(b, ignore_axis_order=True):
        return
    # Same meaning even when names differ: project a grid of points both ways.
    xmin, ymin, xmax, ymax = bounds
    xs, ys = np.meshgrid(np.linspace(xmin, xmax, 5), np.linspace(ymin, ymax, 5))
    to_a = pyproj.Transformer.from_crs(a, "EPSG:4326", always_xy=True)
    to_b = pyproj.Transformer.from_crs(b, "EPSG:4326", always_xy=True)
    la, pa_ = to_a.transform(xs.ravel(), ys.ravel())
    lb, pb = to_b.transform(xs.ravel(), ys.ravel())
    np.testing.assert_allclose(la, lb, atol=1e-7)
    np.testing.assert_allclose(pa_, pb, atol=1e-7)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_header_matches_gdal(corpus: dict[str, tuple[Case, Path]], case: Case) -> None:
    _, path = corpus[case.name]
    h = read_header(str(path))
    assert isinstance(h, HeaderRecord)
    with rasterio.open(path) as ds:
        assert (h.width, h.height) == (ds.width, ds.height)
        assert h.samples == ds.count
        expected_dtype = "float32" if case.dtype == "float16" else ds.dtypes[0]
        got_dtype = "float32" if h.dtype == "float16" else h.dtype
        assert got_dtype == expected_dtype
        assert h.dtype == case.dtype
        np.testing.assert_allclose(h.geotransform, ds.transform.to_gdal(), rtol=0, atol=1e-9)
        _same_crs(h.crs, ds.crs, h.bounds)
        assert (h.levels[0].tile_height, h.levels[0].tile_width) == ds.block_shapes[0]
        assert h.overview_count == len(ds.overviews(1))
        for i, factor in enumerate(ds.overviews(1), start=1):
            assert h.levels[i].width == math.ceil(ds.width / factor) or abs(
                h.levels[i].width - ds.width / factor) <= 1
        has_gdal_mask = MaskFlags.per_dataset in ds.mask_flag_enums[0] and (
            MaskFlags.alpha not in ds.mask_flag_enums[0])
        assert h.has_mask == has_gdal_mask
        if ds.nodata is None:
            assert h.nodata_value is None
        elif math.isnan(ds.nodata):
            assert h.nodata_value is not None and math.isnan(h.nodata_value)
        else:
            assert h.nodata_value == ds.nodata
        scales = [1.0 if s is None else s for s in h.scales]
        offsets = [0.0 if o is None else o for o in h.offsets]
        np.testing.assert_allclose(scales, ds.scales)
        np.testing.assert_allclose(offsets, ds.offsets)
        assert [d or None for d in h.descriptions] == [d or None for d in ds.descriptions]
        assert h.raster_type == ("point" if case.point else "area")


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_tiles_match_tifffile(corpus: dict[str, tuple[Case, Path]], case: Case) -> None:
    """Tile offsets, byte counts and codec parameters of every image match tifffile."""
    _, path = corpus[case.name]
    h = read_header(str(path))
    with tifffile.TiffFile(path) as tf:
        pages = list(tf.pages)
        main = [p for p in pages if not (p.subfiletype & 1) and not (p.subfiletype & 4)]
        ovs = sorted([p for p in pages if p.subfiletype & 1 and not p.subfiletype & 4],
                     key=lambda p: -p.imagewidth)
        masks = [p for p in pages if p.subfiletype & 4]
        assert len(main) == 1
        for img, page in zip(h.levels, [main[0], *ovs], strict=True):
            assert (img.width, img.height) == (page.imagewidth, page.imagelength)
            assert (img.tile_width, img.tile_height) == (page.tilewidth, page.tilelength)
            assert img.compression == int(page.compression)
            assert img.predictor == int(page.predictor)
            assert img.planar_config == int(page.planarconfig)
            assert img.photometric == int(page.photometric)
            np.testing.assert_array_equal(img.tile_offsets, np.asarray(page.dataoffsets))
            np.testing.assert_array_equal(img.tile_byte_counts,
                                          np.asarray(page.databytecounts))
            if page.jpegtables is not None:
                assert img.jpeg_tables == bytes(page.jpegtables)
        assert sum(m is not None for m in h.masks) == len(masks)
        assert h.bigtiff == tf.is_bigtiff
        assert h.byte_order == tf.byteorder
