"""/metrics and the usage log of a real server, checked against what clients streamed.

Each test starts its own server (counters start at zero) with ``http_port`` on a free
loopback port, streams known queries over Flight, then scrapes ``/metrics`` over HTTP.
"""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pyarrow import flight

from flight_server import Server
from flight_server._auth import principal
from tests.support.flight_fixtures import lonlat_box, query, ticket

pytestmark = pytest.mark.network

TOKEN_A = "usage-token-alice-0123456789abcdef"
TOKEN_B = "usage-token-bob-0123456789abcdef"  # may read 'alpha' only
FOUR = [lonlat_box(120 + 60 * k, 30, 40, 40) for k in range(4)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def scrape(port: int) -> tuple[str, dict[tuple[str, frozenset[tuple[str, str]]], float]]:
    """The exposition text and every sample as ``{(name, labels): value}``."""
    status, body = get(port, "/metrics")
    assert status == 200
    text = body.decode()
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    return text, samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def bearer(token: str) -> flight.FlightCallOptions:
    return flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {token}".encode())])


def stream(client: flight.FlightClient, doc: dict[str, Any], token: str) -> tuple[int, int]:
    """Read one chip stream; (chips, Arrow bytes) as the client received them."""
    reader = client.do_get(ticket(doc), bearer(token))
    chips = nbytes = 0
    for chunk in reader:
        chips += chunk.data.num_rows
        nbytes += chunk.data.nbytes
    return chips, nbytes


@pytest.fixture
def served(flight_root, tmp_path: Path):
    (tmp_path / "tokens").write_text(f"{TOKEN_A}\n{TOKEN_B} alpha\n")
    http = free_port()
    srv = Server(
        str(flight_root.path),
        port=0,
        http_port=http,
        token_file=str(tmp_path / "tokens"),
        usage_log=str(tmp_path / "logs" / "usage.jsonl"),
    ).start()
    client = flight.connect(srv.location)
    yield srv, client, http, tmp_path / "logs" / "usage.jsonl"
    client.close()
    srv.shutdown()


def test_counters_equal_what_was_streamed_per_token(served) -> None:
    _srv, client, http, usage = served
    a1 = stream(client, query(geometries={"bbox": FOUR}, batch_rows=3), TOKEN_A)
    a2 = stream(client, query(chip_size=32), TOKEN_A)
    b1 = stream(client, query(geometries={"bbox": FOUR[:2]}, chip_size=48), TOKEN_B)
    assert min(a1[0], a2[0], b1[0]) > 0 and len({a1, a2, b1}) == 3
    chips = a1[0] + a2[0] + b1[0]
    nbytes = a1[1] + a2[1] + b1[1]
    pa_, pb = principal(TOKEN_A.encode()), principal(TOKEN_B.encode())

    text, m = scrape(http)
    alpha = {"collection": "alpha"}
    assert value(m, "cogflight_chips_sent_total", **alpha) == chips
    assert value(m, "cogflight_sent_bytes_total", **alpha) == nbytes
    assert value(m, "cogflight_streams_started_total", **alpha) == 3
    assert value(m, "cogflight_streams_finished_total", outcome="done", **alpha) == 3
    assert value(m, "cogflight_streams_active") == 0
    assert value(m, "cogflight_first_batch_seconds_count", **alpha) == 3
    assert value(m, "cogflight_stream_seconds_count", **alpha) == 3
    assert value(m, "cogflight_calls_total", method="DoGet", code="OK") == 3
    assert value(m, "cogflight_token_chips_total", principal=pa_, **alpha) == a1[0] + a2[0]
    assert value(m, "cogflight_token_sent_bytes_total", principal=pa_, **alpha) == a1[1] + a2[1]
    assert value(m, "cogflight_token_chips_total", principal=pb, **alpha) == b1[0]
    assert value(m, "cogflight_token_sent_bytes_total", principal=pb, **alpha) == b1[1]
    assert value(m, "cogflight_token_streams_total", principal=pb, **alpha) == 1
    # Engine figures, read at scrape time, agree with the stats action.
    (result,) = client.do_action(flight.Action("stats", b""), bearer(TOKEN_A))
    stats = json.loads(result.body.to_pybytes())
    assert value(m, "cogflight_store_fetched_bytes_total") == stats["bytes_fetched"] > 0
    assert value(m, "cogflight_tiles_decoded_total") == stats["tiles_decoded"] > 0
    assert value(m, "cogflight_cache_entries") == stats["cache_entries"]
    assert 0 <= value(m, "cogflight_cache_hit_ratio") <= 1

    records = [json.loads(line) for line in usage.read_text().splitlines()]
    assert len(records) == 3
    for who, streams in ((pa_, [a1, a2]), (pb, [b1])):
        mine = [r for r in records if r["principal"] == who]
        assert [(r["chips"], r["bytes"]) for r in mine] == streams
        assert {(r["collection"], r["outcome"], r["code"]) for r in mine} == {
            ("alpha", "done", "OK")
        }
    assert len({r["request_id"] for r in records}) == 3
    assert all(r["worker"] == 0 and r["peer"] and r["seconds"] > 0 for r in records)
    assert all(r["first_batch_seconds"] <= r["seconds"] for r in records)
    for secret in (TOKEN_A, TOKEN_B):
        assert secret not in usage.read_text() and secret not in text


def test_rejections_and_errors_by_code(served) -> None:
    _srv, client, http, usage = served
    cases = [
        (query(collection="beta"), TOKEN_B, pa.ArrowException),  # the token may not read it
        (query(collection="nope"), TOKEN_A, pa.ArrowException),  # no such Collection
        (query(bands=["blue"]), TOKEN_A, pa.ArrowException),  # a band alpha does not have
        ({"v": 1}, TOKEN_A, pa.ArrowException),  # not a query
        (query(), "not-a-token-0123456789", flight.FlightUnauthenticatedError),
    ]
    for doc, token, error in cases:
        with pytest.raises(error):
            stream(client, doc, token)
    _, m = scrape(http)
    rejected = {
        (dict(labels)["code"], dict(labels)["collection"]): v
        for (name, labels), v in m.items()
        if name == "cogflight_rejections_total"
    }
    assert rejected == {
        ("PERMISSION_DENIED", ""): 1,  # refused before the name was looked up
        ("NOT_FOUND", ""): 1,  # never a label for a name the root does not serve
        ("INVALID_ARGUMENT", "alpha"): 1,
        ("INVALID_ARGUMENT", ""): 1,
        ("UNAUTHENTICATED", ""): 1,
    }
    assert value(m, "cogflight_calls_total", method="DoGet", code="INVALID_ARGUMENT") == 2
    assert value(m, "cogflight_calls_total", method="DoGet", code="UNAUTHENTICATED") == 1
    assert not [k for k in m if k[0] == "cogflight_errors_total"]  # nothing failed server-side
    assert value(m, "cogflight_streams_started_total", collection="alpha") == 0
    assert not usage.exists()  # no stream was served, so nothing to bill


def test_a_stream_cut_short_is_counted_and_logged_as_failed(flight_root, tmp_path: Path) -> None:
    """Draining cancels a stream the client is slow to read: outcome failed, UNAVAILABLE."""
    http = free_port()
    usage = tmp_path / "usage.jsonl"
    srv = Server(str(flight_root.path), port=0, http_port=http, usage_log=str(usage)).start()
    client = flight.connect(srv.location)
    try:
        # 16 chips of 1 MiB, one per batch: far more than gRPC buffers for a reader that waits.
        doc = query(geometries={"bbox": FOUR}, chip_size=512, batch_rows=1)
        reader = client.do_get(ticket(doc))
        assert reader.read_chunk().data.num_rows == 1
        cancelled: list[int] = []
        drain = threading.Thread(target=lambda: cancelled.append(srv.service.drain(0)))
        drain.start()
        with pytest.raises(pa.ArrowException, match="shutting down"):
            while True:
                reader.read_chunk()
        drain.join(timeout=30)
        assert cancelled == [1]
        _, m = scrape(http)
        alpha = {"collection": "alpha"}
        assert value(m, "cogflight_draining") == 1
        assert value(m, "cogflight_streams_finished_total", outcome="failed", **alpha) == 1
        errors = value(m, "cogflight_errors_total", method="DoGet", code="UNAVAILABLE", **alpha)
        assert errors == 1
        (record,) = [json.loads(line) for line in usage.read_text().splitlines()]
        assert (record["outcome"], record["code"]) == ("failed", "UNAVAILABLE")
        assert record["principal"] == "anonymous"  # no token file: one shared principal
        assert 1 <= record["chips"] == value(m, "cogflight_chips_sent_total", **alpha) < 16
    finally:
        client.close()
        srv.shutdown()


def test_docs_list_every_metric_and_only_those() -> None:
    import re

    from flight_server import ChipEngine
    from flight_server._metrics import CallRecord, Metrics

    with ChipEngine(cache_bytes=0) as engine:
        metrics = Metrics(engine.stats)
        call = CallRecord("DoGet", "r", collection="alpha")
        tally = metrics.stream(call, "anonymous", "peer", None)
        tally.sent(1, 10)
        tally.finish("done", "OK")
        metrics.answered(call, "OK")
        metrics.refused(call, "NOT_FOUND", "rejected")
        metrics.refused(call, "INTERNAL", "errors")
        exposed = {
            s.name
            for family in text_string_to_metric_families(metrics.exposition().decode())
            for s in family.samples
            if s.name.startswith("cogflight_") and not s.name.endswith("_created")
        }
    exposed = {re.sub(r"_(bucket|count|sum)$", "", n) for n in exposed}
    doc = (Path(__file__).resolve().parents[2] / "docs" / "metrics.md").read_text()
    documented = set(re.findall(r"^\| `(cogflight_\w+)` \|", doc, flags=re.M))
    assert exposed == documented and len(documented) > 25
