"""The wire contract's parser, alone: every field's JSON checks, and hostile JSON."""

from __future__ import annotations

import json

import pytest

from cogflight_core import (
    FILTER_FIELDS,
    InvalidArgumentError,
    LimitExceededError,
    chip_fields,
    parse_query,
)
from cogflight_core._wire import MAX_JSON_DEPTH, MAX_TICKET_BYTES

BASE = {"v": 1, "collection": "s2", "geometries": {"bbox": [0, 0, 1, 1]}}

# One value of the wrong JSON type per field: every declared field must have a case.
WRONG = {
    "geometries": [1, 2, 3, 4],
    "bands": "red",
    "filter": ["date_range"],
    "chip_size": "256",
    "resolution": [10],
    "crs": 4326,
    "resampling": "cubic",
    "time_series": "yes",
    "mask": 1,
    "all_touched": None,
    "dtype": 32,
    "scale_offset": [],
    "batch_rows": 0,
    "columns": ["label", 3],
    "ramp": "no",
    "geometry_scenes": [["s0"], "s1"],
    "patches": 1,
    "shard": {"count": 0},
    "on_error": "ignore",
    "skip": -1,
}
FILTER_WRONG = {
    "date_range": 2024,
    "cloud_cover_lt": "20",
    "bbox": [0, 0, 1],
    "ids": "a",
    "where": "label == 1",
}


def _query(**fields):
    return {**BASE, **fields}


def test_a_minimal_query_parses() -> None:
    q = parse_query(json.dumps(BASE).encode())
    assert q.collection == "s2" and not q.index
    assert q.request == {"geometries": [(0, 0, 1, 1)], "geometry_crs": "EPSG:4326"}
    assert q.shard is None and q.shard_count is None


def test_a_ticket_parses_back_to_its_query() -> None:
    q = parse_query(_query(chip_size=[8, 16], bands=["red"], filter={"ids": ["a"]}))
    again = parse_query(q.ticket((1, 3)))
    assert again.request == q.request and again.filter == q.filter
    assert again.shard == (1, 3)


@pytest.mark.parametrize("name", list(chip_fields()))
def test_every_field_rejects_a_wrong_type_naming_itself(name: str) -> None:
    spec = chip_fields()[name]
    key = (spec.wire or name).split(".")[0]
    if name == "geometry_crs":
        doc = _query(geometries={"bbox": [0, 0, 1, 1], "crs": 4326})
    else:
        assert name in WRONG, f"add a wrong value for the new field {name!r} to WRONG"
        doc = _query(**{name: WRONG[name]})
    with pytest.raises(InvalidArgumentError) as info:
        parse_query(doc)
    assert str(info.value).startswith(key), str(info.value)


@pytest.mark.parametrize("name", list(FILTER_FIELDS))
def test_every_filter_field_rejects_a_wrong_type_naming_itself(name: str) -> None:
    assert name in FILTER_WRONG, f"add a wrong value for the new filter field {name!r}"
    with pytest.raises(InvalidArgumentError, match=rf"^filter\.{name}"):
        parse_query(_query(filter={name: FILTER_WRONG[name]}))


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({**BASE, "colour": 1}, r"^colour: unknown key"),
        ({k: v for k, v in BASE.items() if k != "v"}, r"^v: missing"),
        ({**BASE, "v": 2}, r"^v: this server speaks version 1"),
        ({**BASE, "v": True}, r"^v: "),
        ({"v": 1, "geometries": BASE["geometries"]}, r"^collection: missing"),
        ({**BASE, "collection": "../etc/passwd"}, r"not a Collection name"),
        ({**BASE, "collection": "s3://bucket/x"}, r"not a Collection name"),
        ({"v": 1, "collection": "s2"}, r"^geometries: missing"),
        ({"v": 1, "collection": "s2", "index": True, "bands": ["a"]}, r"not allowed with index"),
        (_query(geometries={"bbox": [0, 0, 1, 1], "geojson": []}), r"exactly one of"),
        (_query(geometries={"bbox": []}), r"expected 4 numbers, got 0"),
        (_query(geometries={"bbox": [0, 0, 1]}), r"expected 4 numbers"),
        (_query(geometries={"wkb_base64": ["***"]}), r"not valid base64"),
        (
            _query(geometries={"geojson": {"type": "FeatureCollection", "features": None}}),
            r"features",
        ),
        (_query(geometries={"geojson": {"type": "FeatureCollection", "features": 3}}), r"features"),
        (_query(geometries={"geojson": [3]}), r"GeoJSON object"),
        (_query(geometries={"box": [0, 0, 1, 1]}), r"unknown key 'box'"),
        (_query(chip_size=0), r"^chip_size: values must be positive"),
        (_query(chip_size=1.5), r"^chip_size: expected whole numbers"),
        (_query(chip_size=[1, 2, 3]), r"^chip_size: expected a number or \[h, w\]"),
        (_query(resolution=-10), r"^resolution: values must be positive"),
        (_query(shard={"index": 4, "count": 4}), r"^shard.index: must be in \[0, 4\)"),
        (_query(shard={"count": 2, "of": 1}), r"^shard: unknown key 'of'"),
        (_query(filter={"clouds": 1}), r"^filter: unknown key 'clouds'"),
        (_query(filter={"where": [1]}), r"^filter\.where\[0\]"),
    ],
)
def test_bad_queries_name_what_is_wrong(doc, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        parse_query(doc)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"v": 1, "collection": "s", "geometries": {"bbox": [0, 0, NaN, 1]}}',
        b'{"v": 1, "collection": "s", "geometries": {"bbox": [0, 0, 1, Infinity]}}',
        b'{"v": 1, "collection": "s", "geometries": {"bbox": [0, 0, 1, 1]}, "dtype": -Infinity}',
    ],
)
def test_json_constants_are_refused(raw: bytes) -> None:
    with pytest.raises(InvalidArgumentError, match="finite numbers"):
        parse_query(raw)


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 10_000, 200_000])
def test_deep_nesting_is_refused(depth: int) -> None:
    raw = b'{"v": 1, "collection": "s2", "x": ' + b"[" * depth + b"]" * depth + b"}"
    with pytest.raises(InvalidArgumentError, match="nested too deeply"):
        parse_query(raw)


def test_tickets_that_are_not_json_objects() -> None:
    for raw, message in (
        (b"\xff\xfe", "not UTF-8"),
        (b"{", "not valid JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (b"null", "expected a JSON object"),
    ):
        with pytest.raises(InvalidArgumentError, match=message):
            parse_query(raw)
    with pytest.raises(LimitExceededError, match="over the limit"):
        parse_query(b" " * (MAX_TICKET_BYTES + 1))


def test_numbers_that_are_booleans_are_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="chip_size"):
        parse_query(_query(chip_size=True))
    with pytest.raises(InvalidArgumentError, match="batch_rows"):
        parse_query(_query(batch_rows=False))


@pytest.mark.parametrize("value", [-1, True, 1.5, "3", None, [2]])
def test_skip_is_a_non_negative_integer(value) -> None:
    with pytest.raises(InvalidArgumentError, match="skip"):
        parse_query(_query(skip=value))
    assert parse_query(_query(skip=0)).request["skip"] == 0
    assert parse_query(_query(skip=10**12)).request["skip"] == 10**12
