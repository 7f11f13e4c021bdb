"""Benchmark: a bounded load test, 8 / 16 / 32 clients streaming against one server.

One ``cogflight serve`` process (``--max-streams 16``, a small decoded-tile cache so
that it evicts) serves 4 scenes x 2 bands of local COGs. For a fixed time per level,
each client thread streams queries of 16 chips (64 x 64, uint16) back to back; a
client refused with UNAVAILABLE ("server busy") waits 50 ms and tries again.
Measured per level: streams completed, refusals, errors (anything else), chips, and
p50 / p99 stream latency (``DoGet`` to the last batch). Measured on the server
process (``/proc/PID``): peak RSS (``VmHWM``) against the cache budget plus a
margin, and file descriptors and threads after the load against a baseline taken
after a warm-up (gRPC's and the service's thread pools grow on first use).

The RSS margin: the idle footprint after the warm-up (interpreter, pyarrow, gRPC,
the loaded Collection), plus five batches per stream slot (two being rendered, two
queued ahead, one being sent), plus 128 MiB of allocator slack.

Writes ``results/load.json``. Run: ``python -m benchmarks.load [--quick]``; the test
suite runs :func:`run` in its short mode.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from pyarrow import flight

from benchmarks._common import RESULTS, write_result

__all__ = ["main", "run"]

GT = (500000.0, 10.0, 0.0, 4100000.0, 0.0, -10.0)
MAX_STREAMS = 16
CACHE_BYTES = 8 * 1024 * 1024
CHIP = 64
BATCH_ROWS = 4
GEOMETRIES = 4  # per query; x 4 scenes = 16 chips per stream
SLACK_BYTES = 128 * 1024 * 1024


def prepare(directory: Path) -> tuple[Path, Path]:
    """4 scenes x 2 bands (1024 x 1024 uint16, 256-pixel tiles) and their Collection."""
    import catalog
    from catalog.testing import synthetic_scene, write_cog

    data, root = directory / "data", directory / "root"
    data.mkdir(parents=True, exist_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    files: dict[str, dict[str, str]] = {}
    for i in range(4):
        files[f"s{i}"] = {}
        for b, band in enumerate(("red", "nir")):
            path = data / f"s{i}_{band}.tif"
            write_cog(path, synthetic_scene(1024, 1024, 1, 10 * i + b), nodata=0, epsg=32633,
                      geotransform=GT, tile=256)
            files[f"s{i}"][band] = str(path)
    collection = catalog.build_from_files(files, name="load", progress=False)
    collection.save(root / "load.parquet")
    return root, data


def _boxes(seed: int, count: int = 256) -> list[list[float]]:
    """Lon/lat boxes of 40 x 40 pixels at random places of the scenes' grid."""
    from pyproj import Transformer

    to_lonlat = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        c, r = rng.randrange(0, 980), rng.randrange(0, 980)
        x0, y0 = GT[0] + c * GT[1], GT[3] + (r + 40) * GT[5]
        x1, y1 = GT[0] + (c + 40) * GT[1], GT[3] + r * GT[5]
        lon0, lat0 = to_lonlat.transform(x0, y0)
        lon1, lat1 = to_lonlat.transform(x1, y1)
        out.append([lon0, lat0, lon1, lat1])
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _proc(pid: int) -> dict[str, int]:
    """RSS, peak RSS, file descriptors and threads of a process."""
    status = Path(f"/proc/{pid}/status").read_text()
    kib = {k: int(v.split()[0]) for k, v in
           (line.split(":", 1) for line in status.splitlines() if line.startswith("Vm"))}
    return {
        "rss_mib": kib["VmRSS"] // 1024,
        "rss_peak_mib": kib["VmHWM"] // 1024,
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "threads": len(os.listdir(f"/proc/{pid}/task")),
    }


def _stats(client: flight.FlightClient) -> dict[str, Any]:
    return json.loads(next(iter(client.do_action(flight.Action("stats", b"")))).body.to_pybytes())


def _level(location: str, clients: int, seconds: float, boxes: list[list[float]]) -> dict[str, Any]:
    """``clients`` threads streaming for ``seconds``; what they saw."""
    lock = threading.Lock()
    latencies: list[float] = []
    counts = {"streams": 0, "refused": 0, "errors": 0, "chips": 0}
    samples: list[str] = []
    refusals: list[str] = []
    end = time.monotonic() + seconds

    def client_loop(k: int) -> None:
        rng = random.Random(k)
        client = flight.connect(location)
        try:
            while time.monotonic() < end:
                doc = {"v": 1, "collection": "load", "chip_size": CHIP, "batch_rows": BATCH_ROWS,
                       "geometries": {"bbox": rng.sample(boxes, GEOMETRIES)}}
                started = time.perf_counter()
                try:
                    table = client.do_get(flight.Ticket(json.dumps(doc).encode())).read_all()
                except flight.FlightUnavailableError as exc:
                    with lock:
                        if "server busy" in str(exc):
                            counts["refused"] += 1
                            if len(refusals) < 5:
                                refusals.append(str(exc))
                        else:
                            counts["errors"] += 1
                            samples.append(str(exc)[:300])
                    time.sleep(0.05)
                    continue
                except Exception as exc:  # counted: the load test reports every error
                    with lock:
                        counts["errors"] += 1
                        samples.append(f"{type(exc).__name__}: {str(exc)[:300]}")
                    continue
                took = time.perf_counter() - started
                with lock:
                    counts["streams"] += 1
                    counts["chips"] += table.num_rows
                    latencies.append(took)
        finally:
            client.close()

    threads = [threading.Thread(target=client_loop, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 120)
    lat = np.asarray(latencies) if latencies else np.zeros(1)
    return {
        "clients": clients,
        "seconds": seconds,
        **counts,
        "chips_per_s": round(counts["chips"] / seconds, 1),
        "p50_s": round(float(np.percentile(lat, 50)), 4),
        "p99_s": round(float(np.percentile(lat, 99)), 4),
        "error_samples": samples[:5],
        "refusal_samples": refusals,
    }


def _wait_idle(client: flight.FlightClient, pid: int, baseline: dict[str, int],
               timeout: float = 30.0) -> dict[str, int]:
    """The server's figures once its streams ended and fds/threads settled (or timeout)."""
    end = time.monotonic() + timeout
    while True:
        now = _proc(pid)
        idle = _stats(client)["streams_active"] == 0
        settled = now["fds"] <= baseline["fds"] and now["threads"] <= baseline["threads"]
        if (idle and settled) or time.monotonic() > end:
            return now
        time.sleep(0.2)


def run(*, quick: bool = False, results: Path = RESULTS, levels: tuple[int, ...] = (8, 16, 32),
        seconds: float | None = None) -> dict[str, Any]:
    """Run the load test; write ``load.json`` into ``results`` and return it."""
    per_level = seconds if seconds is not None else (4.0 if quick else 20.0)
    with tempfile.TemporaryDirectory(prefix="cogflight-load-") as tmp:
        root, data = prepare(Path(tmp))
        port = _free_port()
        exe = Path(sys.executable).with_name("cogflight")
        # The server's log goes to a file: a pipe nobody reads would fill and block its logging.
        log = (Path(tmp) / "server.log").open("wb")
        proc = subprocess.Popen(
            [str(exe), "-q", "serve", "--root", str(root), "--port", str(port),
             "--max-streams", str(MAX_STREAMS), "--cache-bytes", str(CACHE_BYTES),
             "--allow", str(data), "--drain-s", "5"],
            stdout=subprocess.DEVNULL, stderr=log)
        location = f"grpc://127.0.0.1:{port}"
        try:
            client = flight.connect(location)
            deadline = time.monotonic() + 60
            while True:
                try:
                    _stats(client)
                    break
                except flight.FlightError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise
                    time.sleep(0.1)
            boxes = _boxes(0)
            cold = _proc(proc.pid)
            warmup = _level(location, max(levels), 2.0, boxes)  # grow every pool once
            baseline = _wait_idle(client, proc.pid, {"fds": 10**9, "threads": 10**9})
            rows = [_level(location, n, per_level, boxes) for n in levels]
            after = _wait_idle(client, proc.pid, baseline)
            stats = _stats(client)
            client.close()
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
            log.close()
    batch_bytes = BATCH_ROWS * (2 * CHIP * CHIP * 2 + CHIP * CHIP)
    margin = baseline["rss_mib"] * 2**20 + MAX_STREAMS * 5 * batch_bytes + SLACK_BYTES
    payload = {
        "config": {"max_streams": MAX_STREAMS, "cache_bytes": CACHE_BYTES, "chip": CHIP,
                   "batch_rows": BATCH_ROWS, "chips_per_stream": GEOMETRIES * 4,
                   "seconds_per_level": per_level, "quick": quick},
        "levels": rows,
        "warmup": {k: warmup[k] for k in ("clients", "streams", "refused", "errors")},
        "server": {
            "cold": cold,
            "baseline": baseline,
            "after": after,
            "rss_bound_mib": (CACHE_BYTES + margin) // 2**20,
            "margin": "idle RSS after warm-up + 5 batches per stream slot + 128 MiB",
            "stats": {k: stats[k] for k in ("streams", "rejected", "errors", "cancelled",
                                            "streams_active", "cache_bytes")},
        },
        "command": "python -m benchmarks.load" + (" --quick" if quick else ""),
    }
    write_result("load", payload, results)
    plot(payload, results / "load.png")
    return payload


def plot(result: dict[str, Any], path: Path) -> None:
    """Stream latency (p50, p99) and chips/s per client count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["levels"]
    clients = [r["clients"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    left.plot(clients, [r["p50_s"] for r in rows], "o-", label="p50")
    left.plot(clients, [r["p99_s"] for r in rows], "s--", label="p99")
    left.axvline(result["config"]["max_streams"], color="grey", linestyle=":",
                 label="max_streams")
    left.set_xlabel("concurrent clients")
    left.set_ylabel("stream latency (s)")
    left.legend()
    right.bar([str(c) for c in clients], [r["chips_per_s"] for r in rows])
    for k, r in enumerate(rows):
        right.text(k, r["chips_per_s"], f"{r['errors']} err / {r['refused']} busy",
                   ha="center", va="bottom", fontsize=8)
    right.set_xlabel("concurrent clients")
    right.set_ylabel("chips/s (64 x 64 x 2 uint16)")
    fig.suptitle(f"one server, {os.cpu_count()} cores, {result['config']['seconds_per_level']:g} s "
                 "per level")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _print(result: dict[str, Any]) -> None:
    print(f"{'clients':>8} {'streams':>8} {'refused':>8} {'errors':>7} {'chips/s':>9} "
          f"{'p50 s':>8} {'p99 s':>8}")
    for row in result["levels"]:
        print(f"{row['clients']:>8} {row['streams']:>8} {row['refused']:>8} {row['errors']:>7} "
              f"{row['chips_per_s']:>9} {row['p50_s']:>8} {row['p99_s']:>8}")
    s = result["server"]
    print(f"server RSS peak {s['after']['rss_peak_mib']} MiB (bound {s['rss_bound_mib']} MiB); "
          f"fds {s['baseline']['fds']} -> {s['after']['fds']}; "
          f"threads {s['baseline']['threads']} -> {s['after']['threads']}")


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m benchmarks.load [--quick] [--results DIR]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 s per level instead of 20 s")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    _print(run(quick=args.quick, results=args.results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
