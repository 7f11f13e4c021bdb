"""Benchmark: one server process against 2 workers and 3 replicas on the same query.

Set-up: 6 scenes x 2 bands of 2048 x 2048 uint16 COGs (256 px tiles, DEFLATE) behind
a loopback HTTP range server adding ``--latency-ms`` (default 50) before each answer
and counting the bytes it sends. The query: 20 boxes of 128 x 128 px clustered in one
1000 x 1000 px area of interest, in each of the 6 scenes (120 chips, neighbouring chips
sharing tiles), planned into 6 endpoints, read in parallel threads into numpy.

Contenders, each a fresh set of server processes (cold caches):

- ``one``: ``cogflight serve`` with one process;
- ``workers_2``: ``cogflight serve --workers 2`` (2 processes on one host);
- ``replicas_3``: three ``cogflight serve`` processes, each advertising all three, the
  client planning on the first.

Measured: bytes and requests the store answered (target: N processes fetch at most
1.05x the bytes of one), chips/s, the first batch, the servers' CPU seconds (user +
system of every server process, from ``/proc``), and a checksum of every chip (all
contenders must agree). On 2 cores more processes cannot add cores; the CPU seconds
per chip give the per-core figure from which a 16-core prediction follows.

Writes ``results/fleet.json`` and ``results/fleet.png``. Run:
``python -m benchmarks.fleet [--quick]`` (quick: 3 scenes, 60 chips, 3 endpoints).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import RESULTS, free_ports, start_server, wait_ready, write_result

__all__ = ["main", "run"]

GT = (600000.0, 10.0, 0.0, 5000000.0, 0.0, -10.0)
SIZE = 2048
TILE = 256
CHIP = 128
BOXES = 20
AOI = (400, 400, 1000)  # column, row, size (pixels) of the area the boxes fall in


def _consecutive_ports(n: int) -> int:
    """A first port such that ``n`` consecutive ports are free (for --workers)."""
    for _ in range(50):
        (first,) = free_ports(1)
        try:
            socks = []
            for k in range(n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", first + k))
            return first
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no consecutive free ports")


def prepare(directory: Path, scenes: int, url: str) -> Path:
    """The COGs under ``directory/data`` and their Collection (hrefs over ``url``)."""
    import catalog
    from catalog.testing import synthetic_scene, write_cog

    data, root = directory / "data", directory / "root"
    data.mkdir(parents=True, exist_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    files: dict[str, dict[str, str]] = {}
    for i in range(scenes):
        files[f"s{i}"] = {}
        for b, band in enumerate(("red", "nir")):
            name = f"s{i}_{band}.tif"
            write_cog(data / name, synthetic_scene(SIZE, SIZE, 1, 10 * i + b), nodata=0,
                      epsg=32633, geotransform=GT, tile=TILE)
            files[f"s{i}"][band] = f"{url}/{name}"
    dates = {f"s{i}": f"2024-{1 + i:02d}-01" for i in range(scenes)}
    collection = catalog.build_from_files(files, name="fleet", datetime=dates, progress=False)
    collection.save(root / "fleet.parquet")
    return root


def _boxes() -> list[list[float]]:
    rng = np.random.default_rng(7)
    c0, r0, size = AOI
    out = []
    for _ in range(BOXES):
        c = int(rng.integers(c0, c0 + size - CHIP))
        r = int(rng.integers(r0, r0 + size - CHIP))
        x0, y1 = GT[0] + c * GT[1], GT[3] + r * GT[5]
        out.append([x0, y1 - CHIP * 10.0, x0 + CHIP * 10.0, y1])
    return out


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pids(locations: list[str]) -> list[int]:
    from pyarrow import flight

    out = []
    for loc in locations:
        client = flight.connect(loc)
        (result,) = list(client.do_action(flight.Action("health", b"")))
        out.append(int(json.loads(result.body.to_pybytes())["pid"]))
        client.close()
    return out


def _read(location: str, shards: int) -> dict[str, Any]:
    """Plan on ``location``, read every endpoint at its first location in parallel."""
    import flight_client as fc

    started = time.perf_counter()
    client = fc.connect(location)
    info = client.plan("fleet", geometries={"bbox": _boxes()}, geometry_crs="EPSG:32633",
                       bands=["red", "nir"], shards=shards, batch_rows=8)
    first: list[float] = []
    sums: dict[str, float] = {}
    lock = threading.Lock()

    def read(endpoint: Any) -> None:
        for rb in client.read_endpoint(endpoint):
            chips = rb.column("chip").to_numpy_ndarray()
            with lock:
                if not first:
                    first.append(time.perf_counter() - started)
                for k, (sid, g) in enumerate(zip(rb.column("id").to_pylist(),
                                                 rb.column("geometry_index").to_pylist(),
                                                 strict=True)):
                    sums[f"{g}/{sid}"] = float(chips[k].astype(np.float64).sum())

    threads = [threading.Thread(target=read, args=(e,)) for e in info.endpoints]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = time.perf_counter() - started
    places = [ep.locations[0].uri.decode() for ep in info.endpoints]
    client.close()
    return {"chips": len(sums), "total_s": total, "first_batch_s": first[0] if first else None,
            "sums": sums, "places": places}


def _contender(kind: str, root: Path, allow: str, tmp: Path, shards: int) -> dict[str, Any]:
    log = tmp / f"{kind}.log"
    common = ["--root", str(root), "--allow", allow, "--cache-bytes", "1GiB"]
    procs = []
    if kind == "one":
        (port,) = free_ports(1)
        procs.append(start_server([*common, "--port", str(port)], log))
        locations = [f"grpc://127.0.0.1:{port}"]
    elif kind == "workers_2":
        port = _consecutive_ports(2)
        procs.append(start_server([*common, "--port", str(port), "--workers", "2"], log))
        locations = [f"grpc://127.0.0.1:{port}", f"grpc://127.0.0.1:{port + 1}"]
    else:
        ports = free_ports(3)
        locations = [f"grpc://127.0.0.1:{p}" for p in ports]
        advertise = [a for loc in locations for a in ("--advertise", loc)]
        for p in ports:
            procs.append(start_server([*common, "--port", str(p), *advertise], log))
    try:
        owners = procs if len(procs) == len(locations) else procs * len(locations)
        for loc, proc in zip(locations, owners, strict=True):
            wait_ready(loc, proc)
        pids = _pids(locations)
        cpu0 = sum(_cpu_seconds(p) for p in pids)
        result = _read(locations[0], shards)
        result["server_cpu_s"] = sum(_cpu_seconds(p) for p in pids) - cpu0
        result["processes"] = len(set(pids))
        result["endpoints_per_process"] = {loc: result["places"].count(loc) for loc in locations}
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    return result


def run(*, quick: bool = False, latency_ms: float = 50.0,
        results: Path = RESULTS) -> dict[str, Any]:
    """Run every contender; write ``fleet.json`` and ``fleet.png`` into ``results``."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.support.servers import RangeServer

    scenes = 3 if quick else 6
    shards = scenes
    rows: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="cogflight-fleet-") as tmp_s:
        tmp = Path(tmp_s)
        (tmp / "data").mkdir()
        with RangeServer(tmp / "data", latency=latency_ms / 1000) as http:
            root = prepare(tmp, scenes, http.url)
            for kind in ("one", "workers_2", "replicas_3"):
                http.reset()
                row = _contender(kind, root, http.url + "/", tmp, shards)
                row["bytes_fetched"] = sum(r.sent for r in http.records)
                row["requests"] = len(http.records)
                rows[kind] = row
    base = rows["one"]
    base_sums = base["sums"]
    for row in rows.values():
        row["bytes_vs_one"] = round(row["bytes_fetched"] / max(1, base["bytes_fetched"]), 3)
        row["chips_per_s"] = round(row["chips"] / row["total_s"], 1)
        row["chips_per_server_cpu_s"] = round(row["chips"] / max(1e-9, row["server_cpu_s"]), 1)
        row["same_pixels_as_one"] = row.pop("sums") == base_sums
    per_cpu = base["chips_per_server_cpu_s"]
    payload = {
        "settings": {"latency_ms": latency_ms, "scenes": scenes, "bands": 2, "raster_px": SIZE,
                     "tile_px": TILE, "chip_px": CHIP, "chips": base["chips"],
                     "endpoints": shards, "quick": quick},
        "contenders": rows,
        "prediction_16_cores": {
            "chips_per_s": round(16 * per_cpu, 1),
            "rule": "16 x chips per server CPU-second of one process, valid while bytes "
                    "fetched stay ~1.0x one process and the store keeps up",
        },
        "command": "python -m benchmarks.fleet" + (" --quick" if quick else ""),
    }
    write_result("fleet", payload, results)
    plot(payload, results / "fleet.png")
    return payload


def plot(result: dict[str, Any], path: Path) -> None:
    """Bytes fetched (vs one process) and chips/s per contender."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["contenders"]
    names = list(rows)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    left.bar(names, [rows[n]["bytes_vs_one"] for n in names])
    left.axhline(1.05, color="red", linestyle="--", linewidth=1, label="target 1.05x")
    left.set_ylabel("bytes fetched / one process")
    left.legend()
    right.bar(names, [rows[n]["chips_per_s"] for n in names])
    right.set_ylabel("chips/s (cold)")
    s = result["settings"]
    fig.suptitle(f"{s['chips']} chips in {s['endpoints']} endpoints, {s['latency_ms']:g} ms "
                 f"per request, {os.cpu_count()} cores")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m benchmarks.fleet [--quick] [--latency-ms MS]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="3 scenes instead of 6")
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    out = run(quick=args.quick, latency_ms=args.latency_ms, results=args.results)
    print(f"{'contender':12} {'bytes':>12} {'vs one':>7} {'requests':>9} {'chips/s':>8} "
          f"{'first s':>8} {'cpu s':>6} same")
    for name, r in out["contenders"].items():
        print(f"{name:12} {r['bytes_fetched']:12d} {r['bytes_vs_one']:7.3f} {r['requests']:9d} "
              f"{r['chips_per_s']:8.1f} {r['first_batch_s']:8.3f} {r['server_cpu_s']:6.2f} "
              f"{r['same_pixels_as_one']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
