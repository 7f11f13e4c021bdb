"""Bearer tokens and TLS / mutual TLS on the Flight service."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
from pyarrow import flight

from flight_server import Server, load_tokens
from tests.support.flight_fixtures import make_root, query, ticket, tls_material

ALL = "a" * 32
ONLY_BETA = "b" * 32


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("secure")
    make_root(base / "root", base / "data", scenes=2)
    (base / "tokens").write_text(f"# who may read what\n{ALL}\n{ONLY_BETA} beta\n")
    return base


def _bearer(token: str) -> flight.FlightCallOptions:
    return flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {token}".encode())])


def test_token_file_parsing(tmp_path: Path) -> None:
    (tmp_path / "t").write_text(f"{ALL}\n{ONLY_BETA} alpha,beta  # comment\n\n")
    assert load_tokens(tmp_path / "t") == {ALL: None, ONLY_BETA: frozenset({"alpha", "beta"})}
    (tmp_path / "short").write_text("abc\n")
    with pytest.raises(ValueError, match="at least 16 characters"):
        load_tokens(tmp_path / "short")
    (tmp_path / "empty").write_text("# nothing\n")
    with pytest.raises(ValueError, match="no tokens"):
        load_tokens(tmp_path / "empty")


def test_bearer_tokens(root: Path) -> None:
    with Server(str(root / "root"), port=0, token_file=str(root / "tokens")) as srv:
        client = flight.connect(srv.location)
        with pytest.raises(flight.FlightUnauthenticatedError, match="missing credentials"):
            client.do_get(ticket(query())).read_all()
        with pytest.raises(flight.FlightUnauthenticatedError, match="invalid token"):
            client.do_get(ticket(query()), options=_bearer("x" * 32)).read_all()
        with pytest.raises(flight.FlightUnauthenticatedError):
            list(client.list_flights(options=_bearer("nope")))
        assert client.do_get(ticket(query()), options=_bearer(ALL)).read_all().num_rows == 2
        # A token limited to 'beta' sees and reads only 'beta'.
        names = [f.descriptor.path[0].decode() for f in
                 client.list_flights(options=_bearer(ONLY_BETA))]
        assert names == ["beta"]
        with pytest.raises(flight.FlightUnauthorizedError, match="may not read Collection 'alpha'"):
            client.do_get(ticket(query()), options=_bearer(ONLY_BETA)).read_all()
        with pytest.raises(flight.FlightUnauthorizedError):
            client.get_flight_info(flight.FlightDescriptor.for_path("alpha"),
                                   options=_bearer(ONLY_BETA))
        beta = client.do_get(ticket(query(collection="beta")), options=_bearer(ONLY_BETA))
        assert beta.read_all().num_rows == 1
        health = list(client.do_action(flight.Action("health", b""), options=_bearer(ALL)))
        assert json.loads(health[0].body.to_pybytes())["status"] == "ok"


def test_tls_and_mutual_tls(root: Path, tmp_path: Path) -> None:
    tls = tls_material(tmp_path)
    ca = tls["ca_cert"].read_bytes()
    with Server(str(root / "root"), port=0, tls_cert=str(tls["server_cert"]),
                tls_key=str(tls["server_key"])) as srv:
        assert srv.location.startswith("grpc+tls://")
        client = flight.connect(srv.location, tls_root_certs=ca)
        assert client.do_get(ticket(query())).read_all().num_rows == 2
        untrusting = flight.connect(srv.location)  # does not trust our CA
        with pytest.raises(flight.FlightUnavailableError):
            untrusting.do_get(ticket(query())).read_all()
        plain = flight.connect(srv.location.replace("grpc+tls", "grpc"))
        with pytest.raises(flight.FlightUnavailableError):
            plain.do_get(ticket(query())).read_all()
    with Server(str(root / "root"), port=0, tls_cert=str(tls["server_cert"]),
                tls_key=str(tls["server_key"]), tls_client_ca=str(tls["ca_cert"])) as srv:
        anonymous = flight.connect(srv.location, tls_root_certs=ca)
        with pytest.raises((flight.FlightUnavailableError, pa.ArrowException)):
            anonymous.do_get(ticket(query())).read_all()
        client = flight.connect(srv.location, tls_root_certs=ca,
                                cert_chain=tls["client_cert"].read_bytes(),
                                private_key=tls["client_key"].read_bytes())
        assert client.do_get(ticket(query())).read_all().num_rows == 2


def test_tls_configuration_errors(root: Path, tmp_path: Path) -> None:
    from flight_server import CogflightError

    tls = tls_material(tmp_path)
    with pytest.raises(CogflightError, match="both --tls-cert and --tls-key"):
        Server(str(root / "root"), port=0, tls_cert=str(tls["server_cert"])).start()
    with pytest.raises(CogflightError, match="mutual TLS"):
        Server(str(root / "root"), port=0, tls_client_ca=str(tls["ca_cert"])).start()
