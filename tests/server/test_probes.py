"""The HTTP side of a server process: /healthz, /readyz and /metrics, over real HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pyarrow import flight

from cogflight_core import UnavailableError
from flight_server import ChipEngine, Server
from flight_server._metrics import CallRecord, Metrics
from flight_server._probes import ProbeServer
from flight_server._serve import usage_log_path
from tests.conftest import s3_options
from tests.server.test_metrics import free_port, get, scrape, value
from tests.support.flight_fixtures import query, ticket

pytestmark = pytest.mark.network


def test_probe_server_answers_each_path(tmp_path: Path) -> None:
    engine = ChipEngine(cache_bytes=1 << 20)
    metrics = Metrics(engine.stats, usage_log=tmp_path / "usage.jsonl")
    state = {"ready": False}
    server = ProbeServer(
        "127.0.0.1",
        0,
        health=lambda: {"status": "ok"},
        ready=lambda: (state["ready"], {"ready": state["ready"]}),
        metrics=metrics.exposition,
    ).start()
    try:
        assert get(server.port, "/healthz") == (200, b'{"status": "ok"}')
        assert get(server.port, "/readyz") == (503, b'{"ready": false}')
        state["ready"] = True
        assert get(server.port, "/readyz?verbose=1")[0] == 200
        status, body = get(server.port, "/nope")
        assert status == 404 and b"/healthz" in json.loads(body)["error"].encode()
        call = CallRecord("DoGet", "r1", collection="alpha")
        tally = metrics.stream(call, "sha256:0123456789ab", "ipv4:127.0.0.1:1", None)
        tally.sent(5, 500)
        tally.finish("done", "OK")
        tally.finish("done", "OK")  # once only
        _, m = scrape(server.port)
        assert value(m, "cogflight_chips_sent_total", collection="alpha") == 5
        assert value(m, "cogflight_streams_finished_total", collection="alpha", outcome="done") == 1
        assert value(m, "cogflight_streams_active") == 0  # no service: nothing in progress
        # Engine figures, read at scrape time (this engine never fetched).
        assert ("cogflight_store_fetched_bytes_total", frozenset()) in m
        assert value(m, "cogflight_cache_max_bytes") == 1 << 20
        assert value(m, "process_resident_memory_bytes") > 0
        (record,) = list(metrics.usage.records())  # type: ignore[union-attr]
        assert (record["chips"], record["bytes"], record["request_id"]) == (5, 500, "r1")
    finally:
        server.close()
        engine.close()
    with pytest.raises(OSError):  # closed: the port no longer answers
        get(server.port, "/healthz")


def test_readiness_follows_draining(flight_root) -> None:
    http = free_port()
    srv = Server(str(flight_root.path), port=0, http_port=http).start()
    try:
        status, body = get(http, "/readyz")
        assert status == 200 and json.loads(body)["collections"] == 2
        health = json.loads(get(http, "/healthz")[1])
        assert (health["status"], health["worker"]) == ("ok", 0)
        assert health["location"] == srv.location
        srv.service.drain(0)  # what SIGTERM starts: no new streams
        status, body = get(http, "/readyz")
        assert status == 503 and json.loads(body)["reason"] == "draining"
        status, body = get(http, "/healthz")  # still alive: liveness must not restart it
        assert status == 200 and json.loads(body)["status"] == "draining"
        client = flight.connect(srv.location)
        with pytest.raises(flight.FlightUnavailableError, match="draining"):
            client.do_get(ticket(query())).read_all()
        client.close()
        _, m = scrape(http)
        assert value(m, "cogflight_draining") == 1
        refused = {"method": "DoGet", "collection": "alpha", "code": "UNAVAILABLE"}
        assert value(m, "cogflight_rejections_total", **refused) == 1  # busy: not an error
    finally:
        srv.shutdown()
    with pytest.raises(OSError):  # stopped with the server
        get(http, "/healthz")


def test_not_ready_when_the_root_cannot_be_listed(moto_s3, monkeypatch) -> None:
    endpoint, s3 = moto_s3
    s3.create_bucket(Bucket="probes")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    opts = {k: v for k, v in s3_options(endpoint).items() if k != "config"}
    http = free_port()
    srv = Server("s3://probes/collections", port=0, http_port=http, store_options=opts).start()
    try:
        status, body = get(http, "/readyz")
        assert status == 200 and json.loads(body)["collections"] == 0
        s3.delete_bucket(Bucket="probes")
        status, body = get(http, "/readyz")
        assert status == 503
        assert json.loads(body)["reason"] == "the root cannot be listed"
        assert b"probes" not in body  # no store address on the HTTP port
        assert get(http, "/healthz")[0] == 200
    finally:
        srv.shutdown()


def test_an_http_port_in_use_fails_in_one_line(flight_root) -> None:
    http = free_port()
    with Server(str(flight_root.path), port=0, http_port=http) as first:
        assert first.service is not None
        with pytest.raises(UnavailableError, match=rf"port {http} on 127.0.0.1 is already in use"):
            Server(str(flight_root.path), port=0, http_port=http).start()


def test_one_usage_log_per_worker() -> None:
    assert usage_log_path("/var/log/usage.jsonl", 0) == "/var/log/usage.jsonl"
    assert usage_log_path("/var/log/usage.jsonl", 3) == "/var/log/usage.jsonl.w3"
