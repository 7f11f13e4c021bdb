"""A fleet: 3 replicas over one Collection root on S3 (moto), one killed mid-epoch (issue 11).

Three ``cogflight serve`` processes share a root on a real S3 API on loopback; each
advertises all three, so any of them plans a query into endpoints placed over all
three by tile locality, each endpoint listing the other replicas for failover. A
``ChipDataset`` epoch (and a plain ``Client`` read) runs while one replica is killed
with SIGKILL in the middle of one of its endpoints and never comes back: the epoch
completes with every chip exactly once (ordinal, scene, geometry, pixel checksum
against an uninterrupted read), the broken stream resumed at the next replica.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import torch

import catalog
import flight_client as fc
from catalog.testing import synthetic_scene, write_cog

pytestmark = [pytest.mark.network, pytest.mark.timeout(300)]

GT = (500000.0, 10.0, 0.0, 4100000.0, 0.0, -10.0)
QUERY: dict[str, Any] = {
    "geometries": fc.grid_boxes((GT[0] + 640, GT[3] - 5120 + 640, GT[0] + 5120 - 640,
                                 GT[3] - 640), size=1280, stride=600),
    "geometry_crs": "EPSG:32633",
    "chip_size": 128,
    "batch_rows": 4,
}
Key = tuple[int, str, int, int]


def _keys(batch: pa.RecordBatch) -> list[Key]:
    t = fc.to_torch(batch)
    sums = t["chip"].to(torch.int64).sum(dim=(1, 2, 3)).tolist()
    return [(int(o), i, int(g), int(s)) for o, i, g, s in
            zip(t["ordinal"], t["id"], t["geometry_index"], sums, strict=True)]


class Fleet:
    """Three replicas of ``cogflight serve`` over ``s3://fleet/root``."""

    def __init__(self, endpoint: str, log_dir: Path) -> None:
        socks = [socket.socket() for _ in range(3)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        self.ports = [s.getsockname()[1] for s in socks]
        for s in socks:
            s.close()
        self.locations = [f"grpc://127.0.0.1:{p}" for p in self.ports]
        env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
        advertise = [a for loc in self.locations for a in ("--advertise", loc)]
        self.procs = [
            subprocess.Popen(
                [sys.executable, "-m", "cogflight", "serve", "--root", "s3://fleet/root",
                 "--endpoint", endpoint, "--region", "us-east-1", "--port", str(p),
                 "--allow", "s3://fleet/data/", *advertise],
                stdout=subprocess.DEVNULL, stderr=(log_dir / f"replica{k}.log").open("wb"),
                env=env)
            for k, p in enumerate(self.ports)
        ]
        for loc, proc in zip(self.locations, self.procs, strict=True):
            probe = fc.connect(loc, retries=0)
            deadline = time.monotonic() + 60
            while True:
                try:
                    probe.health()
                    break
                except fc.UnavailableError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            probe.close()

    def kill(self, location: str) -> None:
        proc = self.procs[self.locations.index(location)]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture
def fleet(tmp_path: Path, moto_s3) -> Iterator[Fleet]:
    endpoint, s3 = moto_s3
    s3.create_bucket(Bucket="fleet")
    files: dict[str, dict[str, str]] = {}
    for i in range(3):
        files[f"s{i}"] = {}
        for b, band in enumerate(("red", "nir")):
            local = tmp_path / f"s{i}_{band}.tif"
            write_cog(local, synthetic_scene(512, 512, 1, 10 * i + b), nodata=0, epsg=32633,
                      geotransform=GT, tile=128)
            s3.upload_file(str(local), "fleet", f"data/{local.name}")
            files[f"s{i}"][band] = f"s3://fleet/data/{local.name}"
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    opts = {"endpoint": endpoint, "region": "us-east-1", "allow_http": True}
    dates = {f"s{i}": f"2024-0{i + 1}-01" for i in range(3)}
    collection = catalog.build_from_files(files, name="fleet", datetime=dates,
                                          store_options=opts, progress=False)
    collection.save(tmp_path / "fleet.parquet")
    s3.upload_file(str(tmp_path / "fleet.parquet"), "fleet", "root/fleet.parquet")
    fleet = Fleet(endpoint, tmp_path)
    yield fleet
    fleet.stop()


def _exactly_once(keys: list[Key], reference: dict[int, Key]) -> None:
    dupes = [k for k, n in Counter(k[0] for k in keys).items() if n > 1]
    assert not dupes, f"{len(dupes)} chips delivered twice, e.g. ordinals {dupes[:5]}"
    assert sorted(k[0] for k in keys) == sorted(reference), "chips missing"
    assert {k[0]: k for k in keys} == reference, "a chip differs from the reference read"


def _victim(client: fc.Client, fleet: Fleet, shards: int) -> tuple[str, int]:
    """A replica other than the planner's and the chip count halfway into its first endpoint."""
    info = client.plan("fleet", shards=shards, **QUERY)
    places = [ep.locations[0].uri.decode() for ep in info.endpoints]
    assert len(set(places)) == 3, f"endpoints not placed over the three replicas: {places}"
    for ep in info.endpoints:  # every endpoint lists every replica: the failover order
        assert sorted(loc.uri.decode() for loc in ep.locations) == sorted(fleet.locations)
    before = 0
    for ep, place in zip(info.endpoints, places, strict=True):
        n = sum(rb.num_rows for rb in client.read_endpoint(ep))
        if place != fleet.locations[0]:
            return place, before + n // 2
        before += n
    raise AssertionError("no endpoint away from the planner")


def test_an_epoch_survives_a_replica_killed_mid_epoch(fleet: Fleet) -> None:
    with fc.connect(fleet.locations[0], retry_wait_s=0.1) as client:
        reference = {k[0]: k for rb in client.chips("fleet", **QUERY) for k in _keys(rb)}
        assert len(reference) >= 100
        victim, at = _victim(client, fleet, shards=6)
        retries = fc.stats()["stream_retries"]
        ds = fc.ChipDataset(client, "fleet", shards_per_consumer=6, **QUERY)
        keys: list[Key] = []
        for sample in ds:
            keys.append((int(sample["ordinal"]), sample["id"], int(sample["geometry_index"]),
                         int(sample["chip"].to(torch.int64).sum())))
            if len(keys) == at:
                fleet.kill(victim)
        assert len(keys) > at, "the replica was not killed mid-epoch"
        _exactly_once(keys, reference)
        assert fc.stats()["stream_retries"] > retries, "no stream moved to another replica"
        # The next epoch plans again (the dead replica still advertised): its endpoints
        # fail over at once, and the epoch is exactly once too.
        again = [(int(x["ordinal"]), x["id"], int(x["geometry_index"]),
                  int(x["chip"].to(torch.int64).sum())) for x in ds]
        _exactly_once(again, reference)


def test_chips_resume_at_a_replica_when_the_clients_own_server_dies(fleet: Fleet) -> None:
    # Client.chips (and so the TorchGeo adapter, which reads through it) learns the
    # advertised replicas from health and resumes a broken stream at them.
    with fc.connect(fleet.locations[0]) as first:
        reference = {k[0]: k for rb in first.chips("fleet", **QUERY) for k in _keys(rb)}
    doomed = fleet.locations[1]
    with fc.connect(doomed, retry_wait_s=0.1) as client:
        keys: list[Key] = []
        for rb in client.chips("fleet", **QUERY):
            keys += _keys(rb)
            if len(keys) >= len(reference) // 2 and fleet.procs[1].poll() is None:
                fleet.kill(doomed)
        assert fleet.procs[1].poll() is not None, "the server was not killed mid-stream"
        _exactly_once(keys, reference)
