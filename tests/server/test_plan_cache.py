"""The plan cache: a stream reuses the chips (and shard split) its GetFlightInfo planned."""

from __future__ import annotations

import dataclasses

import shapely

import catalog
from catalog.testing import synthetic_scene, write_cog
from flight_server import ChipEngine, ChipRequest

GT = (500000.0, 10.0, 0.0, 4100000.0, 0.0, -10.0)


def _collection(tmp_path) -> catalog.Collection:
    paths = []
    for i in range(2):
        p = tmp_path / f"s{i}.tif"
        write_cog(p, synthetic_scene(256, 256, 1, i), geotransform=GT, epsg=32633, tile=64)
        paths.append(p)
    return catalog.build_from_files(paths, progress=False)


def _request(**kw) -> ChipRequest:
    pts = [shapely.Point(GT[0] + 10 * c, GT[3] - 10 * r) for c in range(20, 240, 20)
           for r in range(20, 240, 40)]
    kw.setdefault("chip_size", 32)
    return ChipRequest.create(geometries=pts, geometry_crs="EPSG:32633", **kw)


def test_streams_reuse_the_plan_and_split(tmp_path) -> None:
    col = _collection(tmp_path)
    with ChipEngine() as engine:
        full = engine.plan(col, _request())
        _, sizes = engine.place(col, full, 3, ["a", "b", "c"], _request())
        assert engine.plans.misses == 1 and sum(sizes) == full.chips
        parts = [engine.plan(col, _request(shard=(i, 3))) for i in range(3)]
        assert engine.plans.misses == 1 and engine.plans.hits == 3
        assert [p.chips for p in parts] == sizes
        ordinals = sorted(c.index for p in parts for c in p.items)
        assert ordinals == [c.index for c in full.items]
        # The same pixels as planning afresh (a cold engine, no cache).
        with ChipEngine() as fresh:
            for i, part in enumerate(parts):
                again = fresh.read(col, _request(shard=(i, 3)))
                got = engine.read(col, dataclasses.replace(_request(shard=(i, 3))))
                assert (again.chips == got.chips).all() and part.chips == len(got)


def test_other_fields_and_collections_plan_again(tmp_path) -> None:
    col = _collection(tmp_path)
    reloaded = catalog.build_from_files([tmp_path / "s0.tif", tmp_path / "s1.tif"],
                                        progress=False)
    with ChipEngine() as engine:
        engine.plan(col, _request())
        engine.plan(col, _request(batch_rows=7, skip=3))  # same chips: a hit
        assert (engine.plans.misses, engine.plans.hits) == (1, 1)
        engine.plan(col, _request(chip_size=16))
        engine.plan(reloaded, _request())
        assert engine.plans.misses == 3
        skipped = engine.plan(col, _request(skip=3))
        assert skipped.chips == skipped.total_chips - 3


def test_the_cache_is_bounded_by_chips(tmp_path) -> None:
    col = _collection(tmp_path)
    with ChipEngine() as engine:
        engine.plans.max_chips = 100
        n = engine.plan(col, _request()).total_chips
        assert n > 50
        engine.plan(col, _request(chip_size=16))  # pushes the first out
        engine.plan(col, _request())
        assert engine.plans.misses == 3
        assert engine.plans._held <= 100


def test_geometry_scenes_give_each_geometry_its_own_scenes(tmp_path) -> None:
    """One request, each geometry over the scenes it names: as separate requests would."""
    col = _collection(tmp_path)
    ids = col.table.column("id").to_pylist()
    pts = [shapely.Point(GT[0] + 600, GT[3] - 600), shapely.Point(GT[0] + 1200, GT[3] - 900),
           shapely.Point(GT[0] + 1800, GT[3] - 300)]
    own = [[ids[0]], [ids[1]], ids]
    with ChipEngine() as engine:
        one = engine.read(col, ChipRequest.create(
            geometries=pts, geometry_crs="EPSG:32633", chip_size=32, geometry_scenes=own))
        got = [(int(g), i) for g, i in zip(one.meta.column("geometry_index").to_pylist(),
                                           one.meta.column("id").to_pylist(), strict=True)]
        assert got == [(0, ids[0]), (1, ids[1]), (2, ids[0]), (2, ids[1])]
        for k, (gi, sid) in enumerate(got):
            alone = engine.read(col, ChipRequest.create(
                geometries=[pts[gi]], geometry_crs="EPSG:32633", chip_size=32,
                geometry_scenes=[[sid]]))
            assert (alone.chips[0] == one.chips[k]).all()
        series = engine.read(col, ChipRequest.create(
            geometries=pts, geometry_crs="EPSG:32633", chip_size=32, time_series=True,
            geometry_scenes=own))
        assert [len([i for i in row if i]) for row in series.meta.column("id").to_pylist()] \
            == [1, 1, 2]
        import pytest

        from cogflight_core import InvalidArgumentError

        with pytest.raises(InvalidArgumentError, match="geometry_scenes: 1 lists for 3"):
            engine.plan(col, ChipRequest.create(geometries=pts, geometry_crs="EPSG:32633",
                                                geometry_scenes=[ids]))
        with pytest.raises(InvalidArgumentError, match="geometry_scenes"):
            ChipRequest.create(geometries=pts, geometry_crs="EPSG:32633",
                               geometry_scenes="s0")


def test_the_cache_is_bounded_by_entries(tmp_path) -> None:
    """Plans of no chips (a query outside the data) cannot pile up either."""
    col = _collection(tmp_path)
    with ChipEngine() as engine:
        engine.plans.max_entries = 5
        for k in range(20):
            far = [shapely.Point(GT[0] - 1e6 - k, GT[3])]
            assert engine.plan(col, ChipRequest.create(
                geometries=far, geometry_crs="EPSG:32633", chip_size=8)).chips == 0
        assert len(engine.plans._entries) == 5
