"""Ray Data over the wire contract: flight_client.ray on a local Ray cluster (2 CPUs)
against a real server, checked against the Python client chip for chip."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import ray
import ray.data
import torch

import flight_client as fc
from cogflight_core import (
    AuthenticationError,
    CollectionNotFoundError,
    InvalidArgumentError,
    UnavailableError,
)
from flight_client.ray import ChipCollateFn, ChipDatasource, read_chips, to_ray_block
from tests.support.flight_fixtures import lonlat_box, make_root, tls_material

# 9 boxes over both scene footprints: up to 4 scenes each, 2 x 64 x 64 chips.
BOXES = [lonlat_box(10 + 80 * c, 10 + 80 * r, 60, 60) for r in range(3) for c in range(3)]
FIELDS: dict[str, Any] = {"geometries": BOXES, "chip_size": 64, "batch_rows": 5}
TOKEN = "r" * 32
REQUEST_ID = r" \(request [0-9a-f]{8}\)"
# Ray's DataContext warns about its own deprecated settings when it is copied to a task.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")


@pytest.fixture(scope="module", autouse=True)
def ray_cluster() -> Iterator[None]:
    """One local Ray instance for the module, shut down after it."""
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="ERROR",
        configure_logging=False,
    )
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def server(flight_root: Any, start_server: Any) -> Any:
    return start_server(flight_root.path)


def python_chips(location: str, **kw: Any) -> dict[str, Any]:
    """The single-client result: one unsharded stream, columns as numpy."""
    with fc.connect(location, **kw.pop("connect", {})) as client:
        table = pa.Table.from_batches(list(client.chips("alpha", **kw)))
    return {
        "ordinal": table.column("ordinal").to_numpy(),
        "id": table.column("id").to_pylist(),
        "geometry_index": table.column("geometry_index").to_numpy(),
        "chip": np.concatenate([c.to_numpy_ndarray() for c in table.column("chip").chunks]),
        "valid": np.concatenate([c.to_numpy_ndarray() for c in table.column("valid").chunks]),
    }


def ray_chips(ds: Any) -> dict[str, Any]:
    """Every row of a Dataset (numpy batches), in ordinal order."""
    parts = list(ds.iter_batches(batch_format="numpy", batch_size=None))
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    order = np.argsort(out["ordinal"], kind="stable")
    return {k: v[order] for k, v in out.items()}


@pytest.mark.parametrize(
    ("fields", "shards"),
    [
        ({"bands": ["red", "nir"]}, 4),
        ({"bands": ["nir"], "dtype": "float32", "mask": True}, 5),
        ({"time_series": True}, 4),
    ],
    ids=["uint16", "float32-masked", "time-series"],
)
def test_sharded_read_matches_the_single_client(
    server: Any, fields: dict[str, Any], shards: int
) -> None:
    fields = {**FIELDS, **fields}
    ds = read_chips(server.location, "alpha", shards=shards, **fields).materialize()
    assert ds.num_blocks() == shards
    want = python_chips(server.location, **fields)
    got = ray_chips(ds)
    n = len(want["ordinal"])
    assert n >= 9 and ds.count() == n
    assert got["ordinal"].tolist() == want["ordinal"].tolist() == list(range(n))
    assert [list(x) if isinstance(x, np.ndarray) else x for x in got["id"]] == want["id"]
    assert got["geometry_index"].tolist() == want["geometry_index"].tolist()
    for name in ("chip", "valid"):
        assert got[name].dtype == want[name].dtype
        assert got[name].shape == want[name].shape
        np.testing.assert_array_equal(got[name], want[name])
    chip_type = ds.schema().base_schema.field("chip").type
    assert isinstance(chip_type, ray.data.extensions.ArrowTensorTypeV2)
    assert chip_type.shape == want["chip"].shape[1:]
    assert chip_type.value_type == pa.from_numpy_dtype(want["chip"].dtype)


def test_blocks_and_estimates_follow_the_plan(server: Any) -> None:
    with fc.connect(server.location) as client:
        info = client.plan("alpha", shards=6, **FIELDS)
        doc = client.query("alpha", **FIELDS)
        source = ChipDatasource(client, {**doc, "shard": {"count": 6}})
    tasks = source.get_read_tasks(1)  # whatever Ray asks: one task per endpoint
    assert len(tasks) == source.num_endpoints == len(info.endpoints) == 6
    assert sum(t.metadata.num_rows for t in tasks) == source.total_records == info.total_records
    size = info.total_bytes + info.total_records * 64 * 64  # pixels, then valid
    assert source.estimate_inmemory_data_size() == size
    assert sum(t.metadata.size_bytes for t in tasks) == pytest.approx(size, abs=6)
    assert source.schema == tasks[0].schema
    # Built from a Client (closed after planning: the tasks open their own connections).
    ds = ray.data.read_datasource(source, override_num_blocks=source.num_endpoints)
    materialized = ds.materialize()
    assert materialized.num_blocks() == 6 and materialized.count() == info.total_records
    # The same query as JSON text, the fields completing it, and Ray's own block count.
    text = json.dumps({k: v for k, v in doc.items() if k != "chip_size"})
    again = read_chips(server.location, text, chip_size=64, shards=3, override_num_blocks=9)
    assert again.materialize().num_blocks() == 9 and again.count() == info.total_records
    with pytest.raises(InvalidArgumentError, match="chip_size: given in the query document"):
        read_chips(server.location, doc, chip_size=32)


def test_blocks_share_the_pixel_buffer(server: Any) -> None:
    with fc.connect(server.location) as client:
        batch = next(iter(client.chips("alpha", **FIELDS)))
    block = to_ray_block(batch)
    chip = block.column("chip").chunk(0)
    assert isinstance(chip.type, ray.data.extensions.ArrowTensorTypeV2)
    source = batch.column("chip").storage.values
    values = chip.storage.values
    assert values.buffers()[1].address == source.buffers()[1].address  # no copy
    np.testing.assert_array_equal(chip.to_numpy(), batch.column("chip").to_numpy_ndarray())
    assert block.schema.field("chip").metadata == batch.schema.field("chip").metadata
    assert block.column("id").to_pylist() == batch.column("id").to_pylist()


def test_blocks_keep_arrows_tensors_when_ray_is_asked_for_them(server: Any) -> None:
    from ray.data.extensions import FixedShapeTensorFormat

    with fc.connect(server.location) as client:
        batch = next(iter(client.chips("alpha", **FIELDS)))
    context = ray.data.DataContext.get_current()
    saved = context.arrow_fixed_shape_tensor_format
    context.arrow_fixed_shape_tensor_format = FixedShapeTensorFormat.ARROW_NATIVE
    try:
        block = to_ray_block(batch)
    finally:
        context.arrow_fixed_shape_tensor_format = saved
    assert block.schema == batch.schema  # arrow.fixed_shape_tensor, dim_names and all
    assert block.column("chip").chunk(0).equals(batch.column("chip"))
    out = ChipCollateFn()(block)
    assert out["chip"].shape == (batch.num_rows, 2, 64, 64) and out["valid"].dtype == torch.bool


MISSING_RAY = """
import importlib.abc, sys
class NoRay(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "ray" or name.startswith("ray."):
            raise ImportError(f"No module named {name!r}")
sys.meta_path.insert(0, NoRay())
import flight_client
assert "ray" not in sys.modules
try:
    import flight_client.ray
except flight_client.MissingDependencyError as exc:
    print(exc)
"""


def test_without_ray_the_error_says_what_to_install() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", MISSING_RAY], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "flight_client.ray needs Ray Data: pip install 'cogflight[ray]'"


def test_a_training_loop_over_iter_torch_batches(server: Any) -> None:
    ds = read_chips(server.location, "alpha", shards=4, bands=["red", "nir"], **FIELDS)
    total = ds.count()
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    before = model.weight.detach().clone()
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    seen, losses = 0, []
    for batch in ds.select_columns(["chip", "valid"]).iter_torch_batches(batch_size=8):
        chip = batch["chip"]
        assert chip.dtype == torch.uint16 and chip.shape[1:] == (2, 64, 64)
        x = chip.to(torch.float32).mean(dim=(2, 3)) / 1000.0
        y = batch["valid"].to(torch.float32).mean(dim=(1, 2)).unsqueeze(1)
        loss = torch.nn.functional.mse_loss(model(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
        seen += len(chip)
    assert seen == total and len(losses) >= 3
    assert all(np.isfinite(losses))
    assert not torch.equal(model.weight.detach(), before)
    # Every column, as flight_client.to_torch gives a batch.
    rows = 0
    for batch in ds.iter_torch_batches(batch_size=8, collate_fn=ChipCollateFn(unsigned="widen")):
        assert batch["chip"].dtype == torch.int32 and batch["valid"].dtype == torch.bool
        assert batch["transform"].shape == (len(batch["id"]), 6)
        assert isinstance(batch["id"][0], str) and batch["datetime"][0].startswith("2024-")
        rows += len(batch["id"])
    assert rows == total


def test_server_errors_keep_the_servers_message(server: Any) -> None:
    with fc.connect(server.location) as client, pytest.raises(InvalidArgumentError) as direct:
        client.plan("alpha", bands=["blue"], **FIELDS)
    with pytest.raises(InvalidArgumentError) as bad:
        read_chips(server.location, "alpha", shards=4, bands=["blue"], **FIELDS)
    assert "bands: 'blue' not in Collection 'alpha'" in str(bad.value)
    assert re.sub(REQUEST_ID, "", str(bad.value)) == re.sub(REQUEST_ID, "", str(direct.value))
    assert "\n" not in str(bad.value) and "Detail" not in str(bad.value)
    with pytest.raises(CollectionNotFoundError, match="no Collection 'nope'"):
        read_chips(server.location, "nope", **FIELDS)


def test_a_read_task_error_reaches_the_consumer_as_its_class(
    start_server: Any, tmp_path: Path
) -> None:
    make_root(tmp_path / "root", tmp_path / "data", scenes=2)
    srv = start_server(tmp_path / "root")
    ds = read_chips(srv.location, "alpha", shards=4, **FIELDS)  # planned: files indexed
    for tif in (tmp_path / "data").iterdir():
        tif.write_bytes(b"")  # truncated behind the server's back
    with pytest.raises(UnavailableError) as broken:
        ds.materialize()
    cause = broken.value.cause  # Ray's wrapper is also an UnavailableError; this is ours
    assert isinstance(cause, UnavailableError)
    # The server's one line first (Ray appends its own lines about retrying the task).
    line = str(cause).splitlines()[0]
    assert line.startswith("upstream storage: .../s") and re.search(REQUEST_ID + "$", line)
    assert "the file is shorter than its indexed header says" in line and "Detail" not in line


def _dead_location() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"grpc://127.0.0.1:{s.getsockname()[1]}"


def test_read_tasks_fail_over_to_an_endpoints_other_locations(
    server: Any, flight_root: Any, start_server: Any
) -> None:
    # A planner advertising a dead replica and the live server: half the endpoints list
    # the dead one first, and their read tasks go on at the live one.
    dead = _dead_location()
    planner = start_server(flight_root.path, advertise=[dead, server.location])
    with fc.connect(planner.location) as client:
        info = client.plan("alpha", shards=4, **FIELDS)
    assert sum(ep.locations[0].uri.decode() == dead for ep in info.endpoints) == 2
    ds = read_chips(planner.location, "alpha", shards=4, retry_wait_s=0.05, num_cpus=0.5, **FIELDS)
    got = ray_chips(ds)
    want = python_chips(server.location, **FIELDS)
    assert got["ordinal"].tolist() == want["ordinal"].tolist()
    np.testing.assert_array_equal(got["chip"], want["chip"])


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ray-tokens") / "tokens"
    path.write_text(f"# the Ray consumer test\n{TOKEN}\n")
    return path


def test_token_is_honoured(flight_root: Any, start_server: Any, tokens: Path) -> None:
    srv = start_server(flight_root.path, token_file=str(tokens))
    with pytest.raises(AuthenticationError, match="missing credentials"):
        read_chips(srv.location, "alpha", shards=4, **FIELDS)
    with pytest.raises(AuthenticationError):
        read_chips(srv.location, "alpha", shards=4, token="x" * 32, **FIELDS)
    ds = read_chips(srv.location, "alpha", shards=4, token=TOKEN, **FIELDS)
    assert ds.materialize().num_blocks() == 4
    # A Client carries its token to the tasks too.
    with fc.connect(srv.location, token=TOKEN) as client:
        assert read_chips(client, "alpha", shards=2, **FIELDS).count() == ds.count()
    want = python_chips(srv.location, connect={"token": TOKEN}, **FIELDS)
    assert ray_chips(ds)["ordinal"].tolist() == want["ordinal"].tolist()


def test_tls(flight_root: Any, start_server: Any, tmp_path: Path) -> None:
    tls = tls_material(tmp_path)
    srv = start_server(
        flight_root.path, tls_cert=str(tls["server_cert"]), tls_key=str(tls["server_key"])
    )
    ca = tls["ca_cert"].read_bytes()
    ds = read_chips(srv.location, "alpha", shards=4, tls_root_certs=ca, **FIELDS)
    assert srv.location.startswith("grpc+tls://") and ds.materialize().num_blocks() == 4
    want = python_chips(srv.location, connect={"tls_root_certs": ca}, **FIELDS)
    assert ray_chips(ds)["ordinal"].tolist() == want["ordinal"].tolist()
