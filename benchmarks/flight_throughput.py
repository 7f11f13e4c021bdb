"""Benchmark: chips over Arrow Flight against the in-process engine, 1 and 2 workers.

Same dataset and query as ``engine_throughput`` (600 random 256 x 256 chips of 4
uint16 bands from Sentinel-2-shaped local COGs). The server runs as ``cogflight
serve`` in its own process(es); the client reads every endpoint, in parallel
threads, into numpy. Measured, each in fresh processes (cold cache) and again
on the same server (warm cache):

- in-process engine (the reference);
- Flight with 1 worker and with 2 workers (the query split into 4 shards);
- time to the first batch against the time of the whole stream;
- the loopback limit: a Flight server streaming prebuilt batches of the same size.

Writes ``results/flight_throughput.json`` and ``.png``.
Run: ``python -m benchmarks.flight_throughput [--quick]``.
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
import pyarrow as pa
from pyarrow import flight

import catalog
from benchmarks._common import RESULTS, write_result
from benchmarks.engine_throughput import chips_for, prepare


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    root: Path, workers: int, cache: str = "2GiB", allow: tuple[str, ...] = ()
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port() if workers == 1 else _free_run(workers)
    exe = Path(sys.executable).with_name("cogflight")
    proc = subprocess.Popen(
        [str(exe), "-q", "serve", "--root", str(root), "--port", str(port), "--workers",
         str(workers), "--cache-bytes", cache, *(f"--allow={a}" for a in allow)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    location = f"grpc://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            client = flight.connect(location)
            list(client.do_action(flight.Action("health", b"")))
            if workers > 1:  # every worker must answer
                for w in range(1, workers):
                    other = flight.connect(f"grpc://127.0.0.1:{port + w}")
                    list(other.do_action(flight.Action("health", b"")))
            return proc, location
        except flight.FlightError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not start")


def _free_run(n: int) -> int:
    """A first port such that n consecutive ports are free."""
    for _ in range(100):
        base = free_port()
        ok = True
        for p in range(base, base + n):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free port range")


def read_query(location: str, query: dict[str, Any]) -> dict[str, Any]:
    client = flight.connect(location)
    t0 = time.perf_counter()
    info = client.get_flight_info(flight.FlightDescriptor.for_command(json.dumps(query)))
    first: list[float] = []
    totals = {"chips": 0, "bytes": 0}
    lock = threading.Lock()

    def read(endpoint: flight.FlightEndpoint) -> None:
        c = flight.connect(endpoint.locations[0]) if endpoint.locations else client
        for chunk in c.do_get(endpoint.ticket):
            chips = chunk.data.column("chip").to_numpy_ndarray()
            with lock:
                if not first:
                    first.append(time.perf_counter() - t0)
                totals["chips"] += len(chips)
                totals["bytes"] += chips.nbytes

    threads = [threading.Thread(target=read, args=(ep,)) for ep in info.endpoints]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "chips": totals["chips"], "endpoints": len(info.endpoints),
            "first_batch_s": first[0] if first else None,
            "chips_per_s": totals["chips"] / seconds, "mb_per_s": totals["bytes"] / seconds / 1e6}


def inprocess(collection_path: Path, geoms: list, warm_runs: int) -> dict[str, Any]:
    """The reference, in a fresh process: cold, then warm."""
    code = f"""
import json, time, sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
import catalog
from flight_server import ChipEngine, ChipRequest
from benchmarks.engine_throughput import run_stream
col = catalog.load({str(collection_path)!r})
geoms = json.loads(sys.stdin.read())
req = ChipRequest.create(geometries=[tuple(g) for g in geoms], geometry_crs="EPSG:32633",
                         chip_size=256, batch_rows=32)
with ChipEngine(cache_bytes=2 * 1024**3) as e:
    cold = run_stream(e, col, req)
    warm = min((run_stream(e, col, req) for _ in range({warm_runs})), key=lambda r: r["seconds"])
print(json.dumps({{"cold": cold, "warm": warm}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], input=json.dumps(geoms), text=True,
                          capture_output=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


class _PrebuiltServer(flight.FlightServerBase):  # type: ignore[misc]
    def __init__(self, batches: list[pa.RecordBatch]) -> None:
        super().__init__("grpc://127.0.0.1:0")
        self.batches = batches

    def do_get(self, context: Any, ticket: flight.Ticket) -> flight.RecordBatchStream:
        return flight.RecordBatchStream(pa.Table.from_batches(self.batches))


def loopback_limit(n_chips: int) -> dict[str, Any]:
    """Flight loopback with prebuilt batches of the same shape (the transport's limit)."""
    rng = np.random.default_rng(0)
    chips = rng.integers(0, 10000, (32, 4, 256, 256), dtype=np.uint16)
    tensor = pa.FixedShapeTensorArray.from_numpy_ndarray(chips)
    batch = pa.RecordBatch.from_arrays([tensor], names=["chip"])
    batches = [batch] * (n_chips // 32)
    server = _PrebuiltServer(batches)
    threading.Thread(target=server.serve, daemon=True).start()
    client = flight.connect(f"grpc://127.0.0.1:{server.port}")
    best = None
    for _ in range(3):
        t0 = time.perf_counter()
        nbytes = 0
        for chunk in client.do_get(flight.Ticket(b"x")):
            nbytes += chunk.data.column("chip").to_numpy_ndarray().nbytes
        s = time.perf_counter() - t0
        best = s if best is None else min(best, s)
    server.shutdown()
    assert best is not None
    return {"seconds": best, "mb_per_s": nbytes / best / 1e6, "chips": len(batches) * 32}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chips", type=int, default=600)
    parser.add_argument("--scenes", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=2, help="cold runs per contender")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.chips, args.scenes, args.repeat = 150, 2, 1
    scenes = prepare(args.scenes)
    collection = catalog.build_from_files(
        {f"S{i:02d}": f for i, f in enumerate(scenes)}, name="bench", progress=False)
    geoms = chips_for(collection, args.chips, seed=7)
    boxes = [[g.x - 1, g.y - 1, g.x + 1, g.y + 1] for g in geoms]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        collection.save(root / "bench.parquet")
        query = {"v": 1, "collection": "bench", "chip_size": 256, "batch_rows": 32,
                 "geometries": {"bbox": boxes, "crs": "EPSG:32633"}}
        results: dict[str, Any] = {"in_process": [], "flight_1": [], "flight_2": []}
        for _ in range(args.repeat):
            results["in_process"].append(inprocess(root / "bench.parquet", boxes, 2))
            for workers in (1, 2):
                # The scenes' directory, allowed as an operator would.
                data = tuple(sorted({str(Path(f).parent) for sc in scenes for f in sc.values()}))
                proc, location = start_server(root, workers, allow=data)
                try:
                    shards = 1 if workers == 1 else 4
                    q = {**query, "shard": {"count": shards}}
                    cold = read_query(location, q)
                    warm = min((read_query(location, q) for _ in range(2)),
                               key=lambda r: r["seconds"])
                    results[f"flight_{workers}"].append({"cold": cold, "warm": warm})
                finally:
                    proc.terminate()
                    proc.wait(timeout=30)
        limit = loopback_limit(args.chips)

    def best(name: str, phase: str) -> dict[str, Any]:
        return min((r[phase] for r in results[name]), key=lambda r: r["seconds"])

    summary: dict[str, Any] = {"chips": args.chips, "chip": [4, 256, 256], "dtype": "uint16",
                               "loopback_limit": limit, "runs": results}
    for phase in ("cold", "warm"):
        ref = best("in_process", phase)
        summary[phase] = {"in_process": ref}
        for workers in (1, 2):
            r = best(f"flight_{workers}", phase)
            r["vs_in_process"] = ref["seconds"] / r["seconds"]
            r["first_batch_vs_total"] = r["first_batch_s"] / r["seconds"]
            summary[phase][f"flight_{workers}_workers"] = r
        print(f"{phase}: in-process {ref['seconds']:.2f} s ({ref['chips_per_s']:.0f} chips/s, "
              f"{ref['mb_per_s']:.0f} MB/s, first batch {ref['first_batch_s']:.2f} s)")
        for workers in (1, 2):
            r = summary[phase][f"flight_{workers}_workers"]
            print(f"  Flight {workers} worker(s): {r['seconds']:.2f} s ({r['chips_per_s']:.0f} "
                  f"chips/s, {r['mb_per_s']:.0f} MB/s) = {r['vs_in_process']:.0%} of in-process;"
                  f" first batch {r['first_batch_s']:.2f} s of {r['seconds']:.2f} s")
    print(f"loopback limit (prebuilt batches, 1 stream): {limit['mb_per_s']:.0f} MB/s")
    out = write_result("flight_throughput", summary)
    plot(summary, RESULTS / "flight_throughput.png")
    print(f"wrote {out}")
    return 0


def plot(s: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    labels = ["in-process", "Flight\n1 worker", "Flight\n2 workers"]
    x = np.arange(3)
    for k, phase in enumerate(("cold", "warm")):
        p = s[phase]
        vals = [p["in_process"]["mb_per_s"], p["flight_1_workers"]["mb_per_s"],
                p["flight_2_workers"]["mb_per_s"]]
        bars = ax.bar(x + (k - 0.5) * 0.38, vals, 0.38, label=phase)
        for b, v in zip(bars, vals, strict=True):
            ax.text(b.get_x() + b.get_width() / 2, v, f"{v:.0f}", ha="center", va="bottom",
                    fontsize=8)
    ax.axhline(s["loopback_limit"]["mb_per_s"], color="red", linestyle="--", linewidth=1,
               label="Flight loopback limit")
    ax.set_xticks(x, labels)
    ax.set_ylabel("MB/s of chips (4 x 256 x 256 uint16)")
    ax.set_title(f"{s['chips']} chips, {os.cpu_count()} cores, local COGs")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    raise SystemExit(main())
