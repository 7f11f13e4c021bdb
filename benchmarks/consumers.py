"""Benchmark: chips/s of each consumer of the wire contract on one query and one server.

One ``cogflight serve`` process serves local COGs (4 scenes x 2 bands of uint16,
256-pixel tiles, written by ``catalog.testing``). One query (chips of 2 bands at
random places of every scene, planned into ``--shards`` endpoints) is read by each
consumer of :data:`CONSUMERS`:

- ``python``: ``flight_client`` planning the query and reading every endpoint in
  parallel threads (``Client.read_endpoint``), each batch's pixels as numpy;
- ``ray``: ``flight_client.ray.read_chips(...).iter_batches`` (numpy, one batch per
  block), every row consumed, on a local Ray instance with one CPU per core;
- ``ray_half_cpu``: the same with ``num_cpus=0.5`` per read task, so that every endpoint
  streams at once on a 2-CPU Ray instance;
- ``ray_torch``: the same Dataset through ``iter_torch_batches(batch_size=64)`` of the
  ``chip`` and ``valid`` columns, what a trainer does;
- ``node``: ``clients/node/bench/throughput.js`` (endpoint after endpoint, as its
  ``chips()`` does);
- ``spark``: ``benchmarks._spark_consumer.run_spark``, when that module is present.

A consumer is ``(location, query document, shards) -> {"chips", "seconds",
"chips_per_s", "note"}``, timed from planning to the last row (plus ``"cpu_reps"`` when
one call timed several repetitions, which the CPU figures are divided by). The server's cache is
warmed first; then each consumer runs once untimed (Ray starts its workers, Node
compiles) and ``--reps`` times, the consumers taking turns; the median is reported,
with the CPU seconds spent during it (``/proc``) by the consumer (this process and its
children: Ray's workers and daemons, Node, Spark's JVM), by the server, and by the whole
machine (other users included), which say what bounds a consumer on a small machine.

Writes ``results/consumers.json`` and ``.png``.
Run: ``python -m benchmarks.consumers [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks._common import RESULTS, free_ports, start_server, wait_ready, write_result

__all__ = ["CONSUMERS", "main", "run"]

ROOT = Path(__file__).resolve().parents[1]
NODE_DIR = ROOT / "clients" / "node"
GT = (500000.0, 10.0, 0.0, 4100000.0, 0.0, -10.0)
SCENES = 4

Consumer = Callable[[str, dict[str, Any], int], dict[str, Any]]


def _row(chips: int, seconds: float, note: str) -> dict[str, Any]:
    return {"chips": chips, "seconds": round(seconds, 4),
            "chips_per_s": round(chips / seconds, 1) if seconds > 0 else 0.0, "note": note}


def _fields(query: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(collection, Client.chips fields) of a query document."""
    fields = {k: v for k, v in query.items() if k not in ("v", "collection")}
    return query["collection"], fields


# -- consumers ----------------------------------------------------------------------------------
def run_python(location: str, query: dict[str, Any], shards: int) -> dict[str, Any]:
    """flight_client: plan, then every endpoint in its own thread, pixels as numpy."""
    import flight_client as fc

    collection, fields = _fields(query)
    started = time.perf_counter()
    with fc.connect(location) as client:
        info = client.plan(collection, shards=shards, **fields)

        def read(endpoint: Any) -> int:
            rows = 0
            for batch in client.read_endpoint(endpoint):
                batch.column("chip").to_numpy_ndarray()
                rows += batch.num_rows
            return rows

        with ThreadPoolExecutor(len(info.endpoints)) as pool:
            chips = sum(pool.map(read, info.endpoints))
    return _row(chips, time.perf_counter() - started,
                f"{len(info.endpoints)} endpoints in parallel threads")


_RAY: dict[str, float] = {}


def _ray_ready() -> float:
    """A local Ray instance (one CPU per core), started once; its start-up seconds."""
    import ray

    if not ray.is_initialized():
        started = time.perf_counter()
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                 logging_level="ERROR", configure_logging=False)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        _RAY["init_s"] = time.perf_counter() - started
    return _RAY["init_s"]


def run_ray(location: str, query: dict[str, Any], shards: int,
            num_cpus: float | None = None) -> dict[str, Any]:
    """read_chips(...).iter_batches: every block as numpy, every row counted."""
    init = _ray_ready()
    from flight_client.ray import read_chips

    started = time.perf_counter()
    ds = read_chips(location, query, shards=shards, num_cpus=num_cpus)
    chips = 0
    for batch in ds.iter_batches(batch_format="numpy", batch_size=None):
        chips += len(batch["chip"])
    return _row(chips, time.perf_counter() - started,
                f"{os.cpu_count()} Ray CPUs, one read task per endpoint, "
                f"{num_cpus or 1:g} CPU each; ray.init {init:.1f} s not counted")


def run_ray_half_cpu(location: str, query: dict[str, Any], shards: int) -> dict[str, Any]:
    """As ``ray``, each read task reserving half a CPU: twice the endpoints at once."""
    return run_ray(location, query, shards, num_cpus=0.5)


def run_ray_torch(location: str, query: dict[str, Any], shards: int) -> dict[str, Any]:
    """read_chips(...).iter_torch_batches(batch_size=64) of chip and valid."""
    init = _ray_ready()
    from flight_client.ray import read_chips

    started = time.perf_counter()
    ds = read_chips(location, query, shards=shards).select_columns(["chip", "valid"])
    chips = 0
    for batch in ds.iter_torch_batches(batch_size=64):
        chips += len(batch["chip"])
    return _row(chips, time.perf_counter() - started,
                f"batches of 64 re-cut by Ray; ray.init {init:.1f} s not counted")


def run_node(location: str, query: dict[str, Any], shards: int) -> dict[str, Any]:
    """clients/node/bench/throughput.js, 3 repetitions in one process: the best warm one."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise RuntimeError("node and npm are not on PATH")
    if not (NODE_DIR / "node_modules").is_dir():
        subprocess.run([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
                       cwd=NODE_DIR, check=True, capture_output=True, timeout=600)
    proc = subprocess.run(
        [node, str(NODE_DIR / "bench" / "throughput.js"), location, json.dumps(query),
         str(shards), "3"],
        capture_output=True, text=True, timeout=600, check=False)
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.strip()]
    if proc.returncode or not lines or "error" in lines[-1]:
        raise RuntimeError(f"throughput.js failed: {proc.stdout[-500:]} {proc.stderr[-500:]}")
    best = max(lines[1:], key=lambda r: r["chips_per_s"])
    row = _row(int(best["chips"]), float(best["seconds"]),
               "endpoint after endpoint; best of reps 2-3 of one process (rep 1: connect, "
               "JIT); CPU seconds: the process's, over 3")
    row["cpu_reps"] = len(lines)  # the CPU measured around this call covers every rep
    return row


CONSUMERS: dict[str, Consumer] = {
    "python": run_python,
    "ray": run_ray,
    "ray_half_cpu": run_ray_half_cpu,
    "ray_torch": run_ray_torch,
    "node": run_node,
}
try:  # written beside this module by the Spark consumer's work; used when present
    from benchmarks._spark_consumer import run_spark
except ImportError:
    pass
else:
    CONSUMERS["spark"] = run_spark


# -- harness ------------------------------------------------------------------------------------
def prepare(directory: Path, size: int) -> tuple[Path, Path]:
    """4 scenes x 2 bands of ``size`` x ``size`` uint16 COGs and their Collection."""
    import catalog
    from catalog.testing import synthetic_scene, write_cog

    data, root = directory / "data", directory / "root"
    data.mkdir(parents=True, exist_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    files: dict[str, dict[str, str]] = {}
    for i in range(SCENES):
        files[f"s{i}"] = {}
        for b, band in enumerate(("red", "nir")):
            path = data / f"s{i}_{band}.tif"
            write_cog(path, synthetic_scene(size, size, 1, 10 * i + b), nodata=0, epsg=32633,
                      geotransform=GT, tile=256)
            files[f"s{i}"][band] = str(path)
    collection = catalog.build_from_files(files, name="bench", progress=False)
    collection.save(root / "bench.parquet")
    return root, data


def query_doc(size: int, chip: int, positions: int, seed: int = 0) -> dict[str, Any]:
    """A v1 query: ``positions`` chips of ``chip`` px at random places, in every scene."""
    rng = random.Random(seed)
    boxes = []
    for _ in range(positions):
        c, r = rng.randrange(0, size - chip), rng.randrange(0, size - chip)
        boxes.append([GT[0] + c * GT[1], GT[3] + (r + chip) * GT[5],
                      GT[0] + (c + chip) * GT[1], GT[3] + r * GT[5]])
    return {"v": 1, "collection": "bench", "chip_size": chip, "bands": ["red", "nir"],
            "geometries": {"bbox": boxes, "crs": "EPSG:32633"}}


def _stat(pid: int) -> list[str]:
    """Fields of ``/proc/PID/stat`` after the command name (state first)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _cpu(pid: int, *, exclude: int | None = None) -> dict[int, int]:
    """CPU ticks of ``pid`` and of each descendant, leaving out ``exclude``'s subtree.

    Each process's ticks include those of the children it waited for (``cutime``).
    """
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = _stat(int(entry.name))
            except OSError:  # ended meanwhile
                continue
            parents[int(entry.name)] = int(fields[1])
            ticks[int(entry.name)] = sum(int(v) for v in fields[11:15])  # u, s, cu, cs time
    children: dict[int, list[int]] = {}
    for child, parent in parents.items():
        children.setdefault(parent, []).append(child)
    out, todo = {}, [pid]
    while todo:
        p = todo.pop()
        if p != exclude and p in ticks:
            out[p] = ticks[p]
            todo.extend(children.get(p, []))
    return out


def _cpu_delta(before: dict[int, int], after: dict[int, int]) -> float:
    """CPU seconds spent between two :func:`_cpu` snapshots by the processes alive at the second.

    A process that started and ended between them counts in its parent's ``cutime``;
    one alive at the first snapshot that ended before the second is left out.
    """
    ticks = sum(t - before.get(p, 0) for p, t in after.items())
    return ticks / os.sysconf("SC_CLK_TCK")


def _machine_cpu_s() -> float:
    """Busy CPU seconds of the whole machine (other users' work included)."""
    cpu = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in cpu[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _serve(root: Path, data: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    (port,) = free_ports()
    proc = start_server(["--root", str(root), "--port", str(port), "--allow", str(data),
                         "--cache-bytes", "2GiB"], log)
    location = f"grpc://127.0.0.1:{port}"
    try:
        wait_ready(location, proc, timeout=60)
    except RuntimeError:
        proc.kill()
        raise RuntimeError(f"cogflight serve did not start; see {log}") from None
    return proc, location


def run(*, quick: bool = False, results: Path = RESULTS, shards: int = 4, reps: int | None = None,
        consumers: list[str] | None = None) -> dict[str, Any]:
    """Measure every consumer; write ``consumers.json`` and ``.png`` into ``results``."""
    size, chip, positions = (1024, 128, 64) if quick else (2048, 256, 96)
    reps = reps if reps is not None else (3 if quick else 5)
    names = consumers or list(CONSUMERS)
    query = query_doc(size, chip, positions)
    with tempfile.TemporaryDirectory(prefix="cogflight-consumers-") as tmp:
        root, data = prepare(Path(tmp), size)
        proc, location = _serve(root, data, Path(tmp) / "server.log")
        try:
            warm = run_python(location, query, shards)  # fills the server's tile cache
            expected = warm["chips"]
            samples: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
            errors: dict[str, str] = {}
            for name in names:  # untimed first runs: Ray's workers, Node's JIT
                try:
                    CONSUMERS[name](location, query, shards)
                except Exception as exc:  # reported, and the others still measured
                    errors[name] = f"{type(exc).__name__}: {str(exc)[:300]}"
            for _ in range(reps):
                for name in names:
                    if name in errors:
                        continue
                    me, server = os.getpid(), proc.pid
                    own, srv, machine = _cpu(me, exclude=server), _cpu(server), _machine_cpu_s()
                    row = CONSUMERS[name](location, query, shards)
                    per = row.pop("cpu_reps", 1)
                    row["machine_cpu_s"] = round((_machine_cpu_s() - machine) / per, 2)
                    row["consumer_cpu_s"] = round(
                        _cpu_delta(own, _cpu(me, exclude=server)) / per, 2)
                    row["server_cpu_s"] = round(_cpu_delta(srv, _cpu(server)) / per, 2)
                    samples[name].append(row)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
    rows: dict[str, Any] = {}
    for name in names:
        if name in errors:
            rows[name] = {"error": errors[name]}
            continue
        runs = samples[name]
        median = statistics.median(r["chips_per_s"] for r in runs)
        mid = min(runs, key=lambda r: abs(r["chips_per_s"] - median))
        rows[name] = {**mid, "chips_per_s": median,
                      "runs_chips_per_s": [r["chips_per_s"] for r in runs],
                      "chips_ok": all(r["chips"] == expected for r in runs)}
    base = rows.get("python", {}).get("chips_per_s")
    for row in rows.values():
        if "chips_per_s" in row and base:
            row["vs_python"] = round(row["chips_per_s"] / base, 3)
    bytes_per_chip = 2 * chip * chip * 2 + chip * chip
    payload = {
        "config": {"scenes": SCENES, "bands": 2, "image_px": size, "chip_px": chip,
                   "chips": expected, "shards": shards, "reps": reps, "quick": quick,
                   "mb": round(expected * bytes_per_chip / 1e6, 1), "server_cache": "warm"},
        "consumers": rows,
        "command": "python -m benchmarks.consumers" + (" --quick" if quick else ""),
    }
    write_result("consumers", payload, results)
    plot(payload, results / "consumers.png")
    return payload


def plot(result: dict[str, Any], path: Path) -> None:
    """Chips/s per consumer, labelled with the share of the Python client's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {k: v for k, v in result["consumers"].items() if "chips_per_s" in v}
    fig, ax = plt.subplots(figsize=(7, 3.6))
    names = list(rows)
    values = [rows[n]["chips_per_s"] for n in names]
    ax.bar(names, values, color=["#4477aa" if n == "python" else "#66ccee" for n in names])
    for k, n in enumerate(names):
        share = rows[n].get("vs_python")
        label = f"{values[k]:.0f}" + (f"\n{share:.0%}" if share is not None else "")
        ax.text(k, values[k], label, ha="center", va="bottom", fontsize=8)
    ax.axhline(0.8 * rows["python"]["chips_per_s"] if "python" in rows else 0, color="grey",
               linestyle=":", label="80 % of python")
    c = result["config"]
    ax.set_ylabel(f"chips/s ({c['bands']} x {c['chip_px']}² uint16)")
    ax.set_ylim(0, max(values) * 1.25 if values else 1)
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(f"{c['chips']} chips, {c['shards']} endpoints, warm server, "
                 f"{os.cpu_count()} cores", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _print(result: dict[str, Any]) -> None:
    print(f"{'consumer':>12} {'chips':>6} {'seconds':>8} {'chips/s':>9} {'vs py':>6} "
          f"{'own cpu':>8} {'server':>7} {'machine':>8}  note")
    for name, row in result["consumers"].items():
        if "error" in row:
            print(f"{name:>12}  error: {row['error']}")
            continue
        print(f"{name:>12} {row['chips']:>6} {row['seconds']:>8.3f} {row['chips_per_s']:>9.1f} "
              f"{row.get('vs_python', 0):>6.0%} {row['consumer_cpu_s']:>8.2f} "
              f"{row['server_cpu_s']:>7.2f} {row['machine_cpu_s']:>8.2f}  {row['note']}")


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m benchmarks.consumers [--quick] [--shards N] [--reps N]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="256 chips of 128 px from 1024 px files instead of 384 of 256 px")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--consumers", default=None,
                        help=f"comma-separated, of {', '.join(CONSUMERS)}")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    chosen = args.consumers.split(",") if args.consumers else None
    unknown = sorted(set(chosen or ()) - set(CONSUMERS))
    if unknown:
        parser.error(f"unknown consumers {unknown}; known: {', '.join(CONSUMERS)}")
    _print(run(quick=args.quick, results=args.results, shards=args.shards, reps=args.reps,
               consumers=chosen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
