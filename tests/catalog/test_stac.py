"""Collections from a STAC API: an Earth Search-shaped mirror on loopback.

A :class:`~tests.support.servers.StacServer` serves Sentinel-2 L2A items shaped like
Earth Search v1 (``tests.support.stac_items``) with small pages, and a
:class:`~tests.support.servers.RangeServer` serves their COGs. The tests check what
the builder keeps (scenes, footprints, properties, band metadata, headers),
what it asks the servers for (every page, one request per header file, never
a thumbnail, JPEG 2000 or metadata asset), how the search narrows, and how
failures are reported.
"""

from __future__ import annotations

import copy
import datetime as dt
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyproj
import pytest
import shapely
from shapely.geometry import shape

import catalog
from tests.support.servers import RangeServer, StacServer
from tests.support.stac_items import BANDS, NON_GEOTIFF_ASSETS, href_path, write_items

pytestmark = pytest.mark.network

COLLECTION = "sentinel-2-l2a"
HTTP = catalog.StoreOptions(allow_http=True)
RED_NIR = {"red": "red", "nir": "nir"}
ALL_BBOX = (5.0, 44.0, 14.0, 48.0)
PAGE = 10


@dataclass
class Mirror:
    root: Path
    files: RangeServer
    items: list[dict[str, Any]]


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mirror]:
    root = tmp_path_factory.mktemp("earth-search")
    with RangeServer(root) as files:
        yield Mirror(root, files, write_items(root, files.url))


@pytest.fixture
def files(mirror: Mirror) -> RangeServer:
    mirror.files.reset()
    return mirror.files


@pytest.fixture
def items(mirror: Mirror) -> list[dict[str, Any]]:
    return copy.deepcopy(mirror.items)


@pytest.fixture
def stac(items: list[dict[str, Any]]) -> Iterator[StacServer]:
    with StacServer(items, page_size=PAGE) as server:
        yield server


# -- helpers -------------------------------------------------------------------------------


def _by_id(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {it["id"]: it for it in items}


def _utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(dt.UTC)


def _column(c: catalog.Collection, name: str) -> dict[str, Any]:
    return dict(zip(c.ids, c.table.column(name).to_pylist(), strict=True))


def _searches(stac: StacServer) -> int:
    return sum(1 for method, path in stac.calls if path == "/search")


def _asset_paths(items: list[dict[str, Any]], keys: set[str]) -> set[str]:
    return {href_path(it["assets"][k]["href"]) for it in items for k in keys}


def _inner_box(item: dict[str, Any]) -> tuple[float, float, float, float]:
    """A small bbox in the middle of an item's footprint."""
    c = shape(item["geometry"]).centroid
    return (c.x - 0.01, c.y - 0.01, c.x + 0.01, c.y + 0.01)


def _assert_never_requested_non_geotiffs(files: RangeServer) -> None:
    paths = set(files.per_path())
    assert paths, "no file was requested at all"
    bad = {p for p in paths if not p.endswith(".tif") or p.endswith("/TCI.tif")
           or p.startswith("/tiles/") or "thumbnail" in p or "metadata" in p}
    assert not bad, f"non-data assets were requested: {sorted(bad)}"


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _build(stac: StacServer, **kwargs: Any) -> catalog.Collection:
    kwargs.setdefault("band_map", RED_NIR)
    kwargs.setdefault("store_options", HTTP)
    return catalog.build_from_stac(stac.url, COLLECTION, progress=False, **kwargs)


# -- the full search -----------------------------------------------------------------------


def test_the_generated_mirror_looks_like_earth_search(mirror: Mirror) -> None:
    items = mirror.items
    assert len(items) == 25
    assert len({it["id"] for it in items}) == 25
    assert {it["properties"]["proj:epsg"] for it in items} == {32632, 32633}
    assert len({it["properties"]["datetime"][:10] for it in items}) >= 10
    for it in items:
        assert set(NON_GEOTIFF_ASSETS) <= set(it["assets"])
        assert {f"{b.key}-jp2" for b in BANDS} <= set(it["assets"])
        for b in BANDS:
            assert (mirror.root / href_path(it["assets"][b.key]["href"]).lstrip("/")).is_file()
        for key in (*NON_GEOTIFF_ASSETS, "visual", "red-jp2"):
            path = href_path(it["assets"][key]["href"]).lstrip("/")
            assert not (mirror.root / path).exists()


def test_build_returns_every_scene_across_pages(
    files: RangeServer, stac: StacServer, items: list[dict[str, Any]]
) -> None:
    c = _build(stac, bbox=ALL_BBOX, date_range="2024-01-01/2024-12-31")

    assert sorted(c.ids) == sorted(it["id"] for it in items)
    assert not c.failures
    assert c.name == COLLECTION
    # 25 items, pages of 10: pystac-client must follow the POST "next" links.
    assert _searches(stac) == 3
    assert [m for m, p in stac.calls if p == "/search"] == ["POST"] * 3
    assert c.metadata["source"]["kind"] == "stac"
    assert c.metadata["source"]["stac_api"] == stac.url
    assert c.metadata["source"]["collections"] == [COLLECTION]
    assert c.store_options.get("allow_http") is True


def test_scene_columns_come_from_the_items(
    files: RangeServer, stac: StacServer, items: list[dict[str, Any]]
) -> None:
    c = _build(stac)
    by_id = _by_id(items)
    schema = c.table.schema

    when = _column(c, "datetime")
    geoms = _column(c, "geometry")
    bboxes = _column(c, "bbox")
    crss = _column(c, "crs")
    for item_id, it in by_id.items():
        assert when[item_id] == _utc(it["properties"]["datetime"])
        got = shapely.from_wkb(geoms[item_id])
        assert got.equals_exact(shape(it["geometry"]), tolerance=0.0), item_id
        assert [bboxes[item_id][k] for k in ("xmin", "ymin", "xmax", "ymax")] == it["bbox"]
        assert pyproj.CRS.from_user_input(crss[item_id]).to_epsg() == (
            it["properties"]["proj:epsg"])

    # Partial scenes keep their item footprint, not the raster bounds.
    partial = [i for i, it in by_id.items() if it["properties"]["s2:nodata_pixel_percentage"]]
    assert partial
    for item_id in partial:
        h = c.header(c.ids.index(item_id), "red")
        bounds = catalog.geometry_to_crs84(shapely.box(*h.bounds), h.crs)
        assert shapely.from_wkb(geoms[item_id]).area < 0.95 * bounds.area

    # Properties become typed columns.
    expected_types = {
        "eo:cloud_cover": pa.float64(),
        "view:sun_azimuth": pa.float64(),
        "s2:nodata_pixel_percentage": pa.float64(),
        "mgrs:utm_zone": pa.int64(),
        "platform": pa.string(),
        "constellation": pa.string(),
        "mgrs:latitude_band": pa.string(),
        "mgrs:grid_square": pa.string(),
        "grid:code": pa.string(),
        "s2:processing_baseline": pa.string(),
        "earthsearch:payload_id": pa.string(),
        "earthsearch:boa_offset_applied": pa.bool_(),
        "instruments": pa.list_(pa.string()),
        "created": pa.timestamp("us", tz="UTC"),
        "updated": pa.timestamp("us", tz="UTC"),
        "collection": pa.string(),
    }
    for name, typ in expected_types.items():
        assert name in schema.names, name
        assert schema.field(name).type == typ, (name, schema.field(name).type)
    assert pa.types.is_struct(schema.field("processing:software").type)
    for name in ("eo:cloud_cover", "platform", "grid:code", "s2:processing_baseline",
                 "earthsearch:payload_id", "mgrs:utm_zone", "instruments"):
        values = _column(c, name)
        assert values == {i: it["properties"][name] for i, it in by_id.items()}, name
    for name in ("created", "updated"):
        values = _column(c, name)
        assert values == {i: _utc(it["properties"][name]) for i, it in by_id.items()}, name
    assert set(_column(c, "collection").values()) == {COLLECTION}
    assert _column(c, "processing:software")[items[0]["id"]] == {"sentinel2-to-stac": "0.1.1"}
    # The item's own datetime is the core column, not a second property column.
    assert "properties.datetime" not in schema.names
    assert not {"assets", "links", "stac_extensions"} & set(schema.names)


def test_properties_pass_through_unchanged(
    files: RangeServer, stac: StacServer, items: list[dict[str, Any]]
) -> None:
    c = _build(stac, max_items=5)
    assert "proj:epsg" in c.table.column_names
    assert c.table.schema.field("proj:epsg").type == pa.int64()
    by_id = _by_id(items)
    assert _column(c, "proj:epsg") == {i: by_id[i]["properties"]["proj:epsg"] for i in c.ids}


def test_bands_take_scale_offset_from_raster_bands_and_nodata_from_the_header(
    files: RangeServer, stac: StacServer
) -> None:
    c = _build(stac, max_items=3)
    assert c.band_names == ("red", "nir")
    assert set(c.assets) == {"red", "nir"}
    for name in ("red", "nir"):
        b = c.band(name)
        assert b.asset == name
        assert b.sample == 0
        assert b.dtype == "uint16"
        assert b.scale == pytest.approx(0.0001)
        assert b.offset == pytest.approx(-0.1)
        assert b.nodata is not None
        assert float(b.nodata) == 0.0


def test_headers_equal_read_header_of_the_same_files(
    files: RangeServer, stac: StacServer, items: list[dict[str, Any]]
) -> None:
    c = _build(stac, bbox=ALL_BBOX)
    by_id = _by_id(items)
    byte_counts = set()
    for row, item_id in enumerate(c.ids):
        it = by_id[item_id]
        for band in ("red", "nir"):
            h = c.header(row, band)
            href = it["assets"][band]["href"]
            assert h.href == href
            assert h == catalog.read_header(href, store_options=HTTP), (item_id, band)
            assert (h.width, h.height) == tuple(it["assets"][band]["proj:shape"][::-1])
            x0, dx, _, y0, _, dy = h.geotransform
            t = it["assets"][band]["proj:transform"]
            assert (dx, x0, dy, y0) == (t[0], t[2], t[4], t[5])
            assert h.dtype == "uint16"
            assert h.nodata_value == 0
            assert h.overview_count == 2  # 1100 -> 550 -> 275
            assert (h.levels[0].tile_width, h.levels[0].tile_height) == (512, 512)
            assert h.levels[0].compression == 8  # deflate
            assert h.levels[0].predictor == 2
            byte_counts.add(tuple(h.levels[0].tile_byte_counts.tolist()))
    # Every red/nir file has its own data: a header from another file would show.
    assert len(byte_counts) == 2 * len(c)


def test_one_request_per_header_file_and_nothing_else(
    files: RangeServer, stac: StacServer, items: list[dict[str, Any]]
) -> None:
    c = _build(stac)
    assert len(c) == len(items)
    per_path = files.per_path()
    assert set(per_path) == _asset_paths(items, {"red", "nir"})
    assert set(per_path.values()) == {1}, per_path.most_common(3)
    assert all(r.method == "GET" and r.range for r in files.records)
    _assert_never_requested_non_geotiffs(files)


# -- which assets ----------------------------------------------------------------------------


def test_default_band_map_picks_only_the_geotiff_data_assets(
    files: RangeServer, stac: StacServer, items: list[dict[str, Any]]
) -> None:
    chosen = [it["id"] for it in items[:3]]
    c = _build(stac, ids=chosen, band_map=None)
    keys = {b.key for b in BANDS}
    assert sorted(c.ids) == sorted(chosen)
    assert set(c.assets) == keys
    assert set(c.band_names) == keys  # named by their eo:bands names (= the asset keys)
    for name in keys:
        assert c.band(name).asset == name
    assert c.band("scl").dtype == "uint8"
    assert c.band("coastal").dtype == "uint16"
    per_path = files.per_path()
    assert set(per_path) == _asset_paths(items[:3], keys)
    assert set(per_path.values()) == {1}
    _assert_never_requested_non_geotiffs(files)


def test_default_band_map_keeps_raster_bands_scale_and_offset(
    files: RangeServer, stac: StacServer, items: list[dict[str, Any]]
) -> None:
    c = _build(stac, ids=[items[0]["id"]], band_map=None)
    assert c.band("red").scale == pytest.approx(0.0001)
    assert c.band("red").offset == pytest.approx(-0.1)
    assert c.band("scl").scale is None


def test_unknown_asset_in_band_map_is_an_invalid_argument(
    files: RangeServer, stac: StacServer
) -> None:
    with pytest.raises(catalog.InvalidArgumentError, match="B04") as info:
        _build(stac, band_map={"B04": "red"}, max_items=3)
    assert "'red'" in str(info.value)  # the message lists the assets there are
    assert files.requests == 0


# -- narrowing the search ------------------------------------------------------------------


def test_date_range_is_inclusive_of_whole_days(
    files: RangeServer, stac: StacServer, items: list[dict[str, Any]]
) -> None:
    c = _build(stac, date_range="2024-05-26/2024-06-05")
    expected = {it["id"] for it in items
                if "2024-05-26" <= it["properties"]["datetime"][:10] <= "2024-06-05"}
    assert len(expected) == 8
    assert set(c.ids) == expected
    # Scenes at 10:27 on the first and the last day are in; later and earlier ones are not.
    assert {"S2B_32TMT_20240526_0_L2A", "S2A_32TNT_20240605_0_L2A"} <= set(c.ids)
    assert not {"S2B_33TUM_20240607_0_L2A", "S2A_33TUM_20240523_0_L2A"} & set(c.ids)
    assert set(files.per_path()) == _asset_paths(
        [it for it in items if it["id"] in expected], {"red", "nir"})


def test_date_range_as_datetimes(
    files: RangeServer, stac: StacServer, items: list[dict[str, Any]]
) -> None:
    start = dt.datetime(2024, 6, 5, 10, 27, 20, tzinfo=dt.UTC)  # between two 32T scenes
    c = _build(stac, date_range=(start, None))
    expected = {it["id"] for it in items if _utc(it["properties"]["datetime"]) >= start}
    assert "S2B_32TMT_20240605_0_L2A" in expected
    assert "S2A_32TNT_20240605_0_L2A" not in expected
    assert set(c.ids) == expected


def test_bbox_selects_one_tile(
    files: RangeServer, stac: StacServer, items: list[dict[str, Any]]
) -> None:
    tum = [it for it in items if "_33TUM_" in it["id"]]
    c = _build(stac, bbox=_inner_box(tum[0]))
    assert set(c.ids) == {it["id"] for it in tum}
    assert set(_column(c, "crs").values()) == {c.header(0, "red").crs}
    assert pyproj.CRS.from_user_input(c.header(0, "red").crs).to_epsg() == 32633
    assert set(files.per_path()) == _asset_paths(tum, {"red", "nir"})


def test_query_on_cloud_cover(
    files: RangeServer, stac: StacServer, items: list[dict[str, Any]]
) -> None:
    c = _build(stac, query={"eo:cloud_cover": {"lt": 30}})
    cover = {it["id"]: it["properties"]["eo:cloud_cover"] for it in items}
    expected = {i for i, v in cover.items() if v < 30}
    assert set(c.ids) == expected
    assert any(v == 30.0 for v in cover.values())  # the boundary is excluded
    assert any(v == 29.999 for i, v in cover.items() if i in expected)
    assert max(_column(c, "eo:cloud_cover").values()) < 30


def test_search_terms_combine(
    files: RangeServer, stac: StacServer, items: list[dict[str, Any]]
) -> None:
    tum = next(it for it in items if "_33TUM_" in it["id"])
    c = _build(stac, bbox=_inner_box(tum), date_range="2024-05-01/2024-05-31",
               query={"eo:cloud_cover": {"lt": 30}})
    expected = {it["id"] for it in items if "_33TUM_" in it["id"]
                and it["properties"]["datetime"][:7] == "2024-05"
                and it["properties"]["eo:cloud_cover"] < 30}
    assert expected
    assert set(c.ids) == expected


def test_max_items_stops_early(
    files: RangeServer, stac: StacServer, items: list[dict[str, Any]]
) -> None:
    c = _build(stac, max_items=4)
    assert c.ids == [it["id"] for it in items[:4]]
    assert _searches(stac) == 1  # no second page fetched
    assert set(files.per_path()) == _asset_paths(items[:4], {"red", "nir"})


def test_a_search_without_items_is_a_build_error(
    files: RangeServer, stac: StacServer
) -> None:
    with pytest.raises(catalog.BuildError, match="no items"):
        _build(stac, bbox=(-60.0, -40.0, -59.0, -39.0))
    assert _searches(stac) == 1
    assert files.requests == 0


def test_an_unreachable_stac_api_is_a_stac_error() -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(catalog.StacError, match=re.escape(url)):
        catalog.build_from_stac(url, COLLECTION, band_map=RED_NIR, store_options=HTTP,
                                progress=False)


# -- the built-in registry entry -------------------------------------------------------------


def test_registry_entry_against_the_mirror(
    files: RangeServer, stac: StacServer, items: list[dict[str, Any]]
) -> None:
    entry = catalog.get_dataset("earthsearch/sentinel-2-l2a")
    tum = [it for it in items if "_33TUM_" in it["id"]]
    c = catalog.build("earthsearch/sentinel-2-l2a", stac_api=stac.url, store_options=HTTP,
                      bbox=_inner_box(tum[0]), progress=False)
    assert set(c.ids) == {it["id"] for it in tum}
    assert c.name == "earthsearch-sentinel-2-l2a"
    assert set(c.band_names) == set(entry.bands)
    assert {"B02", "B04", "B08", "B8A", "SCL"} <= set(c.band_names)
    for asset, name in entry.band_map.items():
        assert c.band(str(name)).asset == asset
    assert c.band("B02").asset == "blue"
    assert c.band("B04").scale == pytest.approx(0.0001)
    assert c.band("B04").offset == pytest.approx(-0.1)
    assert c.band("SCL").dtype == "uint8"
    assert c.band("SCL").scale is None
    # The entry's own options are kept, merged with the caller's.
    assert c.store_options.get("allow_http") is True
    assert c.store_options.get("anonymous") is True
    assert c.store_options.get("region") == "us-west-2"
    per_path = files.per_path()
    assert set(per_path) == _asset_paths(tum, {b.key for b in BANDS})
    assert set(per_path.values()) == {1}
    _assert_never_requested_non_geotiffs(files)


def test_registry_band_subset_reads_only_those_assets(
    files: RangeServer, stac: StacServer, items: list[dict[str, Any]]
) -> None:
    c = catalog.build("earthsearch/sentinel-2-l2a", stac_api=stac.url, store_options=HTTP,
                      bbox=ALL_BBOX, bands=["B04", "B08"], progress=False)
    assert len(c) == len(items)
    assert set(c.band_names) == {"B04", "B08"}
    assert set(c.assets) == {"red", "nir"}
    assert set(files.per_path()) == _asset_paths(items, {"red", "nir"})


def test_registry_bands_are_the_entry_band_names(files: RangeServer, stac: StacServer) -> None:
    # The entry names bands B01..B12/SCL; asset keys are not band names.
    with pytest.raises(catalog.InvalidArgumentError, match="B04"):
        catalog.build("earthsearch/sentinel-2-l2a", stac_api=stac.url, store_options=HTTP,
                      bands=["red", "nir"], progress=False)
    assert files.requests == 0
    assert _searches(stac) == 0


# -- failures ----------------------------------------------------------------------------------


def test_failed_files_are_reported_per_scene(
    mirror: Mirror, files: RangeServer, items: list[dict[str, Any]]
) -> None:
    corrupt = mirror.root / "corrupt" / "B04.tif"
    corrupt.parent.mkdir(exist_ok=True)
    corrupt.write_text("this is not a TIFF, only text with a .tif name\n" * 20)
    missing_item, corrupt_item = items[3], items[7]
    missing_href = f"{files.url}/missing/{missing_item['id']}/B04.tif"
    corrupt_href = f"{files.url}/corrupt/B04.tif"
    missing_item["assets"]["red"]["href"] = missing_href
    corrupt_item["assets"]["red"]["href"] = corrupt_href

    with StacServer(items, page_size=PAGE) as stac:
        c = _build(stac)
        assert len(c) == len(items) - 2
        assert missing_item["id"] not in c.ids
        assert corrupt_item["id"] not in c.ids
        failures = {f.scene_id: f for f in c.failures}
        assert set(failures) == {missing_item["id"], corrupt_item["id"]}
        assert failures[missing_item["id"]].href == missing_href
        assert failures[missing_item["id"]].error == "ObjectNotFoundError"
        assert failures[corrupt_item["id"]].href == corrupt_href
        assert failures[corrupt_item["id"]].error in ("HeaderError", "UnsupportedLayoutError")
        for f in failures.values():
            assert f.href is not None
            assert f.href in str(f)
            assert f.reason

        with pytest.raises(catalog.BuildError) as info:
            _build(stac, strict=True)
    err = info.value
    assert {f.scene_id for f in err.failures} == {missing_item["id"], corrupt_item["id"]}
    assert missing_href in str(err)
    assert corrupt_href in str(err)


def test_every_scene_failing_is_a_build_error(
    files: RangeServer, items: list[dict[str, Any]]
) -> None:
    for it in items[:3]:
        it["assets"]["red"]["href"] = f"{files.url}/missing/{it['id']}/B04.tif"
    with StacServer(items[:3], page_size=PAGE) as stac, pytest.raises(catalog.BuildError) as info:
        _build(stac)
    assert len(info.value.failures) == 3
    assert all(f.error == "ObjectNotFoundError" for f in info.value.failures)


# -- persistence -------------------------------------------------------------------------------


def test_save_and_load_round_trip(
    tmp_path: Path, files: RangeServer, stac: StacServer
) -> None:
    c = _build(stac, bbox=ALL_BBOX)
    target = tmp_path / "s2.parquet"
    saved = c.save(target)
    assert Path(saved) == target
    assert target.is_file()

    loaded = catalog.load(target)
    assert loaded.ids == c.ids
    assert loaded.name == c.name
    assert loaded.bands == c.bands
    assert loaded.failures == ()
    assert loaded.store_options == c.store_options
    assert loaded.metadata["source"] == c.metadata["source"]
    core = ["id", "datetime", "geometry", "bbox", "crs", "asset:red", "asset:nir",
            "eo:cloud_cover", "created", "instruments", "processing:software"]
    assert loaded.table.select(core).equals(c.table.select(core))
    assert loaded.table.schema.names == c.table.schema.names
    assert loaded.table.equals(c.table)
    for row in (0, len(c) - 1):
        assert loaded.header(row, "nir") == c.header(row, "nir")
