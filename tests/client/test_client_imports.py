"""A remote client needs pyarrow, numpy and torch only: checked in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.flight_fixtures import GT

# What only the server side (or GIS work) needs; none of it may load in a remote client.
SERVER_SIDE = ("obstore", "pyproj", "shapely", "imagecodecs", "catalog", "flight_server")

SCRIPT = r"""
import json, sys

import torch
from torch.utils.data import DataLoader

import flight_client as fc

location, boxes = sys.argv[1], json.loads(sys.argv[2])
query = {"geometries": [tuple(b) for b in boxes], "geometry_crs": "EPSG:32633",
         "chip_size": 32, "batch_rows": 3}
client = fc.connect(location)
out = {"collections": [c["name"] for c in client.collections()], "rows": 0}
for batch in client.chips("alpha", **query):
    t = fc.to_torch(batch)
    assert isinstance(t["chip"], torch.Tensor) and t["chip"].shape[1:] == (2, 32, 32)
    out["rows"] += batch.num_rows
info = client.plan("alpha", shards=2, **query)
out["planned"] = sum(b.num_rows for ep in info.endpoints for b in client.read_endpoint(ep))
out["index_rows"] = client.index("alpha", filter={"ids": ["s1", "s3"]}).num_rows
ds = fc.ChipDataset(client, "alpha", **query)
out["samples"] = sum(1 for _ in ds)
loader = DataLoader(ds, batch_size=4, num_workers=1)  # a forked worker: through the helper
out["worker_chips"] = sum(len(b["id"]) for b in loader)
out["loaded"] = sorted(m for m in sys.modules if m.split(".")[0] in json.loads(sys.argv[3]))
client.close()
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def served(flight_root, start_server):
    return start_server(flight_root.path)


def test_remote_client_loads_no_server_side_module(served, tmp_path: Path) -> None:
    script = tmp_path / "remote.py"
    script.write_text(SCRIPT)
    # Two boxes inside every scene (they sit at x + 0 and x + 1000 m): 4 chips each.
    boxes = [
        (GT[0] + 1100 + dx, GT[3] - 1420, GT[0] + 1420 + dx, GT[3] - 1100) for dx in (0, 500)
    ]
    got = subprocess.run(
        [sys.executable, str(script), served.location, json.dumps(boxes), json.dumps(SERVER_SIDE)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert got.returncode == 0, got.stderr[-3000:]
    out = json.loads(got.stdout)
    assert out["loaded"] == [], f"a remote client imported {out['loaded']}"
    assert out["collections"] == ["alpha", "beta"]
    assert out["rows"] == out["planned"] == out["samples"] == out["worker_chips"] == 8
    assert out["index_rows"] == 2
