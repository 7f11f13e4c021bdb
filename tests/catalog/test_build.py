"""Builders from files (local, HTTP, S3) and from tables; failures reported, not lost."""

from __future__ import annotations

import dataclasses
import datetime as dt
import struct
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyproj
import pytest
import rasterio
import rasterio.crs
import shapely
import tifffile
from affine import Affine

import catalog
import cogflight_core
from catalog.testing import synthetic_scene, write_cog
from tests.conftest import s3_options
from tests.support.servers import RangeServer


def _scene_files(root: Path, n: int = 4, bands: int = 3) -> list[Path]:
    paths = []
    for i in range(n):
        p = root / f"scene_{i}.tif"
        write_cog(p, synthetic_scene(300, 400, bands, seed=i),
                  geotransform=(500000.0 + 4000 * i, 10.0, 0.0, 4100000.0, 0.0, -10.0),
                  epsg=32633 if i % 2 == 0 else 32634, nodata=0, overviews=1)
        paths.append(p)
    return paths


def test_files_one_scene_per_file(tmp_path: Path) -> None:
    paths = _scene_files(tmp_path)
    c = catalog.build_from_files(paths, name="local", datetime="2024-05-01", progress=False)
    assert len(c) == 4 and c.name == "local"
    assert c.band_names == ("b1", "b2", "b3")
    assert [b.sample for b in c.bands] == [0, 1, 2]
    assert c.ids == [p.stem for p in paths]
    assert set(c.table.column("crs").to_pylist()) == {"EPSG:32633", "EPSG:32634"}
    assert c.table.column("datetime")[0].as_py() == dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
    assert not c.failures
    h = c.header(1, "b2")
    assert h == catalog.read_header(str(paths[1]))
    # Footprints: raster bounds reprojected to lon/lat, bbox column consistent with them.
    with rasterio.open(paths[1]) as ds:
        from rasterio.warp import transform_bounds

        expected = transform_bounds(ds.crs, "OGC:CRS84", *ds.bounds, densify_pts=21)
    geom = shapely.from_wkb(c.table.column("geometry")[1].as_py())
    np.testing.assert_allclose(geom.bounds, expected, atol=1e-9)
    bb = c.table.column("bbox")[1].as_py()
    np.testing.assert_allclose([bb["xmin"], bb["ymin"], bb["xmax"], bb["ymax"]], geom.bounds)


def test_files_band_names_and_datetime_callable(tmp_path: Path) -> None:
    paths = _scene_files(tmp_path, n=2)
    c = catalog.build_from_files(
        paths, bands=["red", "green", "blue"], progress=False,
        datetime=lambda href: f"2023-01-0{int(href[-5]) + 1}",
    )
    assert c.band_names == ("red", "green", "blue")
    assert [d.day for d in c.table.column("datetime").to_pylist()] == [1, 2]
    with pytest.raises(catalog.InvalidArgumentError, match="date"):
        catalog.build_from_files(paths, datetime="not a date", progress=False)


def test_files_mapping_one_file_per_band(tmp_path: Path) -> None:
    single = []
    for i in range(2):
        for band in ("red", "nir"):
            p = tmp_path / f"s{i}_{band}.tif"
            write_cog(p, synthetic_scene(200, 200, 1, i), geotransform=(0, 10, 0, 0, 0, -10),
                      epsg=32633)
            single.append(p)
    c = catalog.build_from_files(
        {"s0": {"red": single[0], "nir": single[1]}, "s1": {"red": single[2], "nir": single[3]}},
        datetime={"s0": dt.date(2024, 1, 1), "s1": "2024-02-01T10:00:00Z"}, progress=False,
    )
    assert c.ids == ["s0", "s1"] and c.band_names == ("red", "nir")
    assert c.assets == ("red", "nir")
    assert c.header(1, "nir").href == str(single[3])


def test_files_multiband_sample_selection(tmp_path: Path) -> None:
    p = _scene_files(tmp_path, n=1)[0]
    c = catalog.build_from_files({"x": {"nir": (p, 2), "red": (p, 0)}}, progress=False)
    assert [(b.name, b.asset, b.sample) for b in c.bands] == [("nir", "nir", 2), ("red", "red", 0)]
    with pytest.raises(catalog.BuildError, match="samples"):
        catalog.build_from_files({"x": {"b9": (p, 8)}}, progress=False)


def test_failures_reported_without_losing_successes(tmp_path: Path) -> None:
    paths = _scene_files(tmp_path, n=3)
    (tmp_path / "broken.tif").write_bytes(b"II*\x00\x08\x00\x00\x00\xff\xff")
    (tmp_path / "notatiff.tif").write_text("hello")
    with rasterio.open(tmp_path / "stripped.tif", "w", driver="GTiff", width=10, height=10,
                       count=1, dtype="uint8", crs="EPSG:4326",
                       transform=Affine(0.1, 0, 0, 0, -0.1, 0)) as ds:
        ds.write(np.zeros((1, 10, 10), np.uint8))
    missing = tmp_path / "missing.tif"
    inputs = [*paths, tmp_path / "broken.tif", tmp_path / "notatiff.tif",
              tmp_path / "stripped.tif", missing]
    c = catalog.build_from_files(inputs, progress=False)
    assert len(c) == 3
    by_id = {f.scene_id: f for f in c.failures}
    assert set(by_id) == {"broken", "notatiff", "stripped", "missing"}
    assert by_id["stripped"].error == "UnsupportedLayoutError"
    assert "stripped" in by_id["stripped"].reason
    assert by_id["missing"].error == "ObjectNotFoundError"
    assert by_id["notatiff"].href == str(tmp_path / "notatiff.tif")
    with pytest.raises(catalog.BuildError) as info:
        catalog.build_from_files(inputs, strict=True, progress=False)
    assert len(info.value.failures) == 4
    with pytest.raises(catalog.BuildError, match="no scene"):
        catalog.build_from_files([tmp_path / "broken.tif"], progress=False)


def _planetary(path: Path, body: str) -> Path:
    """A tiled GeoTIFF in a planetary CRS (PROJ refuses to transform it to CRS84)."""
    wkt = pyproj.CRS(body).to_wkt()
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=3, dtype="uint16",
                       crs=rasterio.crs.CRS.from_wkt(wkt), tiled=True, blockxsize=32,
                       blockysize=32, transform=Affine(0.01, 0, 10, 0, -0.01, 20)) as ds:
        ds.write(np.ones((3, 64, 64), np.uint16))
    return path


def test_non_earth_crs_is_a_failure_not_an_exception(tmp_path: Path) -> None:
    """Issue 10 (7): a raw pyproj ProjError sank the whole build; now the file fails alone."""
    paths = _scene_files(tmp_path, n=2)
    mars = _planetary(tmp_path / "mars.tif", "IAU_2015:49900")
    europa = _planetary(tmp_path / "europa.tif", "IAU_2015:50200")
    c = catalog.build_from_files([*paths, mars, europa], progress=False)
    assert c.ids == [p.stem for p in paths]
    by_id = {f.scene_id: f for f in c.failures}
    assert set(by_id) == {"mars", "europa"}
    for name in ("mars", "europa"):
        assert by_id[name].error == "UnsupportedLayoutError"
        assert by_id[name].href == str(tmp_path / f"{name}.tif")
        assert "longitude/latitude" in by_id[name].reason
    with pytest.raises(catalog.BuildError) as info:  # alone: a typed error listing the failure
        catalog.build_from_files([mars], progress=False)
    assert [f.error for f in info.value.failures] == ["UnsupportedLayoutError"]


def _many_bands(path: Path, samples: int) -> Path:
    """A small georeferenced file declaring ``samples`` bands (tifffile writes it)."""
    keys = [1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32633]
    tags = [(33550, "d", 3, (10.0, 10.0, 0.0), True),
            (33922, "d", 6, (0.0, 0.0, 0.0, 500000.0, 4100000.0, 0.0), True),
            (34735, "H", len(keys), keys, True)]
    tifffile.imwrite(path, np.zeros((16, 16, samples), np.uint8), tile=(16, 16),
                     compression="zlib", planarconfig="contig", photometric="minisblack",
                     extratags=tags, metadata=None)
    return path


def _one_huge_tile(path: Path) -> Path:
    """The issue's ~1 MB file: one 65536 x 16384 uint8 tile (1 GiB decoded), deflated zeros."""
    z = zlib.compressobj(9)
    chunk = bytes(1 << 20)
    body = b"".join(z.compress(chunk) for _ in range(1024)) + z.flush()
    keys = [1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32633]
    entries = [(256, 4, [65536]), (257, 4, [16384]), (258, 3, [8]), (259, 3, [8]),
               (262, 3, [1]), (277, 3, [1]), (322, 4, [65536]), (323, 4, [16384]),
               (324, 4, [0]), (325, 4, [len(body)]), (33550, 12, [10.0, 10.0, 0.0]),
               (33922, 12, [0.0, 0.0, 0.0, 500000.0, 4100000.0, 0.0]), (34735, 3, keys)]
    fmt = {3: "H", 4: "I", 12: "d"}
    size = {3: 2, 4: 4, 12: 8}
    ifd_size = 2 + 12 * len(entries) + 4
    blobs = bytearray()
    data_at = 8 + ifd_size
    fields = []
    for tag, typ, values in entries:
        payload = struct.pack(f"<{len(values)}{fmt[typ]}", *values)
        if len(payload) <= 4:
            fields.append(struct.pack("<HHI", tag, typ, len(values)) + payload.ljust(4, b"\0"))
        else:
            fields.append(struct.pack("<HHII", tag, typ, len(values), data_at + len(blobs)))
            blobs += payload
    tile_at = data_at + len(blobs)
    fields[8] = struct.pack("<HHII", 324, 4, 1, tile_at)
    assert all(size[t] for _, t, _ in entries)
    head = b"II*\0" + struct.pack("<I", 8)
    path.write_bytes(head + struct.pack("<H", len(entries)) + b"".join(fields)
                     + b"\0\0\0\0" + bytes(blobs) + body)
    return path


@pytest.fixture
def storage_env(monkeypatch: pytest.MonkeyPatch):
    """Set storage settings through the environment for one test (the config is re-read)."""
    def set_env(**values: str) -> None:
        for key, value in values.items():
            monkeypatch.setenv(key, value)
        cogflight_core.config.cache_clear()

    yield set_env
    monkeypatch.undo()
    cogflight_core.config.cache_clear()


@pytest.mark.timeout(60)
def test_limits_bound_indexing_and_keep_the_good_files(tmp_path: Path, storage_env) -> None:
    """Issue 10 (5): 65,535 bands took 35 s to index (quadratic band checks); a 1 MB file
    with one 65536 x 16384 tile cost ~1 GiB per chip read. Both are refused, by name."""
    paths = _scene_files(tmp_path, n=2)
    bands = _many_bands(tmp_path / "bands.tif", 65535)
    huge = _one_huge_tile(tmp_path / "huge.tif")
    assert huge.stat().st_size < 2 << 20
    c = catalog.build_from_files([*paths, bands, huge], progress=False)
    assert c.ids == [p.stem for p in paths]
    by_id = {f.scene_id: f for f in c.failures}
    assert by_id["bands"].error == by_id["huge"].error == "UnsupportedLayoutError"
    assert "65535 samples" in by_id["bands"].reason
    assert "max_samples" in by_id["bands"].reason and "1024" in by_id["bands"].reason
    assert "1073741824 decoded bytes" in by_id["huge"].reason
    assert "max_tile_bytes" in by_id["huge"].reason
    # Raised limits: both index, the band checks are linear (this took 35 s before).
    storage_env(COGFLIGHT_MAX_SAMPLES="65535", COGFLIGHT_MAX_TILE_BYTES="2GiB")
    c = catalog.build_from_files([bands], progress=False)
    assert not c.failures
    assert len(c.bands) == 65535 and c.band_names[-1] == "b65535"
    assert not catalog.build_from_files([huge], progress=False).failures
    storage_env(COGFLIGHT_MAX_SAMPLES="3", COGFLIGHT_MAX_TILE_BYTES="1MiB")
    c = catalog.build_from_files([paths[0], bands], progress=False)  # 3 bands, 256x256 tiles
    assert c.ids == [paths[0].stem]
    storage_env(COGFLIGHT_MAX_TILE_BYTES="100KiB")  # 256 x 256 x 3 x uint16 = 384 KiB
    with pytest.raises(catalog.BuildError) as info:
        catalog.build_from_files([paths[0]], progress=False)
    assert "max_tile_bytes" in info.value.failures[0].reason


def test_a_header_value_over_its_column_range_fails_that_scene(tmp_path: Path) -> None:
    """Issue 10 (7): ``ArrowInvalid: Value 65535 too large to fit in C integer type`` came out
    of the builder for one mutated header. The parser now refuses such values; the builder's
    last line of defence turns whatever still does not fit into that scene's failure."""
    from catalog._build import SceneSpec, _fit_assets, _scene_outcome
    from catalog._read import HeaderResult

    paths = _scene_files(tmp_path, n=2)
    good = [catalog.read_header(str(p)) for p in paths]
    odd = dataclasses.replace(good[1], extra_samples=(65535,))
    results = {h.href: HeaderResult(h.href, h, None, 1) for h in (good[0], odd)}
    specs = [SceneSpec(f"s{i}", None, {"image": h.href}) for i, h in enumerate((good[0], odd))]
    scenes = [_scene_outcome(s, ["image"], {"image": 3}, results) for s in specs]
    kept, failures, arrays = _fit_assets(scenes, ["image"])  # type: ignore[arg-type]
    assert [k.spec.id for k in kept] == ["s0"] and len(arrays["image"]) == 1
    assert [(f.scene_id, f.error) for f in failures] == [("s1", "HeaderError")]
    assert "65535" in failures[0].reason


def test_files_bad_arguments(tmp_path: Path) -> None:
    a = tmp_path / "a" / "x.tif"
    b = tmp_path / "b" / "x.tif"
    for p in (a, b):
        p.parent.mkdir()
        write_cog(p, synthetic_scene(64, 64, 1, 0), geotransform=(0, 1, 0, 0, 0, -1), epsg=32633)
    with pytest.raises(catalog.InvalidArgumentError, match="scene id"):
        catalog.build_from_files([a, b], progress=False)
    with pytest.raises(catalog.InvalidArgumentError):
        catalog.build_from_files(str(a), progress=False)  # a string, not a list
    with pytest.raises(catalog.InvalidArgumentError):
        catalog.build_from_files([], progress=False)
    with pytest.raises(catalog.InvalidArgumentError, match="scheme"):
        catalog.build_from_files(["ftp://host/x.tif"], progress=False)
    with pytest.raises(catalog.InvalidArgumentError, match="name"):
        catalog.build_from_files([a], name="", progress=False)


def test_files_over_http_one_request_each(tmp_path: Path) -> None:
    paths = _scene_files(tmp_path, n=5)
    with RangeServer(tmp_path, latency=0.02) as server:
        urls = [server.url_for(p) for p in paths]
        c = catalog.build_from_files(urls, store_options={"allow_http": True}, progress=False)
        assert len(c) == 5 and not c.failures
        assert all(n == 1 for n in server.per_path().values())
        assert c.metadata["build"]["requests_max"] == 1
        assert c.header(0, "b1").href == urls[0]
        assert c.store_options == {"allow_http": True}


def test_concurrency_is_bounded_and_progress_shown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = _scene_files(tmp_path, n=12, bands=1)
    with RangeServer(tmp_path, latency=0.05) as server:
        urls = [server.url_for(p) for p in paths]
        c = catalog.build_from_files(urls, store_options={"allow_http": True}, concurrency=3,
                                     progress=True)
        assert len(c) == 12
        assert server.max_inflight == 3  # never more, and the bound was used
        server.reset()
        catalog.build_from_files(urls, store_options={"allow_http": True}, concurrency=12,
                                 progress=False)
        assert server.max_inflight > 3
    err = capsys.readouterr().err
    assert "headers of collection" in err and "/12 [" in err
    with pytest.raises(catalog.InvalidArgumentError, match="concurrency"):
        catalog.build_from_files(urls, concurrency=0, progress=False)


def test_files_from_s3(tmp_path: Path, moto_s3) -> None:
    endpoint, s3 = moto_s3
    s3.create_bucket(Bucket="imagery")
    paths = _scene_files(tmp_path, n=3)
    for p in paths:
        s3.upload_file(str(p), "imagery", f"cogs/{p.name}")
    urls = [f"s3://imagery/cogs/{p.name}" for p in paths]
    c = catalog.build_from_files(urls, store_options=s3_options(endpoint), progress=False)
    assert len(c) == 3 and not c.failures
    local = catalog.read_header(str(paths[2]))
    from dataclasses import replace

    assert replace(c.header(2, "b3"), href=local.href) == local
    # The secret keys never reach the Collection; the endpoint does.
    assert "config" not in c.store_options
    assert c.store_options["endpoint"] == endpoint
    # Anonymous access to a private bucket is refused with a typed error.
    with pytest.raises(catalog.BuildError) as info:
        catalog.build_from_files(urls, progress=False, store_options={
            "endpoint": endpoint, "allow_http": True, "region": "us-east-1", "anonymous": True})
    assert {f.error for f in info.value.failures} == {"AccessDeniedError"}


def _table_inputs(tmp_path: Path) -> tuple[pa.Table, list[Path]]:
    files = []
    for i in range(3):
        for band in ("red", "nir"):
            p = tmp_path / f"t{i}_{band}.tif"
            write_cog(p, synthetic_scene(128, 128, 1, i), epsg=32633,
                      geotransform=(300000.0 + 2000 * i, 10, 0, 5000000.0, 0, -10))
            files.append(p)
    table = pa.table({
        "scene": ["t0", "t1", "t2"],
        "when": pa.array([dt.datetime(2024, m, 1) for m in (1, 2, 3)], pa.timestamp("ms")),
        "red_href": [str(files[0]), str(files[2]), str(files[4])],
        "nir_href": [str(files[1]), str(files[3]), str(files[5])],
        "label": pa.array([3, 1, 4], pa.int16()),
        "split": ["train", "val", "train"],
        "score": [0.5, None, 0.25],
    })
    return table, files


def test_table_duckdb_like_rows(tmp_path: Path) -> None:
    table, files = _table_inputs(tmp_path)
    c = catalog.build_from_table(table, name="tbl", bands={"red": "red_href", "nir": "nir_href"},
                                 id_column="scene", datetime_column="when", progress=False)
    assert c.ids == ["t0", "t1", "t2"]
    assert c.band_names == ("red", "nir")
    # User columns pass through untouched: same names, types and values.
    for col in ("label", "split", "score"):
        assert c.table.column(col).type == table.column(col).type
        assert c.table.column(col).to_pylist() == table.column(col).to_pylist()
    assert "red_href" not in c.table.column_names  # consumed into asset:red
    assert c.header(2, "nir").href == str(files[5])
    assert c.table.column("datetime")[1].as_py() == dt.datetime(2024, 2, 1, tzinfo=dt.UTC)


def test_table_from_parquet_path_and_errors(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    table, _ = _table_inputs(tmp_path)
    pq.write_table(table, tmp_path / "rows.parquet")
    c = catalog.build_from_table(tmp_path / "rows.parquet", bands={"red": "red_href"},
                                 id_column="scene", datetime_column="when", progress=False)
    assert len(c) == 3 and "nir_href" in c.table.column_names
    with pytest.raises(catalog.InvalidArgumentError, match="no column"):
        catalog.build_from_table(table, bands={"red": "nope"}, id_column="scene",
                                 datetime_column="when", progress=False)
    with pytest.raises(catalog.InvalidArgumentError, match="strings"):
        catalog.build_from_table(table, bands={"red": "label"}, id_column="scene",
                                 datetime_column="when", progress=False)
    clash = table.append_column("crs", pa.array(["x", "y", "z"]))
    with pytest.raises(catalog.InvalidArgumentError, match="rename"):
        catalog.build_from_table(clash, bands={"red": "red_href"}, id_column="scene",
                                 datetime_column="when", progress=False)
    ok = catalog.build_from_table(clash, bands={"red": "red_href"}, id_column="scene",
                                  datetime_column="when", rename={"crs": "source_crs"},
                                  progress=False)
    assert ok.table.column("source_crs").to_pylist() == ["x", "y", "z"]
    dupes = table.set_column(0, "scene", pa.array(["a", "a", "b"]))
    with pytest.raises(catalog.InvalidArgumentError, match="duplicate"):
        catalog.build_from_table(dupes, bands={"red": "red_href"}, id_column="scene",
                                 datetime_column="when", progress=False)


def test_table_stac_geoparquet_assets(tmp_path: Path) -> None:
    """stac-geoparquet rows: bands default to the GeoTIFF assets of the `assets` column."""
    _, files = _table_inputs(tmp_path)
    asset = pa.struct([("href", pa.string()), ("type", pa.string()),
                       ("roles", pa.list_(pa.string()))])
    assets = pa.array(
        [{"red": {"href": str(files[2 * i]), "type": "image/tiff; application=geotiff",
                  "roles": ["data"]},
          "nir": {"href": str(files[2 * i + 1]), "type": "image/tiff; application=geotiff",
                  "roles": ["data"]},
          "thumbnail": {"href": "https://example.invalid/t.jpg", "type": "image/jpeg",
                        "roles": ["thumbnail"]}} for i in range(3)],
        pa.struct([("red", asset), ("nir", asset), ("thumbnail", asset)]),
    )
    geoms = [shapely.box(10 + i, 40, 11 + i, 41) for i in range(3)]
    stac = pa.table({
        "id": ["a", "b", "c"],
        "datetime": pa.array([dt.datetime(2024, 6, i + 1, tzinfo=dt.UTC) for i in range(3)],
                             pa.timestamp("us", tz="UTC")),
        "geometry": pa.array(shapely.to_wkb(geoms).tolist(), pa.binary()),
        "eo:cloud_cover": [5.0, 50.0, 15.0],
        "assets": assets,
    })
    c = catalog.build_from_table(stac, name="sgp", progress=False)
    assert c.band_names == ("red", "nir")
    assert c.table.column("eo:cloud_cover").to_pylist() == [5.0, 50.0, 15.0]
    # The footprint from the table is kept (not recomputed from the raster).
    assert shapely.from_wkb(c.table.column("geometry")[2].as_py()).equals(geoms[2])
    assert len(c.subset(cloud_cover_lt=20)) == 2


def test_table_multiband_planar_south_up(tmp_path: Path) -> None:
    """AlphaEarth-like: many int8 bands in one band-interleaved, south-up file."""
    from catalog._registry import build, get_dataset

    entry = get_dataset("aef/v1-annual")
    rows = []
    for i in range(2):
        p = tmp_path / f"aef_{i}.tif"
        with rasterio.open(p, "w", driver="GTiff", width=256, height=256, count=64, dtype="int8",
                           crs="EPSG:32610", nodata=-128, tiled=True, blockxsize=128,
                           blockysize=128, interleave="band", compress="deflate",
                           transform=Affine(10, 0, 500000 + 2560 * i, 0, 10, 4000000)) as ds:
            ds.write(np.random.default_rng(i).integers(-127, 127, (64, 256, 256), dtype=np.int8))
        rows.append({"fid": f"f{i}", "year": 2023, "path": str(p), "crs": "EPSG:32610",
                     "geom": shapely.to_wkb(shapely.box(-123 + i, 36, -122 + i, 37)),
                     "utm_zone": "10N"})
    index = pa.Table.from_pylist(rows)
    import pyarrow.parquet as pq

    pq.write_table(index, tmp_path / "index.parquet")
    c = build("aef/v1-annual", table_url=str(tmp_path / "index.parquet"), progress=False)
    assert c.band_names == tuple(entry.table_bands)
    assert len(c.bands) == 64 and {b.asset for b in c.bands} == {"path"}
    h = c.header(0, "A63")
    assert h.samples == 64 and h.levels[0].planar_config == 2
    assert h.geotransform[5] > 0  # south-up kept as such
    assert c.table.column("epsg").to_pylist() == ["EPSG:32610"] * 2
    assert c.table.column("datetime")[0].as_py().year == 2023
    sub = build("aef/v1-annual", table_url=str(tmp_path / "index.parquet"),
                bands=["A00", "A05"], progress=False)
    assert sub.band_names == ("A00", "A05") and [b.sample for b in sub.bands] == [0, 5]
