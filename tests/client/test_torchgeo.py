"""FlightGeoDataset against TorchGeo's own RasterDataset over the same files."""

from __future__ import annotations

import pickle
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
