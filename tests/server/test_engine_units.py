"""Unit tests of the engine's pure stages, on tiny inputs: fast, no server, no threads.

Planning (scene selection, grids, windows, tiles, levels), warp planning and
sampling, the decoded-tile cache, assembly (paste, fills, scale/offset), the
metadata column specification, the header cache and ChipRequest construction.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import shapely

import catalog
from catalog import Band, HeaderRecord
from catalog.testing import synthetic_scene, write_cog
from cogflight_core import chip_fields
from flight_server import ChipRequest, Grid, InvalidArgumentError, TileCache
from flight_server.engine import _request as request_module
from flight_server.engine._assemble import (
    apply_scale_offset,
    batch_buffers,
    empty,
    fill_invalid,
    fill_value,
    native_fill,
    paste,
)
from flight_server.engine._columns import METADATA, MetaRows, meta_columns, meta_schema
from flight_server.engine._headers import HeaderCache
from flight_server.engine._plan import (
    chip_grid,
    output_dtype,
    plan_request,
    scene_groups,
    select_bands,
)
from flight_server.engine._types import Chip
from flight_server.engine._warp import (
    aligned_window,
    nearest_index,
    needed_window,
    sample_bilinear,
    source_coordinates,
    take_nearest,
    warp_plan,
)
from flight_server.engine._windows import (
    Window,
    centered_window,
    choose_level,
    geometry_window,
    tiles_in_window,
    window_transform,
)

GT = (500000.0, 10.0, 0.0, 4100000.0, 0.0, -10.0)
CRS = "EPSG:32633"


@pytest.fixture(scope="module")
def cogs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two 40 x 40, 2-band uint16 COGs with 16-pixel tiles and two overviews."""
    root = tmp_path_factory.mktemp("units")
    paths = []
    for i in range(2):
        p = root / f"s{i}.tif"
        write_cog(p, synthetic_scene(40, 40, 2, i), geotransform=GT, epsg=32633, nodata=0,
                  tile=16, overviews=2)
        paths.append(p)
    return paths


@pytest.fixture(scope="module")
def header(cogs: list[Path]) -> HeaderRecord:
    return catalog.read_header(str(cogs[0]))


@pytest.fixture(scope="module")
def collection(cogs: list[Path]) -> catalog.Collection:
    table = pa.table({"id": ["s0", "s1"], "href": [str(p) for p in cogs],
                      "datetime": ["2024-02-01", "2024-01-01"],
                      "label": pa.array([3, 5], pa.int16())})
    return catalog.build_from_table(table, bands={"b": "href"}, datetime_column="datetime",
                                    progress=False)


def _px(c0: float, r0: float, c1: float, r1: float) -> shapely.Polygon:
    """A box in the CRS of GT from pixel corners."""
    return shapely.box(GT[0] + c0 * GT[1], GT[3] + r1 * GT[5], GT[0] + c1 * GT[1],
                       GT[3] + r0 * GT[5])


# -- planning: scenes -----------------------------------------------------------------------------


def test_scene_groups_one_chip_per_scene_or_one_series_by_date() -> None:
    footprints = [shapely.box(0, 0, 10, 10), shapely.box(5, 5, 15, 15), shapely.box(20, 20, 30, 30)]
    rows = [7, 3, 9]  # Collection rows of those footprints
    times = [None] * 10
    times[7], times[3] = dt.datetime(2024, 5, 1), dt.datetime(2024, 1, 1)
    geoms = [shapely.box(6, 6, 7, 7), shapely.box(100, 100, 101, 101), shapely.Point(25, 25)]
    assert scene_groups(footprints, rows, times, geoms, time_series=False) == [
        (0, (3,)), (0, (7,)), (2, (9,))]
    assert scene_groups(footprints, rows, times, geoms, time_series=True) == [
        (0, (3, 7)), (2, (9,))]
    times[3] = None  # undated scenes go last
    assert scene_groups(footprints, rows, times, geoms[:1], time_series=True) == [(0, (7, 3))]


def test_select_bands_and_output_dtype(collection: catalog.Collection) -> None:
    assert [b.name for b in select_bands(collection, None)] == ["b"]
    assert select_bands(collection, ["b"]) == collection.bands
    with pytest.raises(InvalidArgumentError, match="'nir' not in"):
        select_bands(collection, ["nir"])
    bands = [Band("a", "a", dtype="uint16"), Band("b", "b", dtype="uint8")]
    assert output_dtype(bands, None, False) == np.uint16
    assert output_dtype(bands, None, True) == np.float32
    assert output_dtype([Band("a", "a", dtype="float64")], None, True) == np.float64
    assert output_dtype(bands, "int32", False) == np.int32
    assert output_dtype(bands, "float16", False) == np.float16
    with pytest.raises(InvalidArgumentError, match="lose values"):
        output_dtype(bands, "uint8", False)
    with pytest.raises(InvalidArgumentError, match="float dtype"):
        output_dtype(bands, "int32", True)


# -- planning: grids ------------------------------------------------------------------------------


def _request(**kw: object) -> ChipRequest:
    return ChipRequest.create(geometries=[(0, 0, 1, 1)], geometry_crs=CRS, **kw)  # type: ignore[arg-type]


def test_chip_grid_native_window_is_the_geometry_window() -> None:
    grid, poly = chip_grid(_px(2.5, 3.5, 7.2, 9.0), _request(), CRS, GT)
    assert (grid.crs, grid.height, grid.width) == (CRS, 6, 6)  # floor/ceil of the extent
    assert grid.transform == window_transform(GT, Window(2, 3, 6, 6))
    assert poly is None
    _, poly = chip_grid(_px(2.5, 3.5, 7.2, 9.0), _request(mask=True), CRS, GT)
    assert poly is not None and poly.equals(_px(2.5, 3.5, 7.2, 9.0))


def test_chip_grid_points_lines_and_fixed_sizes() -> None:
    point = shapely.Point(GT[0] + 4.5 * GT[1], GT[3] + 2.5 * GT[5])
    grid, _ = chip_grid(point, _request(), CRS, GT)
    assert (grid.height, grid.width) == (1, 1)
    assert grid.transform == window_transform(GT, Window(4, 2, 1, 1))
    grid, _ = chip_grid(point, _request(chip_size=(4, 6)), CRS, GT)
    assert (grid.height, grid.width) == (4, 6)
    assert grid.transform == window_transform(GT, Window(4 - 3 + 1, 2 - 2 + 1, 6, 4))


def test_chip_grid_in_a_target_crs_and_resolution() -> None:
    geom = _px(0, 0, 10, 6)
    grid, _ = chip_grid(geom, _request(resolution=20), CRS, GT)
    assert (grid.height, grid.width) == (3, 5)  # round(60 / 20), round(100 / 20)
    assert grid.transform == (GT[0], 20.0, 0.0, GT[3], 0.0, -20.0)
    grid, _ = chip_grid(geom, _request(crs="EPSG:4326", resolution=0.001), CRS, GT)
    assert grid.crs == "EPSG:4326" and grid.transform[1] == 0.001
    with pytest.raises(InvalidArgumentError, match="resolution"):
        chip_grid(geom, _request(crs="EPSG:4326"), CRS, GT)


def test_plan_request_shape_schema_and_shards(collection: catalog.Collection,
                                              header: HeaderRecord) -> None:
    headers = HeaderCache()

    def header_of(row: int, band: Band) -> HeaderRecord:
        return headers.get(collection, row, band)

    geoms = [_px(0, 0, 10, 10), _px(5, 5, 25, 15)]
    req = ChipRequest.create(geometries=geoms, geometry_crs=CRS, columns=["label"])
    plan = plan_request(collection, req, header_of, max_chips=10, max_chip_pixels=10_000)
    assert (plan.chips, plan.total_chips, plan.shape) == (4, 4, (1, 10, 20))
    assert plan.dtype == np.uint16 and plan.chip_bytes == 10 * 20 * 2
    assert plan.schema.names == [c.name for c in METADATA] + ["label", "chip", "valid"]
    assert [(c.geometry_index, c.rows) for c in plan.items] == [(0, (0,)), (0, (1,)), (1, (0,)),
                                                               (1, (1,))]
    parts = [plan_request(collection, dataclasses.replace(req, shard=(i, 3)), header_of,
                          max_chips=10, max_chip_pixels=10_000) for i in range(3)]
    assert [p.chips for p in parts] == [1, 1, 2] and {p.shape for p in parts} == {plan.shape}
    series = plan_request(collection, dataclasses.replace(req, time_series=True), header_of,
                          max_chips=10, max_chip_pixels=10_000)
    assert series.shape == (2, 1, 10, 20) and series.items[0].rows == (1, 0)  # by date
    with pytest.raises(catalog.InvalidArgumentError, match="4 chips"):
        plan_request(collection, req, header_of, max_chips=3, max_chip_pixels=10_000)
    with pytest.raises(catalog.InvalidArgumentError, match="pixels"):
        plan_request(collection, req, header_of, max_chips=10, max_chip_pixels=100)
    with pytest.raises(InvalidArgumentError, match="no column 'nope'"):
        plan_request(collection, dataclasses.replace(req, columns=("nope",)), header_of,
                     max_chips=10, max_chip_pixels=10_000)


# -- windows and tiles ----------------------------------------------------------------------------


def test_windows() -> None:
    assert geometry_window(_px(2.5, 3.5, 7.2, 9.0), GT) == Window(2, 3, 6, 6)
    assert geometry_window(_px(2, 3, 7, 9), GT) == Window(2, 3, 5, 6)  # exact edges stay
    assert centered_window(_px(2, 3, 7, 9), GT, 4, 4) == Window(3, 4, 4, 4)
    assert centered_window(_px(2, 3, 7, 9), GT, 5, 3) == Window(3, 4, 3, 5)
    assert window_transform(GT, Window(2, 3, 1, 1)) == (GT[0] + 20, 10.0, 0.0, GT[3] - 30, 0.0,
                                                         -10.0)
    assert Window(-5, 30, 20, 20).clip(40, 40) == (0, 30, 15, 40)
    assert Window(40, 0, 5, 5).clip(40, 40) is None


def test_tiles_in_window(header: HeaderRecord) -> None:
    img = header.levels[0]  # 40 x 40 in 16-pixel tiles: 3 x 3
    tiles = list(tiles_in_window(header, 0, Window(10, 10, 20, 20), [0, 1]))
    assert [(tr, tc) for _, _, tr, tc in tiles] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert {plane for _, plane, _, _ in tiles} == {-1}  # pixel-interleaved: every sample
    ref = tiles[3][0]
    assert ref.index == img.tile_index(1, 1) and ref.offset == int(img.tile_offsets[ref.index])
    assert ref.length == int(img.tile_byte_counts[ref.index]) and not ref.sparse
    edge = list(tiles_in_window(header, 0, Window(-8, 30, 20, 30), [0]))
    assert [(tr, tc) for _, _, tr, tc in edge] == [(1, 0), (2, 0)]
    assert list(tiles_in_window(header, 0, Window(50, 50, 5, 5), [0])) == []
    assert len(list(tiles_in_window(header, 2, Window(0, 0, 10, 10), [0]))) == 1


@pytest.mark.parametrize(("res", "level"),
                         [(5, 0), (10, 0), (15, 0), (20, 1), (25, 1), (40, 2), (100, 2)])
def test_choose_level(header: HeaderRecord, res: float, level: int) -> None:
    assert choose_level(header, res, res) == level


# -- warp -----------------------------------------------------------------------------------------


def test_aligned_window() -> None:
    grid = Grid(CRS, window_transform(GT, Window(3, 4, 1, 1)), 7, 5)
    assert aligned_window(GT, grid) == Window(3, 4, 5, 7)
    half = Grid(CRS, (GT[0] + 5, 10.0, 0.0, GT[3], 0.0, -10.0), 2, 2)
    assert aligned_window(GT, half) is None
    coarse = Grid(CRS, (GT[0], 20.0, 0.0, GT[3], 0.0, -20.0), 2, 2)
    assert aligned_window(GT, coarse) is None
    assert aligned_window((GT[0], 20.0, 0.0, GT[3], 0.0, -20.0), coarse) == Window(0, 0, 2, 2)
    rotated = Grid(CRS, (GT[0], 10.0, 1.0, GT[3], 0.0, -10.0), 2, 2)
    assert aligned_window(GT, rotated) is None


def test_source_coordinates_same_crs_are_affine() -> None:
    dst = (GT[0] + 5.0, 10.0, 0.0, GT[3], 0.0, -10.0)  # half a pixel to the right
    sx, sy = source_coordinates(dst, 2, 3, CRS, GT, CRS)
    np.testing.assert_allclose(sx, [[1.0, 2.0, 3.0]] * 2)
    np.testing.assert_allclose(sy, [[0.5] * 3, [1.5] * 3])


def test_nearest_index_and_take_nearest() -> None:
    src = np.arange(9, dtype=np.int16).reshape(1, 3, 3)
    src_valid = np.ones((3, 3), bool)
    src_valid[1, 1] = False
    sx = np.array([[0.5, 1.5, 2.99, 3.5]])
    sy = np.array([[0.5, 1.5, 2.5, 0.5]])
    index = nearest_index(sx, sy, 0, 0, 3, 3)
    out, valid = take_nearest(src, src_valid, index, -1)
    assert out.tolist() == [[[0, 4, 8, -1]]]  # the last one falls outside
    assert valid.tolist() == [[True, False, True, False]]
    shifted = nearest_index(sx + 10, sy + 10, 10, 10, 3, 3)  # a window at (10, 10)
    assert take_nearest(src, src_valid, shifted, -1)[0].tolist() == out.tolist()


def test_sample_bilinear() -> None:
    src = np.array([[[0.0, 10.0], [20.0, 30.0]]])
    ok = np.ones((2, 2), bool)
    sx = np.array([[0.5, 1.0, 1.5, 1.0]])
    sy = np.array([[0.5, 0.5, 1.5, 1.0]])
    out, valid = sample_bilinear(src, ok, sx, sy, 0, 0, np.nan)
    np.testing.assert_allclose(out, [[[0.0, 5.0, 30.0, 15.0]]])  # centres exact, between: mean
    assert valid.all()
    ok[0, 1] = False  # an invalid neighbour is left out and the weights renormalised
    out, _ = sample_bilinear(src, ok, sx, sy, 0, 0, np.nan)
    assert out[0, 0, 1] == 0.0 and out[0, 0, 3] == pytest.approx(50 / 3)
    ints, _ = sample_bilinear(np.array([[[0, 1], [1, 1]]], np.uint8), np.ones((2, 2), bool),
                              np.array([[1.0]]), np.array([[1.0]]), 0, 0, 0)
    assert ints.dtype == np.uint8 and ints[0, 0, 0] == 1  # 0.75 rounds to 1
    far, far_valid = sample_bilinear(src, np.ones((2, 2), bool), np.array([[9.0]]),
                                     np.array([[9.0]]), 0, 0, -5.0)
    assert far[0, 0, 0] == -5.0 and not far_valid.any()


def test_needed_window() -> None:
    sx = np.array([[1.2, 3.7], [np.nan, 5.0]])
    sy = np.array([[2.0, 2.5], [np.nan, 9.9]])
    assert needed_window(sx, sy, 100, 100, 0) == (1, 2, 6, 10)
    assert needed_window(sx, sy, 100, 100, 1) == (0, 1, 7, 11)
    assert needed_window(sx, sy, 4, 100, 0) == (1, 2, 4, 10)  # clipped to the raster
    assert needed_window(sx + 100, sy, 10, 10, 0) is None
    assert needed_window(np.full((1, 1), np.nan), np.full((1, 1), np.nan), 9, 9, 0) is None


def test_warp_plan_chooses_the_overview_and_window(header: HeaderRecord) -> None:
    coarse = Grid(CRS, (GT[0] + 10.0, 20.0, 0.0, GT[3] - 10.0, 0.0, -20.0), 4, 4)
    nearest = warp_plan(coarse, header, "nearest")
    assert nearest.level == 1 and nearest.index is not None
    np.testing.assert_allclose(nearest.sx[0], [1.0, 2.0, 3.0, 4.0])  # in level-1 pixels
    assert nearest.need == (1, 1, 5, 5)
    bilinear = warp_plan(coarse, header, "bilinear")
    assert bilinear.index is None and bilinear.need == (0, 0, 6, 6)
    outside = Grid(CRS, (GT[0] - 1000.0, 10.0, 0.0, GT[3], 0.0, -10.0), 2, 2)
    assert warp_plan(outside, header, "nearest").need is None


# -- the decoded-tile cache ------------------------------------------------------------------------


def test_tile_cache_budget_lru_and_stats() -> None:
    tile = np.zeros(100, np.uint8)  # 100 bytes
    cache = TileCache(250)
    cache.put("a", tile.copy())
    cache.put("b", tile.copy())
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("c", tile.copy())  # over budget: evicts b, the least recently used
    assert cache.get("b") is None and cache.get("c") is not None
    s = cache.stats()
    assert (s.hits, s.misses, s.evictions, s.entries, s.bytes, s.max_bytes) == (2, 1, 1, 2, 200,
                                                                                250)
    assert s.hit_rate == pytest.approx(2 / 3)
    cached = cache.get("a")
    assert cached is not None and not cached.flags.writeable  # shared read-only
    cache.put("a", np.zeros(50, np.uint8))  # replacing an entry re-counts its bytes
    assert cache.stats().bytes == 150
    cache.put("huge", np.zeros(300, np.uint8))  # larger than the budget: not kept
    assert cache.get("huge") is None
    cache.clear()
    assert cache.stats().entries == 0 and cache.stats().hits == 3
    off = TileCache(0)
    off.put("a", tile)
    assert off.get("a") is None and off.stats().entries == 0
    assert TileCache(10).stats().hit_rate == 0.0
    with pytest.raises(ValueError, match="max_bytes"):
        TileCache(-1)


# -- assembly -------------------------------------------------------------------------------------


def test_buffers_and_fills(header: HeaderRecord) -> None:
    buf = empty((2, 3), np.dtype("float32"))
    assert buf.flags.writeable and not buf.any()
    data, valid = batch_buffers((2,), (3, 4), np.dtype("float32"), [0, np.nan, 7])
    assert data.shape == (2, 3, 3, 4) and valid.shape == (2, 3, 4) and valid.dtype == bool
    assert not data[:, 0].any() and np.isnan(data[:, 1]).all() and (data[:, 2] == 7).all()
    u8, f4 = np.dtype("uint8"), np.dtype("float32")
    assert fill_value(Band("a", "a", nodata="7"), u8, False) == 7
    assert fill_value(Band("a", "a", nodata="300"), u8, False) == 0  # out of range
    assert fill_value(Band("a", "a", nodata="nan"), u8, False) == 0
    assert np.isnan(fill_value(Band("a", "a", nodata="nan"), f4, False))
    assert np.isnan(fill_value(Band("a", "a", nodata="7"), f4, True))  # scaled: NaN
    assert fill_value(Band("a", "a", nodata="junk"), f4, False) == 0
    assert fill_value(Band("a", "a"), f4, False) == 0
    assert native_fill(header) == 0
    assert native_fill(dataclasses.replace(header, nodata="65535")) == 65535
    assert native_fill(dataclasses.replace(header, nodata="-1")) == 0  # not a uint16
    assert native_fill(dataclasses.replace(header, nodata=None)) == 0


def test_scale_offset_and_fill_invalid(header: HeaderRecord) -> None:
    region = np.ones((2, 2), np.float32)
    apply_scale_offset(region, Band("a", "a", scale=2.0, offset=-1.0), header)
    assert (region == 1.0).all()
    own = dataclasses.replace(header, scales=(10.0, None), offsets=(None, None))
    region = np.ones((2, 2), np.float32)
    apply_scale_offset(region, Band("a", "a", sample=0, scale=2.0, offset=-1.0), own)
    assert (region == 9.0).all()  # the file's scale wins, the Collection's offset applies
    chips = np.ones((2, 2, 2), np.float32)
    valid = np.array([[True, False], [True, True]])
    fill_invalid(chips, valid, [np.nan, -9])
    assert np.isnan(chips[0, 0, 1]) and chips[1, 0, 1] == -9 and chips[:, valid].tolist() == [
        [1.0] * 3, [1.0] * 3]


def test_paste_boundless_sparse_and_nodata(header: HeaderRecord) -> None:
    window = Window(-4, 28, 12, 16)  # 4 columns left of the raster, 4 rows below it
    samples = [1, 0]
    refs = list(tiles_in_window(header, 0, window, samples))
    assert [(tr, tc) for _, _, tr, tc in refs] == [(1, 0), (2, 0)]
    tile = np.empty((16, 16, 2), np.uint16)
    tile[..., 0], tile[..., 1] = 5, 6
    tile[13, 2] = 0  # nodata in the first tile, at raster (29, 2)
    tiles = {refs[0][0].key: tile, refs[1][0].key: None}  # the second tile is sparse
    targets = [np.full((16, 12), 99, np.uint16) for _ in samples]
    valid = paste(header, 0, window, samples, refs, [], tiles, targets)
    expected = np.zeros((16, 12), bool)
    expected[:4, 4:] = True  # raster rows 28..31 of tile row 1; rows 32.. are the sparse tile
    expected[1, 6] = False  # nodata, at raster (29, 2)
    np.testing.assert_array_equal(valid, expected)
    assert (targets[0][expected] == 6).all() and (targets[1][expected] == 5).all()
    assert targets[0][1, 6] == 0 and targets[1][1, 6] == 0
    assert (targets[0][:, :4] == 99).all() and (targets[0][4:] == 99).all()  # left as filled


# -- metadata columns -----------------------------------------------------------------------------


def _chip(index: int, rows: tuple[int, ...]) -> Chip:
    return Chip(index, index, rows, Grid(CRS, GT, 5, 5), None)


@pytest.mark.parametrize("steps", [None, 3])
def test_one_column_specification_for_schema_and_rows(collection: catalog.Collection,
                                                      steps: int | None) -> None:
    columns = meta_columns(collection, ["label"])
    schema = meta_schema(columns, steps is not None)
    rows = MetaRows(collection, columns, steps)
    chips = [_chip(0, (1,)), _chip(1, (0, 1))] if steps else [_chip(0, (1,)), _chip(1, (0,))]
    table = rows.table(chips, (4, 6))
    assert table.schema == schema == rows.schema
    assert schema.names == ["id", "datetime", "geometry_index", "crs", "transform", "bounds",
                            "ordinal", "label"]
    assert table.column("geometry_index").to_pylist() == [0, 1]
    assert table.column("ordinal").to_pylist() == [c.index for c in chips]
    assert table.column("bounds")[0].as_py() == [GT[0], GT[3] - 40, GT[0] + 60, GT[3]]
    if steps is None:
        assert table.column("id").to_pylist() == ["s1", "s0"]
        assert table.column("label").to_pylist() == [5, 3]
        assert schema.field("label").type == pa.int16()
    else:
        assert table.column("id").to_pylist() == [["s1", None, None], ["s0", "s1", None]]
        assert table.column("label").to_pylist() == [[5, None, None], [3, 5, None]]
        assert schema.field("label").type == pa.list_(pa.int16())
        assert schema.field("transform").type == pa.list_(pa.float64(), 6)  # per chip


def test_meta_columns_refuse_unknown_and_asset_columns(collection: catalog.Collection) -> None:
    with pytest.raises(InvalidArgumentError, match="no column 'nope'"):
        meta_columns(collection, ["nope"])
    asset = next(n for n in collection.table.column_names if n.startswith("asset:"))
    with pytest.raises(InvalidArgumentError, match="no column"):
        meta_columns(collection, [asset])


# -- the header cache -----------------------------------------------------------------------------


def test_header_cache_is_shared_bounded_and_thread_safe(collection: catalog.Collection) -> None:
    band = collection.bands[0]
    cache = HeaderCache(max_entries=1)
    first = cache.get(collection, 0, band)
    assert cache.get(collection, 0, band) is first
    assert cache.get(collection, 1, band) is not first and len(cache) == 1  # evicted
    shared = HeaderCache()
    got: list[HeaderRecord] = []
    threads = [threading.Thread(target=lambda r=r: got.append(shared.get(collection, r % 2, band)))
               for r in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 16 and len(shared) == 2
    assert {h.href for h in got} == {collection.header(0, band.name).href,
                                     collection.header(1, band.name).href}


# -- ChipRequest ----------------------------------------------------------------------------------


def test_chip_request_derives_from_the_wire_declaration() -> None:
    wire = set(chip_fields())
    assert set(request_module._NORMALISE) == wire - {"shard"}
    fields = {f.name: f for f in dataclasses.fields(ChipRequest)}
    assert set(fields) - {"rows", "shard"} == wire - {"filter", "shard"}
    req = ChipRequest.create(geometries=[(0, 0, 1, 1)])
    for name, f in fields.items():  # every default comes from the dataclass
        if name != "geometries":
            assert getattr(req, name) == f.default


def test_chip_request_keywords() -> None:
    with pytest.raises(InvalidArgumentError, match=r"^chipsize: unknown field"):
        ChipRequest.create(geometries=[(0, 0, 1, 1)], chipsize=8)  # type: ignore[call-arg]
    with pytest.raises(InvalidArgumentError, match=r"^filter: "):
        ChipRequest.create(geometries=[(0, 0, 1, 1)], filter={"ids": ["a"]})
    with pytest.raises(InvalidArgumentError, match=r"^geometries: missing"):
        ChipRequest.create(chip_size=8)
    a = ChipRequest.create(geometries=[(0, 0, 1, 1)], shard=(1, 4), rows=[3, 4])
    b = ChipRequest.create(geometries=[(0, 0, 1, 1)], shard={"index": 1, "count": 4},
                           rows=np.array([3, 4]))
    assert a == b and a.shard == (1, 4) and a.rows == (3, 4)
    with pytest.raises(InvalidArgumentError, match="shard"):
        ChipRequest.create(geometries=[(0, 0, 1, 1)], shard=(4, 4))
    req = ChipRequest.create(geometries=(0, 0, 1, 1), chip_size=np.int64(8), resolution=[10, 20],
                             bands=["b"], dtype="f4", columns=["label"])
    assert req.chip_size == (8, 8) and req.resolution == (10.0, 20.0) and req.dtype == "float32"
    assert req.bands == ("b",) and req.columns == ("label",)
