"""The client's query builder against the wire contract's declaration and parser.

Every field of :class:`cogflight_core.ChipQuery` (and every filter key) is built
from its Python forms, sent as JSON and parsed back by the server's parser,
which must give back the value. The cases are keyed by the declaration, so a
field added there without a case here fails.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import shapely

import cogflight_core as core
import flight_client as fc
from flight_client._query import build_index_query

BOX = (0.0, 0.0, 1.0, 1.0)
POINT = {"type": "Point", "coordinates": [1.5, 2.0]}
FEATURE = {"type": "Feature", "geometry": POINT, "properties": {"label": 3}}
SQUARE = shapely.box(0, 0, 1, 1)

# field -> [(Python value, what the parsed query holds for it)]
CASES: dict[str, list[tuple[Any, Any]]] = {
    "geometries": [
        (BOX, [BOX]),
        ([BOX, (1, 1, 2, 2)], [BOX, (1.0, 1.0, 2.0, 2.0)]),
        (np.array(BOX), [BOX]),
        (np.array([BOX, BOX], dtype=np.float32), [BOX, BOX]),
        ((1.5, 2), [POINT]),
        ([(np.float32(1.5), np.int64(2))], [POINT]),
        (np.array([[1.5, 2.0], [1.5, 2.0]]), [POINT, POINT]),
        (SQUARE, [SQUARE.wkb]),
        ([SQUARE, shapely.Point(1, 2)], [SQUARE.wkb, shapely.Point(1, 2).wkb]),
        (SQUARE.wkb, [SQUARE.wkb]),
        (pa.array([SQUARE.wkb], pa.binary()), [SQUARE.wkb]),
        ({"type": "Point", "coordinates": (1.5, 2)}, [POINT]),
        (FEATURE, [FEATURE]),
        ([POINT, FEATURE], [POINT, FEATURE]),
        (
            {"type": "FeatureCollection", "features": [FEATURE]},
            {"type": "FeatureCollection", "features": [FEATURE]},
        ),
        ({"bbox": list(BOX)}, [BOX]),
    ],
    "geometry_crs": [("EPSG:32633", "EPSG:32633")],
    "bands": [(("red", "nir"), ["red", "nir"]), (np.array(["red"]), ["red"])],
    "filter": [({"ids": ("s1",), "cloud_cover_lt": np.float64(20)}, {"ids": ["s1"],
                                                                    "cloud_cover_lt": 20.0})],
    "chip_size": [(np.int64(32), 32), ((32, np.int32(16)), [32, 16])],
    "resolution": [(np.float32(10.0), 10.0), ((10, 20.5), [10, 20.5])],
    "crs": [("EPSG:32632", "EPSG:32632")],
    "resampling": [("bilinear", "bilinear")],
    "time_series": [(True, True), (np.bool_(False), False)],
    "mask": [(True, True)],
    "all_touched": [(np.bool_(True), True)],
    "dtype": [("float32", "float32")],
    "scale_offset": [(True, True)],
    "batch_rows": [(np.int32(7), 7)],
    "ramp": [(np.bool_(False), False)],
    "geometry_scenes": [([("a",), ["b", "c"]], [["a"], ["b", "c"]])],
    "patches": [(np.bool_(True), True), ("centre", "centre")],
    "columns": [(("label",), ["label"])],
    "shard": [({"index": np.int64(1), "count": 3}, (1, 3)), ({"count": 4}, 4)],
    "on_error": [("skip", "skip")],
    "skip": [(0, 0), (np.int64(17), 17)],
}

FILTER_CASES: dict[str, list[tuple[Any, Any]]] = {
    "date_range": [
        ("2024-01-01/2024-02-01", "2024-01-01/2024-02-01"),
        (("2024-01-01", None), ["2024-01-01", None]),
    ],
    "cloud_cover_lt": [(np.float32(12.5), 12.5)],
    "bbox": [(np.array([10, 45, 11, 46]), [10, 45, 11, 46])],
    "ids": [(("a", "b"), ["a", "b"])],
    "where": [([("label", "in", (1, 2)), ("split", "==", "train")],
               [["label", "in", [1, 2]], ["split", "==", "train"]])],
}


def _parsed(query: core.Query, name: str) -> Any:
    """What the parser holds for the Python field ``name``."""
    if name == "filter":
        return query.filter
    if name == "shard":
        return query.shard if query.shard is not None else query.shard_count
    return query.request[name]


def _round_trip(**fields: Any) -> core.Query:
    doc = fc.build_query("alpha", **fields)
    return core.parse_query(json.dumps(doc).encode())


def test_cases_cover_the_declaration() -> None:
    assert list(CASES) == list(core.chip_fields()), "a chip field without a round-trip case"
    assert list(FILTER_CASES) == list(core.FILTER_FIELDS), "a filter key without a case"


@pytest.mark.parametrize("name", list(core.chip_fields()))
def test_every_chip_field_round_trips(name: str) -> None:
    for value, expected in CASES[name]:
        fields = {"geometries": [BOX], name: value}
        assert _parsed(_round_trip(**fields), name) == expected, (name, value)


@pytest.mark.parametrize("key", list(core.FILTER_FIELDS))
def test_every_filter_key_round_trips(key: str) -> None:
    for value, expected in FILTER_CASES[key]:
        chips = _round_trip(geometries=[BOX], filter={key: value})
        assert chips.filter == {key: expected}
        index = core.parse_query(json.dumps(build_index_query("alpha", {key: value})))
        assert index.index and index.filter == {key: expected}


def test_geometry_crs_goes_to_its_wire_path() -> None:
    assert core.chip_fields()["geometry_crs"].wire == "geometries.crs"
    doc = fc.build_query("alpha", geometries=[BOX], geometry_crs="EPSG:32633")
    assert doc["geometries"] == {"bbox": [list(BOX)], "crs": "EPSG:32633"}
    assert "geometry_crs" not in doc
    # without one, the contract's default is written out: every ticket names its CRS
    assert fc.build_query("alpha", geometries=[BOX])["geometries"]["crs"] == "EPSG:4326"
    wire = fc.build_query("alpha", geometries={"bbox": list(BOX), "crs": "EPSG:3857"})
    assert wire["geometries"]["crs"] == "EPSG:3857"
    with pytest.raises(fc.InvalidArgumentError, match="geometry_crs: 'EPSG:4326' conflicts"):
        fc.build_query("alpha", geometries={"bbox": list(BOX), "crs": "EPSG:3857"},
                       geometry_crs="EPSG:4326")


def test_none_is_left_out() -> None:
    doc = fc.build_query("alpha", geometries=[BOX], bands=None, chip_size=None)
    assert set(doc) == {"v", "collection", "geometries"}


def test_unknown_and_missing_fields_name_themselves() -> None:
    with pytest.raises(fc.InvalidArgumentError, match="chipsize: unknown argument") as info:
        fc.build_query("alpha", geometries=[BOX], chipsize=32)
    for name in core.chip_fields():
        assert name in str(info.value), "the message lists the valid fields"
    with pytest.raises(fc.InvalidArgumentError, match="geometries: missing"):
        fc.build_query("alpha", chip_size=32)


@pytest.mark.parametrize(("fields", "match"), [
    ({"chip_size": -3}, "chip_size"),
    ({"resampling": "cubic"}, "resampling"),
    ({"filter": {"cloud": 1}}, "filter: unknown key"),
    ({"shard": {"index": 3, "count": 2}}, "shard.index"),
    ({"columns": [object()]}, "not JSON"),
    ({"geometries": [object()]}, "geometries: expected"),
    ({"geometries": []}, "no geometries"),
])
def test_the_builder_checks_with_the_contract_parser(fields: dict[str, Any], match: str) -> None:
    with pytest.raises(fc.InvalidArgumentError, match=match):
        fc.build_query("alpha", **{"geometries": [BOX], **fields})
    with pytest.raises(fc.InvalidArgumentError, match="collection"):
        fc.build_query("../etc", geometries=[BOX])


def test_index_query_takes_a_filter_only() -> None:
    assert build_index_query("alpha", None) == {"v": 1, "collection": "alpha", "index": True}
    with pytest.raises(fc.InvalidArgumentError, match="filter: unknown key"):
        build_index_query("alpha", {"cloud": 1})
    with pytest.raises(fc.InvalidArgumentError, match="not allowed with index"):
        core.parse_query({"v": 1, "collection": "alpha", "index": True, "chip_size": 3})
