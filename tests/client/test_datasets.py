"""ChipDataset: exactly once per epoch over DataLoader workers and DDP ranks, shuffles."""

from __future__ import annotations

import json
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as tmp
from torch.utils.data import DataLoader

import flight_client as fc
from flight_server import Server
from tests.support.dataset_workers import (
    chip_key,
    ddp_rank,
    direct_worker,
    forked_child_checks,
    inherited_client_checks,
)
from tests.support.flight_fixtures import GT

# 8 x 8 boxes of 320 m over the first scene; each hits 2 to 4 of the 4 scenes.
QUERY: dict[str, Any] = {
    "geometries": fc.grid_boxes((GT[0] + 160, GT[3] - 5120 + 160, GT[0] + 5120 - 160,
                                 GT[3] - 160), size=320, stride=600),
    "geometry_crs": "EPSG:32633",
    "chip_size": 32,
    "batch_rows": 7,
}


@pytest.fixture(scope="module")
def root(flight_root) -> Path:
    return flight_root.path


@pytest.fixture(scope="module")
def server(root: Path, start_server):
    return start_server(root)


@pytest.fixture(scope="module")
def reference(server) -> dict[str, int]:
    """Every chip of QUERY read in one stream: key -> checksum."""
    out: dict[str, int] = {}
    for rb in fc.connect(server.location).chips("alpha", **QUERY):
        t = fc.to_torch(rb)
        for i, g, c in zip(t["id"], t["geometry_index"], t["chip"], strict=True):
            key = chip_key(i, int(g))
            assert key not in out
            out[key] = int(c.to(torch.int64).sum())
    assert len(out) > 100
    return out


def _keys(loader: DataLoader) -> list[tuple[str, int]]:
    out = []
    for batch in loader:
        for i, g, c in zip(batch["id"], batch["geometry_index"], batch["chip"], strict=True):
            out.append((chip_key(i, int(g)), int(c.to(torch.int64).sum())))
    return out


def _assert_exactly_once(pairs: list[tuple[str, int]], reference: dict[str, int]) -> None:
    counts = Counter(k for k, _ in pairs)
    dupes = [k for k, n in counts.items() if n > 1]
    assert not dupes, f"chips delivered twice: {dupes[:5]}"
    assert set(counts) == set(reference), "chips missing or unexpected"
    assert dict(pairs) == reference, "a chip's pixels differ from the single-stream read"


def test_workers_deliver_every_chip_once_per_epoch(server, reference) -> None:
    ds = fc.ChipDataset(server.location, "alpha", shuffle=True, seed=5, **QUERY)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*pin_memory.*")
        loader = DataLoader(ds, batch_size=16, num_workers=2, persistent_workers=True,
                            pin_memory=True)
        epochs = []
        for epoch in range(3):
            ds.set_epoch(epoch)  # reaches the persistent workers
            epochs.append(_keys(loader))
    for pairs in epochs:
        _assert_exactly_once(pairs, reference)
    orders = [[k for k, _ in pairs] for pairs in epochs]
    assert orders[0] != orders[1] != orders[2]
    again = fc.ChipDataset(server.location, "alpha", shuffle=True, seed=5, **QUERY)
    again.set_epoch(1)
    loader = DataLoader(again, batch_size=16, num_workers=2)
    assert [k for k, _ in _keys(loader)] == orders[1], "same seed and epoch, same order"
    other = fc.ChipDataset(server.location, "alpha", shuffle=True, seed=6, **QUERY)
    assert [k for k, _ in _keys(DataLoader(other, batch_size=16))] != orders[0]


def test_unshuffled_single_process_keeps_server_order(server, reference) -> None:
    ds = fc.ChipDataset(server.location, "alpha", **QUERY)
    pairs = _keys(DataLoader(ds, batch_size=5))
    _assert_exactly_once(pairs, reference)
    # The server's order: its endpoints in turn (2 for one consumer), each in ordinal order.
    client = fc.connect(server.location)
    info = client.plan("alpha", shards=2, **QUERY)
    order = [chip_key(i, int(g)) for ep in info.endpoints for rb in client.read_endpoint(ep)
             for i, g in zip(rb.column("id").to_pylist(),
                             rb.column("geometry_index").to_pylist(), strict=True)]
    assert [k for k, _ in pairs] == order, "chips in the server's order"


def test_whole_batches_and_embedded_server(root: Path, reference) -> None:
    with fc.connect(root=root) as client:  # workers reach the embedded server by its socket
        ds = fc.ChipDataset(client, "alpha", batches=True, unsigned="widen", **QUERY)
        loader = DataLoader(ds, batch_size=None, num_workers=2)
        sizes, pairs = [], []
        for batch in loader:
            assert batch["chip"].dtype == torch.int32
            assert batch["chip"].shape[1:] == (2, 32, 32)
            sizes.append(len(batch["id"]))
            pairs += [(chip_key(i, int(g)), int(c.to(torch.int64).sum()))
                      for i, g, c in zip(batch["id"], batch["geometry_index"], batch["chip"],
                                         strict=True)]
        assert max(sizes) <= 7
        _assert_exactly_once(pairs, reference)


def test_default_collate_handles_samples(server) -> None:
    ds = fc.ChipDataset(server.location, "alpha", **QUERY)
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["chip"].shape == (4, 2, 32, 32) and batch["valid"].dtype == torch.bool
    assert len(batch["id"]) == 4 and batch["datetime"][0].startswith("2024-")
    assert batch["transform"].shape == (4, 6)


def test_time_series_samples_collate(server) -> None:
    ds = fc.ChipDataset(server.location, "alpha", time_series=True, **QUERY)
    batch = next(iter(DataLoader(ds, batch_size=3, collate_fn=fc.collate)))
    assert batch["chip"].shape[0] == 3 and batch["chip"].shape[2:] == (2, 32, 32)
    assert batch["valid"].shape == (3, batch["chip"].shape[1], 32, 32)
    assert all(isinstance(ids, list) for ids in batch["id"])


def test_bad_arguments_raise_typed_errors(server) -> None:
    # Checked locally at construction (the main process starts no gRPC)...
    with pytest.raises(fc.InvalidArgumentError, match="chip_size"):
        fc.ChipDataset(server.location, "alpha", **{**QUERY, "chip_size": -3})
    # ...or by the server, in the first worker that plans the query.
    ds = fc.ChipDataset(server.location, "alpha", bands=["blue"], **QUERY)
    with pytest.raises(fc.InvalidArgumentError, match="bands: 'blue' not in Collection"):
        list(DataLoader(ds, batch_size=4, num_workers=1))
    with pytest.raises(fc.InvalidArgumentError, match="unsigned"):
        fc.ChipDataset(server.location, "alpha", unsigned="int32", **QUERY)
    with pytest.raises(fc.InvalidArgumentError, match="shards_per_consumer"):
        fc.ChipDataset(server.location, "alpha", shards_per_consumer=0, **QUERY)
    with pytest.raises(fc.CollectionNotFoundError):
        list(fc.ChipDataset(server.location, "nope", **QUERY))


def test_forkserver_workers_connect_directly(server, reference) -> None:
    """The documented alternative to relaying: workers started from a clean process."""
    client = fc.connect(server.location)
    assert client.health()["status"] == "ok"  # gRPC runs here before the workers start
    ds = fc.ChipDataset(client, "alpha", shuffle=True, seed=3, **QUERY)
    loader = DataLoader(ds, batch_size=16, num_workers=2, multiprocessing_context="forkserver",
                        worker_init_fn=direct_worker)
    _assert_exactly_once(_keys(loader), reference)


def test_forked_child_reaches_server_through_helper(server) -> None:
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=forked_child_checks, args=(server.location, queue))
    child.start()
    out = queue.get(timeout=120)
    child.join(timeout=30)
    assert "error" not in out, out["error"]
    assert out["inherited"], "this test process runs a server: a fork inherits gRPC"
    assert out["collections"] == ["alpha", "beta"] and out["index_rows"] == 4
    assert "nope" in out["not_found"]
    assert out["invalid"].startswith("bands: 'blue' not in Collection")
    assert out["rows"] == 4 and out["zero_copy"]
    assert out["relayed"] == 8  # 7 calls, plus the health call that learns the replicas
    assert out["transport"] == "RelayTransport"


def test_parent_client_in_a_forked_child(server) -> None:
    import multiprocessing

    client = fc.connect(server.location)
    assert client.health()["status"] == "ok"  # the parent's channels exist before the fork
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=inherited_client_checks, args=(client, queue))
    child.start()
    out = queue.get(timeout=120)
    child.join(timeout=60)
    assert child.exitcode == 0, "the child ended cleanly (no hang in gRPC teardown)"
    # relayed: the stream, a stats call inside it for each of its 4 batches, and the
    # health call with which Client.chips learns the replicas to resume at (once a client)
    assert out == {"stats_mid_stream": True, "rows": 4, "relayed": 6, "closed": True}, out
    assert client.health()["status"] == "ok", "the parent's client is untouched"


FORK_SCRIPT = """
import json, multiprocessing, sys
import flight_client as fc
from cogflight_core._fork import grpc_inherited

def child(location, q):
    c = fc.connect(location)
    q.put([grpc_inherited(), len(c.index("alpha")), fc.stats()["relayed_requests"]])

if __name__ == "__main__":
    location, root = sys.argv[1:]
    if root != "-":
        fc.connect(root=root)  # an embedded server: gRPC starts in this process
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=child, args=(location, q))
    p.start()
    print(json.dumps(q.get(timeout=120)))
    p.join()
"""


def test_fork_before_grpc_connects_directly(root: Path, tmp_path: Path) -> None:
    """In fresh interpreters: a fork before gRPC starts connects directly, after, relays."""
    import subprocess
    import sys

    script = tmp_path / "fork_paths.py"
    script.write_text(FORK_SCRIPT)
    with Server(str(root), port=0) as srv:
        for embedded, expected in (("-", [False, 4, 0]), (str(root), [True, 4, 2])):
            got = subprocess.run([sys.executable, str(script), srv.location, embedded],
                                 capture_output=True, text=True, timeout=180, check=True)
            assert json.loads(got.stdout) == expected


def test_ddp_two_ranks_two_workers_exactly_once(server, reference, tmp_path: Path) -> None:
    tmp.spawn(ddp_rank, args=(2, server.location, QUERY, str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for epoch in ("0", "1"):
        pairs = [tuple(p) for r in ranks for p in r[epoch]]
        assert all(r[epoch] for r in ranks), "each rank got chips"
        _assert_exactly_once(pairs, reference)  # type: ignore[arg-type]
    assert [p[0] for p in ranks[0]["0"]] != [p[0] for p in ranks[0]["1"]], "reshuffled"
