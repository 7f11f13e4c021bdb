"""The one geometry normaliser: every accepted form, and the rules every caller shares."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
import shapely

import catalog
from catalog import InvalidArgumentError, as_geometry, bbox_geometry, to_geometries
from flight_server import ChipRequest

BOX = shapely.box(1.0, 2.0, 3.0, 4.0)

FORMS = {
    "bbox tuple": (1, 2, 3, 4),
    "bbox list": [1.0, 2.0, 3.0, 4.0],
    "bbox numpy": np.array([1, 2, 3, 4], dtype=np.float32),
    "shapely": BOX,
    "wkb": shapely.to_wkb(BOX),
    "wkb bytearray": bytearray(shapely.to_wkb(BOX)),
    "wkt": shapely.to_wkt(BOX),
    "geojson": json.loads(shapely.to_geojson(BOX)),
    "feature": {"type": "Feature", "properties": {},
                "geometry": json.loads(shapely.to_geojson(BOX))},
    "feature collection": {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": json.loads(shapely.to_geojson(BOX))}]},
    "arrow wkb": pa.array([shapely.to_wkb(BOX)], pa.binary()),
    "arrow large wkb": pa.array([shapely.to_wkb(BOX)], pa.large_binary()),
    "chunked wkb": pa.chunked_array([pa.array([shapely.to_wkb(BOX)], pa.binary())]),
    "list of one": [BOX],
}


@pytest.mark.parametrize("form", list(FORMS))
def test_every_form_reads_as_the_same_geometry(form: str) -> None:
    (geom,) = to_geometries(FORMS[form])
    assert shapely.equals(geom, BOX)


def test_lists_points_and_numpy_rows() -> None:
    geoms = to_geometries([(0, 0, 1, 1), (5, 6), BOX, (np.float32(1.5), np.int64(2))])
    assert [g.geom_type for g in geoms] == ["Polygon", "Point", "Polygon", "Point"]
    assert to_geometries((5, 6))[0].equals(shapely.Point(5, 6))
    rows = to_geometries(np.array([[0, 0, 1, 1], [1, 1, 2, 2]]))
    assert [g.bounds for g in rows] == [(0, 0, 1, 1), (1, 1, 2, 2)]
    multi = to_geometries(pa.array([shapely.to_wkb(BOX)] * 3))
    assert len(multi) == 3


def test_degenerate_bbox_is_the_point_or_line_it_describes() -> None:
    assert bbox_geometry((1, 2, 1, 2)).equals(shapely.Point(1, 2))
    assert bbox_geometry((1, 2, 1, 5)).equals(shapely.LineString([(1, 2), (1, 5)]))
    assert bbox_geometry((1, 2, 4, 2)).equals(shapely.LineString([(1, 2), (4, 2)]))
    assert bbox_geometry((1, 2, 4, 5)).equals(shapely.box(1, 2, 4, 5))


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ((3, 0, 1, 1), "min <= max"),
        ((0, 3, 1, 1), "min <= max"),
        ((0, 0, float("inf"), 1), "non-finite"),
        ((0, 0, float("nan"), 1), "non-finite"),
        ((float("nan"), 1), "non-finite"),
        ("POLYGON EMPTY", "empty"),
        ("POLYGON ((0 0, 1 0, 1 1, 0 0", "not a valid geometry"),
        (b"not wkb", "not a valid geometry"),
        ("GEOMETRYCOLLECTION (POINT (1 2))", "not supported"),
        ("LINEARRING (0 0, 1 0, 1 1, 0 0)", "not supported"),
        ({"type": "Feature", "geometry": None}, "not a valid geometry"),
        ({"type": "FeatureCollection", "features": []}, "no geometries"),
        ([], "no geometries"),
        (pa.array([], pa.binary()), "no geometries"),
        (pa.array([None], pa.binary()), "nulls"),
        (pa.array([1, 2]), "WKB"),
        ([[1, 2, 3]], r"geometries\[0\]: expected"),
        (object(), "expected"),
        ((True, 0, 1, 1), "expected"),
    ],
)
def test_rules(value: object, match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        to_geometries(value)


def test_errors_name_the_item() -> None:
    with pytest.raises(InvalidArgumentError, match=r"^geometries\[1\]: a bbox"):
        to_geometries([(0, 0, 1, 1), (3, 0, 1, 1)])
    with pytest.raises(InvalidArgumentError, match=r"^bbox: "):
        bbox_geometry((1, 2, 3))
    with pytest.raises(InvalidArgumentError, match=r"features\[0\]"):
        to_geometries({"type": "FeatureCollection", "features": [{"type": "Feature",
                                                                  "geometry": None}]})


def test_as_geometry_is_the_union() -> None:
    g = as_geometry([(0, 0, 1, 1), (2, 2, 3, 3)])
    assert g.area == pytest.approx(2.0)
    assert as_geometry(BOX) is BOX


@pytest.mark.parametrize(
    "value",
    [(1, 2, 1, 2), (1, 2, 3, 2), (3, 0, 1, 1), (0, 0, float("nan"), 1), "POLYGON EMPTY",
     "GEOMETRYCOLLECTION (POINT (1 2))", [], (5, 6)],
)
def test_the_engine_and_the_catalog_share_the_rules(value: object) -> None:
    """ChipRequest and Collection filtering accept and refuse exactly the same geometries."""
    try:
        to_geometries(value)
    except InvalidArgumentError as exc:
        with pytest.raises(InvalidArgumentError) as engine:
            ChipRequest.create(geometries=value)
        assert str(engine.value) == str(exc)
        with pytest.raises(InvalidArgumentError) as table:
            catalog.select_rows(_table(), geometry=value)
        assert str(table.value) == str(exc).replace("geometries", "geometry", 1)
    else:
        ChipRequest.create(geometries=value)
        catalog.select_rows(_table(), geometry=value)


def _table() -> pa.Table:
    return pa.table({
        "id": ["a"],
        "datetime": pa.array([None], pa.timestamp("us", tz="UTC")),
        "bbox": pa.array([{"xmin": 0.0, "ymin": 0.0, "xmax": 10.0, "ymax": 10.0}]),
        "geometry": [shapely.to_wkb(shapely.box(0, 0, 10, 10))],
    })


def test_zero_width_bbox_selects_and_makes_a_chip() -> None:
    """The issue's example: a zero-width bbox is a line, accepted by both."""
    assert list(catalog.select_rows(_table(), bbox=(5, 1, 5, 3))) == [0]
    (geom,) = ChipRequest.create(geometries=[(5, 1, 5, 3)]).geometries
    assert geom.geom_type == "LineString"
