"""flight_client: connect (remote and embedded), queries, errors, zero-copy tensors, preview."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from affine import Affine
from pyarrow import flight

import catalog
import flight_client as fc
from catalog.testing import synthetic_scene, write_cog
from flight_server import Server
from tests.support.flight_fixtures import GT, lonlat_box


@pytest.fixture(scope="module")
def root(flight_root) -> Path:
    return flight_root.path


@pytest.fixture(scope="module")
def remote(root: Path, start_server):
    return start_server(root, shards=2)


def test_remote_client_metadata(remote, root: Path) -> None:
    with fc.connect(remote.location) as client:
        assert not client.embedded
        assert client.health()["status"] == "ok"
        assert [c["name"] for c in client.collections()] == ["alpha", "beta"]
        assert client.describe("alpha")["scenes"] == 4
        index = client.index("alpha")
        assert index.equals(catalog.load(root / "alpha.parquet").table)
        info = client.plan("alpha", geometries=[lonlat_box(110, 10, 50, 50)], chip_size=32,
                           shards=3)
        assert len(info.endpoints) == 3
        batches = [b for ep in info.endpoints for b in client.read_endpoint(ep)]
        assert sum(b.num_rows for b in batches) == info.total_records == 4


def test_index_filtered_by_the_server(remote, root: Path) -> None:
    client = fc.connect(remote.location)
    full = catalog.load(root / "alpha.parquet").table
    some = client.index("alpha", filter={"ids": ("s1", "s3")})
    assert some.equals(full.take([1, 3])) and some.schema.metadata == full.schema.metadata
    later = client.index("alpha", filter={"date_range": ["2024-03-01", None]})
    assert later.column("id").to_pylist() == ["s2", "s3"]
    none = client.index("alpha", filter={"ids": ["missing"]})
    assert none.num_rows == 0 and none.schema.equals(full.schema)
    with pytest.raises(fc.InvalidArgumentError, match="filter: unknown key"):
        client.index("alpha", filter={"cloud": 1})
    with pytest.raises(fc.CollectionNotFoundError):
        client.index("gamma", filter={"ids": ["s1"]})
    raw = flight.connect(remote.location)  # the wire form: the count is the selection's
    query = {"v": 1, "collection": "alpha", "index": True, "filter": {"ids": ["s0"]}}
    info = raw.get_flight_info(flight.FlightDescriptor.for_command(json.dumps(query)))
    assert info.total_records == 1
    assert raw.do_get(info.endpoints[0].ticket).read_all().num_rows == 1


def test_embedded_mode(root: Path, tmp_path: Path) -> None:
    with fc.connect(root=root) as client:
        assert client.embedded and client.location.startswith("grpc+unix://")
        sock = client.location.removeprefix("grpc+unix://")
        assert os.path.exists(sock)
        rows = sum(b.num_rows for b in client.chips(
            "alpha", geometries=[lonlat_box(110, 10, 50, 50)], chip_size=32))
        assert rows == 4
    with pytest.raises(fc.CogflightError, match="closed"):
        client.index("alpha")
    cwd = os.getcwd()
    try:  # default root: ./collections
        os.chdir(root.parent)
        os.symlink(root, root.parent / "collections")
        with fc.connect() as client:
            assert [c["name"] for c in client.collections()] == ["alpha", "beta"]
        os.chdir(tmp_path)
        with pytest.raises(fc.CogflightError, match="no Collections directory"):
            fc.connect()
    finally:
        os.chdir(cwd)


def test_errors_are_translated(remote) -> None:
    client = fc.connect(remote.location)
    with pytest.raises(fc.InvalidArgumentError, match=r"^bands: 'blue' not in Collection") as info:
        list(client.chips("alpha", geometries=[lonlat_box(0, 0, 8, 8)], bands=["blue"]))
    assert "Traceback" not in str(info.value) and "gRPC" not in str(info.value)
    with pytest.raises(fc.CollectionNotFoundError, match="no Collection 'gamma'"):
        client.index("gamma")
    with pytest.raises(fc.InvalidArgumentError, match="geometries"):
        list(client.chips("alpha", geometries=object()))
    down = fc.connect("grpc://127.0.0.1:9")
    with pytest.raises(fc.UnavailableError):
        down.health()


def test_client_is_thread_safe_and_picklable(remote) -> None:
    import pickle
    import threading

    client = fc.connect(remote.location)
    counts: list[int] = []

    def work() -> None:
        counts.append(sum(b.num_rows for b in client.chips(
            "alpha", geometries=[lonlat_box(110, 10, 40, 40)], chip_size=16)))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counts == [4] * 8
    clone = pickle.loads(pickle.dumps(client))
    assert clone.location == client.location and clone.health()["status"] == "ok"


DTYPES = ["uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64", "float16",
          "float32", "float64"]


@pytest.fixture(scope="module")
def dtype_server(tmp_path_factory: pytest.TempPathFactory):
    import rasterio

    base = tmp_path_factory.mktemp("dtypes")
    (base / "root").mkdir()
    for d in DTYPES:
        p = base / f"{d}.tif"
        data = (synthetic_scene(256, 256, 2, 1) % 100).astype(d)
        if d == "float16":
            write_cog(p, data.astype(np.float32), geotransform=GT, epsg=32633, overviews=0)
            import tifffile

            tifffile.imwrite(p, data.transpose(1, 2, 0), tile=(64, 64), photometric="minisblack",
                             planarconfig="contig",
                             extratags=[(33550, "d", 3, (10.0, 10.0, 0.0), True),
                                        (33922, "d", 6, (0, 0, 0, GT[0], GT[3], 0), True),
                                        (34735, "H", 16, (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1,
                                                          1, 3072, 0, 1, 32633), True)])
        else:
            with rasterio.open(p, "w", driver="GTiff", width=256, height=256, count=2, dtype=d,
                               crs="EPSG:32633", transform=Affine(10, 0, GT[0], 0, -10, GT[3]),
                               tiled=True, blockxsize=64, blockysize=64) as ds:
                ds.write(data)
        catalog.build_from_files([p], name=d, progress=False).save(base / "root" / f"{d}.parquet")
    with Server(str(base / "root"), port=0) as srv:
        yield srv


@pytest.mark.parametrize("dtype", DTYPES)
def test_to_torch_is_zero_copy_for_every_dtype(dtype_server, dtype: str) -> None:
    """Batches of a few KiB and more arrive aligned (the server pads app_metadata)."""
    client = fc.connect(dtype_server.location)
    (rb,) = list(client.chips(dtype, geometries=[lonlat_box(5, 5, 120, 100)], batch_rows=10))
    before = fc.stats()
    t = fc.to_torch(rb)
    chip, valid = t["chip"], t["valid"]
    assert chip.dtype == getattr(torch, dtype) and tuple(chip.shape) == (1, 2, 100, 120)
    values = rb.column("chip").storage.values
    buf = values.buffers()[1]
    start = buf.address + values.offset * np.dtype(dtype).itemsize
    assert start <= chip.data_ptr() < buf.address + buf.size  # inside the received buffer
    vbuf = rb.column("valid").storage.values.buffers()[1]
    assert vbuf.address <= valid.data_ptr() < vbuf.address + vbuf.size
    assert valid.dtype == torch.bool and bool(valid.all())
    after = fc.stats()
    assert after["zero_copy"] - before["zero_copy"] == 2
    assert after["realigned"] == before["realigned"]
    np.testing.assert_array_equal(chip.numpy(), rb.column("chip").to_numpy_ndarray())


@pytest.mark.parametrize(("dtype", "cast", "expected"), [
    ("uint16", "widen", torch.int32), ("uint32", "widen", torch.int64),
    ("uint16", "float32", torch.float32), ("uint8", "widen", torch.uint8),
])
def test_unsigned_casts_are_explicit_copies(dtype_server, dtype: str, cast: str,
                                            expected: torch.dtype) -> None:
    client = fc.connect(dtype_server.location)
    (rb,) = list(client.chips(dtype, geometries=[lonlat_box(5, 5, 20, 20)]))
    before = fc.stats()["cast_copies"]
    t = fc.to_torch(rb, unsigned=cast)
    assert t["chip"].dtype == expected
    copied = fc.stats()["cast_copies"] - before
    assert copied == (0 if dtype == "uint8" else 1)
    np.testing.assert_array_equal(t["chip"].numpy().astype(np.float64),
                                  rb.column("chip").to_numpy_ndarray().astype(np.float64))
    with pytest.raises(fc.InvalidArgumentError, match="unsigned"):
        fc.to_torch(rb, unsigned="maybe")


def test_every_batch_of_every_stream_is_aligned_and_zero_copy(dtype_server) -> None:
    """120 streams of mixed dtypes, chip shapes and batch sizes: every chip and valid buffer
    arrives aligned for its type, to_torch never copies, and each batch was read either in
    place or realigned once by the IPC reader (a message gRPC handed over unaligned)."""
    import random

    rng = random.Random(13)
    client = fc.connect(dtype_server.location)
    before = fc.stats()
    batches = 0
    for s in range(120):
        dtype = DTYPES[s % len(DTYPES)]
        w, h = rng.randint(1, 60), rng.randint(1, 60)
        geoms = [lonlat_box(rng.randint(0, 150), rng.randint(0, 150), w, h)
                 for _ in range(rng.randint(1, 5))]
        for rb in client.chips(dtype, geometries=geoms, batch_rows=rng.randint(1, 4)):
            batches += 1
            for name in ("chip", "valid"):
                values = rb.column(name).storage.values
                item = values.type.bit_width // 8
                assert (values.buffers()[1].address + values.offset * item) % item == 0
            t = fc.to_torch(rb)
            assert t["chip"].data_ptr() % t["chip"].element_size() == 0
    after = fc.stats()
    assert batches >= 150
    assert after["realigned"] == before["realigned"]
    assert after["zero_copy"] - before["zero_copy"] == 2 * batches
    read = {k: after[k] - before[k] for k in ("received_in_place", "aligned_on_read")}
    assert sum(read.values()) == batches, read


def test_misaligned_buffers_are_realigned_and_counted() -> None:
    raw = np.arange(2 * 3 * 4 * 4 + 1, dtype=np.uint16).view(np.uint8)[1:-1]  # odd address
    values = pa.py_buffer(raw.tobytes())
    storage = pa.Array.from_buffers(pa.uint16(), 96, [None, values])
    odd = pa.Array.from_buffers(pa.uint16(), 95, [None, pa.py_buffer(b"\x00" + raw.tobytes())],
                                offset=0)
    del odd
    mis = pa.py_buffer(b"\x00" + values.to_pybytes())
    arr = pa.Array.from_buffers(pa.uint16(), 96, [None, mis.slice(1)])
    assert arr.buffers()[1].address % 2 == 1
    ttype = pa.fixed_shape_tensor(pa.uint16(), [2, 4, 4])
    chips = pa.ExtensionArray.from_storage(ttype, pa.FixedSizeListArray.from_arrays(arr, 32))
    valid_t = pa.fixed_shape_tensor(pa.uint8(), [4, 4])
    valid = pa.ExtensionArray.from_storage(valid_t, pa.FixedSizeListArray.from_arrays(
        pa.array(np.ones(48, np.uint8)), 16))
    rb = pa.RecordBatch.from_arrays([chips, valid], names=["chip", "valid"])
    before = fc.stats()["realigned"]
    t = fc.to_torch(rb)
    assert fc.stats()["realigned"] == before + 1
    np.testing.assert_array_equal(t["chip"].numpy().ravel(),
                                  np.frombuffer(values.to_pybytes(), np.uint16))
    assert storage.buffers()[1].address % 2 == 0


def test_metadata_columns(remote) -> None:
    client = fc.connect(remote.location)
    rb = pa.Table.from_batches(list(client.chips(  # batches ramp up: 1 chip, then 2...
        "alpha", geometries=[lonlat_box(110, 10, 40, 40)], chip_size=16,
        filter={"ids": ["s0", "s2"]})))
    t = fc.to_torch(rb)
    assert t["id"] == ["s0", "s2"]
    assert t["datetime"][1] == "2024-03-01T00:00:00+00:00"
    assert t["geometry_index"].tolist() == [0, 0]
    assert t["transform"].shape == (2, 6) and t["bounds"].shape == (2, 4)
    assert t["crs"] == ["EPSG:32633"] * 2


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="no CUDA GPU on this machine: pinned memory and GPU transfer skipped")
def test_pinned_transfer_to_gpu(remote) -> None:
    client = fc.connect(remote.location)
    rb = pa.Table.from_batches(list(client.chips(
        "alpha", geometries=[lonlat_box(110, 10, 40, 40)], chip_size=16)))
    t = fc.to_torch(rb, device="cuda", pin_memory=True)
    assert t["chip"].is_cuda and t["valid"].is_cuda
    np.testing.assert_array_equal(t["chip"].cpu().numpy(),
                                  rb.column("chip").combine_chunks().to_numpy_ndarray())


def test_device_cpu_and_unpinned(remote) -> None:
    client = fc.connect(remote.location)
    rb = pa.Table.from_batches(list(client.chips(
        "alpha", geometries=[lonlat_box(110, 10, 40, 40)], chip_size=16)))
    t = fc.to_torch(rb, device="cpu")
    assert t["chip"].device.type == "cpu" and t["chip"].shape == (4, 2, 16, 16)


def test_query_geometry_forms() -> None:
    import shapely

    q = fc.build_query("c", geometries=[(1.0, 2.0), (3, 4)], chip_size=8)
    assert q["geometries"] == {"geojson": [{"type": "Point", "coordinates": [1.0, 2.0]},
                                           {"type": "Point", "coordinates": [3.0, 4.0]}],
                               "crs": "EPSG:4326"}
    assert fc.build_query("c", geometries=(1, 2))["geometries"]["geojson"][0]["type"] == "Point"
    assert fc.build_query("c", geometries=(0, 0, 1, 1))["geometries"]["bbox"] == [0, 0, 1, 1]
    assert fc.build_query("c", geometries=np.array([[0, 0, 1, 1], [1, 1, 2, 2]]))[
        "geometries"]["bbox"] == [[0, 0, 1, 1], [1, 1, 2, 2]]
    pts = fc.build_query("c", geometries=[(np.float32(1.5), np.int64(2))])["geometries"]
    assert pts["geojson"] == [{"type": "Point", "coordinates": [1.5, 2.0]}]
    wkb = fc.build_query("c", geometries=[shapely.box(0, 0, 1, 1)], geometry_crs="EPSG:32633")
    assert list(wkb["geometries"]) == ["wkb_base64", "crs"]
    with pytest.raises(fc.InvalidArgumentError, match="geometries: expected"):
        fc.build_query("c", geometries=[object()])
    with pytest.raises(fc.InvalidArgumentError, match="no geometries"):
        fc.build_query("c", geometries=[])


def test_random_points_are_chip_centres(remote, root: Path) -> None:
    client = fc.connect(remote.location)
    points = fc.random_points(client.index("alpha"), size=64, count=12, seed=1)
    batch = pa.Table.from_batches(list(client.chips("alpha", geometries=points, chip_size=64)))
    t = fc.to_torch(batch)
    assert t["chip"].shape[1:] == (2, 64, 64)
    whole = {int(g) for g, v in zip(t["geometry_index"], t["valid"], strict=True) if v.all()}
    assert whole == set(range(12)), "each chip lies wholly inside the scene it was drawn in"


def test_random_points_and_grid(root: Path) -> None:
    index = catalog.load(root / "alpha.parquet").table
    pts = fc.random_points(index, size=64, count=50, seed=3)
    assert pts == fc.random_points(index, size=64, count=50, seed=3)
    assert pts != fc.random_points(index, size=64, count=50, seed=4)
    from pyproj import Transformer

    t = Transformer.from_crs("EPSG:4326", "EPSG:32633", always_xy=True)
    for lon, lat in pts:  # whole chip inside one of the scenes (x from 500000 to 506120)
        x, y = t.transform(lon, lat)
        assert GT[0] + 320 <= x <= GT[0] + 1000 + 5120 - 320
        assert GT[3] - 5120 + 320 <= y <= GT[3] - 320
    boxes = fc.grid_boxes((0, 0, 100, 50), size=30, stride=20)
    assert boxes[0] == (0, 20, 30, 50) and boxes[-1] == (70, 0, 100, 30)
    xs = {b[0] for b in boxes}
    assert xs == {0, 20, 40, 60, 70}
    with pytest.raises(fc.InvalidArgumentError):
        fc.grid_boxes((0, 0, 1, 1), size=0)


def test_preview_cli(root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import imagecodecs

    from cogflight._cli import main

    out = tmp_path / "sheet.png"
    code = main(["-q", "preview", "alpha", "--root", str(root), "--bbox",
                 ",".join(map(str, lonlat_box(110, 10, 64, 64))), "--bands", "red,nir",
                 "--chip-size", "64", "--out", str(out)])
    assert code == 0 and "wrote 4 chips" in capsys.readouterr().out
    img = imagecodecs.png_decode(out.read_bytes())
    assert img.shape == (2 * 66 + 2, 2 * 66 + 2, 3) and img.std() > 10
