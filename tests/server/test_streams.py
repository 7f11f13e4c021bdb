"""Streams give back what they hold on every path: deadline, cancel, disconnect, kill,
the server's own deadline, shutdown; and draining refuses new streams."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pyarrow import flight

import catalog
from flight_server import Server
from tests.support.flight_fixtures import lonlat_box, make_root, query, ticket
from tests.support.messages import assert_clean, client_code, server_paths
from tests.support.servers import RangeServer

ROOT = Path(__file__).resolve().parents[2]
# Many small geometries: planning takes a while (about a second), reading is cheap.
MANY = [lonlat_box(c % 480, (c // 480) % 480, 4, 4) for c in range(0, 4000 * 7, 7)]


def _stats(client: flight.FlightClient) -> dict[str, Any]:
    return json.loads(next(iter(client.do_action(flight.Action("stats", b"")))).body.to_pybytes())


def _until(check: Callable[[], bool], timeout: float = 60.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.05)
    return check()


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _tasks() -> int:
    return len(os.listdir("/proc/self/task"))


@pytest.fixture(scope="module")
def slow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, RangeServer]]:
    """A root with 'alpha' (local files) and 'remote' (the same files over HTTP, whose
    latency a test sets)."""
    base = tmp_path_factory.mktemp("streams")
    make_root(base / "root", base / "data", scenes=4)
    with RangeServer(base / "data") as files:
        scenes = {f"s{i}": {b: files.url_for(base / "data" / f"s{i}_{b}.tif")
                            for b in ("red", "nir")} for i in range(4)}
        remote = catalog.build_from_files(
            scenes, name="remote", store_options={"allow_http": True}, progress=False,
            datetime={f"s{i}": dt.date(2024, 1 + i, 1) for i in range(4)})
        remote.save(base / "root" / "remote.parquet")
        yield base / "root", files


def _start(root: Path, files: RangeServer | None = None, **options: Any) -> Server:
    """A server that may read the local imagery (and the HTTP one)."""
    allow = (str(root.parent / "data"), *((files.url + "/",) if files is not None else ()))
    return Server(str(root), port=0, allow=allow, **options).start()


def _expire_while_planning(location: str, clients: int) -> list[str]:
    """``clients`` concurrent DoGets whose deadline expires while the server plans."""
    codes: list[str] = []
    lock = threading.Lock()

    def run() -> None:
        client = flight.connect(location)
        try:
            client.do_get(ticket(query(geometries={"bbox": MANY[:400]}, chip_size=16)),
                          options=flight.FlightCallOptions(timeout=1.0)).read_all()
            code = "OK"
        except Exception as exc:  # classified below
            code = client_code(exc)
        finally:
            client.close()
        with lock:
            codes.append(code)

    threads = [threading.Thread(target=run) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return codes


def test_deadlines_that_expire_while_planning_release_every_slot(slow) -> None:
    root, _ = slow
    srv = _start(root, max_streams=16)
    try:
        client = flight.connect(srv.location)
        assert client.do_get(ticket(query())).read_all().num_rows == 4
        for round_ in range(2):  # the first round also starts every pool thread
            before = _stats(client)["streams"]
            codes = _expire_while_planning(srv.location, 20)
            assert len(codes) == 20 and set(codes) <= {"DEADLINE_EXCEEDED", "UNAVAILABLE"}
            assert "DEADLINE_EXCEEDED" in codes, codes
            # Some held a slot when their deadline expired (how many depends on the load).
            assert _stats(client)["streams"] - before >= 4
            assert _until(lambda: _stats(client)["streams_active"] == 0), _stats(client)
            if round_ == 0:
                fds, tasks = _fds(), _tasks()
        stats = _stats(client)
        assert stats["streams_active"] == 0
        assert stats["cancelled"] >= 8
        assert client.do_get(ticket(query())).read_all().num_rows == 4  # served again
        assert _until(lambda: _fds() <= fds and _tasks() <= tasks, 30), (
            _fds(), fds, _tasks(), tasks)
        client.close()
    finally:
        srv.shutdown()


def test_deadlines_that_expire_while_fetching_release_every_slot(slow) -> None:
    root, files = slow
    srv = _start(root, files, max_streams=16, cache_bytes=0)
    files.latency = 1.0
    try:
        client = flight.connect(srv.location)
        codes: list[str] = []

        def run(k: int) -> None:
            c = flight.connect(srv.location)
            try:
                c.do_get(ticket(query(collection="remote",
                                      geometries={"bbox": lonlat_box(20 * k, 0, 10, 10)})),
                         options=flight.FlightCallOptions(timeout=0.3)).read_all()
                codes.append("OK")
            except Exception as exc:  # classified below
                codes.append(client_code(exc))
            finally:
                c.close()

        threads = [threading.Thread(target=run, args=(k,)) for k in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert codes == ["DEADLINE_EXCEEDED"] * 16
        assert _until(lambda: _stats(client)["streams_active"] == 0), _stats(client)
        files.latency = 0.0
        assert client.do_get(ticket(query(collection="remote"))).read_all().num_rows == 4
        client.close()
    finally:
        files.latency = 0.0
        srv.shutdown()


_KILLED_CLIENT = """
import sys, time
from pathlib import Path
from pyarrow import flight
client = flight.connect(sys.argv[1])
reader = client.do_get(flight.Ticket(Path(sys.argv[2]).read_bytes()))
reader.read_chunk()
print("reading", flush=True)
time.sleep(600)
"""


def test_killed_clients_release_their_streams(slow, tmp_path: Path) -> None:
    root, _ = slow
    srv = _start(root, max_streams=4)
    try:
        client = flight.connect(srv.location)
        big = tmp_path / "ticket.json"
        doc = query(geometries={"bbox": MANY[:400]}, chip_size=128, batch_rows=1)
        big.write_text(json.dumps(doc))
        procs = [subprocess.Popen([sys.executable, "-c", _KILLED_CLIENT, srv.location, str(big)],
                                  stdout=subprocess.PIPE, cwd=ROOT) for _ in range(4)]
        try:
            for p in procs:
                assert p.stdout is not None and p.stdout.readline().strip() == b"reading"
            assert _stats(client)["streams_active"] == 4
            with pytest.raises(flight.FlightUnavailableError, match="server busy"):
                client.do_get(ticket(query())).read_all()
        finally:
            for p in procs:
                p.send_signal(signal.SIGKILL)
                p.wait(timeout=30)
        assert _until(lambda: _stats(client)["streams_active"] == 0), _stats(client)
        stats = _stats(client)
        assert stats["cancelled"] >= 4 and stats["rejected"] >= 1
        assert client.do_get(ticket(query())).read_all().num_rows == 4
        client.close()
    finally:
        srv.shutdown()


def test_client_cancel_mid_stream_releases(slow) -> None:
    root, _ = slow
    srv = _start(root, max_streams=1)
    try:
        client = flight.connect(srv.location)
        for _ in range(5):  # with one slot, any leak would refuse the next stream
            reader = client.do_get(ticket(query(geometries={"bbox": MANY[:400]}, batch_rows=2)))
            reader.read_chunk()
            reader.cancel()
            assert _until(lambda: _stats(client)["streams_active"] == 0)
        assert client.do_get(ticket(query())).read_all().num_rows == 4
        client.close()
    finally:
        srv.shutdown()


def test_server_deadline_per_stream(slow) -> None:
    root, files = slow
    srv = _start(root, files, stream_timeout_s=0.5, cache_bytes=0)
    files.latency = 2.0
    try:
        client = flight.connect(srv.location)
        with pytest.raises(flight.FlightTimedOutError, match="stream_timeout_s") as info:
            client.do_get(ticket(query(collection="remote"))).read_all()
        assert_clean(info.value, server_paths(root))
        assert _until(lambda: _stats(client)["streams_active"] == 0)
        assert _stats(client)["timed_out"] == 1
        client.close()
    finally:
        files.latency = 0.0
        srv.shutdown()


def test_shutdown_drains_then_cancels(slow) -> None:
    root, files = slow
    srv = _start(root, files, drain_s=2.0, cache_bytes=0)
    files.latency = 0.3
    results: dict[str, Any] = {}

    def read(name: str, doc: dict[str, Any]) -> None:
        c = flight.connect(srv.location)
        try:
            results[name] = c.do_get(ticket(doc)).read_all().num_rows
        except Exception as exc:  # recorded and checked below
            results[name] = exc
        finally:
            c.close()

    short = query(collection="remote")  # about a second: finishes within drain_s
    long = query(collection="remote", batch_rows=1,
                 geometries={"bbox": [lonlat_box(40 * k, 40 * j, 30, 30)
                                      for k in range(12) for j in range(12)]})
    readers = [threading.Thread(target=read, args=("short", short)),
               threading.Thread(target=read, args=("long", long))]
    try:
        for t in readers:
            t.start()
        assert _until(lambda: srv.service.active_streams == 2, 30)
        location = srv.location
        stopper = threading.Thread(target=srv.shutdown)
        started = time.monotonic()
        stopper.start()
        assert _until(lambda: srv._service is None or srv.service.draining, 10)
        late = flight.connect(location)
        with pytest.raises(flight.FlightUnavailableError, match="draining") as refused:
            late.do_get(ticket(query())).read_all()
        assert_clean(refused.value, server_paths(root))
        late.close()
        stopper.join(timeout=60)
        took = time.monotonic() - started
        for t in readers:
            t.join(timeout=30)
    finally:
        files.latency = 0.0
    assert not stopper.is_alive() and took < 30
    assert results["short"] == 4  # finished within the drain
    assert isinstance(results["long"], flight.FlightUnavailableError), results["long"]
    assert "shutting down" in str(results["long"])


def test_sigterm_drains_the_cli_server(slow, tmp_path: Path) -> None:
    root, files = slow
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = Path(sys.executable).with_name("cogflight")
    proc = subprocess.Popen(
        [str(exe), "-q", "serve", "--root", str(root), "--port", str(port), "--drain-s", "1",
         "--cache-bytes", "0", "--allow", f"{root.parent / 'data'},{files.url}/"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    location = f"grpc://127.0.0.1:{port}"
    try:
        client = flight.connect(location)
        assert _until(lambda: _healthy(client), 60)
        files.latency = 0.3
        long = query(collection="remote", batch_rows=1,
                     geometries={"bbox": [lonlat_box(40 * k, 40 * j, 30, 30)
                                          for k in range(12) for j in range(12)]})
        reader = client.do_get(ticket(long))
        reader.read_chunk()
        proc.send_signal(signal.SIGTERM)
        with pytest.raises(flight.FlightUnavailableError, match="shutting down"):
            while True:
                reader.read_chunk()
        assert proc.wait(timeout=30) == 0
        client.close()
    finally:
        files.latency = 0.0
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def _healthy(client: flight.FlightClient) -> bool:
    try:
        list(client.do_action(flight.Action("health", b"")))
        return True
    except flight.FlightError:
        return False
