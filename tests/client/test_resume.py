"""A server killed mid-stream: the client resumes, every chip exactly once (issue 10, 10).

A real ``cogflight serve`` runs in a subprocess; it is killed with SIGKILL while a
``Client.chips`` read or a ``ChipDataset`` epoch is in progress and restarted on the
same port a moment later. The read completes with every chip once: compared with a
reference read by ordinal, scene id, geometry index and pixel checksum. Before the
fix the stream died (a naive re-read duplicated 16 of 240 chips; a re-iterated
epoch duplicated 120). Also here: the wire contract's ``skip`` and ``ordinal``.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import torch

import flight_client as fc
from flight_client._retry import RetryPolicy, _after
from tests.support.flight_fixtures import GT

pytestmark = pytest.mark.timeout(240)

# Boxes of 1280 m over the first scene: 144 chips of 2 x 128 x 128 uint16 (64 KiB
# each, 9 MiB in all: more than gRPC buffers ahead of a paused consumer).
QUERY: dict[str, Any] = {
    "geometries": fc.grid_boxes((GT[0] + 640, GT[3] - 5120 + 640, GT[0] + 5120 - 640,
                                 GT[3] - 640), size=1280, stride=540),
    "geometry_crs": "EPSG:32633",
    "chip_size": 128,
    "batch_rows": 4,
}
Key = tuple[int, str, int, int]  # ordinal, scene id, geometry index, pixel checksum


class Served:
    """``cogflight serve`` in a subprocess on a fixed port; kill -9 and restart it."""

    def __init__(self, root: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.root = root
        self.location = f"grpc://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cogflight", "serve", "--root", str(self.root),
             "--port", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.starts += 1
        probe = fc.connect(self.location, retries=0)
        deadline = time.monotonic() + 60
        try:
            while True:
                try:
                    probe.health()
                    return
                except fc.UnavailableError:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
        finally:
            probe.close()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def restart_later(self, delay: float) -> threading.Thread:
        thread = threading.Thread(target=lambda: (time.sleep(delay), self.start()))
        thread.start()
        return thread

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def served(flight_root) -> Iterator[Served]:
    server = Served(flight_root.path)
    server.start()
    yield server
    server.stop()


def _keys(batch: pa.RecordBatch) -> list[Key]:
    t = fc.to_torch(batch)
    sums = t["chip"].to(torch.int64).sum(dim=(1, 2, 3)).tolist()
    return [(int(o), i, int(g), int(s)) for o, i, g, s in
            zip(t["ordinal"], t["id"], t["geometry_index"], sums, strict=True)]


@pytest.fixture
def reference(served: Served) -> dict[int, Key]:
    with fc.connect(served.location) as client:
        keys = [k for rb in client.chips("alpha", **QUERY) for k in _keys(rb)]
    assert [k[0] for k in keys] == list(range(len(keys)))  # ordinals: 0..N-1, in order
    assert len(keys) >= 100
    return {k[0]: k for k in keys}


def _exactly_once(keys: list[Key], reference: dict[int, Key]) -> None:
    dupes = [k for k, n in Counter(k[0] for k in keys).items() if n > 1]
    assert not dupes, f"{len(dupes)} chips delivered twice, e.g. ordinals {dupes[:5]}"
    assert sorted(k[0] for k in keys) == sorted(reference), "chips missing"
    assert {k[0]: k for k in keys} == reference, "a chip differs from the reference read"


def test_chips_read_survives_kill_9_and_restart(served: Served, reference) -> None:
    retries = fc.stats()["stream_retries"]
    keys: list[Key] = []
    restart = None
    with fc.connect(served.location, retry_wait_s=0.25) as client:
        for rb in client.chips("alpha", **QUERY):
            keys.extend(_keys(rb))
            if restart is None and len(keys) >= 20:
                served.kill()  # mid-stream: most chips are not even rendered yet
                restart = served.restart_later(1.0)  # refused connections, then back
    assert restart is not None
    restart.join(timeout=90)
    assert served.starts == 2
    assert fc.stats()["stream_retries"] > retries, "the kill did not break the stream"
    _exactly_once(keys, reference)


def test_chip_dataset_epoch_survives_kill_9_and_restart(served: Served, reference) -> None:
    ds = fc.ChipDataset(fc.connect(served.location, retry_wait_s=0.25), "alpha", batches=True,
                        shards_per_consumer=3, **QUERY)
    retries = fc.stats()["stream_retries"]
    keys: list[Key] = []
    restart = None
    for batch in ds:
        sums = batch["chip"].to(torch.int64).sum(dim=(1, 2, 3)).tolist()
        keys.extend((int(o), i, int(g), int(s)) for o, i, g, s in
                    zip(batch["ordinal"], batch["id"], batch["geometry_index"], sums,
                        strict=True))
        if restart is None and len(keys) >= 20:
            served.kill()
            restart = served.restart_later(1.0)
    assert restart is not None
    restart.join(timeout=90)
    assert fc.stats()["stream_retries"] > retries, "the kill did not break the stream"
    _exactly_once(keys, reference)
    ds.client.close()


def test_dataloader_workers_epoch_survives_kill_9_and_restart(served: Served,
                                                              reference) -> None:
    """Forked workers (calls through relay helpers) resume the same way."""
    from torch.utils.data import DataLoader

    ds = fc.ChipDataset(fc.connect(served.location, retry_wait_s=0.25), "alpha", batches=True,
                        shards_per_consumer=2, **QUERY)
    loader = DataLoader(ds, batch_size=None, num_workers=2, multiprocessing_context="fork")
    keys: list[Key] = []
    restart = None
    for batch in loader:
        sums = batch["chip"].to(torch.int64).sum(dim=(1, 2, 3)).tolist()
        keys.extend((int(o), i, int(g), int(s)) for o, i, g, s in
                    zip(batch["ordinal"], batch["id"], batch["geometry_index"], sums,
                        strict=True))
        if restart is None and len(keys) >= 20:
            served.kill()
            restart = served.restart_later(1.0)
    assert restart is not None
    restart.join(timeout=90)
    with fc.connect(served.location) as probe:  # resumed streams reached the restarted server
        assert probe.stats()["streams"] > 0
    _exactly_once(keys, reference)
    ds.client.close()


def test_skip_leaves_out_the_first_chips_of_a_stream(served: Served, reference) -> None:
    n = len(reference)
    with fc.connect(served.location) as client:
        def ordinals(**extra: Any) -> list[int]:
            return [k[0] for rb in client.chips("alpha", **QUERY, **extra) for k in _keys(rb)]

        assert ordinals(skip=5) == list(range(5, n))
        assert ordinals(skip=n) == [] and ordinals(skip=n + 100) == []
        # A shard's chips come in ordinal order, so skip leaves out its first ones.
        shard1 = ordinals(shard={"index": 1, "count": 3})
        assert shard1 == sorted(shard1) and len(shard1) > 2
        assert ordinals(shard={"index": 1, "count": 3}, skip=2) == shard1[2:]
        info = client.plan("alpha", shards=3, **QUERY)
        ticket = json.loads(info.endpoints[1].ticket.ticket)
        assert ticket["shard"] == {"index": 1, "count": 3}
        keys = [k for rb in client.read_endpoint(info.endpoints[1]) for k in _keys(rb)]
        assert keys == [reference[o] for o in shard1]  # ordinals across shards
        every = sorted(o for i in range(3) for o in ordinals(shard={"index": i, "count": 3}))
        assert every == list(range(n))  # the shards partition the query exactly


def test_a_dead_server_is_retried_within_the_budget_then_raises(served: Served) -> None:
    served.kill()
    client = fc.connect(served.location, retries=2, retry_wait_s=0.05)
    before = fc.stats()["stream_retries"]
    with pytest.raises(fc.UnavailableError):
        list(client.chips("alpha", **QUERY))
    assert fc.stats()["stream_retries"] - before == 2
    with contextlib.suppress(Exception):
        client.close()


def test_resumed_rows_after_the_last_ordinal() -> None:
    """A resumed stream may repeat chips left out under on_error="skip": they are dropped."""
    batch = pa.record_batch({"ordinal": pa.array([3, 4, 7, 9], pa.int64()),
                             "x": pa.array([0, 1, 2, 3])})
    assert _after(batch, 2).equals(batch)
    assert _after(batch, 4).column("ordinal").to_pylist() == [7, 9]
    assert _after(batch, 9).num_rows == 0
    assert _after(batch, 5).column("x").to_pylist() == [2, 3]


def test_retry_policy_waits_double_and_are_bounded() -> None:
    p = RetryPolicy(retries=5, wait_s=0.5, max_wait_s=3.0)
    assert [p.wait(r) for r in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    for bad in ({"retries": -1}, {"retries": True}, {"wait_s": float("nan")}):
        with pytest.raises(fc.InvalidArgumentError):
            RetryPolicy(**bad)
    np.testing.assert_equal(fc.connect("grpc://127.0.0.1:9").retry.retries, 6)


def test_storage_failures_a_live_server_reports_are_not_retried(tmp_path: Path,
                                                                 start_server) -> None:
    """The server already retried its storage reads: the client raises at once."""
    from tests.support.flight_fixtures import lonlat_box, make_root

    make_root(tmp_path / "root", tmp_path / "data", scenes=1)
    (tmp_path / "data" / "s0_red.tif").unlink()
    server = start_server(tmp_path / "root")
    before = fc.stats()["stream_retries"]
    with fc.connect(server.location) as client, pytest.raises(fc.UnavailableError,
                                                              match="s0_red"):
        list(client.chips("alpha", geometries=[lonlat_box(0, 0, 64, 64)], chip_size=16))
    assert fc.stats()["stream_retries"] == before


@pytest.mark.parametrize(("message", "retried"), [
    ("Stream removed (Socket closed)", True),
    ("failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:9: "
     "Failed to connect to remote host: Connection refused", True),
    ("server busy: 16 streams in progress (limit 16); retry later or add replicas", True),
    ("the Flight helper process ended unexpectedly (see its log above)", True),
    ("upstream storage: s3://b/k.tif bytes [0, 10): object not found", False),
    ("Collection 'x' cannot be loaded: corrupt file", False),
])
def test_which_unavailable_errors_are_retried(message: str, retried: bool) -> None:
    from flight_client._retry import transient

    assert transient(fc.UnavailableError(message)) is retried
    assert not transient(fc.InvalidArgumentError(message))


def test_ordinals_stay_put_when_on_error_skip_leaves_chips_out(tmp_path: Path,
                                                               start_server) -> None:
    from tests.support.flight_fixtures import lonlat_box, make_root

    make_root(tmp_path / "root", tmp_path / "data", scenes=2)
    (tmp_path / "data" / "s0_red.tif").unlink()  # every chip of scene s0 fails
    server = start_server(tmp_path / "root")
    boxes = [lonlat_box(110, 10, 16, 16), lonlat_box(130, 30, 16, 16)]  # both in s0 and s1
    with fc.connect(server.location) as client:
        table = pa.Table.from_batches(list(client.chips("alpha", geometries=boxes,
                                                        chip_size=16, on_error="skip")))
    assert table.column("id").to_pylist() == ["s1", "s1"]
    assert table.column("ordinal").to_pylist() == [1, 3]  # (g0,s0)=0 and (g1,s0)=2 left out
