"""Chip engine behaviour: requests, coalescing, de-duplication, cache, errors, outputs."""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import rasterio
import shapely
from affine import Affine
from rasterio.windows import Window as RioWindow

import catalog
from catalog.testing import synthetic_scene, write_cog
from flight_server import (
    ChipEngine,
    ChipReadError,
    ChipRequest,
    DecodeError,
    InvalidArgumentError,
    LimitExceededError,
    UpstreamError,
)
from tests.conftest import s3_options
from tests.support.servers import RangeServer

GT = (500000.0, 10.0, 0.0, 4100000.0, 0.0, -10.0)


def _cog(path: Path, *, seed: int = 0, size: int = 1024, bands: int = 2, gt=GT, epsg=32633,
         nodata: float | None = 0) -> Path:
    write_cog(path, synthetic_scene(size, size, bands, seed), geotransform=gt, epsg=epsg,
              nodata=nodata, tile=256, overviews=2)
    return path


def _box(c0: int, r0: int, w: int, h: int, gt=GT) -> shapely.Polygon:
    x0, y0 = gt[0] + c0 * gt[1], gt[3] + r0 * gt[5]
    return shapely.box(x0 + 2.5, y0 + h * gt[5] + 2.5, x0 + w * gt[1] - 2.5, y0 - 2.5)


@pytest.fixture
def scene(tmp_path: Path) -> tuple[Path, catalog.Collection]:
    p = _cog(tmp_path / "a.tif")
    return p, catalog.build_from_files([p], progress=False)


def test_requests_per_chip_and_coalescing(tmp_path: Path) -> None:
    p = _cog(tmp_path / "a.tif")
    with RangeServer(tmp_path) as server:
        col = catalog.build_from_files([server.url_for(p)], store_options={"allow_http": True},
                                       progress=False)
        geom = _box(200, 200, 100, 100)  # 2 x 2 tiles: (0,0) (0,1) (1,0) (1,1)
        req = ChipRequest.create(geometries=[geom], geometry_crs="EPSG:32633")
        with ChipEngine(coalesce_bytes=0) as e:
            server.reset()
            e.read(col, req)
            # k = 4 tiles cost at most 4 requests; tiles adjacent in the file share one.
            assert server.requests == 2
            assert e.stats().tiles_decoded == 4
        with ChipEngine(coalesce_bytes=10**7) as e:
            server.reset()
            e.read(col, req)
            assert server.requests == 1
        with ChipEngine(coalesce_bytes=0) as e:
            server.reset()
            e.read(col, ChipRequest.create(geometries=[_box(10, 10, 20, 20)],
                                           geometry_crs="EPSG:32633"))
            assert server.requests == 1  # one tile, one request


def test_inflight_deduplication_and_cache(tmp_path: Path) -> None:
    p = _cog(tmp_path / "a.tif")
    with RangeServer(tmp_path, latency=0.2) as server:
        col = catalog.build_from_files([server.url_for(p)], store_options={"allow_http": True},
                                       progress=False)
        req = ChipRequest.create(geometries=[_box(0, 0, 512, 512)], geometry_crs="EPSG:32633")
        with ChipEngine(coalesce_bytes=0) as e:
            server.reset()
            results: list[np.ndarray] = []
            threads = [threading.Thread(target=lambda: results.append(e.read(col, req).chips))
                       for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert len(results) == 4 and all(np.array_equal(r, results[0]) for r in results)
            per_range = {(r.path, r.range) for r in server.records}
            assert len(per_range) == len(server.records)  # every tile range fetched once
            assert e.stats().tiles_decoded == 4  # 2 x 2 tiles, decoded once for 4 readers
            before = server.requests
            again = e.read(col, req)  # warm: all from the decoded-tile cache
            assert server.requests == before
            assert np.array_equal(again.chips, results[0])
            assert e.stats().cache.hit_rate > 0


def test_files_of_one_chip_are_fetched_together(tmp_path: Path) -> None:
    """A time-series chip over 6 dates x 2 band files asks for all 12 files at once."""
    files = {}
    for d in range(6):
        files[f"d{d}"] = {b: str(_cog(tmp_path / f"d{d}_{b}.tif", seed=d, bands=1))
                          for b in ("red", "nir")}
    with RangeServer(tmp_path, latency=0.2) as server:
        hrefs = {s: {b: server.url_for(p) for b, p in bands.items()}
                 for s, bands in files.items()}
        dates = {f"d{d}": f"2024-0{d + 1}-01" for d in range(6)}
        col = catalog.build_from_files(hrefs, datetime=dates, store_options={"allow_http": True},
                                       progress=False)
        req = ChipRequest.create(geometries=[_box(10, 10, 20, 20)], geometry_crs="EPSG:32633",
                                 time_series=True, batch_rows=1)
        with ChipEngine() as e:
            server.reset()
            result = e.read(col, req)
        assert result.chips.shape == (1, 6, 2, 20, 20)
        assert server.requests == 12
        assert server.max_inflight == 12, "one round trip for the chip, not one per file"


def test_cache_stays_within_budget(tmp_path: Path) -> None:
    p = _cog(tmp_path / "a.tif")
    col = catalog.build_from_files([p], progress=False)
    tile_bytes = 256 * 256 * 2 * 2
    with ChipEngine(cache_bytes=3 * tile_bytes) as e:
        e.read(col, ChipRequest.create(geometries=[_box(0, 0, 1024, 1024)],
                                       geometry_crs="EPSG:32633"))
        s = e.stats().cache
        assert s.bytes <= 3 * tile_bytes and s.entries == 3 and s.evictions == 13
    with ChipEngine(cache_bytes=0) as e:
        r1 = e.read(col, ChipRequest.create(geometries=[_box(0, 0, 300, 300)],
                                            geometry_crs="EPSG:32633"))
        assert e.stats().cache.entries == 0 and r1.chips.shape == (1, 2, 300, 300)


def test_reads_through_http_and_s3_equal_local(tmp_path: Path, moto_s3, monkeypatch) -> None:
    paths = [_cog(tmp_path / f"s{i}.tif", seed=i) for i in range(3)]
    local = catalog.build_from_files(paths, progress=False)
    req = ChipRequest.create(geometries=[_box(100, 150, 300, 200)], geometry_crs="EPSG:32633")
    with ChipEngine() as e:
        expected = e.read(local, req).chips
    endpoint, s3 = moto_s3
    s3.create_bucket(Bucket="chips")
    for p in paths:
        s3.upload_file(str(p), "chips", f"cogs/{p.name}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    opts = {k: v for k, v in s3_options(endpoint).items() if k != "config"}
    remote = catalog.build_from_files([f"s3://chips/cogs/{p.name}" for p in paths],
                                      store_options=opts, progress=False)
    with ChipEngine() as e:
        np.testing.assert_array_equal(e.read(remote, req).chips, expected)
    with RangeServer(tmp_path) as server:
        http = catalog.build_from_files([server.url_for(p) for p in paths],
                                        store_options={"allow_http": True}, progress=False)
        with ChipEngine() as e:
            np.testing.assert_array_equal(e.read(http, req).chips, expected)


def test_transient_errors_are_retried(tmp_path: Path) -> None:
    p = _cog(tmp_path / "a.tif")
    with RangeServer(tmp_path) as server:
        col = catalog.build_from_files([server.url_for(p)], store_options={"allow_http": True},
                                       progress=False)
        server.transient_failures["a.tif"] = 2
        server.reset()
        with ChipEngine() as e:
            r = e.read(col, ChipRequest.create(geometries=[_box(0, 0, 100, 100)],
                                               geometry_crs="EPSG:32633"))
        assert r.chips.shape == (1, 2, 100, 100)
        assert [rec.status for rec in server.records][:3] == [503, 503, 206]


def test_errors_name_asset_range_and_cause(tmp_path: Path) -> None:
    good = [_cog(tmp_path / f"g{i}.tif", seed=i) for i in range(2)]
    bad = _cog(tmp_path / "bad.tif", seed=9)
    col = catalog.build_from_files([*good, bad], progress=False)
    h = col.header(2, "b1")
    off, n = int(h.levels[0].tile_offsets[0]), int(h.levels[0].tile_byte_counts[0])
    data = bytearray(bad.read_bytes())
    data[off + 10 : off + n - 10] = b"\xff" * (n - 20)  # corrupt the first tile
    st = bad.stat()
    bad.write_bytes(bytes(data))
    os.utime(bad, ns=(st.st_atime_ns, st.st_mtime_ns))  # bit rot: same size and time
    req = ChipRequest.create(geometries=[_box(0, 0, 50, 50)], geometry_crs="EPSG:32633")
    with ChipEngine() as e:
        with pytest.raises(DecodeError) as info:
            e.read(col, req)
        assert info.value.href == str(bad) and info.value.byte_range == (off, off + n)
        assert str(bad) in str(info.value) and f"[{off}, {off + n})" in str(info.value)
        skip = e.read(col, ChipRequest.create(geometries=[_box(0, 0, 50, 50)],
                                              geometry_crs="EPSG:32633", on_error="skip"))
        assert skip.meta.column("id").to_pylist() == ["g0", "g1"]
        assert len(skip.failures) == 1 and skip.failures[0].href == str(bad)
        good[1].unlink()  # deleted after indexing
        with pytest.raises(UpstreamError, match="not found") as info2:
            e.read(col, ChipRequest.create(geometries=[_box(300, 300, 50, 50)],
                                           geometry_crs="EPSG:32633"))
        assert info2.value.href == str(good[1]) and info2.value.byte_range is not None
        assert isinstance(info2.value, ChipReadError)


def test_truncated_file_is_an_upstream_error(tmp_path: Path) -> None:
    p = _cog(tmp_path / "a.tif")
    col = catalog.build_from_files([p], progress=False)
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with ChipEngine() as e, pytest.raises(UpstreamError, match="truncated or replaced"):
        e.read(col, ChipRequest.create(geometries=[_box(700, 700, 300, 300)],
                                       geometry_crs="EPSG:32633"))


def test_validity_nodata_outside_and_sparse(tmp_path: Path) -> None:
    p = tmp_path / "sparse.tif"
    with rasterio.open(p, "w", driver="GTiff", width=512, height=512, count=1, dtype="int16",
                       crs="EPSG:32633", transform=Affine(10, 0, GT[0], 0, -10, GT[3]),
                       tiled=True, blockxsize=256, blockysize=256, nodata=-9,
                       compress="deflate", SPARSE_OK=True) as ds:
        data = np.full((1, 256, 256), 7, np.int16)
        data[0, :10, :10] = -9
        ds.write(data, window=RioWindow(0, 0, 256, 256))
    col = catalog.build_from_files([p], progress=False)
    h = col.header(0, "b1")
    assert (h.levels[0].tile_byte_counts == 0).sum() == 3  # three sparse tiles
    with ChipEngine() as e:
        r = e.read(col, ChipRequest.create(geometries=[_box(-20, 200, 100, 100)],
                                           geometry_crs="EPSG:32633"))
    chip, valid = r.chips[0, 0], r.valid[0]
    with rasterio.open(p) as ds:
        ref = ds.read(1, window=RioWindow(-20, 200, 100, 100), boundless=True, fill_value=-9)
    np.testing.assert_array_equal(chip, ref)
    assert not valid[:, :20].any()  # outside the raster
    assert valid[:56, 20:].all()  # data rows of the written tile
    assert not valid[56:, :].any()  # sparse tile: nodata, not data
    assert (chip[56:, 20:] == -9).all()


def test_internal_mask_marks_invalid(corpus) -> None:
    _, p = corpus["mask"]
    col = catalog.build_from_files([p], progress=False)
    h = col.header(0, "b1")
    gt = h.geotransform
    with ChipEngine() as e:
        r = e.read(col, ChipRequest.create(geometries=[_box(0, 0, h.width, h.height, gt)],
                                           geometry_crs=h.crs))
    with rasterio.open(p) as ds:
        np.testing.assert_array_equal(r.valid[0], ds.dataset_mask() > 0)
        np.testing.assert_array_equal(r.chips[0], ds.read())


def test_scale_offset_and_dtype(corpus) -> None:
    _, p = corpus["scale_offset"]
    col = catalog.build_from_files([p], progress=False)
    h = col.header(0, "b1")
    geom = _box(5, 5, 50, 40, h.geotransform)
    with ChipEngine() as e:
        raw = e.read(col, ChipRequest.create(geometries=[geom], geometry_crs=h.crs))
        scaled = e.read(col, ChipRequest.create(geometries=[geom], geometry_crs=h.crs,
                                                scale_offset=True))
        assert scaled.chips.dtype == np.float32
        v = raw.valid[0]
        expected = raw.chips[0].astype(np.float32) * np.array([1e-4, 1e-2], np.float32)[:, None,
                                                                                         None]
        expected += np.array([-0.1, 5.0], np.float32)[:, None, None]
        np.testing.assert_allclose(scaled.chips[0][:, v], expected[:, v], rtol=1e-6)
        assert np.isnan(scaled.chips[0][:, ~v]).all()
        wide = e.read(col, ChipRequest.create(geometries=[geom], geometry_crs=h.crs,
                                              dtype="int32"))
        assert wide.chips.dtype == np.int32
        np.testing.assert_array_equal(wide.chips, raw.chips.astype(np.int32))
        with pytest.raises(InvalidArgumentError, match="dtype: casting uint16 to uint8"):
            e.read(col, ChipRequest.create(geometries=[geom], geometry_crs=h.crs, dtype="uint8"))


def test_time_series_across_crs(tmp_path: Path) -> None:
    """Four dates, one of them in another UTM zone; stacked [T, C, H, W] on one grid."""
    from pyproj import Transformer

    files, dates = {}, {}
    for i, day in enumerate([3, 1, 4, 2]):
        sid = f"t{i}"
        files[sid] = {"red": _cog(tmp_path / f"{sid}.tif", seed=i, bands=1)}
        dates[sid] = dt.date(2024, 5, day)
    # Scene t3 covers the same ground in zone 34.
    to34 = Transformer.from_crs("EPSG:32633", "EPSG:32634", always_xy=True)
    x34, y34 = to34.transform(GT[0], GT[3])
    files["t3"] = {"red": _cog(tmp_path / "t3.tif", seed=3, bands=1, epsg=32634,
                               gt=(round(x34) - 2000.0, 10.0, 0.0, round(y34) + 2000.0, 0.0,
                                   -10.0))}
    col = catalog.build_from_files(files, datetime=dates, progress=False)
    g1 = _box(100, 100, 64, 48)
    with ChipEngine() as e:
        r = e.read(col, ChipRequest.create(geometries=[g1], geometry_crs="EPSG:32633",
                                           time_series=True))
    assert r.chips.shape == (1, 4, 1, 48, 64) and r.valid.shape == (1, 4, 48, 64)
    assert r.meta.column("id")[0].as_py() == ["t1", "t3", "t0", "t2"]  # by date
    t = r.meta.column("transform")[0].as_py()
    assert r.meta.column("crs")[0].as_py() == "EPSG:32633"
    # Same-grid steps equal rasterio reads; the zone-34 step is reprojected onto the grid.
    with rasterio.open(files["t1"]["red"]) as ds:
        np.testing.assert_array_equal(r.chips[0, 0, 0], ds.read(1, window=RioWindow(100, 100,
                                                                                     64, 48)))
    from rasterio.warp import Resampling, reproject

    dst = np.zeros((48, 64), np.uint16)
    with rasterio.open(files["t3"]["red"]) as ds:
        reproject(rasterio.band(ds, 1), dst, dst_crs="EPSG:32633",
                  dst_transform=Affine(t[1], 0, t[0], 0, t[5], t[3]),
                  resampling=Resampling.nearest)
    assert np.mean(r.chips[0, 1, 0] == dst) >= 0.999
    assert r.valid[0].all()


def test_time_series_pads_missing_steps(tmp_path: Path) -> None:
    a = _cog(tmp_path / "a.tif", seed=1, bands=1)
    b = _cog(tmp_path / "b.tif", seed=2, bands=1, gt=(GT[0] + 20000, 10, 0, GT[3], 0, -10))
    c = _cog(tmp_path / "c.tif", seed=3, bands=1)
    col = catalog.build_from_files({"a": {"x": a}, "b": {"x": b}, "c": {"x": c}},
                                   datetime={"a": "2024-01-01", "b": "2024-02-01",
                                             "c": "2024-03-01"}, progress=False)
    geoms = [_box(10, 10, 32, 32), _box(2010, 10, 32, 32)]  # second only in scene b
    with ChipEngine() as e:
        r = e.read(col, ChipRequest.create(geometries=geoms, geometry_crs="EPSG:32633",
                                           time_series=True, chip_size=32))
    assert r.chips.shape == (2, 2, 1, 32, 32)
    assert r.meta.column("id").to_pylist() == [["a", "c"], ["b", None]]
    assert r.valid[1, 0].all() and not r.valid[1, 1].any()
    assert r.meta.column("datetime")[1].as_py()[1] is None


GEOMETRY_FORMS = {
    "bbox": lambda g: list(g.bounds),
    "shapely": lambda g: g,
    "wkb": shapely.to_wkb,
    "wkt": shapely.to_wkt,
    "geojson": lambda g: json.loads(shapely.to_geojson(g)),
    "feature": lambda g: {"type": "Feature", "properties": {},
                          "geometry": json.loads(shapely.to_geojson(g))},
    "collection": lambda g: {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": json.loads(shapely.to_geojson(g))}]},
    "arrow_wkb": lambda g: pa.array([shapely.to_wkb(g)], pa.binary()),
    "geoarrow_wkb": lambda g: pa.ExtensionArray.from_storage(
        _GeoArrowWKB(), pa.array([shapely.to_wkb(g)], pa.binary())),
}


class _GeoArrowWKB(pa.ExtensionType):
    def __init__(self) -> None:
        super().__init__(pa.binary(), "geoarrow.wkb")

    def __arrow_ext_serialize__(self) -> bytes:
        return b"{}"

    @classmethod
    def __arrow_ext_deserialize__(cls, storage_type, serialized):
        return cls()


@pytest.mark.parametrize("form", list(GEOMETRY_FORMS))
def test_geometry_inputs(scene, form: str) -> None:
    _, col = scene
    from pyproj import Transformer

    box = _box(100, 100, 40, 30)
    to_ll = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
    lonlat = shapely.transform(box, lambda c: np.column_stack(to_ll.transform(c[:, 0], c[:, 1])))
    with ChipEngine() as e:
        ref = e.read(col, ChipRequest.create(geometries=[lonlat]))  # default EPSG:4326
        got = e.read(col, ChipRequest.create(geometries=GEOMETRY_FORMS[form](lonlat)))
        in_utm = e.read(col, ChipRequest.create(geometries=GEOMETRY_FORMS[form](box),
                                                geometry_crs="EPSG:32633"))
    np.testing.assert_array_equal(got.chips, ref.chips)
    assert in_utm.chips.shape[2:] == (30, 40)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"geometries": []}, "geometries"),
        ({"geometries": [[1, 2, 3]]}, "geometries"),
        ({"geometries": [(3, 0, 1, 1)]}, "bbox"),
        ({"geometries": "POLYGON EMPTY"}, "empty"),
        ({"geometries": [(0, 0, 1, 1)], "chip_size": 0}, "chip_size"),
        ({"geometries": [(0, 0, 1, 1)], "chip_size": [1, 2, 3]}, "chip_size"),
        ({"geometries": [(0, 0, 1, 1)], "resolution": -1}, "resolution"),
        ({"geometries": [(0, 0, 1, 1)], "resampling": "cubic"}, "resampling"),
        ({"geometries": [(0, 0, 1, 1)], "crs": "EPSG:0"}, "crs"),
        ({"geometries": [(0, 0, 1, 1)], "geometry_crs": "nonsense"}, "crs"),
        ({"geometries": [(0, 0, 1, 1)], "dtype": "complex64"}, "dtype"),
        ({"geometries": [(0, 0, 1, 1)], "dtype": "nope"}, "dtype"),
        ({"geometries": [(0, 0, 1, 1)], "bands": "b1"}, "bands"),
        ({"geometries": [(0, 0, 1, 1)], "bands": ["b1", "b1"]}, "bands"),
        ({"geometries": [(0, 0, 1, 1)], "batch_rows": 0}, "batch_rows"),
        ({"geometries": [(0, 0, 1, 1)], "mask": "yes"}, "mask"),
        ({"geometries": [(0, 0, 1, 1)], "on_error": "ignore"}, "on_error"),
    ],
)
def test_invalid_requests(kwargs: dict, match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        ChipRequest.create(**kwargs)


def test_collection_dependent_validation(scene) -> None:
    _, col = scene
    g = _box(0, 0, 10, 10)
    with ChipEngine(max_chips=2, max_chip_pixels=100 * 100) as e:
        with pytest.raises(InvalidArgumentError, match="bands: 'nir' not in"):
            e.read(col, ChipRequest.create(geometries=[g], geometry_crs="EPSG:32633",
                                           bands=["nir"]))
        with pytest.raises(InvalidArgumentError, match="columns"):
            e.read(col, ChipRequest.create(geometries=[g], geometry_crs="EPSG:32633",
                                           columns=["label"]))
        with pytest.raises(InvalidArgumentError, match="resolution"):
            e.read(col, ChipRequest.create(geometries=[g], geometry_crs="EPSG:32633",
                                           crs="EPSG:4326"))
        with pytest.raises(LimitExceededError, match="3 chips"):
            e.read(col, ChipRequest.create(geometries=[g, g, g], geometry_crs="EPSG:32633"))
        with pytest.raises(LimitExceededError, match="pixels"):
            e.read(col, ChipRequest.create(geometries=[_box(0, 0, 200, 200)],
                                           geometry_crs="EPSG:32633"))


def test_arrow_batches_are_fixed_shape_tensors_sharing_memory(scene) -> None:
    _, col = scene
    geoms = [_box(i * 50, 0, 40, 30) for i in range(5)]
    with ChipEngine() as e:
        stream = e.stream(col, ChipRequest.create(geometries=geoms, geometry_crs="EPSG:32633",
                                                  batch_rows=2, bands=["b2"]))
        batches = list(stream)
    assert [len(b) for b in batches] == [1, 2, 2]  # the first batch ramps up
    rb = batches[1].to_record_batch()  # chips 1 and 2
    chip_field = rb.schema.field("chip")
    assert chip_field.type.extension_name == "arrow.fixed_shape_tensor"
    assert chip_field.type.shape == [1, 30, 40]
    assert chip_field.type.dim_names == ["band", "y", "x"]
    assert chip_field.type.value_type == pa.uint16()
    assert json.loads(chip_field.metadata[b"bands"]) == ["b2"]
    assert rb.schema.field("valid").type.shape == [30, 40]
    assert rb.schema.names[:6] == ["id", "datetime", "geometry_index", "crs", "transform",
                                   "bounds"]
    tensor = rb.column("chip").to_numpy_ndarray()
    np.testing.assert_array_equal(tensor, batches[1].chips)
    buf = rb.column("chip").storage.values.buffers()[1]
    assert buf.address == batches[1].chips.ctypes.data  # no copy into Arrow
    t = rb.column("transform")[0].as_py()
    assert t == [GT[0] + 500, 10.0, 0.0, GT[3], 0.0, -10.0]
    assert rb.column("bounds")[0].as_py() == [GT[0] + 500, GT[3] - 300, GT[0] + 900, GT[3]]


def test_stream_is_incremental_and_cancellable(tmp_path: Path) -> None:
    paths = [_cog(tmp_path / f"s{i}.tif", seed=i, bands=1) for i in range(12)]
    with RangeServer(tmp_path, latency=0.05) as server:
        col = catalog.build_from_files([server.url_for(p) for p in paths],
                                       store_options={"allow_http": True}, progress=False)
        req = ChipRequest.create(geometries=[_box(0, 0, 300, 300)], geometry_crs="EPSG:32633",
                                 batch_rows=1)
        with ChipEngine() as e:
            stream = e.stream(col, req, prefetch=1)
            first = next(stream)
            assert len(first) == 1 and stream.chip_count == 12
            # The producer runs at most a couple of batches ahead of the consumer.
            assert e.stats().chips <= 3
            stream.close()
            time.sleep(0.5)
            settled = server.requests
            time.sleep(0.5)
            assert server.requests == settled  # nothing more is fetched after close
            assert e.stats().chips <= 4


def test_passthrough_columns(tmp_path: Path) -> None:
    p = [_cog(tmp_path / f"s{i}.tif", seed=i, bands=1) for i in range(2)]
    table = pa.table({"id": ["s0", "s1"], "href": [str(x) for x in p],
                      "label": pa.array([3, 5], pa.int16())})
    col = catalog.build_from_table(table, bands={"b": "href"}, datetime_column=None,
                                   progress=False)
    with ChipEngine() as e:
        r = e.read(col, ChipRequest.create(geometries=[_box(0, 0, 8, 8)],
                                           geometry_crs="EPSG:32633", columns=["label"]))
    assert r.meta.column("label").to_pylist() == [3, 5]
    assert r.meta.schema.field("label").type == pa.int16()
