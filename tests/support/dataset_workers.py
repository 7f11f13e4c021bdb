"""Code that runs in DDP ranks spawned by tests/client/test_datasets.py (importable by spawn)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def chip_key(sample_id: str, geometry_index: int) -> str:
    return f"{sample_id}/{geometry_index}"


def forked_child_checks(location: str, queue: Any) -> None:
    """In a child forked after gRPC started: every call works, through the helper."""
    import flight_client as fc
    from cogflight_core._fork import grpc_inherited

    out: dict[str, Any] = {"inherited": grpc_inherited()}
    try:
        client = fc.connect(location)
        out["transport"] = type(client._transport()).__name__  # chosen once, for this process
        out["collections"] = [c["name"] for c in client.collections()]
        out["index_rows"] = client.index("alpha").num_rows
        try:
            client.describe("nope")
        except fc.CollectionNotFoundError as exc:
            out["not_found"] = str(exc)
        try:
            list(client.chips("alpha", geometries=[(0, 0, 1, 1)], bands=["blue"]))
        except fc.InvalidArgumentError as exc:
            out["invalid"] = str(exc)
        query = {"geometries": [(500000, 4095000, 505000, 4100000)], "geometry_crs":
                 "EPSG:32633", "chip_size": 64, "batch_rows": 1}
        stream = client.chips("alpha", **query)
        next(stream)
        stream.close()  # stop early: the helper is replaced, the next call still works
        batches = list(client.chips("alpha", **query))
        out["rows"] = sum(b.num_rows for b in batches)
        t = fc.to_torch(batches[0])
        out["zero_copy"] = fc.stats()["zero_copy"] >= 1 and t["chip"].shape == (1, 2, 64, 64)
        out["relayed"] = fc.stats()["relayed_requests"]
        client.close()
    except Exception as exc:  # report, do not hang the parent
        out["error"] = repr(exc)
    queue.put(out)


def direct_worker(worker_id: int) -> None:
    """``worker_init_fn`` of forkserver workers: a fresh gRPC, so direct calls."""
    from torch.utils.data import get_worker_info

    from cogflight_core._fork import grpc_inherited
    from flight_client._transport import DirectTransport

    info = get_worker_info()
    assert info is not None and info.id == worker_id
    assert not grpc_inherited(), "a forkserver worker inherits no gRPC"
    assert isinstance(info.dataset.client._transport(), DirectTransport)


def inherited_client_checks(client: Any, queue: Any) -> None:
    """In a forked child, the parent's own Client: nested calls, then close, never hang."""
    import flight_client as fc

    out: dict[str, Any] = {}
    try:
        query = {"geometries": [(500000, 4095000, 505000, 4100000)], "geometry_crs":
                 "EPSG:32633", "chip_size": 32, "batch_rows": 1}
        rows = 0
        for batch in client.chips("alpha", **query):  # a call inside a streaming call
            rows += batch.num_rows
            out.setdefault("stats_mid_stream", client.stats()["streams"] >= 1)
        out["rows"] = rows
        out["relayed"] = fc.stats()["relayed_requests"]
        client.close()  # the parent's channels: kept, never torn down here
        out["closed"] = True
    except Exception as exc:
        out["error"] = repr(exc)
    queue.put(out)


def ddp_rank(rank: int, world: int, location: str, query: dict[str, Any], out: str) -> None:
    """One DDP rank: two DataLoader workers, two epochs; writes the chips it saw."""
    import torch
    import torch.distributed as dist
    from torch.utils.data import DataLoader

    import flight_client as fc

    dist.init_process_group(
        "gloo", init_method=f"file://{out}/rendezvous", rank=rank, world_size=world
    )
    try:
        ds = fc.ChipDataset(location, "alpha", shuffle=True, seed=11, **query)
        seen: dict[int, list[list[Any]]] = {}
        for epoch in (0, 1):
            ds.set_epoch(epoch)
            # Workers of a spawned rank are spawned by default; epoch 1 forks them instead.
            context = "fork" if epoch == 1 else None
            loader = DataLoader(ds, batch_size=8, num_workers=2, collate_fn=fc.collate,
                                multiprocessing_context=context)
            seen[epoch] = [
                [chip_key(i, int(g)), int(c.to(torch.int64).sum())]
                for batch in loader
                for i, g, c in zip(batch["id"], batch["geometry_index"], batch["chip"],
                                   strict=True)
            ]
            dist.barrier()  # ranks finish an epoch together, as in training
        Path(out, f"rank{rank}.json").write_text(json.dumps(seen))
    finally:
        dist.destroy_process_group()
