"""The error-to-status table, both ways, over a real Flight server on loopback."""

from __future__ import annotations

import threading

import pytest
from pyarrow import flight

import cogflight_core as core
from cogflight_core import STATUS_TABLE


class _Raiser(flight.FlightServerBase):
    """Raises, for action NAME, the cogflight error class NAME through the status table."""

    def do_action(self, context, action):
        cls = getattr(core, action.type)
        raise core.to_flight(cls(f"{action.type}: what was wrong; what to do"))


@pytest.fixture(scope="module")
def raiser():
    server = _Raiser("grpc://127.0.0.1:0")
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    client = flight.connect(f"grpc://127.0.0.1:{server.port}")
    yield client
    client.close()
    server.shutdown()
    thread.join(timeout=10)


def _families():
    for row in STATUS_TABLE:
        for cls in row.family:
            yield row, cls


@pytest.mark.parametrize(
    ("row", "cls"), list(_families()), ids=[c.__name__ for _, c in _families()]
)
def test_each_family_reaches_the_client_as_its_code(raiser, row, cls) -> None:
    with pytest.raises(Exception) as info:
        list(raiser.do_action(flight.Action(cls.__name__, b"")))
    got = core.from_flight(info.value)
    assert type(got) is row.family[0], f"{cls.__name__} came back as {type(got).__name__}"
    assert core.status_code(got) == row.code
    assert str(got) == f"{cls.__name__}: what was wrong; what to do"


@pytest.mark.parametrize(
    "cls",
    [core.ChipReadError, core.StorageError, core.HeaderError, core.LimitExceededError],
)
def test_subclasses_take_their_familys_code(cls) -> None:
    err = cls("s3://b/k.tif", "reason") if cls is not core.LimitExceededError else cls("limit")
    code = core.status_code(err)
    row = next(r for r in STATUS_TABLE if r.code == code)
    assert any(isinstance(err, family) for family in row.family)


def test_anything_else_is_internal() -> None:
    assert core.status_code(RuntimeError("boom")) == "INTERNAL"
    assert core.status_code(MemoryError()) == "INTERNAL"
    assert isinstance(core.error_for("NO_SUCH_CODE", "x"), core.ServerError)


def test_bad_input_is_a_value_error_and_not_found_a_lookup_error() -> None:
    assert issubclass(core.InvalidArgumentError, ValueError)
    assert issubclass(core.CollectionNotFoundError, LookupError)
    assert issubclass(core.CollectionNotFoundError, KeyError)
    assert str(core.CollectionNotFoundError("no Collection 'x'")) == "no Collection 'x'"
    for row in STATUS_TABLE:
        for cls in row.family:
            assert issubclass(cls, core.CogflightError)


def test_old_names_still_work_with_a_warning() -> None:
    import catalog
    import flight_client
    import flight_server

    for module, old, new in (
        (catalog, "CatalogError", core.CogflightError),
        (flight_server, "EngineError", core.CogflightError),
        (flight_server, "InvalidRequestError", core.InvalidArgumentError),
        (flight_client, "ClientError", core.CogflightError),
        (flight_client, "InvalidQueryError", core.InvalidArgumentError),
        (flight_client, "ServerUnavailableError", core.UnavailableError),
    ):
        with pytest.warns(DeprecationWarning, match=old):
            assert getattr(module, old) is new
