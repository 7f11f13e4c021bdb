"""The streaming half of ``cogflight demo``: an embedded server, chips into torch tensors."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ._client import connect
from ._sampling import random_points
from ._torch import stats, to_torch

__all__ = ["stream_demo"]


def stream_demo(
    collections: Path, name: str, *, chips: int = 192, chip_size: int = 256, workers: int = 2
) -> dict[str, Any]:
    """Stream random chips of ``name`` from an embedded server; return what happened.

    Three passes over the same query: cold (tiles fetched and decoded), warm (from
    the server's tile cache), and one epoch of a ``ChipDataset`` through a
    ``DataLoader`` with ``workers`` worker processes.
    """
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    with connect(root=collections) as client:
        out["location"] = client.location
        out["start_s"] = time.perf_counter() - t0
        index = client.index(name)
        centres = random_points(index, size=chip_size, count=chips, seed=0)
        query: dict[str, Any] = {"geometries": centres, "chip_size": chip_size, "batch_rows": 16}
        for label in ("cold", "warm"):
            before = stats()
            t = time.perf_counter()
            first = None
            n = nbytes = batches = 0
            shape = dtype = None
            for batch in client.chips(name, **query):
                tensors = to_torch(batch)
                if first is None:
                    first = time.perf_counter() - t
                    shape, dtype = list(tensors["chip"].shape), tensors["chip"].dtype
                batches += 1
                n += len(tensors["chip"])
                nbytes += tensors["chip"].nbytes
            total = time.perf_counter() - t
            after = stats()
            out[label] = {
                "chips": n,
                "batches": batches,
                "mb": nbytes / 1e6,
                "first_batch_s": first,
                "total_s": total,
                "chips_per_s": n / total,
                "batch_shape": shape,
                "dtype": str(dtype),
                "zero_copy": after["zero_copy"] - before["zero_copy"],
                "copied": after["realigned"] - before["realigned"],
            }
        out["epoch"] = _loader_epoch(client, name, query, workers)
        out["server"] = client.stats()
    return out


def _loader_epoch(client: Any, name: str, query: dict[str, Any], workers: int) -> dict[str, Any]:
    from torch.utils.data import DataLoader

    from ._dataset import ChipDataset
    from ._torch import collate

    dataset = ChipDataset(client, name, shuffle=True, seed=0, **query)
    loader = DataLoader(dataset, batch_size=32, num_workers=workers, collate_fn=collate)
    t = time.perf_counter()
    keys = []
    for batch in loader:
        keys += list(zip(batch["id"], batch["geometry_index"].tolist(), strict=True))
    total = time.perf_counter() - t
    return {
        "workers": workers,
        "chips": len(keys),
        "unique": len(set(keys)),
        "total_s": total,
        "chips_per_s": len(keys) / total,
    }
