"""The data access policy end to end: a real Flight server, real files, real HTTP servers.

A Collection under the served root is untrusted input. These tests put Collections
there whose hrefs are ``/etc/passwd``, ``file:///etc/passwd`` and an internal HTTP
service on loopback (a real server that records every request), plus one whose
allowed host redirects to that internal service, and check that: the client gets
PERMISSION_DENIED naming the asset (no bytes, no server path); the internal service
sees no request at all; the good Collections beside them are still listed and served;
``--allow`` for a local directory makes the demo's Collection readable through the
``cogflight serve`` code path; the embedded server reads its user's files out of the
box and can be restricted. Defect 8: unreadable files under the root are listed in
``health``, never breaking ListFlights or ``collections`` for everyone.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet
import pytest
from pyarrow import flight

import catalog
from cogflight._cli import build_parser
from cogflight._serve_cmd import server_from_args
from flight_server import CollectionRoot, Server
from tests.support.faults import FaultServer
from tests.support.flight_fixtures import lonlat_box, make_root, query, ticket
from tests.support.servers import RangeServer

SECRET = b"TOP-SECRET-TOKEN:"


def with_href(collection: catalog.Collection, href: str) -> catalog.Collection:
    """``collection`` with every asset href replaced by ``href`` (headers kept)."""
    table = collection.table
    for asset in collection.assets:
        name = catalog.asset_column(asset)
        arr = table.column(name).combine_chunks()
        children = [
            pa.array([href] * len(arr), pa.string()) if f.name == "href" else arr.field(f.name)
            for f in arr.type
        ]
        column = pa.StructArray.from_arrays(children, fields=list(arr.type))
        i = table.schema.get_field_index(name)
        table = table.set_column(i, table.schema.field(name), column)
    return catalog.Collection(table)


def _action(client: flight.FlightClient, kind: str, body: bytes = b"") -> object:
    (result,) = list(client.do_action(flight.Action(kind, body)))
    return json.loads(result.body.to_pybytes())


@pytest.fixture(scope="module")
def internal(tmp_path_factory: pytest.TempPathFactory):
    """An internal service on loopback with a secret, recording every request."""
    base = tmp_path_factory.mktemp("internal")
    (base / "admin").mkdir()
    (base / "admin" / "secret").write_bytes(SECRET * 200_000)  # long enough for any range
    with RangeServer(base) as server:
        yield server


@pytest.fixture(scope="module")
def hostile_root(tmp_path_factory: pytest.TempPathFactory, internal):
    """A root with a good Collection (data under the root) and three hostile ones."""
    base = tmp_path_factory.mktemp("hostile")
    root = base / "root"
    cols = make_root(root, root / "data", scenes=2)
    alpha = cols["alpha"]
    hostile = {
        "passwd": "/etc/passwd",
        "passwd_url": "file:///etc/passwd",
        "ssrf": f"{internal.url}/admin/secret",
        "metadata": "http://169.254.169.254/latest/meta-data/iam/x.tif",
    }
    for name, href in hostile.items():
        with_href(alpha, href).save(root / f"{name}.parquet")
    return root, hostile


@pytest.fixture(scope="module")
def hostile_server(hostile_root):
    root, _ = hostile_root
    with Server(str(root), port=0, allow=()) as srv:  # the root's own store only
        client = flight.connect(srv.location)
        yield srv, client
        client.close()


@pytest.mark.parametrize("name", ["passwd", "passwd_url", "ssrf", "metadata"])
def test_hostile_hrefs_are_refused_naming_the_asset(hostile_root, hostile_server, internal,
                                                    name: str) -> None:
    root, _ = hostile_root
    srv, client = hostile_server
    internal.reset()
    doc = query(collection=name, bands=["red", "nir"])
    calls = [
        lambda: client.do_get(ticket(doc)).read_all(),
        lambda: client.get_flight_info(flight.FlightDescriptor.for_command(json.dumps(doc))),
        lambda: client.do_get(ticket({"v": 1, "collection": name, "index": True})).read_all(),
    ]
    for call in calls:
        with pytest.raises(flight.FlightUnauthorizedError) as info:
            call()
        message = str(info.value)
        assert "asset 'red' of scene 's0'" in message, message
        assert "data access policy" in message or "address" in message, message
        assert str(root) not in message and "/etc/passwd" not in message, message
        assert "\n" not in message.split(". gRPC client debug context", maxsplit=1)[0]
        assert SECRET.decode() not in message
    assert internal.requests == 0  # the internal service never saw the server
    assert srv.service.engine.stats().requests == 0  # and nothing at all was fetched


def test_good_collections_are_still_listed_and_served(hostile_root, hostile_server) -> None:
    root, hostile = hostile_root
    srv, client = hostile_server
    names = sorted(f.descriptor.path[0].decode() for f in client.list_flights())
    assert names == ["alpha", "beta"]
    listed = _action(client, "collections")
    assert sorted(c["name"] for c in listed) == ["alpha", "beta"]
    table = client.do_get(ticket(query(bands=["red"]))).read_all()
    assert table.num_rows > 0
    problems = srv.service.root.problems()
    assert sorted(problems) == sorted(hostile)
    for reason in problems.values():
        assert "asset 'red' of scene 's0'" in reason and str(root) not in reason, reason


def test_an_allowed_host_that_redirects_inward_is_refused(tmp_path: Path, internal) -> None:
    data = tmp_path / "data"
    make_root(tmp_path / "unused", data, scenes=1)
    with FaultServer(data) as public:
        url = public.url_for(data / "s0_red.tif")
        col = catalog.build_from_files({"s0": {"red": url}}, name="r", progress=False,
                                       store_options={"allow_http": True})
        root = tmp_path / "root"
        root.mkdir()
        col.save(root / "r.parquet")
        # Once indexed, the allowed host turns on its operator: every read is sent inward.
        public.redirect("s0_red.tif", f"{internal.url}/admin/secret")
        internal.reset()
        public.reset()
        # The operator allows this host by name (a loopback test server stands in for it).
        with Server(str(root), port=0, allow=(f"{public.url}/",)) as srv:
            client = flight.connect(srv.location)
            with pytest.raises(flight.FlightUnauthorizedError) as info:
                client.do_get(ticket(query(collection="r", bands=["red"]))).read_all()
            client.close()
        message = str(info.value)
        assert "asset 'red' of scene 's0'" in message and "redirected to" in message, message
        assert SECRET.decode() not in message
        assert internal.requests == 0  # the internal service never saw the server
        assert [r.status for r in public.records] == [302]  # asked once, refused the hop


def test_redirects_within_the_policy_are_followed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_root(tmp_path / "unused", data, scenes=1)
    (data / "moved").mkdir()
    (data / "moved" / "s0_red.tif").write_bytes((data / "s0_red.tif").read_bytes())
    with FaultServer(data) as public:
        url = public.url_for(data / "s0_red.tif")
        col = catalog.build_from_files({"s0": {"red": url}}, name="r", progress=False,
                                       store_options={"allow_http": True})
        root = tmp_path / "root"
        root.mkdir()
        col.save(root / "r.parquet")
        public.redirect("s0_red.tif", f"{public.url}/moved/s0_red.tif", status=307)
        with Server(str(root), port=0, allow=(f"{public.url}/",)) as srv:
            client = flight.connect(srv.location)
            table = client.do_get(ticket(query(collection="r", bands=["red"]))).read_all()
            client.close()
        assert table.num_rows == 1
        statuses = [(r.path, r.status) for r in public.records if r.range is not None]
        assert ("/s0_red.tif", 302) not in statuses and ("/s0_red.tif", 307) in statuses
        assert ("/moved/s0_red.tif", 206) in statuses


def test_wildcard_hosts_never_reach_loopback(tmp_path: Path, internal) -> None:
    data = tmp_path / "data"
    make_root(tmp_path / "unused", data, scenes=1)
    with RangeServer(data) as public:
        # By name ("localhost"), so only the connection's address check can refuse it.
        url = f"http://localhost:{public.port}/s0_red.tif"
        col = catalog.build_from_files({"s0": {"red": url}}, name="w", progress=False,
                                       store_options={"allow_http": True})
        root = tmp_path / "root"
        root.mkdir()
        col.save(root / "w.parquet")
        public.reset()
        with Server(str(root), port=0, allow=("http://*/",)) as srv:
            client = flight.connect(srv.location)
            with pytest.raises(flight.FlightUnauthorizedError, match="loopback"):
                client.do_get(ticket(query(collection="w", bands=["red"]))).read_all()
            client.close()
        assert public.requests == 0


def test_store_endpoints_in_a_collection_must_be_allowed(tmp_path: Path) -> None:
    root = tmp_path / "root"
    cols = make_root(root, root / "data", scenes=1)
    meta = cols["beta"].metadata
    meta["store_options"] = {"endpoint": "http://169.254.169.254", "allow_http": True}
    table = cols["beta"].table
    md = dict(table.schema.metadata)
    md[b"cogflight"] = json.dumps(meta).encode()
    catalog.Collection(table.replace_schema_metadata(md)).save(root / "ep.parquet")
    refused = CollectionRoot(str(root))
    with pytest.raises(catalog.CogflightError, match="store endpoint of Collection 'ep'"):
        refused.get("ep")
    assert "ep" not in refused.names() and "ep" in refused.problems()
    own = CollectionRoot(str(root), store_options={"endpoint": "http://169.254.169.254/"})
    assert len(own.get("ep")) == 1  # the server's own endpoint needs no --allow
    explicit = CollectionRoot(
        str(root), policy=catalog.AccessPolicy.for_root(str(root), ["http://169.254.169.254/"])
    )
    assert len(explicit.get("ep")) == 1


def test_allow_makes_a_local_directory_readable_through_cogflight_serve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COGFLIGHT_ALLOW", raising=False)  # no test-wide allowance here
    root = tmp_path / "collections"
    make_root(root, tmp_path / "scenes", scenes=1)
    doc = query(bands=["red"])

    def serve(*argv: str) -> tuple[pa.Table | None, str]:
        args = build_parser().parse_args(["serve", "--root", str(root), "--port", "0", *argv])
        with server_from_args(args).start() as srv:
            client = flight.connect(srv.location)
            try:
                return client.do_get(ticket(doc)).read_all(), ""
            except flight.FlightUnauthorizedError as exc:
                return None, str(exc)
            finally:
                client.close()

    table, message = serve()
    assert table is None and "--allow" in message and str(tmp_path) not in message
    table, _ = serve("--allow", str(tmp_path / "scenes"))
    assert table is not None and table.num_rows == 1
    # The same in the TOML configuration file.
    config = tmp_path / "cogflight.toml"
    config.write_text(f'[server]\nallow = ["{tmp_path / "scenes"}"]\n')
    table, _ = serve("--config", str(config))
    assert table is not None and table.num_rows == 1
    monkeypatch.delenv("COGFLIGHT_CONFIG", raising=False)


def test_embedded_server_reads_its_users_files_and_can_be_restricted(tmp_path: Path) -> None:
    import flight_client

    root = tmp_path / "collections"
    make_root(root, tmp_path / "scenes", scenes=1)
    fields = {"bands": ["red"], "geometries": [lonlat_box(10, 10, 50, 50)], "chip_size": 32}

    def rows(client: flight_client.Client) -> int:
        return sum(b.num_rows for b in client.chips("alpha", **fields))

    with flight_client.connect(root=root) as client:  # the demo's way: works out of the box
        assert rows(client) == 1
    with flight_client.connect(root=root, allow=[]) as client, pytest.raises(
        catalog.CogflightError, match="data access policy"
    ):
        rows(client)
    with flight_client.connect(root=root, allow=[str(tmp_path / "scenes")]) as client:
        assert rows(client) == 1


def test_unreadable_files_under_the_root_never_break_listing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    make_root(root, root / "data", scenes=1)
    (root / "garbage.parquet").write_bytes(b"PAR1 this is not parquet")
    pa.parquet.write_table(pa.table({"x": [1, 2]}), root / "plain.parquet")  # not a Collection
    os.symlink(root / "missing-target", root / "dangling.parquet")
    with Server(str(root), port=0) as srv:
        client = flight.connect(srv.location)
        names = sorted(f.descriptor.path[0].decode() for f in client.list_flights())
        assert names == ["alpha", "beta"]
        assert sorted(c["name"] for c in _action(client, "collections")) == ["alpha", "beta"]
        problems = srv.service.root.problems()
        assert sorted(problems) == ["dangling", "garbage", "plain"]
        health = _action(client, "health")
        assert health["status"] == "ok" and health["collections"] == 2
        assert health["unavailable"] == problems
        for reason in problems.values():
            assert str(root) not in reason and "\n" not in reason, reason
        with pytest.raises(flight.FlightUnavailableError, match="garbage") as info:
            client.get_flight_info(flight.FlightDescriptor.for_path("garbage"))
        assert str(root) not in str(info.value)
        assert client.do_get(ticket(query(bands=["red"]))).read_all().num_rows > 0
        client.close()
