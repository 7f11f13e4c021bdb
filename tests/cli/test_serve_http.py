"""``cogflight serve --http-port``: probes and metrics per worker, usage log, JSON logs.

The subprocess test runs the command the Docker image runs, with two workers: worker k
answers on ``http_port + k``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pyarrow import flight

from cogflight_core._logging import JsonFormatter
from tests.server.test_metrics import get, scrape, value
from tests.support.flight_fixtures import lonlat_box, query

START_S = 60  # bound on two spawned workers importing, binding and listing the root


def consecutive_free_ports(n: int) -> int:
    """A first port such that it and the n - 1 after it are free now."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            first = int(s.getsockname()[1])
        if first + n > 65535:
            continue
        socks = []
        try:
            for k in range(n):
                sk = socket.socket()
                socks.append(sk)
                sk.bind(("127.0.0.1", first + k))
            return first
        except OSError:
            continue
        finally:
            for sk in socks:
                sk.close()
    raise RuntimeError("no run of free ports")


def test_json_formatter_writes_one_object_per_line() -> None:
    record = logging.LogRecord("cogflight.server", logging.INFO, __file__, 1, "a %s", ("b",), None)
    record.request_id = "3f2a9c1e"
    doc = json.loads(JsonFormatter(worker=2).format(record))
    assert {k: doc[k] for k in ("level", "logger", "message", "worker", "request_id")} == {
        "level": "INFO",
        "logger": "cogflight.server",
        "message": "a b",
        "worker": 2,
        "request_id": "3f2a9c1e",
    }
    assert doc["time"].endswith("Z")
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        failed = logging.LogRecord(
            "cogflight.server", logging.ERROR, __file__, 1, "x", (), sys.exc_info()
        )
    line = JsonFormatter().format(failed)
    assert "\n" not in line and "ValueError: boom" in json.loads(line)["error"]
    assert "request_id" not in json.loads(line)


@pytest.mark.network
@pytest.mark.timeout(180)
def test_serve_with_http_port_and_two_workers(flight_root, tmp_path: Path) -> None:
    port, http = consecutive_free_ports(2), consecutive_free_ports(2)
    usage = tmp_path / "usage.jsonl"
    argv = [
        sys.executable, "-m", "cogflight", "serve", "--root", str(flight_root.path),
        "--port", str(port), "--workers", "2", "--http-port", str(http),
        "--usage-log", str(usage), "--log-format", "json", "--drain-s", "5",
    ]  # fmt: skip
    stderr = tmp_path / "stderr"
    with stderr.open("wb") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, env=os.environ.copy())
    try:
        deadline = time.monotonic() + START_S
        for k in range(2):
            while True:
                assert proc.poll() is None, stderr.read_text()
                try:
                    if get(http + k, "/readyz")[0] == 200:
                        break
                except OSError:
                    pass  # not listening yet
                assert time.monotonic() < deadline, stderr.read_text()
                time.sleep(0.2)
            health = json.loads(get(http + k, "/healthz")[1])
            assert (health["status"], health["worker"]) == ("ok", k)
            assert health["location"] == f"grpc://127.0.0.1:{port + k}"

        boxes = [lonlat_box(40 + 60 * j, 40, 40, 40) for j in range(6)]
        doc = query(geometries={"bbox": boxes})  # one endpoint per worker by default
        client = flight.connect(f"grpc://127.0.0.1:{port}")
        info = client.get_flight_info(flight.FlightDescriptor.for_command(json.dumps(doc)))
        chips = nbytes = 0
        for endpoint in info.endpoints:
            reader = flight.connect(endpoint.locations[0]).do_get(endpoint.ticket)
            for chunk in reader:
                chips += chunk.data.num_rows
                nbytes += chunk.data.nbytes
        client.close()
        assert chips == info.total_records > 0

        scraped = [scrape(http + k)[1] for k in range(2)]
        alpha = {"collection": "alpha"}
        assert sum(value(m, "cogflight_chips_sent_total", **alpha) for m in scraped) == chips
        assert sum(value(m, "cogflight_sent_bytes_total", **alpha) for m in scraped) == nbytes
        streams = sum(value(m, "cogflight_streams_started_total", **alpha) for m in scraped)
        assert streams == len(info.endpoints) == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    assert code == 0, stderr.read_text()

    files = [usage] + ([Path(f"{usage}.w1")] if Path(f"{usage}.w1").exists() else [])
    records = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    assert sum(r["chips"] for r in records) == chips and len(records) == 2
    assert {r["worker"] for r in records} == {
        int(f.name.endswith(".w1")) for f in files for _ in f.read_text().splitlines()
    }

    lines = [json.loads(line) for line in stderr.read_text().splitlines() if line.strip()]
    assert {line["worker"] for line in lines} == {0, 1}  # every line is JSON, both workers'
    assert {r["request_id"] for r in records} <= {line.get("request_id") for line in lines}
    for line in lines:
        assert {"time", "level", "logger", "message", "worker"} <= set(line)
