"""The Flight service on a real loopback port: flights, tickets, shards, actions, limits."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import rasterio
from pyarrow import flight
from rasterio.windows import Window as RioWindow

import catalog
from flight_server import ChipEngine, ChipRequest, Server
from tests.support.flight_fixtures import lonlat_box, make_root, query, read_all, ticket


@pytest.fixture(scope="module")
def served(flight_root, start_server):
    srv = start_server(flight_root.path, shards=2)
    client = flight.connect(srv.location)
    yield srv, client, flight_root.collections
    client.close()


def _action(client: flight.FlightClient, kind: str, body: bytes = b"") -> object:
    results = list(client.do_action(flight.Action(kind, body)))
    assert len(results) == 1
    return json.loads(results[0].body.to_pybytes())


def test_list_flights_and_index(served) -> None:
    _srv, client, cols = served
    flights = {f.descriptor.path[0].decode(): f for f in client.list_flights()}
    assert sorted(flights) == ["alpha", "beta"]
    info = flights["alpha"]
    assert info.total_records == len(cols["alpha"])
    assert info.schema.equals(cols["alpha"].table.schema)
    info2 = client.get_flight_info(flight.FlightDescriptor.for_path("alpha"))
    table = client.do_get(info2.endpoints[0].ticket).read_all()
    assert table.equals(cols["alpha"].table)
    assert table.schema.metadata[b"geo"] == cols["alpha"].table.schema.metadata[b"geo"]


def test_query_plan_and_shards_union_equals_unsharded(served) -> None:
    _srv, client, _cols = served
    q = query(bands=["red", "nir"], geometries={"bbox": [lonlat_box(10, 10, 50, 50),
                                                         lonlat_box(300, 200, 80, 40),
                                                         lonlat_box(450, 450, 30, 30)]})
    info = client.get_flight_info(flight.FlightDescriptor.for_command(json.dumps(q)))
    assert len(info.endpoints) == 2  # the server's default shard count
    chip_type = info.schema.field("chip").type
    assert chip_type.extension_name == "arrow.fixed_shape_tensor"
    assert chip_type.shape == [2, 64, 64] and chip_type.dim_names == ["band", "y", "x"]
    unsharded = client.do_get(ticket(q)).read_all()
    assert info.total_records == unsharded.num_rows == 10  # scenes 1, 3 miss the first box
    parts = read_all(client, info)
    union = pa.concat_tables(parts)
    keys = list(zip(union.column("id").to_pylist(), union.column("geometry_index").to_pylist(),
                    strict=True))
    assert len(set(keys)) == len(keys) == unsharded.num_rows  # no duplicates, no gaps
    want = dict(zip(zip(unsharded.column("id").to_pylist(),
                        unsharded.column("geometry_index").to_pylist(), strict=True),
                    unsharded.column("chip").combine_chunks().to_numpy_ndarray(), strict=True))
    for k, chip in zip(keys, union.column("chip").combine_chunks().to_numpy_ndarray(), strict=True):
        np.testing.assert_array_equal(chip, want[k])
    four = client.get_flight_info(flight.FlightDescriptor.for_command(
        json.dumps({**q, "shard": {"count": 4}})))
    assert len(four.endpoints) == 4
    assert sum(t.num_rows for t in read_all(client, four)) == 10
    one = json.loads(four.endpoints[3].ticket.ticket)
    assert one["shard"] == {"index": 3, "count": 4}


def test_pixels_equal_engine_and_rasterio(served) -> None:
    _srv, client, cols = served
    q = query(bands=["nir"], geometries={"bbox": lonlat_box(100, 50, 70, 60)}, chip_size=None,
              filter={"ids": ["s0"]}, columns=[])
    del q["chip_size"]
    got = client.do_get(ticket(q)).read_all()
    assert got.num_rows == 1
    with ChipEngine() as e:
        local = e.read(cols["alpha"].subset(ids=["s0"]), ChipRequest.create(
            geometries=[lonlat_box(100, 50, 70, 60)], bands=["nir"]))
    chips = got.column("chip").combine_chunks().to_numpy_ndarray()
    np.testing.assert_array_equal(chips, local.chips)
    with rasterio.open(cols["alpha"].header(0, "nir").href) as ds:
        ref = ds.read(window=RioWindow(100, 50, 70, 60))
    np.testing.assert_array_equal(chips[0], ref)
    valid = got.column("valid").combine_chunks().to_numpy_ndarray()
    assert valid.dtype == np.uint8 and valid.shape == (1, 60, 70)
    field = got.schema.field("chip")
    assert json.loads(field.metadata[b"bands"]) == ["nir"]
    assert got.column("transform")[0].as_py() == [501000.0, 10.0, 0.0, 4099500.0, 0.0, -10.0]


def test_filters_columns_and_time_series(served) -> None:
    _srv, client, _cols = served
    q = query(filter={"date_range": "2024-02-01/2024-03-31"})
    t = client.do_get(ticket(q)).read_all()
    assert t.column("id").to_pylist() == ["s1", "s2"]
    q = query(filter={"where": [["id", "in", ["s0", "s3"]]]}, time_series=True, chip_size=32)
    ts = client.do_get(ticket(q)).read_all()
    assert ts.num_rows == 1
    assert ts.column("id")[0].as_py() == ["s0", "s3"]
    assert ts.schema.field("chip").type.shape == [2, 2, 32, 32]
    assert ts.schema.field("chip").type.dim_names == ["time", "band", "y", "x"]


def test_raw_query_and_server_ticket_are_the_same(served) -> None:
    _srv, client, _ = served
    q = query(shard={"index": 0, "count": 1})
    a = client.do_get(ticket(q)).read_all()
    info = client.get_flight_info(flight.FlightDescriptor.for_command(json.dumps(q)))
    assert len(info.endpoints) == 1
    b = client.do_get(info.endpoints[0].ticket).read_all()
    assert a.equals(b)


def test_actions(served) -> None:
    _srv, client, _cols = served
    names = {a.type for a in client.list_actions()}
    assert {"health", "collections", "describe", "stats"} <= names
    health = _action(client, "health")
    assert health["status"] == "ok" and health["collections"] == 2
    listed = _action(client, "collections")
    assert {c["name"]: c["scenes"] for c in listed} == {"alpha": 4, "beta": 1}
    desc = _action(client, "describe", b"alpha")
    assert desc["scenes"] == 4 and [b["name"] for b in desc["bands"]] == ["red", "nir"]
    client.do_get(ticket(query())).read_all()
    stats = _action(client, "stats")
    for key in ("requests", "chips", "bytes_fetched", "cache_hit_rate", "errors", "streams"):
        assert key in stats
    assert stats["chips_sent"] >= 4 and stats["streams_active"] == 0
    with pytest.raises(pa.ArrowInvalid, match="unknown action 'nope'"):
        list(client.do_action(flight.Action("nope", b"")))


BAD = [
    (b"not json", "ticket: not valid JSON"),
    (b"\xff\xfe", "not UTF-8"),
    (b"[1, 2]", "expected a JSON object"),
    (b"{}", "v: missing"),
    (json.dumps({"v": 2, "collection": "alpha"}).encode(), "v: this server speaks version 1"),
    (json.dumps({"v": 1}).encode(), "collection: missing"),
    (json.dumps(query(collection="../etc/passwd")).encode(), "not a Collection name"),
    (json.dumps(query(collection="s3://bucket/x")).encode(), "not a Collection name"),
    (json.dumps(query(collection="/tmp/alpha")).encode(), "not a Collection name"),
    (json.dumps(query(colection="alpha")).encode(), "colection: unknown key"),
    (json.dumps(query(bands="red")).encode(), "bands: expected a list"),
    (json.dumps(query(bands=["blue"])).encode(), "bands: 'blue' not in"),
    (json.dumps(query(bands=[1])).encode(), "bands: expected band names"),
    (json.dumps(query(chip_size="big")).encode(), "chip_size"),
    (json.dumps(query(chip_size=[1, 2, 3])).encode(), "chip_size"),
    (json.dumps(query(chip_size=-4)).encode(), "chip_size"),
    (json.dumps(query(chip_size=100000)).encode(), "pixels"),
    (json.dumps(query(resolution=0)).encode(), "resolution"),
    (json.dumps(query(crs="EPSG:999999", resolution=1)).encode(), "crs"),
    (json.dumps(query(resampling="cubic")).encode(), "resampling"),
    (json.dumps(query(time_series="yes")).encode(), "time_series"),
    (json.dumps(query(mask=1)).encode(), "mask"),
    (json.dumps(query(dtype="complex128")).encode(), "dtype"),
    (json.dumps(query(dtype="uint8")).encode(), "dtype: casting"),
    (json.dumps(query(batch_rows=0)).encode(), "batch_rows"),
    (json.dumps(query(columns=["nope"])).encode(), "columns"),
    (json.dumps(query(shard={"index": 2, "count": 2})).encode(), "shard.index"),
    (json.dumps(query(shard={"index": 0})).encode(), "shard.count"),
    (json.dumps(query(shard=[0, 2])).encode(), "shard: expected an object"),
    (json.dumps(query(geometries=[1, 2, 3, 4])).encode(), "geometries: expected an object"),
    (json.dumps(query(geometries={})).encode(), "give exactly one of"),
    (json.dumps(query(geometries={"bbox": [1, 2, 3]})).encode(), "expected 4 numbers"),
    (json.dumps(query(geometries={"bbox": [3, 0, 1, 1]})).encode(), "bbox"),
    (json.dumps(query(geometries={"wkb_base64": ["%%%"]})).encode(), "not valid base64"),
    (json.dumps(query(geometries={"wkb_base64": ["AAAA"]})).encode(), "not a valid geometry"),
    (json.dumps(query(geometries={"geojson": [{"type": "Blob"}]})).encode(), "geometry"),
    (json.dumps(query(geometries={"bbox": [0, 0, 1, 1], "crs": "nonsense"})).encode(), "crs"),
    (json.dumps(query(geometries={"bbox": [0, 0, 1, 1], "srs": "x"})).encode(), "unknown key"),
    (json.dumps(query(filter={"cloud": 1})).encode(), "filter: unknown key"),
    (json.dumps(query(filter={"date_range": 5})).encode(), "filter.date_range"),
    (json.dumps(query(filter={"date_range": "2024-99-01/2024-01-01"})).encode(), "date_range"),
    (json.dumps(query(filter={"cloud_cover_lt": 20})).encode(), "eo:cloud_cover"),
    (json.dumps(query(filter={"where": [["id", "~", 1]]})).encode(), "unknown op"),
    (json.dumps(query(filter={"bbox": [0, 0, 1]})).encode(), "filter.bbox"),
    (json.dumps(query(index=True)).encode(), "not allowed with index"),
    (json.dumps({"v": True, "collection": "alpha"}).encode(), "v:"),
]


@pytest.mark.parametrize(("data", "match"), BAD, ids=[m for _, m in BAD])
def test_malformed_tickets_are_invalid_argument(served, data: bytes, match: str) -> None:
    _srv, client, _ = served
    with pytest.raises(pa.ArrowInvalid, match=match) as info:
        client.do_get(flight.Ticket(data)).read_all()
    assert "INVALID_ARGUMENT" in str(info.value)
    if data.startswith(b"{") and b'"v": 1' in data:  # the same query via get_flight_info
        with pytest.raises(pa.ArrowInvalid):
            client.get_flight_info(flight.FlightDescriptor.for_command(data))
    assert _action(client, "health")["status"] == "ok"  # the server keeps serving


def test_unknown_collection_is_not_found(served) -> None:
    _srv, client, _ = served
    with pytest.raises(pa.ArrowKeyError, match="no Collection 'gamma'") as info:
        client.do_get(ticket(query(collection="gamma"))).read_all()
    assert "NOT_FOUND" in str(info.value)
    with pytest.raises(pa.ArrowKeyError):
        client.get_flight_info(flight.FlightDescriptor.for_path("gamma"))
    with pytest.raises(pa.ArrowInvalid):
        client.get_flight_info(flight.FlightDescriptor.for_path("../alpha"))


def test_missing_imagery_is_unavailable(tmp_path: Path) -> None:
    cols = make_root(tmp_path / "root", tmp_path / "data", scenes=2)
    Path(cols["alpha"].header(1, "red").href).unlink()
    with Server(str(tmp_path / "root"), port=0) as srv:
        client = flight.connect(srv.location)
        with pytest.raises(flight.FlightUnavailableError, match=r"upstream storage.*s1_red"):
            client.do_get(ticket(query())).read_all()
        ok = client.do_get(ticket(query(on_error="skip"))).read_all()
        assert ok.column("id").to_pylist() == ["s0"]
        assert _action(client, "health")["status"] == "ok"


def test_cancellation_frees_the_stream(tmp_path: Path) -> None:
    make_root(tmp_path / "root", tmp_path / "data", scenes=4)
    geoms = [lonlat_box(c, r, 20, 20) for c in range(0, 480, 24) for r in range(0, 480, 48)]
    with Server(str(tmp_path / "root"), port=0) as srv:
        client = flight.connect(srv.location)
        reader = client.do_get(ticket(query(geometries={"bbox": geoms}, batch_rows=2)))
        first = reader.read_chunk()
        assert first.data.num_rows == 1  # the first batch ramps up to 2
        reader.cancel()
        deadline = time.time() + 10
        while _action(client, "stats")["streams_active"] and time.time() < deadline:
            time.sleep(0.05)
        stats = _action(client, "stats")
        assert stats["streams_active"] == 0 and stats["cancelled"] == 1
        chips = stats["chips"]
        time.sleep(0.3)
        assert _action(client, "stats")["chips"] == chips  # no work continues
        assert chips < len(geoms) * 4


def test_stream_limit_is_unavailable(tmp_path: Path) -> None:
    make_root(tmp_path / "root", tmp_path / "data", scenes=4)
    geoms = [lonlat_box(c, r, 20, 20) for c in range(0, 480, 30) for r in range(0, 480, 60)]
    with Server(str(tmp_path / "root"), port=0, max_streams=1) as srv:
        client = flight.connect(srv.location)
        held = client.do_get(ticket(query(geometries={"bbox": geoms}, batch_rows=1)))
        held.read_chunk()
        with pytest.raises(flight.FlightUnavailableError, match="server busy"):
            client.do_get(ticket(query())).read_all()
        held.cancel()
        deadline = time.time() + 10
        while _action(client, "stats")["streams_active"] and time.time() < deadline:
            time.sleep(0.05)
        assert client.do_get(ticket(query())).read_all().num_rows == 4


def test_concurrent_clients(served) -> None:
    srv, _client, _ = served
    results: list[int] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            c = flight.connect(srv.location)
            results.append(c.do_get(ticket(query())).read_all().num_rows)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and results == [4] * 6


def test_workers_spread_endpoints(tmp_path: Path) -> None:
    make_root(tmp_path / "root", tmp_path / "data", scenes=4)
    with Server(str(tmp_path / "root"), port=0, workers=2) as srv:
        assert len(srv.locations) == 2 and srv.locations[0] != srv.locations[1]
        client = flight.connect(srv.location)
        info = client.get_flight_info(flight.FlightDescriptor.for_command(
            json.dumps(query(shard={"count": 4}))))
        locs = [ep.locations[0].uri.decode() for ep in info.endpoints]
        # Placed by locality over both workers (ceil(4 / 2) = 2 each), every
        # endpoint listing the other worker next, for failover.
        assert sorted(locs) == sorted(srv.locations * 2)
        for ep in info.endpoints:
            assert sorted(loc.uri.decode() for loc in ep.locations) == sorted(srv.locations)
        rows = 0
        pids = set()
        for ep in info.endpoints:
            c = flight.connect(ep.locations[0])
            rows += c.do_get(ep.ticket).read_all().num_rows
            pids.add(_action(c, "health")["pid"])
        assert rows == 4 and len(pids) == 2  # two processes served the shards


def test_object_store_root(tmp_path: Path, moto_s3, monkeypatch) -> None:
    from tests.conftest import s3_options

    endpoint, s3 = moto_s3
    cols = make_root(tmp_path / "root", tmp_path / "data", scenes=2)
    s3.create_bucket(Bucket="root")
    for name in ("alpha", "beta"):
        s3.upload_file(str(tmp_path / "root" / f"{name}.parquet"), "root",
                       f"fleet/{name}.parquet")
    s3.put_object(Bucket="root", Key="fleet/nested/other.parquet", Body=b"x")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    opts = {k: v for k, v in s3_options(endpoint).items() if k != "config"}
    with Server("s3://root/fleet", port=0, store_options=opts) as srv:
        client = flight.connect(srv.location)
        assert sorted(f.descriptor.path[0].decode() for f in client.list_flights()) == [
            "alpha", "beta"]
        got = client.do_get(ticket(query())).read_all()
        assert got.num_rows == 2
        with ChipEngine() as e:
            local = e.read(cols["alpha"], ChipRequest.create(**{
                "geometries": [lonlat_box(110, 10, 100, 80)], "chip_size": 64}))
        chips = got.column("chip").combine_chunks().to_numpy_ndarray()
        np.testing.assert_array_equal(chips, local.chips)


def test_collections_are_reloaded_when_saved_again(tmp_path: Path) -> None:
    cols = make_root(tmp_path / "root", tmp_path / "data", scenes=3)
    with Server(str(tmp_path / "root"), port=0) as srv:
        client = flight.connect(srv.location)
        assert client.get_flight_info(flight.FlightDescriptor.for_path("alpha")).total_records == 3
        cols["alpha"].subset(ids=["s0"]).save(tmp_path / "root" / "alpha.parquet")
        assert client.get_flight_info(flight.FlightDescriptor.for_path("alpha")).total_records == 1
        catalog.load(tmp_path / "root" / "beta.parquet").save(tmp_path / "root" / "gamma.parquet")
        assert len(list(client.list_flights())) == 3
