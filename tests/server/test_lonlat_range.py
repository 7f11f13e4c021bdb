"""EPSG:4326 coordinates out of range are INVALID_ARGUMENT, not a silent empty result."""

from __future__ import annotations

import json
import warnings

import pytest
import shapely

import catalog
import flight_client
from flight_server import ChipRequest, InvalidArgumentError

UTM_BOX = (500000.0, 4100000.0, 500100.0, 4100100.0)


@pytest.mark.parametrize("geometries", [
    [UTM_BOX],                                   # metres without their CRS
    [(11.0, 46.0, 11.1, 46.1), (46.0, 95.0, 46.1, 95.1)],  # a latitude past the pole
    [(-181.0, 0.0, -179.0, 1.0)],
])
def test_out_of_range_geometries_are_refused(geometries) -> None:
    with pytest.raises(InvalidArgumentError, match="outside EPSG:4326's range"):
        ChipRequest.create(geometries=geometries)


def test_in_range_and_projected_geometries_pass() -> None:
    ChipRequest.create(geometries=[(-180.0, -90.0, 180.0, 90.0)])
    ChipRequest.create(geometries=[UTM_BOX], geometry_crs="EPSG:32633")
    ChipRequest.create(geometries=[(11.0, 46.0)], geometry_crs="OGC:CRS84", chip_size=8)


def test_filter_bbox_out_of_range_is_refused(flight_root) -> None:
    alpha = flight_root.collections["alpha"]
    with pytest.raises(InvalidArgumentError, match=r"bbox: .* outside EPSG:4326's range"):
        alpha.subset(bbox=UTM_BOX)
    assert len(alpha.subset(bbox=UTM_BOX, geometry_crs="EPSG:32633")) > 0
    assert catalog.select_rows(alpha.table, bbox=(-10.0, -10.0, 10.0, 10.0)).size == 0


def test_over_flight_the_client_gets_invalid_argument(flight_root, start_server) -> None:
    server = start_server(flight_root.path)
    client = flight_client.connect(server.location)
    with pytest.raises(flight_client.InvalidArgumentError, match=r"geometries: .*metres need"):
        list(client.chips("alpha", geometries=[UTM_BOX]))
    with pytest.raises(flight_client.InvalidArgumentError, match="bbox"):
        list(client.chips("alpha", geometries=[UTM_BOX], geometry_crs="EPSG:32633",
                          filter={"bbox": list(UTM_BOX)}))


def test_empty_results_say_why(flight_root, start_server) -> None:
    """A query that makes no chip warns with both extents (plan and stream), in-band."""
    server = start_server(flight_root.path)
    client = flight_client.connect(server.location)
    far = [(-70.0, -30.0, -69.9, -29.9)]  # South America; the data is in UTM 33N
    with pytest.warns(flight_client.EmptyResultWarning,
                      match=r"geometries cover \[-70, -30, -69.9, -29.9\] \(EPSG:4326\)"):
        batches = list(client.chips("alpha", geometries=far))
    assert batches == []  # the note is not a batch
    with pytest.warns(flight_client.EmptyResultWarning, match="selected scenes of 'alpha' cover"):
        info = client.plan("alpha", geometries=far)
    assert info.total_records == 0
    alpha = flight_root.collections["alpha"]
    lon, lat = shapely.from_wkb(alpha.table["geometry"][0].as_py()).centroid.coords[0]
    with pytest.warns(flight_client.EmptyResultWarning, match="longitude and latitude swapped"):
        list(client.chips("alpha", geometries=[(lat, lon)], chip_size=4))
    with pytest.warns(flight_client.EmptyResultWarning, match="filter selects none of the 4"):
        list(client.chips("alpha", geometries=[(lon, lat)], chip_size=4,
                          filter={"date_range": "1990-01-01/1990-02-01"}))
    # any Flight client sees the note as the app_metadata of one empty batch
    from pyarrow import flight

    doc = client.query("alpha", geometries=far)
    reader = flight.connect(server.location).do_get(flight.Ticket(json.dumps(doc).encode()))
    chunk = reader.read_chunk()
    assert chunk.data.num_rows == 0
    assert "makes no chip" in json.loads(bytes(chunk.app_metadata))["warning"]


def test_a_query_with_chips_does_not_warn(flight_root, start_server) -> None:
    server = start_server(flight_root.path)
    client = flight_client.connect(server.location)
    alpha = flight_root.collections["alpha"]
    lon, lat = shapely.from_wkb(alpha.table["geometry"][0].as_py()).centroid.coords[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error", flight_client.EmptyResultWarning)
        assert sum(b.num_rows for b in client.chips("alpha", geometries=[(lon, lat)],
                                                    chip_size=4)) > 0
