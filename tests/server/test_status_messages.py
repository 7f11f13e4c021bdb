"""Status messages: one line, no traceback, no server path, a request id the log records;
and no client input, however hostile, ends as INTERNAL."""

from __future__ import annotations

import json
import logging
import random
import string
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pyarrow import flight

from cogflight_core import chip_fields
from tests.server.test_flight import BAD
from tests.support.flight_fixtures import make_root, query, ticket
from tests.support.messages import assert_clean, client_code, server_paths

ALL = "a" * 32
ONLY_BETA = "b" * 32
OPTIONS = flight.FlightCallOptions(timeout=30)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("messages")
    collections = make_root(base / "root", base / "data", scenes=2)
    Path(collections["alpha"].header(1, "red").href).unlink()  # missing imagery
    (base / "tokens").write_text(f"{ALL}\n{ONLY_BETA} beta\n")
    return base


@pytest.fixture(scope="module")
def served(base: Path, start_server) -> Iterator[tuple[Any, flight.FlightClient]]:
    srv = start_server(base / "root", max_chips=64, max_chip_pixels=256 * 256)
    client = flight.connect(srv.location)
    yield srv, client
    client.close()


def _calls(client: flight.FlightClient) -> list[tuple[str, Callable[[], Any]]]:
    """Bad calls of every kind, each with a name."""

    def get(data: bytes) -> Callable[[], Any]:
        return lambda: client.do_get(flight.Ticket(data), options=OPTIONS).read_all()

    def info(data: bytes) -> Callable[[], Any]:
        return lambda: client.get_flight_info(
            flight.FlightDescriptor.for_command(data), options=OPTIONS
        )

    def path(*parts: str) -> Callable[[], Any]:
        return lambda: client.get_flight_info(
            flight.FlightDescriptor.for_path(*parts), options=OPTIONS
        )

    def action(kind: str, body: bytes) -> Callable[[], Any]:
        return lambda: list(client.do_action(flight.Action(kind, body), options=OPTIONS))

    calls: list[tuple[str, Callable[[], Any]]] = []
    for data, name in BAD:
        calls.append((f"do_get {name}", get(data)))
        if data.startswith(b"{"):
            calls.append((f"get_flight_info {name}", info(data)))
    extra = {
        "unknown collection": query(collection="gamma"),
        "band typo": query(bands=["rde"]),
        "bad filter op": query(filter={"where": [["id", "~~", 1]]}),
        "bad filter column": query(filter={"where": [["nope", "==", 1]]}),
        "missing imagery": query(),
        "chips limit": query(geometries={"bbox": [[-180, -90, 180, 90]] * 100}),
        "endpoints limit": query(shard={"count": 10**6}),
    }
    for name, doc in extra.items():
        calls.append((f"do_get {name}", get(json.dumps(doc).encode())))
        if name != "missing imagery":  # planning reads no pixels
            calls.append((f"get_flight_info {name}", info(json.dumps(doc).encode())))
    calls += [
        ("ticket not utf-8", get(b"\xff\xfe\x00")),
        ("empty ticket", get(b"")),
        ("path unknown", path("gamma")),
        ("path traversal", path("../alpha")),
        ("path absolute", path("/etc/passwd")),
        ("path two parts", path("a", "b")),
        ("unknown action", action("reboot", b"")),
        ("describe unknown", action("describe", b"gamma")),
        ("describe blank", action("describe", b" alpha")),
        ("describe path", action("describe", b"/etc/passwd")),
        ("describe file url", action("describe", b"file:///etc/passwd")),
    ]
    return calls


def test_every_message_is_one_clean_line(served, base: Path, caplog) -> None:
    srv, client = served
    paths = server_paths(base, base / "root", base / "data", Path(srv.config.root).resolve())
    caplog.set_level(logging.INFO, logger="cogflight.server")
    seen = 0
    for name, call in _calls(client):
        try:
            call()
        except Exception as raised:  # any failure; checked below
            exc = raised
        else:
            pytest.fail(f"{name}: no error")
        code = client_code(exc)
        assert code in ("INVALID_ARGUMENT", "NOT_FOUND", "UNAVAILABLE"), (name, exc)
        request_id = assert_clean(exc, paths)
        logged = [r for r in caplog.records if request_id in r.getMessage()]
        assert logged, (name, request_id)  # the details are in the server log, under the id
        seen += 1
    assert seen > 60
    assert json.loads(next(iter(client.do_action("health"))).body.to_pybytes())["status"] == "ok"


def test_auth_messages_are_clean(base: Path, start_server) -> None:
    srv = start_server(base / "root", token_file=str(base / "tokens"))
    client = flight.connect(srv.location)
    bearer = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {ONLY_BETA}".encode())])
    with pytest.raises(flight.FlightUnauthorizedError) as info:
        client.do_get(ticket(query()), options=bearer).read_all()
    assert_clean(info.value, server_paths(base))
    with pytest.raises(flight.FlightUnauthenticatedError) as missing:
        client.do_get(ticket(query())).read_all()
    assert "Traceback" not in str(missing.value)
    client.close()


# -- hostile input: nothing a client sends ends as INTERNAL ----------------------------------

_TEXT = [
    "", " ", "alpha", "ALPHA", "../alpha", "/etc/passwd", "file:///etc/passwd",
    "http://169.254.169.254/latest/meta-data/", "s3://bucket/key", "\x00", "\u202e\u0301",
    "日本語", "🛰️" * 50, "x" * 10_000, "EPSG:4326", "EPSG:-1", "+proj=longlat", "NaN",
    "2024-99-99", "../../", "%00", "red", "nir", "float64", "int128", "raise", "skip",
]
_NUMBERS: list[Any] = [
    0, -1, 1, 2, 3, 64, 10**6, 10**18, 2**63, 10**30, -(10**30), 0.5, -0.0, 1e308, -1e308,
    5e-324, 3.5, True, False,
]


def _value(rng: random.Random, depth: int = 0) -> Any:
    """A random JSON value: scalars of every type, lists, objects, nesting."""
    kind = rng.randrange(7 if depth < 4 else 4)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice(_NUMBERS)
    if kind == 2:
        return rng.choice(_TEXT)
    if kind == 3:
        return "".join(rng.choice(string.printable) for _ in range(rng.randrange(1, 40)))
    if kind == 4:
        return [_value(rng, depth + 1) for _ in range(rng.randrange(0, 5))]
    if kind == 5:
        return [rng.choice(_NUMBERS) for _ in range(rng.choice((2, 4, 6)))]
    keys = [*chip_fields(), "v", "collection", "index", "bbox", "crs", "geojson", "wkb_base64",
            "date_range", "ids", "where", "type", "features", "coordinates"]
    return {rng.choice(keys): _value(rng, depth + 1) for _ in range(rng.randrange(0, 4))}


def _hostile(rng: random.Random) -> bytes:
    """One hostile document: a mutated valid query, a random shape, or raw text."""
    kind = rng.randrange(6)
    if kind <= 2:  # a valid query with fields replaced by values of wrong types
        doc = query()
        for _ in range(rng.randrange(1, 4)):
            field = rng.choice([*chip_fields(), "v", "collection", "index", "filter"])
            doc[field] = _value(rng)
        if rng.random() < 0.3:
            doc["geometries"] = {rng.choice(("bbox", "geojson", "wkb_base64")): _value(rng)}
        if rng.random() < 0.3:
            doc["filter"] = {rng.choice(("date_range", "bbox", "ids", "where", "cloud_cover_lt")):
                             _value(rng)}
        return json.dumps(doc).encode()
    if kind == 3:
        return json.dumps(_value(rng)).encode()
    if kind == 4:
        deep = rng.choice((100, 1000, 10_000, 100_000))
        return rng.choice((b"[" * deep + b"]" * deep, b'{"a":' * deep + b"1" + b"}" * deep))
    raw = [
        b'{"v": 1, "collection": "alpha", "chip_size": NaN}',
        b'{"v": 1, "collection": "alpha", "chip_size": Infinity}',
        b'{"v": 1, "collection": "alpha", "chip_size": -Infinity}',
        b'{"v": 1, "collection": "alpha", "chip_size": 1e999}',
        b'{"v": 1, "collection": "alpha", "chip_size": ' + b"9" * 5000 + b"}",
        b'{"v": 1, "v": 2, "collection": "alpha"}',
        b'{"v": 1, "collection": "alpha", "geometries": {"geojson": {"type": '
        b'"FeatureCollection", "features": null}}}',
        b'{"v": 1, "collection": "alpha", "geometries": {"geojson": {"type": '
        b'"FeatureCollection", "features": 7}}}',
        b"\xef\xbb\xbf{}",
        bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))),
    ]
    return rng.choice(raw)


def test_hostile_input_is_never_internal(served) -> None:
    """600 generated tickets, commands, paths and action bodies (fixed seed)."""
    srv, client = served
    rng = random.Random(10)
    allowed = {"OK", "INVALID_ARGUMENT", "NOT_FOUND", "PERMISSION_DENIED", "UNAVAILABLE"}
    codes: dict[str, int] = {}
    bad: list[tuple[str, bytes, str]] = []
    for n in range(600):
        data = _hostile(rng)
        how = n % 5
        try:
            if how in {0, 1}:
                client.do_get(flight.Ticket(data), options=OPTIONS).read_all()
            elif how == 2:
                client.get_flight_info(flight.FlightDescriptor.for_command(data), options=OPTIONS)
            elif how == 3:
                try:
                    data.decode("utf-8")
                except UnicodeDecodeError:
                    # Arrow refuses a path that is not UTF-8 while parsing the protobuf
                    # (a `string` field), before the server's code sees it: INTERNAL, with
                    # an empty message. Nothing of ours runs; the server carries on.
                    with pytest.raises(flight.FlightInternalError):
                        client.get_flight_info(flight.FlightDescriptor.for_path(data),
                                               options=OPTIONS)
                    continue
                client.get_flight_info(flight.FlightDescriptor.for_path(data), options=OPTIONS)
            else:
                kind = rng.choice(("describe", "describe", "stats", data.decode("latin-1")[:20]))
                list(client.do_action(flight.Action(kind, data), options=OPTIONS))
            code = "OK"
        except Exception as exc:  # every failure is classified below
            code = client_code(exc)
            if code in allowed:
                assert_clean(exc, server_paths())
            else:
                bad.append((code, data[:200], str(exc)[:300]))
        codes[code] = codes.get(code, 0) + 1
    print("hostile codes", codes)
    assert not bad, bad[:5]
    assert codes.get("INVALID_ARGUMENT", 0) > 300, codes
    health = json.loads(next(iter(client.do_action("health"))).body.to_pybytes())
    assert health["status"] == "ok"
    assert srv.service.active_streams == 0
