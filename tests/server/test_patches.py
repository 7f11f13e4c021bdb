"""Patch Collections: one chip per row, from its own geometry and assets (rasterio as oracle)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyproj
import pytest
import rasterio
import rasterio.features
import shapely
from rasterio.windows import Window as RioWindow

import catalog
import flight_client
from flight_server import ChipEngine, ChipRequest, InvalidArgumentError
from tests.support.patches import GT, SHIFT, patch_table, scene_collection

TO_UTM = pyproj.Transformer.from_crs("EPSG:4326", "EPSG:32633", always_xy=True)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> tuple[catalog.Collection, dict[str, Path]]:
    return scene_collection(tmp_path_factory.mktemp("patch-scenes"))


def _expected_rows(table: pa.Table) -> list[tuple[str, str]]:
    """(patch id, scene id) of every patch lying wholly inside a scene, by patch then scene."""
    out = []
    for pid, wkb in zip(table.column("id").to_pylist(), table.column("geometry").to_pylist(),
                        strict=True):
        g = shapely.from_wkb(wkb)
        for i, sid in enumerate(("a", "b")):
            x0 = GT[0] + SHIFT * i
            if shapely.box(x0, GT[3] - 5120, x0 + 5120, GT[3]).contains(g):
                out.append((pid, sid))
    return out


def test_make_patches_joins_each_patch_to_the_scenes_it_lies_in(scenes) -> None:
    col, _ = scenes
    table = patch_table()
    pc = catalog.make_patches(col, table, crs="EPSG:32633", unmatched="drop")
    expected = _expected_rows(table)
    assert len(expected) > len({p for p, _ in expected})  # some patches lie in both scenes
    got = list(zip(pc.table.column("patch_id").to_pylist(),
                   pc.table.column("scene_id").to_pylist(), strict=True))
    assert got == expected
    assert pc.ids == [f"{p}/{s}" for p, s in expected]
    assert pc.name == "scenes-patches"
    labels = dict(zip(table.column("id").to_pylist(), table.column("label").to_pylist(),
                      strict=True))
    assert pc.table.column("label").to_pylist() == [labels[p] for p, _ in expected]
    assert pc.table.schema.field("label").type == pa.int16()
    when = {"a": dt.datetime(2024, 5, 1, tzinfo=dt.UTC),
            "b": dt.datetime(2024, 6, 1, tzinfo=dt.UTC)}
    assert pc.table.column("datetime").to_pylist() == [when[s] for _, s in expected]


def test_unmatched_patches_raise_unless_dropped(scenes) -> None:
    col, _ = scenes
    far = pa.table({"geometry": [shapely.box(0, 0, 1, 1).wkb]})  # lon/lat, far from the scenes
    with pytest.raises(InvalidArgumentError, match="1 of 1 patches lie in no scene"):
        catalog.make_patches(col, far)
    with pytest.raises(InvalidArgumentError, match="also a column"):
        catalog.make_patches(col, patch_table().append_column("crs", pa.array(["x"] * 24)),
                             crs="EPSG:32633", unmatched="drop")
    with pytest.raises(InvalidArgumentError, match="no geometry column"):
        catalog.make_patches(col, pa.table({"x": [1]}))


def test_patch_chips_equal_rasterio_windows_of_their_own_scene(scenes) -> None:
    col, paths = scenes
    pc = catalog.make_patches(col, patch_table(), crs="EPSG:32633", unmatched="drop")
    with ChipEngine() as engine:
        res = engine.read(pc, ChipRequest.create(patches=True, columns=["patch_id", "label"]))
    assert len(res) == len(pc)  # one chip per row, not one per row x intersecting patch
    assert res.meta.column("id").to_pylist() == pc.ids
    assert res.meta.column("geometry_index").to_pylist() == list(range(len(pc)))
    assert res.meta.column("label").to_pylist() == pc.table.column("label").to_pylist()
    geoms = shapely.from_wkb(pc.table.column("geometry").to_pylist())
    scene_ids = pc.table.column("scene_id").to_pylist()
    for i, (geom, sid) in enumerate(zip(geoms, scene_ids, strict=True)):
        with rasterio.open(paths[sid]) as ds:
            utm = shapely.transform(geom, lambda c: np.column_stack(TO_UTM.transform(*c.T)))
            win = rasterio.features.geometry_window(ds, [utm])
            ref = ds.read([1], window=RioWindow(win.col_off, win.row_off, win.width, win.height))
        chip = res.chips[i][:, : ref.shape[1], : ref.shape[2]]
        np.testing.assert_array_equal(chip, ref)
        assert res.valid[i, ref.shape[1]:].sum() == 0 and res.valid[i, :, ref.shape[2]:].sum() == 0


def test_patch_mode_options_and_errors(scenes) -> None:
    col, _ = scenes
    pc = catalog.make_patches(col, patch_table(), crs="EPSG:32633", unmatched="drop")
    with ChipEngine() as engine:
        sized = engine.read(pc, ChipRequest.create(patches=True, chip_size=16))
        assert sized.chips.shape == (len(pc), 1, 16, 16)
        # geometries keep the rows whose patch intersects one of them
        probe = shapely.box(GT[0], GT[3] - 2560, GT[0] + 2560, GT[3])
        some = engine.read(pc, ChipRequest.create(patches=True, geometries=[probe],
                                                  geometry_crs="EPSG:32633"))
        geoms = shapely.from_wkb(pc.table.column("geometry").to_pylist())
        lonlat = catalog.geometry_to_crs84(probe, "EPSG:32633")
        assert some.meta.column("geometry_index").to_pylist() == [
            i for i, g in enumerate(geoms) if g.intersects(lonlat)]
        # a named geometry column: the patches' centre pixels
        centres = [shapely.Point(g.centroid.x, g.centroid.y).wkb for g in geoms]
        named = pc.with_columns({"centre": pa.array(centres, pa.binary())})
        one = engine.read(named, ChipRequest.create(patches="centre"))
        assert one.chips.shape == (len(pc), 1, 1, 1)
        with pytest.raises(InvalidArgumentError, match="time_series"):
            engine.read(pc, ChipRequest.create(patches=True, time_series=True))
        with pytest.raises(InvalidArgumentError, match="no column 'nope'"):
            engine.read(pc, ChipRequest.create(patches="nope"))
        with pytest.raises(InvalidArgumentError, match="not WKB"):
            engine.read(pc, ChipRequest.create(patches="label"))
    with pytest.raises(InvalidArgumentError, match="geometries: missing"):
        ChipRequest.create(bands=["b1"])


def test_with_columns_keeps_a_valid_collection(scenes, tmp_path: Path) -> None:
    col, _ = scenes
    pc = catalog.make_patches(col, patch_table(), crs="EPSG:32633", unmatched="drop")
    scores = np.linspace(0, 1, len(pc))
    out = pc.with_columns({"score": scores, "split": ["test"] * len(pc)})
    assert out.table.column("score").to_pylist() == scores.tolist()
    assert set(out.table.column("split").to_pylist()) == {"test"}
    path = out.save(tmp_path / "p.parquet")
    back = catalog.load(path)
    assert back.ids == pc.ids and back.name == pc.name
    assert back.table.column_names[-1].startswith("asset:")
    with pytest.raises(InvalidArgumentError, match="cannot be replaced"):
        pc.with_columns({"geometry": [b""] * len(pc)})
    with pytest.raises(InvalidArgumentError, match="3 values"):
        pc.with_columns({"x": [1, 2, 3]})


def test_patches_over_flight_pass_columns_and_filter_rows(scenes, tmp_path: Path,
                                                         start_server) -> None:
    col, _ = scenes
    pc = catalog.make_patches(col, patch_table(), crs="EPSG:32633", unmatched="drop",
                              name="patches")
    pc.save(tmp_path / "root" / "patches.parquet")
    server = start_server(tmp_path / "root")
    client = flight_client.connect(server.location)
    batches = list(client.chips("patches", patches=True, columns=["label", "split"],
                                filter={"where": [["split", "==", "train"]]}, chip_size=8))
    table = pa.Table.from_batches(batches)
    train = [i for i, s in enumerate(pc.table.column("split").to_pylist()) if s == "train"]
    assert table.num_rows == len(train)
    assert table.column("id").to_pylist() == [pc.ids[i] for i in train]
    assert table.column("label").to_pylist() == [
        pc.table.column("label")[i].as_py() for i in train]
    with pytest.raises(flight_client.InvalidArgumentError, match="geometry_scenes"):
        list(client.chips("patches", patches=True, geometry_scenes=[["a"]]))
