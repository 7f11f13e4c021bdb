"""The wire contract from Node.js: clients/node against a live server, checked against
the Python client chip for chip (ids, geometry index, shape, dtype, pixel checksum)."""

from __future__ import annotations

import fcntl
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pyarrow import flight

import flight_client as fc
from cogflight_core import CollectionNotFoundError, InvalidArgumentError
from tests.support.flight_fixtures import lonlat_box, tls_material

NODE_DIR = Path(__file__).resolve().parents[2] / "clients" / "node"
CLI = NODE_DIR / "bin" / "cogflight-read.js"
INDEX = NODE_DIR / "src" / "index.js"
TOKEN = "t" * 32
BOXES = [lonlat_box(110, 10, 60, 60), lonlat_box(300, 300, 40, 40)]


def _installed(lock: Path, hidden: Path) -> bool:
    """Whether node_modules holds exactly what package-lock.json pins."""
    if not hidden.exists():
        return False
    want = {k: v.get("version") for k, v in json.loads(lock.read_text())["packages"].items() if k}
    have = {k: v.get("version") for k, v in json.loads(hidden.read_text())["packages"].items()}
    return want == have


@pytest.fixture(scope="session")
def node() -> str:
    """The node binary, with clients/node/node_modules installed (once, from the lock file)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    assert node and npm, "the Node.js client test needs Node.js 20+ and npm on PATH"
    version = subprocess.run(
        [node, "--version"], capture_output=True, text=True, timeout=30, check=False
    )
    assert int(version.stdout.strip().lstrip("v").split(".")[0]) >= 20, version.stdout
    lock = NODE_DIR / "package-lock.json"
    # Several test sessions may share the tree: one installs, the others wait, none deletes
    # node_modules under another's feet when it already matches the lock file.
    with open(Path(tempfile.gettempdir()) / "cogflight-node-install.lock", "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        hidden = NODE_DIR / "node_modules" / ".package-lock.json"  # what npm installed
        if not (lock.exists() and _installed(lock, hidden)):
            cmd = [
                npm,
                "ci" if lock.exists() else "install",
                "--ignore-scripts",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
            ]
            proc = subprocess.run(
                cmd, cwd=NODE_DIR, capture_output=True, text=True, timeout=600, check=False
            )
            assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}"
    return node


def read(node: str, location: str, doc: dict[str, Any] | str, *args: str) -> tuple[int, list[Any]]:
    """Run the CLI; its exit status and its JSON lines."""
    text = doc if isinstance(doc, str) else json.dumps(doc)
    proc = subprocess.run(
        [node, str(CLI), "--location", location, "--query", text, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert not proc.stderr.strip() or proc.returncode, proc.stderr
    return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines()]


def script(node: str, body: str, *args: str) -> Any:
    """Run a snippet with the library as ``cf`` and ``args``; the JSON it prints."""
    code = (
        f"const cf = require({json.dumps(str(INDEX))});\n"
        f"const args = process.argv.slice(1);\n"
        f"(async () => {{ {body} }})().catch((e) => {{\n"
        "  console.log(JSON.stringify({error: {code: e.code, message: e.message}}));\n"
        "  process.exitCode = 1; });\n"
    )
    proc = subprocess.run(
        [node, "-e", code, *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.stdout, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])

REQUEST_ID = r" \(request [0-9a-f]{8}\)"


def python_chips(location: str, **fields: Any) -> list[dict[str, Any]]:
    """The Python client's chips (one unsharded stream), as the CLI prints them."""
    out = []
    with fc.connect(location) as client:
        for batch in client.chips("alpha", **fields):
            pixels = batch.column("chip").to_numpy_ndarray()
            valid = batch.column("valid").to_numpy_ndarray()
            ids = batch.column("id").to_pylist()
            for i, gi in enumerate(batch.column("geometry_index").to_pylist()):
                p = pixels[i]
                total = (
                    str(int(p.astype(np.int64).sum()))
                    if p.dtype.kind in "iu"
                    else float(p.astype(np.float64).sum())
                )
                out.append(
                    {
                        "id": ids[i],
                        "geometry_index": gi,
                        "shape": list(p.shape),
                        "dtype": str(p.dtype),
                        "sum": total,
                        "valid": int(valid[i].sum()),
                    }
                )
    return out


@pytest.fixture(scope="module")
def server(flight_root: Any, start_server: Any) -> Any:
    return start_server(flight_root.path)


@pytest.mark.parametrize(
    ("fields", "shards"),
    [
        ({"bands": ["red", "nir"]}, 4),
        ({"bands": ["nir"], "dtype": "float32", "mask": True}, 5),
        ({"bands": ["red"], "dtype": "float16"}, 4),
        ({"time_series": True, "geometries": BOXES * 2}, 4),
    ],
    ids=["uint16", "float32-masked", "float16", "time-series"],
)
def test_node_reads_what_python_reads(
    node: str, server: Any, fields: dict[str, Any], shards: int
) -> None:
    fields = {"geometries": BOXES, "chip_size": 64, **fields}
    doc = fc.connect(server.location).query("alpha", **fields)
    rc, lines = read(node, server.location, doc, "--shards", str(shards))
    assert rc == 0, lines
    *chips, summary = lines
    assert summary["summary"]["endpoints"] == shards
    assert summary["summary"]["chips"] == summary["summary"]["total_records"] == len(chips)
    # Endpoints come one after the other, each in ordinal order; together they hold every
    # chip of the one stream once (shards are locality groups, not ordinal slices).
    assert [c["endpoint"] for c in chips] == sorted(c["endpoint"] for c in chips)
    for k in range(shards):
        mine = [c["ordinal"] for c in chips if c["endpoint"] == k]
        assert mine == sorted(mine)
    assert sorted(c["ordinal"] for c in chips) == list(range(len(chips)))
    chips.sort(key=lambda c: c["ordinal"])
    expected = python_chips(server.location, **fields)
    assert len(chips) == len(expected) > 0
    for line, want in zip(chips, expected, strict=True):
        got = {k: line[k] for k in want}
        if want["dtype"].startswith("float"):
            assert float(got.pop("sum")) == pytest.approx(want.pop("sum"), rel=1e-9)
        assert got == want
    shape = chips[0]["shape"]
    assert len(shape) == (4 if fields.get("time_series") else 3) and shape[-2:] == [64, 64]


def test_node_lists_and_describes(node: str, server: Any) -> None:
    got = script(
        node,
        """
        const client = cf.connect(args[0]);
        const out = {collections: await client.listCollections(),
                     describe: await client.describe('alpha'),
                     flights: (await client.listFlights()).map((f) => [f.path, f.totalRecords])};
        client.close();
        console.log(JSON.stringify(out));
    """,
        server.location,
    )
    with fc.connect(server.location) as client:
        assert got["collections"] == client.collections()
        assert got["describe"] == client.describe("alpha")
    assert got["flights"] == [[["alpha"], 4], [["beta"], 1]]


def test_node_chips_are_views_of_the_batch(node: str, server: Any) -> None:
    got = script(
        node,
        """
        const client = cf.connect(args[0]);
        const q = JSON.parse(args[1]);
        const chips = [];
        for await (const chip of client.chips(q)) chips.push(chip);
        client.close();
        const c = chips[0];
        console.log(JSON.stringify({n: chips.length, type: c.data.constructor.name,
          shared: chips[1].data.buffer === chips[2].data.buffer &&
            chips.slice(3, 7).every((x) => x.data.buffer === chips[3].data.buffer),
          length: c.data.length, valid: c.valid.constructor.name, crs: c.crs,
          transform: c.transform, bounds: c.bounds, datetime: c.datetime}));
    """,
        server.location,
        json.dumps(
            fc.connect(server.location).query(
                "alpha", geometries=BOXES, chip_size=64, bands=["red", "nir"]
            )
        ),
    )
    assert got["n"] == 8 and got["type"] == "Uint16Array" and got["length"] == 2 * 64 * 64
    assert got["shared"], "chips of one batch (1, 2, 4, 1 chips) should view one buffer"
    assert got["valid"] == "Uint8Array" and got["crs"] == "EPSG:32633"
    assert len(got["transform"]) == 6 and len(got["bounds"]) == 4
    assert got["datetime"] == "2024-01-01T00:00:00Z"


def test_node_reports_server_errors(node: str, server: Any) -> None:
    good = fc.connect(server.location).query("alpha", geometries=BOXES, chip_size=64)
    with fc.connect(server.location) as client, pytest.raises(InvalidArgumentError) as bad:
        list(client.chips("alpha", geometries=BOXES, chip_size=64, bands=["blue"]))
    rc, lines = read(node, server.location, {**good, "bands": ["blue"]}, "--shards", "4")
    # The same one-line message, each quoting its own request id.
    assert rc == 1 and len(lines) == 1 and lines[0]["error"]["code"] == "INVALID_ARGUMENT"
    node_message = lines[0]["error"]["message"]
    assert re.sub(REQUEST_ID, "", node_message) == re.sub(REQUEST_ID, "", str(bad.value))
    assert re.search(REQUEST_ID, node_message), node_message
    assert "bands: 'blue' not in Collection 'alpha'" in str(bad.value)

    with fc.connect(server.location) as client, pytest.raises(CollectionNotFoundError) as missing:
        client.describe("nope")
    rc, lines = read(node, server.location, {**good, "collection": "nope"})
    assert rc == 1 and lines[0]["error"]["code"] == "NOT_FOUND"
    assert "no Collection 'nope'" in lines[0]["error"]["message"]
    assert re.sub(REQUEST_ID, "", lines[0]["error"]["message"]) == re.sub(
        REQUEST_ID, "", str(missing.value)
    )
    assert "Detail" not in lines[0]["error"]["message"]

    rc, lines = read(node, server.location, "{not json")
    assert rc == 1 and lines[0]["error"]["code"] == "INVALID_ARGUMENT"


def _dead_location() -> str:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        return f"grpc://127.0.0.1:{s.getsockname()[1]}"


def test_node_falls_back_to_other_locations(node: str, server: Any) -> None:
    doc = fc.connect(server.location).query("alpha", geometries=BOXES, chip_size=64)
    got = script(
        node,
        """
        const client = cf.connect(args[0]);
        const plan = await client.plan(JSON.parse(args[1]), {shards: 4});
        const ids = [];
        for (const ep of plan.endpoints) {
          const tried = {...ep, locations: [args[2], ...ep.locations]};
          for await (const c of client.readEndpoint(tried)) ids.push([c.id, c.geometryIndex]);
        }
        let only = null;
        try {
          const dead = {...plan.endpoints[0], locations: [args[2]]};
          for await (const chip of client.readEndpoint(dead));
        } catch (e) { only = e.code; }
        client.close();
        console.log(JSON.stringify({ids, only}));
    """,
        server.location,
        json.dumps(doc),
        _dead_location(),
    )
    assert got["only"] == "UNAVAILABLE"
    assert sorted(tuple(x) for x in got["ids"]) == sorted(
        (c["id"], c["geometry_index"])
        for c in python_chips(server.location, **{"geometries": BOXES, "chip_size": 64})
    )


RESUME = r"""
    const client = cf.connect(args[1]);
    const plan = await client.plan(JSON.parse(args[2]), {shards: 1});
    const endpoint = {...plan.endpoints[0], locations: [args[0], args[1]]};
    const input = require('node:readline').createInterface({input: process.stdin});
    const lines = input[Symbol.asyncIterator]();
    const got = [];
    for await (const chip of client.readEndpoint(endpoint)) {
      let sum = 0;
      for (let i = 0; i < chip.data.length; i += 1) sum += chip.data[i];
      got.push([chip.ordinal ?? got.length, chip.id, chip.geometryIndex, String(sum)]);
      if (got.length === 1) {            // the first chip came from args[0]: let it be killed
        console.log(JSON.stringify({paused: true}));
        await lines.next();
      }
    }
    input.close();
    client.close();
    console.log(JSON.stringify({got, failovers: cf.stats.failovers}));
"""


def test_node_resumes_a_stream_at_the_next_location(
    node: str, server: Any, flight_root: Any, tmp_path: Path
) -> None:
    """A server killed mid-stream: the read goes on at the endpoint's next location from
    the chip after the last one delivered, every chip exactly once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    killed = f"grpc://127.0.0.1:{port}"
    serve = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cogflight",
            "serve",
            "--root",
            str(flight_root.path),
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:  # wait until it answers
            try:
                list(flight.connect(killed).do_action(flight.Action("health", b"")))
                break
            except flight.FlightUnavailableError:
                assert serve.poll() is None and time.monotonic() < deadline, "serve did not start"
                time.sleep(0.1)
        # 36 geometries x up to 4 scenes of 2 x 128 x 128 uint16 (8 MiB), more than gRPC buffers
        # ahead of a paused reader, so the stream is still open when the server dies.
        boxes = [lonlat_box(10 + 80 * c, 10 + 80 * r, 60, 60) for r in range(6) for c in range(6)]
        fields: dict[str, Any] = {"geometries": boxes, "chip_size": 128, "batch_rows": 4}
        doc = fc.connect(server.location).query("alpha", **fields)
        code = (
            f"const cf = require({json.dumps(str(INDEX))});\n"
            "const args = process.argv.slice(1);\n"
            f"(async () => {{ {RESUME} }})();\n"
        )
        reader = subprocess.Popen(
            [node, "-e", code, killed, server.location, json.dumps(doc)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert reader.stdout is not None and reader.stdin is not None
            assert json.loads(reader.stdout.readline()) == {"paused": True}
            serve.kill()
            serve.wait(timeout=30)
            reader.stdin.write("go\n")
            reader.stdin.flush()
            out, err = reader.communicate(timeout=120)
        finally:
            if reader.poll() is None:
                reader.kill()
                reader.wait(timeout=30)
        assert reader.returncode == 0, err
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait(timeout=30)
    result = json.loads(out.splitlines()[-1])
    assert result["failovers"] == 1, "the stream should have broken once, mid-way"
    want = [
        (k, c["id"], c["geometry_index"], c["sum"])
        for k, c in enumerate(python_chips(server.location, **fields))
    ]
    assert len(want) > 100
    assert [tuple(x) for x in result["got"]] == want


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("node-tokens") / "tokens"
    path.write_text(f"# the Node client test\n{TOKEN}\n")
    return path


def test_node_bearer_token(node: str, flight_root: Any, start_server: Any, tokens: Path) -> None:
    srv = start_server(flight_root.path, token_file=str(tokens))
    doc = fc.connect(srv.location, token=TOKEN).query("alpha", geometries=BOXES, chip_size=64)
    rc, lines = read(node, srv.location, doc, "--shards", "4", "--token", TOKEN)
    assert rc == 0 and lines[-1]["summary"]["chips"] == 8
    rc, lines = read(node, srv.location, doc)
    assert rc == 1 and lines[0]["error"]["code"] == "UNAUTHENTICATED"
    assert "missing credentials" in lines[0]["error"]["message"]
    rc, lines = read(node, srv.location, doc, "--token", "x" * 32)
    assert rc == 1 and lines[0]["error"]["code"] == "UNAUTHENTICATED"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    yield tls_material(tmp_path_factory.mktemp("node-tls"))


def test_node_tls(node: str, flight_root: Any, start_server: Any, tls: dict[str, Path]) -> None:
    srv = start_server(
        flight_root.path, tls_cert=str(tls["server_cert"]), tls_key=str(tls["server_key"])
    )
    assert srv.location.startswith("grpc+tls://127.0.0.1:")
    location = srv.location  # an IP: the CLI keeps Node's DEP0123 warning off stderr
    doc = {"v": 1, "collection": "alpha", "geometries": {"bbox": BOXES}, "chip_size": 64}
    rc, lines = read(node, location, doc, "--tls-root-certs", str(tls["ca_cert"]))
    assert rc == 0 and lines[-1]["summary"]["chips"] == 8
    rc, lines = read(node, location, doc)  # the system roots do not trust our CA
    assert rc == 1 and lines[0]["error"]["code"] == "UNAVAILABLE"


def test_node_mutual_tls(
    node: str, flight_root: Any, start_server: Any, tls: dict[str, Path]
) -> None:
    srv = start_server(
        flight_root.path,
        tls_cert=str(tls["server_cert"]),
        tls_key=str(tls["server_key"]),
        tls_client_ca=str(tls["ca_cert"]),
    )
    doc = {"v": 1, "collection": "alpha", "geometries": {"bbox": BOXES}, "chip_size": 64}
    trust = ("--tls-root-certs", str(tls["ca_cert"]))
    rc, lines = read(
        node,
        srv.location,
        doc,
        *trust,
        "--tls-cert",
        str(tls["client_cert"]),
        "--tls-key",
        str(tls["client_key"]),
    )
    assert rc == 0 and lines[-1]["summary"]["chips"] == 8
    rc, lines = read(node, srv.location, doc, *trust)  # no client certificate
    assert rc == 1 and lines[0]["error"]["code"] == "UNAVAILABLE"
