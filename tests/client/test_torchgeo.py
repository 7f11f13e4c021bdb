"""FlightGeoDataset against TorchGeo's own RasterDataset over the same files."""

from __future__ import annotations

import pickle
import threading
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import rasterio
import torch
from affine import Affine
from pyproj import CRS, Transformer
from rasterio.enums import Resampling
from rasterio.warp import reproject
from torch.utils.data import DataLoader
from torchgeo.datasets import IntersectionDataset, RasterDataset, UnionDataset, stack_samples
from torchgeo.samplers import GridGeoSampler, RandomGeoSampler

import catalog
import flight_client as fc
from catalog.testing import synthetic_scene, write_cog
from flight_server import Server

ORIGINS = [(500000, 4100000), (503000, 4098000), (506000, 4101000)]


class Scenes(RasterDataset):
    """The incumbent over the same files, with nearest resampling as the comparison needs."""

    filename_glob = "scene*.tif"

    @property
    def resampling(self) -> Resampling:
        return Resampling.nearest


class Labels(RasterDataset):
    filename_glob = "labels*.tif"
    is_image = False


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Overlapping 2-band UTM scenes, a label raster, a Web Mercator scene, dated repeats."""
    base = tmp_path_factory.mktemp("torchgeo")
    utm, labels, mixed, series, root = (base / n for n in
                                        ("utm", "labels", "mixed", "series", "root"))
    for d in (utm, labels, mixed, series, root):
        d.mkdir()
    files = []
    for i, (x0, y0) in enumerate(ORIGINS):
        data = synthetic_scene(512, 512, 2, i)
        data[:, :16, :] = 0  # nodata rows: the next scene shows through
        files.append(utm / f"scene{i}.tif")
        write_cog(files[-1], data, nodata=0, epsg=32633, tile=256,
                  geotransform=(x0, 10, 0, y0, 0, -10))
    catalog.build_from_files([str(f) for f in files], name="utm", bands=["red", "nir"],
                             progress=False).save(root / "utm.parquet")
    # A label raster (classes 1..5), indexed with a per-scene column for label_field.
    classes = (synthetic_scene(600, 700, 1, 9)[0] % 5 + 1).astype(np.uint8)[None]
    write_cog(labels / "labels0.tif", classes, epsg=32633, tile=256,
              geotransform=(500500, 10, 0, 4100500, 0, -10))
    label_col = catalog.build_from_files([str(labels / "labels0.tif")], name="labels",
                                         bands=["class"], progress=False)
    table = label_col.table.append_column("region", pa.array(["north"]))
    catalog.Collection(table).save(root / "labels.parquet")
    # A scene in Web Mercator next to a UTM one: reprojected, not dropped.
    write_cog(mixed / "scene0.tif", synthetic_scene(512, 512, 1, 0), nodata=0, epsg=32633,
              tile=256, geotransform=(500000, 10, 0, 4100000, 0, -10))
    x0, y0 = Transformer.from_crs(32633, 3857, always_xy=True).transform(502000, 4099000)
    write_cog(mixed / "scene1.tif", synthetic_scene(512, 512, 1, 1), nodata=0, epsg=3857,
              tile=256, geotransform=(x0, 12.5, 0, y0, 0, -12.5))
    catalog.build_from_files(sorted(str(f) for f in mixed.iterdir()), name="mixed",
                             progress=False).save(root / "mixed.parquet")
    # Three dates over the same place, written in an order unlike their dates.
    dates = {"t1": "2024-03-01", "t0": "2024-01-01", "t2": "2024-05-01"}
    for k, sid in enumerate(dates):
        write_cog(series / f"{sid}.tif", synthetic_scene(256, 256, 1, 20 + k), nodata=0,
                  epsg=32633, tile=256, geotransform=(500000, 10, 0, 4100000, 0, -10))
    catalog.build_from_files([str(series / f"{s}.tif") for s in dates], name="series",
                             datetime=dates, progress=False).save(root / "series.parquet")
    client = fc.connect(root=root)
    yield {"root": root, "utm": utm, "labels": labels, "mixed": mixed, "client": client}
    client.close()


def test_index_follows_the_torchgeo_contract(world) -> None:
    ours = fc.FlightGeoDataset(world["client"], "utm")
    ref = Scenes(paths=str(world["utm"]))
    assert len(ours) == len(ref) == 3
    assert isinstance(ours.index.index, type(ref.index.index))
    assert ours.index.index.name == "datetime" and ours.index.index.closed == "both"
    assert CRS.from_user_input(ours.crs) == CRS.from_user_input(ref.crs)
    assert ours.res == ref.res == (10.0, 10.0)
    for a, b in zip(ours.bounds[:2], ref.bounds[:2], strict=True):
        assert (a.start, a.stop, a.step) == pytest.approx((b.start, b.stop, b.step))
    assert list(ours.index["id"]) == ["scene0", "scene1", "scene2"]


def test_random_samples_equal_rasterdataset(world) -> None:
    ours = fc.FlightGeoDataset(world["client"], "utm")
    ref = Scenes(paths=str(world["utm"]))
    for query in RandomGeoSampler(ref, size=64, length=25):
        a, b = ref[query], ours[query]
        assert b["image"].dtype == torch.float32 and b["image"].shape == a["image"].shape
        assert torch.equal(a["image"], b["image"]), query
        assert b["bounds"] == query and b["crs"] == ours.crs
        x, y, _ = ours._disambiguate_slice(query)
        assert b["transform"].tolist() == [x.start, 10.0, 0.0, y.stop, 0.0, -10.0]
        assert b["valid"].shape == b["image"].shape[1:]


def test_grid_sampler_dataloader_workers_and_remote_server(world) -> None:
    ref = Scenes(paths=str(world["utm"]))
    with Server(str(world["root"]), port=0) as srv:
        ours = fc.FlightGeoDataset(srv.location, "utm", bands=["nir"])
        sampler = GridGeoSampler(ours, size=128, stride=128)  # chips inside each scene
        queries = list(sampler)
        assert len(queries) == 3 * 16
        loader = DataLoader(ours, sampler=sampler, batch_size=4, num_workers=2,
                            collate_fn=stack_samples)
        got = torch.cat([batch["image"] for batch in loader])
    assert got.shape == (len(queries), 1, 128, 128)
    for k, query in enumerate(queries):
        assert torch.equal(got[k], ref[query]["image"][1:]), query


def test_dataset_pickles_for_spawned_workers(world) -> None:
    ours = fc.FlightGeoDataset(world["client"], "utm")
    query = next(iter(RandomGeoSampler(ours, size=32, length=1)))
    again = pickle.loads(pickle.dumps(ours))
    assert torch.equal(again[query]["image"], ours[query]["image"])


def test_intersection_and_union_with_plain_rasterdatasets(world) -> None:
    ours = fc.FlightGeoDataset(world["client"], "utm")
    labels = Labels(paths=str(world["labels"]))
    both = IntersectionDataset(ours, labels)
    assert len(both) >= 3
    samples = [both[q] for q in RandomGeoSampler(both, size=48, length=6)]
    for s in samples:
        assert s["image"].shape == (2, 48, 48) and s["mask"].shape == (48, 48)
        assert s["mask"].dtype == torch.long and int(s["mask"].min()) >= 1
    batch = stack_samples(samples)
    assert batch["image"].shape == (6, 2, 48, 48) and batch["mask"].shape == (6, 48, 48)

    other = Scenes(paths=str(world["mixed"]), crs=ours.crs, res=ours.res)
    union = UnionDataset(ours, other)
    assert len(union) == 3 + 2
    query = next(iter(GridGeoSampler(union, size=64, stride=640)))
    assert union[query]["image"].shape[-2:] == (64, 64)


def test_label_dataset_and_label_field(world) -> None:
    ours = fc.FlightGeoDataset(world["client"], "labels", is_image=False, label_field="region")
    ref = Labels(paths=str(world["labels"]))
    for query in RandomGeoSampler(ref, size=40, length=8):
        a, b = ref[query], ours[query]
        assert b["mask"].dtype == torch.long and torch.equal(a["mask"], b["mask"])
        assert b["label"] == "north" and "image" not in b
    with pytest.raises(fc.InvalidArgumentError, match="label_field"):
        fc.FlightGeoDataset(world["client"], "labels", label_field="nope")


def test_time_series_stacks_scenes_by_date(world) -> None:
    ours = fc.FlightGeoDataset(world["client"], "series", time_series=True)
    mosaic = fc.FlightGeoDataset(world["client"], "series")
    query = next(iter(GridGeoSampler(ours, size=64, stride=64)))
    sample = ours[query]
    assert sample["image"].shape == (3, 1, 64, 64)
    by_id = {}
    for sid in ("t0", "t1", "t2"):
        single = fc.FlightGeoDataset(world["client"], "series", filter={"ids": [sid]})
        by_id[sid] = single[query]["image"]
    for k, sid in enumerate(("t0", "t1", "t2")):  # date order, not index order
        assert torch.equal(sample["image"][k], by_id[sid])
    assert torch.equal(mosaic[query]["image"], by_id["t1"]), "a mosaic takes the first scene"
    # The time slice of a query selects scenes.
    x, y, _ = ours._disambiguate_slice(query)
    import pandas as pd

    two = ours[x, y, slice(pd.Timestamp("2024-02-01"), pd.Timestamp("2024-06-01"))]
    assert two["image"].shape == (2, 1, 64, 64)
    assert torch.equal(two["image"][0], by_id["t1"])


def test_scenes_in_other_crs_are_reprojected(world) -> None:
    ours = fc.FlightGeoDataset(world["client"], "mixed")
    ref = Scenes(paths=str(world["mixed"]))
    assert len(ours) == 2 and ours.res == (10.0, 10.0)
    files = sorted(str(f) for f in world["mixed"].iterdir())
    for query in RandomGeoSampler(ref, size=64, length=15):
        got = ours[query]["image"]
        assert got.shape == ref[query]["image"].shape
        # The oracle: each file warped once by GDAL onto the query grid, first valid wins.
        # (RasterDataset itself warps twice, to a default grid then to the query's, so it
        # differs from a single warp near the Web Mercator scene.)
        x, y, _ = ours._disambiguate_slice(query)
        h, w = got.shape[-2:]
        expected = np.zeros((h, w), np.float32)
        for path in files:
            one = np.zeros((h, w), np.float32)
            with rasterio.open(path) as src:
                reproject(rasterio.band(src, 1), one, dst_transform=Affine(10, 0, x.start, 0,
                          -10, y.stop), dst_crs="EPSG:32633", resampling=Resampling.nearest,
                          src_nodata=0, dst_nodata=0)
            fill = (expected == 0) & (one != 0)
            expected[fill] = one[fill]
        assert torch.equal(got[0], torch.from_numpy(expected)), query


def test_crs_and_res_can_be_changed_like_any_geodataset(world) -> None:
    ours = fc.FlightGeoDataset(world["client"], "series", time_series=True)
    ours.crs = CRS.from_epsg(3857)  # what IntersectionDataset does to its second dataset
    ours.res = 20.0
    assert ours.crs == CRS.from_epsg(3857) and ours.res == (20.0, 20.0)
    query = next(iter(RandomGeoSampler(ours, size=32, length=1)))
    sample = ours[query]
    assert sample["image"].shape == (3, 1, 32, 32) and bool(sample["valid"].any())
    assert sample["crs"] == CRS.from_epsg(3857)


def test_errors_are_clear(world) -> None:
    with pytest.raises(fc.CollectionNotFoundError, match="nope"):
        fc.FlightGeoDataset(world["client"], "nope")
    ours = fc.FlightGeoDataset(world["client"], "utm")
    with pytest.raises(IndexError, match="not found in index"):
        ours[0:100, 0:100]
    with pytest.raises(fc.InvalidArgumentError, match="no scene matching"):
        fc.FlightGeoDataset(world["client"], "utm", filter={"ids": ["missing"]})


# -- batches: __getitems__ and the prefetching loader ----------------------------------------


def _assert_same_sample(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        if isinstance(value, torch.Tensor):
            assert value.dtype == b[key].dtype and torch.equal(value, b[key]), key
        else:
            assert value == b[key], key


def _streams(client: fc.Client) -> int:
    return int(client.stats()["streams"])


def _series_queries(ds: fc.FlightGeoDataset) -> list[Any]:
    """Queries over the dated stack: whole spans and a spring slice, at three places."""
    import pandas as pd

    spring = slice(pd.Timestamp("2024-02-01"), pd.Timestamp("2024-06-01"))
    grid = list(GridGeoSampler(ds, size=32, stride=96))
    (x0, y0, t), (x1, y1, _), (x2, y2, _) = grid[0], grid[1], grid[5]
    return [(x0, y0, spring), (x1, y1, t), (x2, y2, spring), (x1, y1, spring), (x0, y0, t)]


@pytest.mark.parametrize("time_series", [False, True])
def test_getitems_equals_getitem_over_time_slices(world: dict[str, Any], time_series: bool) -> None:
    ds = fc.FlightGeoDataset(world["client"], "series", time_series=time_series)
    queries = _series_queries(ds)
    before = _streams(world["client"])
    batch = ds.__getitems__(queries)
    # Each query names its own scenes (geometry_scenes): one request, but for time series
    # one per number of steps (the spring slices, the whole spans).
    assert _streams(world["client"]) - before == (2 if time_series else 1)
    for query, sample in zip(queries, batch, strict=True):
        _assert_same_sample(ds[query], sample)
    steps = [s["image"].shape[0] for s in batch]
    assert steps == ([2, 3, 2, 2, 3] if time_series else [1] * 5)


def test_getitems_equals_getitem_over_mixed_scenes_and_grids(world: dict[str, Any]) -> None:
    ours = fc.FlightGeoDataset(world["client"], "utm")
    queries: list[Any] = list(RandomGeoSampler(ours, size=48, length=7))
    t = queries[0][2]
    queries.append((slice(503500.0, 503980.0), slice(4097000.0, 4097480.0), t))  # scenes 0, 1
    queries += list(RandomGeoSampler(ours, size=40, length=3))  # another chip size
    for x, y, t in list(RandomGeoSampler(ours, size=64, length=3)):  # 20 m instead of 10 m
        queries.append((slice(x.start, x.stop, 20.0), slice(y.start, y.stop, 20.0), t))
    before = _streams(world["client"])
    batch = ours.__getitems__(queries)
    assert _streams(world["client"]) - before == 3  # one request per grid
    assert [tuple(s["image"].shape) for s in batch] == (
        [(2, 48, 48)] * 8 + [(2, 40, 40)] * 3 + [(2, 32, 32)] * 3
    )
    assert list(ours._scenes.cx[503500:503980, 4097000:4097480]["id"]) == ["scene0", "scene1"]
    for query, sample in zip(queries, batch, strict=True):
        _assert_same_sample(ours[query], sample)
    ref = Scenes(paths=str(world["utm"]))
    for query, sample in zip(queries[:11], batch[:11], strict=True):
        assert torch.equal(sample["image"], ref[query]["image"]), query


def test_getitems_labels_transforms_and_a_query_without_scenes(world: dict[str, Any]) -> None:
    def transform(sample: dict[str, Any]) -> dict[str, Any]:
        return {**sample, "mask": sample["mask"] * 10, "seen": True}

    ds = fc.FlightGeoDataset(world["client"], "labels", is_image=False, label_field="region",
                             transforms=transform)
    queries = list(RandomGeoSampler(ds, size=40, length=5))
    batch = ds.__getitems__(queries)
    for query, sample in zip(queries, batch, strict=True):
        _assert_same_sample(ds[query], sample)
        assert sample["seen"] and sample["label"] == "north"
        assert int(sample["mask"].min()) >= 10
    assert ds.__getitems__([]) == []
    (x, y, t), nowhere = queries[0], (slice(0, 100), slice(0, 100))
    with pytest.raises(IndexError, match="not found in index"):
        ds.__getitems__([(x, y, t), nowhere])
    import pandas as pd

    instant = pd.Timestamp("2024-01-01")
    with pytest.raises(IndexError, match="not found in index"):  # an empty time slice
        ds[x, y, slice(instant, instant)]


def test_dataloader_batch_is_one_request(world: dict[str, Any]) -> None:
    ours = fc.FlightGeoDataset(world["client"], "utm")
    queries = list(RandomGeoSampler(ours, size=64, length=12))
    before = _streams(world["client"])
    loader = DataLoader(ours, sampler=queries, batch_size=4, collate_fn=stack_samples)
    batches = list(loader)
    assert _streams(world["client"]) - before == 3
    images = torch.cat([b["image"] for b in batches])
    assert [q for b in batches for q in b["bounds"]] == queries
    for k, query in enumerate(queries):
        assert torch.equal(images[k], ours[query]["image"]), query


def _prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("cogflight-geo-prefetch")]


def test_loader_prefetches_the_same_batches_in_order(world: dict[str, Any]) -> None:
    ours = fc.FlightGeoDataset(world["client"], "utm", bands=["nir"])
    queries = list(RandomGeoSampler(ours, size=48, length=10))
    expected = list(DataLoader(ours, sampler=queries, batch_size=4, collate_fn=stack_samples))
    for prefetch in (0, 1, 3):
        batches = ours.loader(queries, batch_size=4, prefetch=prefetch)
        assert len(batches) == 3
        before = _streams(world["client"])
        for _ in range(2):  # each iteration is an epoch over the sampler
            got = list(batches)
            assert len(got) == 3 and [len(b["bounds"]) for b in got] == [4, 4, 2]
            for a, b in zip(expected, got, strict=True):
                assert a["bounds"] == b["bounds"] and torch.equal(a["image"], b["image"])
                assert torch.equal(a["valid"], b["valid"])
        assert _streams(world["client"]) - before == 6
        assert not _prefetch_threads()
    assert len(ours.loader(queries, batch_size=4, drop_last=True)) == 2
    # For Lightning or pin_memory: a DataLoader over the batches, without re-batching.
    wrapped = list(DataLoader(ours.loader(queries, batch_size=4), batch_size=None))
    assert len(wrapped) == 3  # (its default_convert turns the bounds tuples into lists)
    for a, b in zip(expected, wrapped, strict=True):
        assert [list(q) for q in a["bounds"]] == b["bounds"]
        assert torch.equal(a["image"], b["image"])
    assert not _prefetch_threads()


def test_loader_threads_end_when_abandoned_or_failing(world: dict[str, Any]) -> None:
    import gc

    ours = fc.FlightGeoDataset(world["client"], "utm", bands=["nir"])
    queries = list(RandomGeoSampler(ours, size=32, length=40))
    it = iter(ours.loader(queries, batch_size=2, prefetch=3))
    first = next(it)
    assert first["bounds"] == queries[:2]
    assert _prefetch_threads(), "the next batches are fetched in the background"
    it.close()  # the rest is never asked for: requests in flight end, nothing more is sent
    assert not _prefetch_threads()
    it = iter(ours.loader(queries, batch_size=2, prefetch=2))
    next(it)
    del it
    gc.collect()
    assert not _prefetch_threads()
    nowhere = (slice(0, 100), slice(0, 100))
    it = iter(ours.loader([*queries[:4], nowhere], batch_size=2, prefetch=2))
    assert next(it)["bounds"] == queries[:2]
    with pytest.raises(IndexError, match="not found in index"):
        list(it)
    assert not _prefetch_threads()
    with pytest.raises(fc.InvalidArgumentError, match="prefetch"):
        ours.loader(queries, batch_size=2, prefetch=-1)


def test_loader_in_dataloader_workers_deals_batches_round_robin(world: dict[str, Any]) -> None:
    with Server(str(world["root"]), port=0) as srv:
        ours = fc.FlightGeoDataset(srv.location, "utm", bands=["nir"])
        queries = list(GridGeoSampler(ours, size=128, stride=256))
        expected = ours.__getitems__(queries)
        got = list(DataLoader(ours.loader(queries, batch_size=3), batch_size=None,
                              num_workers=2))
        ours.client.close()
    assert len(got) == -(-len(queries) // 3)
    images = torch.cat([b["image"] for b in got])
    assert images.shape[0] == len(queries)
    for k, sample in enumerate(expected):
        assert torch.equal(images[k], sample["image"])
