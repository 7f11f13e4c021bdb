"""PatchDataset: a map-style dataset over a patch Collection, one chip per row (rasterio oracle)."""

from __future__ import annotations

import math

import numpy as np
import pyproj
import pytest
import rasterio
import rasterio.features
import shapely
import torch
from rasterio.windows import Window as RioWindow
from torch.utils.data import DataLoader

import catalog
import flight_client
from tests.support.patches import patch_table, scene_collection

TO_UTM = pyproj.Transformer.from_crs("EPSG:4326", "EPSG:32633", always_xy=True)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, start_server):
    base = tmp_path_factory.mktemp("patch-dataset")
    scenes, paths = scene_collection(base / "data")
    patches = catalog.make_patches(scenes, patch_table(), crs="EPSG:32633", unmatched="drop",
                                   name="patches")
    patches.save(base / "root" / "patches.parquet")
    server = start_server(base / "root")
    return flight_client.connect(server.location), patches, paths


def test_len_getitem_and_pixels_equal_rasterio(served) -> None:
    client, patches, paths = served
    ds = flight_client.PatchDataset(client, "patches", label_field="label", chip_size=8)
    assert len(ds) == len(patches)
    geoms = shapely.from_wkb(patches.table.column("geometry").to_pylist())
    scene_ids = patches.table.column("scene_id").to_pylist()
    labels = patches.table.column("label").to_pylist()
    for i in (0, 5, len(ds) - 1, -1):
        sample = ds[i]
        row = i % len(ds)
        assert sample["id"] == patches.ids[row]
        assert int(sample["label"]) == labels[row]
        assert sample["image"].shape == (1, 8, 8)
        with rasterio.open(paths[scene_ids[row]]) as src:
            utm = shapely.transform(geoms[row], lambda c: np.column_stack(TO_UTM.transform(*c.T)))
            minx, miny, maxx, maxy = utm.bounds  # centred as the engine does: bounds' centre
            fc, fr = ~src.transform * ((minx + maxx) / 2, (miny + maxy) / 2)
            c, r = math.floor(fc - 3.5), math.floor(fr - 3.5)
            ref = src.read([1], window=RioWindow(c, r, 8, 8), boundless=True)
        np.testing.assert_array_equal(sample["image"].numpy(), ref)
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_dataloader_batches_cover_every_row_once_and_filter_splits(served) -> None:
    client, patches, _ = served
    train = flight_client.PatchDataset(client, "patches", label_field="label", chip_size=8,
                                       columns=["split"],
                                       filter={"where": [["split", "==", "train"]]})
    splits = patches.table.column("split").to_pylist()
    assert len(train) == splits.count("train")
    loader = DataLoader(train, batch_size=5, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    seen = []
    for batch in loader:
        assert batch["image"].shape[1:] == (1, 8, 8)
        assert set(batch["split"]) == {"train"}
        seen.extend(batch["id"])
    assert sorted(seen) == sorted(i for i, s in zip(patches.ids, splits, strict=True)
                                  if s == "train")
    # a batch with a repeated index (samplers with replacement) gives the sample twice
    twice = train.__getitems__([2, 2, 0])
    assert [s["id"] for s in twice] == [train.ids[2], train.ids[2], train.ids[0]]
    assert torch.equal(twice[0]["image"], twice[1]["image"])


def test_torchgeo_base_and_errors(served) -> None:
    client, _, _ = served
    ds = flight_client.PatchDataset(client, "patches", chip_size=4, is_image=False)
    assert ds[0]["mask"].shape == (4, 4)
    from torchgeo.datasets import NonGeoDataset  # a test dependency: TorchGeo's base

    assert isinstance(ds, NonGeoDataset)
    with pytest.raises(flight_client.InvalidArgumentError, match="no column 'nope'"):
        flight_client.PatchDataset(client, "patches", label_field="nope")
    with pytest.raises(flight_client.InvalidArgumentError, match="PatchDataset sets it"):
        flight_client.PatchDataset(client, "patches", time_series=True)



def test_chip_dataset_in_patch_mode_yields_every_row_once(served) -> None:
    client, patches, _ = served
    ds = flight_client.ChipDataset(client, "patches", patches=True, chip_size=8,
                                   columns=["label"], shuffle=True)
    samples = list(ds)
    assert sorted(s["id"] for s in samples) == sorted(patches.ids)
    labels = dict(zip(patches.ids, patches.table.column("label").to_pylist(), strict=True))
    assert all(int(s["label"]) == labels[s["id"]] for s in samples)
