"""The benchmark suite: cold start and throughput of every contender, in one run.

Set-up: a Sentinel-2-shaped dataset (``benchmarks/_s2.py``) behind a loopback
HTTP range server that adds ``--latency-ms`` (default 50) before every answer
and counts requests and bytes. Four scenarios, the same chips for everyone:
single AOI over 15 scenes, multi-AOI over 30 scenes, a cross-CRS AOI over 12
scenes (all 256 x 256 x 4 bands), and a training epoch of random chips, read
twice. Contenders, each in a fresh process:

- ``torchgeo_gdal``: TorchGeo ``RasterDataset`` over rasterio/GDAL ``/vsicurl/``
  with the recommended cloud settings, a ``DataLoader`` with workers: the incumbent;
- ``engine``: cogflight's chip engine in-process over the Collection;
- ``flight_1``/``flight_2``: a cogflight server with 1 or 2 worker processes, read
  over Flight (endpoints in parallel) into torch tensors;
- ``torchgeo_flight``: cogflight's TorchGeo ``GeoDataset`` over Flight (1 worker)
  with the incumbent's sampler and ``DataLoader``;
- limits: decode-only throughput on exactly the tiles a scenario touches, and
  Flight loopback throughput with pre-built batches.

Writes ``results/suite.json``, ``results/suite.png`` and ``results/suite.md``.
Run: ``python -m benchmarks.suite [--quick]`` (or ``make bench``).
"""

from __future__ import annotations

import time

T0 = time.perf_counter()  # a contender process's clock starts before its imports

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

CHIP_BYTES = 4 * 256 * 256 * 2  # one chip, uint16: the unit of every MB figure
CONTENDERS = ("torchgeo_gdal", "engine", "flight_1", "flight_2", "torchgeo_flight")
LABELS = {
    "torchgeo_gdal": "TorchGeo RasterDataset + GDAL /vsicurl/",
    "engine": "cogflight engine, in-process",
    "flight_1": "cogflight over Flight, 1 server worker",
    "flight_2": "cogflight over Flight, 2 server workers",
    "torchgeo_flight": "cogflight TorchGeo GeoDataset over Flight",
}
SHORT = {
    "torchgeo_gdal": "TorchGeo\n+ GDAL",
    "engine": "cogflight\nin-process",
    "flight_1": "cogflight\nFlight 1 worker",
    "flight_2": "cogflight\nFlight 2 workers",
    "torchgeo_flight": "cogflight\nTorchGeo/Flight",
}
# What GDAL's and TorchGeo's docs recommend for COGs on object storage.
GDAL_ENV = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "GDAL_HTTP_MULTIPLEX": "YES",
    "VSI_CACHE": "TRUE",
    "VSI_CACHE_SIZE": str(64 * 1024**2),
    "GDAL_INGESTED_BYTES_AT_OPEN": str(64 * 1024),
}


# -- contender processes ----------------------------------------------------------------------
def _day(date: str) -> tuple[Any, Any]:
    import pandas as pd

    start = pd.Timestamp(date)
    return start, start + pd.Timedelta(days=1) - pd.Timedelta(microseconds=1)


def _peak_rss(workers: bool) -> dict[str, float]:
    """Peak RSS of this process and (largest) of its DataLoader workers, in MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 if workers else 0.0
    return {"client_rss_mib": own, "client_workers_rss_mib": kids}


class _Epoch:
    """Clock and checksums of one pass over a scenario's chips."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.first: float | None = None
        self.sums: dict[str, float] = {}
        self.duplicates = 0

    def add(self, key: str, value: float) -> None:
        if self.first is None:
            self.first = time.perf_counter() - self.t0
        self.duplicates += key in self.sums
        self.sums[key] = value

    def result(self) -> dict[str, Any]:
        total = time.perf_counter() - self.t0
        n = len(self.sums)
        return {"chips": n, "duplicates": self.duplicates, "first_batch_s": self.first,
                "total_s": total, "chips_per_s": n / total,
                "mb_per_s": n * CHIP_BYTES / total / 1e6}


def _qkey(bounds: Any) -> tuple[Any, ...]:
    """A hashable key for a query's slices (slices are not hashable before 3.12)."""
    return tuple(v for s in bounds for v in (s.start, s.stop))


def _queries(spec: dict[str, Any]) -> list[tuple[Any, str]]:
    dates = {s["id"]: s["date"] for s in spec["scenes"]}
    out = []
    for p, sid in spec["pairs"]:
        x0, y0, x1, y1 = spec["positions"][p]
        t0, t1 = _day(dates[sid])
        out.append(((slice(x0, x1), slice(y0, y1), slice(t0, t1)), f"{p}/{sid}"))
    return out


def run_torchgeo(spec: dict[str, Any], args: argparse.Namespace, flight: bool) -> dict[str, Any]:
    """A TorchGeo dataset (GDAL's, or cogflight's over Flight) and a DataLoader."""
    os.environ.update(GDAL_ENV)
    os.environ["GDAL_CACHEMAX"] = str(max(64, args.cache_mib // max(1, args.workers)))
    import torch
    from pyproj import CRS
    from rasterio.enums import Resampling
    from torch.utils.data import DataLoader
    from torchgeo.datasets import RasterDataset, stack_samples

    imports = time.perf_counter() - T0
    bands = ["B02", "B03", "B04", "B08"]
    t_open = time.perf_counter()
    ds: Any
    if flight:
        import flight_client as fc

        ds = fc.FlightGeoDataset(args.location, spec["name"], bands=bands, crs=spec["crs"],
                                 res=10.0)
    else:

        class S2(RasterDataset):  # type: ignore[misc]
            filename_glob = "S2_*_B02.tif"
            filename_regex = r"^S2_T(?P<tile>\w{5})_(?P<date>\d{8})_(?P<band>B\d\d)\.tif$"
            date_format = "%Y%m%d"
            separate_files = True
            all_bands = tuple(bands)

            @property
            def resampling(self) -> Resampling:
                return Resampling.nearest

        urls = ["/vsicurl/" + s["urls"]["B02"] for s in spec["scenes"]]
        ds = S2(paths=urls, crs=CRS.from_user_input(spec["crs"]), res=10.0, bands=bands)
        _gdal_drop_connections()
    open_s = time.perf_counter() - t_open
    queries = _queries(spec)
    keys = {_qkey(q[0]): q[1] for q in queries}
    loader = DataLoader(ds, sampler=[q[0] for q in queries], batch_size=16,
                        num_workers=args.workers, collate_fn=stack_samples,
                        persistent_workers=args.workers > 0)
    epochs = []
    for _ in range(args.epochs):
        ep = _Epoch()
        for batch in loader:
            sums = batch["image"].to(torch.float64).sum(dim=(1, 2, 3)).tolist()
            for bounds, value in zip(batch["bounds"], sums, strict=True):
                ep.add(keys[_qkey(bounds)], value)
        epochs.append((ep.result(), ep.sums))
    del loader
    import gc

    gc.collect()  # persistent workers exit and are reaped: their peak RSS is counted
    return _report(imports, open_s, epochs, workers=args.workers > 0)


def _gdal_drop_connections() -> None:
    """Close GDAL's /vsicurl/ keep-alive connections before DataLoader workers fork.

    Workers forked after the dataset opened its files inherit those sockets and
    share them: reads then fail with short tiles ("TIFFFillTile: Read error ...
    got N bytes, expected M") or may return another worker's bytes. rasterio has
    no API for it; ``VSICurlClearCache`` in its bundled GDAL does it.
    """
    import ctypes
    import glob

    import rasterio

    libs = Path(rasterio.__file__).resolve().parent.parent / "rasterio.libs"
    found = glob.glob(str(libs / "libgdal*.so*"))
    gdal = ctypes.CDLL(found[0]) if found else ctypes.CDLL(None)
    gdal.VSICurlClearCache()


def run_engine(spec: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    import torch

    import catalog
    from flight_server import ChipEngine, ChipRequest

    imports = time.perf_counter() - T0
    t_open = time.perf_counter()
    collection = catalog.load(Path(args.root) / f"{spec['name']}.parquet")
    request = ChipRequest.create(**_request_args(spec))
    open_s = time.perf_counter() - t_open
    epochs = []
    with ChipEngine(cache_bytes=args.cache_mib * 1024**2) as engine:
        for _ in range(args.epochs):
            ep = _Epoch()
            for batch in engine.stream(collection, request):
                chips = torch.from_numpy(batch.chips)  # shares the batch's memory
                _checksums(ep, chips, batch.meta.to_pylist(), spec["time_series"])
            epochs.append((ep.result(), ep.sums))
    return _report(imports, open_s, epochs)


def run_flight(spec: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    import torch  # noqa: F401  (imported up front, as by every contender)

    import flight_client as fc

    imports = time.perf_counter() - T0
    t_open = time.perf_counter()
    client = fc.connect(args.location)
    query = _request_args(spec)
    query.pop("geometry_crs")
    info = client.plan(spec["name"], geometry_crs=spec["crs"], **query)
    open_s = time.perf_counter() - t_open
    epochs = []
    for epoch in range(args.epochs):
        if epoch:
            info = client.plan(spec["name"], geometry_crs=spec["crs"], **query)
        ep = _Epoch()
        lock = threading.Lock()

        def read(endpoint: Any, ep: _Epoch = ep, lock: threading.Lock = lock) -> None:
            for record_batch in client.read_endpoint(endpoint):
                t = fc.to_torch(record_batch)
                with lock:
                    _checksums(ep, t["chip"], _rows(t), spec["time_series"])

        threads = [threading.Thread(target=read, args=(e,)) for e in info.endpoints]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        epochs.append((ep.result(), ep.sums))
    client.close()
    return _report(imports, open_s, epochs)


def _rows(t: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"id": i, "geometry_index": int(g)}
            for i, g in zip(t["id"], t["geometry_index"], strict=True)]


def _request_args(spec: dict[str, Any]) -> dict[str, Any]:
    return {"geometries": [tuple(p) for p in spec["positions"]], "geometry_crs": spec["crs"],
            "crs": spec["crs"], "resolution": 10.0, "bands": ["B02", "B03", "B04", "B08"],
            "time_series": spec["time_series"], "batch_rows": _batch_rows(spec)}


def _batch_rows(spec: dict[str, Any]) -> int:
    """Rows per batch such that a batch holds about 16 chips, as the DataLoaders do."""
    if not spec["time_series"]:
        return 16
    steps = max(1, len(spec["pairs"]) // max(1, len(spec["positions"])))
    return max(1, 16 // steps)


def _checksums(ep: _Epoch, chips: Any, rows: list[dict[str, Any]], series: bool) -> None:
    import torch

    sums = chips.to(torch.float64).sum(dim=(-3, -2, -1))  # per chip (per time step)
    for k, row in enumerate(rows):
        if series:
            for step, sid in enumerate(row["id"]):
                if sid is not None:
                    ep.add(f"{row['geometry_index']}/{sid}", float(sums[k, step]))
        else:
            ep.add(f"{row['geometry_index']}/{row['id']}", float(sums[k]))


def _report(imports: float, open_s: float, epochs: list[tuple[dict[str, Any], dict[str, float]]],
            workers: bool = False) -> dict[str, Any]:
    first = epochs[0][0]
    return {
        "imports_s": imports,
        "open_s": open_s,
        "first_batch_s": open_s + (first["first_batch_s"] or first["total_s"]),
        "epochs": [e for e, _ in epochs],
        "sums": epochs[0][1],
        **_peak_rss(workers),
    }


def run_decode_limit(spec: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Decode exactly the tiles the engine decodes for the scenario, from memory."""
    from concurrent.futures import ThreadPoolExecutor

    import catalog
    from flight_server import ChipEngine, ChipRequest
    from flight_server.engine import _tiles

    captured: list[tuple[bytes, Any, Any]] = []
    original = _tiles.decode_tile

    def spy(data: Any, ref: Any, header: Any, max_bytes: int | None = None) -> Any:
        captured.append((bytes(data), ref, header))
        return original(data, ref, header, max_bytes)

    _tiles.decode_tile = spy  # type: ignore[assignment]
    collection = catalog.load(Path(args.root) / f"{spec['name']}.parquet")
    with ChipEngine(cache_bytes=args.cache_mib * 1024**2) as engine:
        chips = len(engine.read(collection, ChipRequest.create(**_request_args(spec))))
    _tiles.decode_tile = original  # type: ignore[assignment]
    threads = os.cpu_count() or 1
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda c: original(*c), captured[: threads * 2]))  # warm the pool
        t0 = time.perf_counter()
        nbytes = sum(a.nbytes for a in pool.map(lambda c: original(*c), captured))
        seconds = time.perf_counter() - t0
    steps = len(spec["pairs"])  # chips as (position, scene) pairs
    return {"tiles": len(captured), "decoded_mb": nbytes / 1e6, "seconds": seconds,
            "threads": threads, "engine_chips": chips, "chips_per_s": steps / seconds,
            "mb_per_s": steps * CHIP_BYTES / seconds / 1e6}


def run_loopback_limit(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.flight_throughput import loopback_limit

    out = loopback_limit(max(args.chips_hint, 320))
    out["chips_per_s"] = out["mb_per_s"] * 1e6 / CHIP_BYTES
    return out


def contender_main(args: argparse.Namespace) -> int:
    spec = json.loads(Path(args.spec).read_text()) if args.spec else {}
    runners = {
        "torchgeo_gdal": lambda: run_torchgeo(spec, args, flight=False),
        "torchgeo_flight": lambda: run_torchgeo(spec, args, flight=True),
        "engine": lambda: run_engine(spec, args),
        "flight": lambda: run_flight(spec, args),
        "decode_limit": lambda: run_decode_limit(spec, args),
        "loopback_limit": lambda: run_loopback_limit(args),
    }
    result = runners[args.run]()
    Path(args.out).write_text(json.dumps(result))
    return 0


# -- the orchestrating process --------------------------------------------------------------
def _tree_rss_mib(pid: int) -> float:
    """Peak RSS (VmHWM) of a process and its descendants, in MiB."""
    total = 0.0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM"):
                    total += int(line.split()[1]) / 1024
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return total


def _child(kind: str, spec_path: Path | None, extra: list[str], timeout: float) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = Path(f.name)
    cmd = [sys.executable, "-m", "benchmarks.suite", "--run", kind, "--out", str(out), *extra]
    if spec_path is not None:
        cmd += ["--spec", str(spec_path)]
    t = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        wall = time.perf_counter() - t
        if proc.returncode != 0:
            raise RuntimeError(f"{kind} failed:\n{proc.stderr[-4000:]}")
        result = json.loads(out.read_text())
    finally:
        out.unlink(missing_ok=True)
    result["process_wall_s"] = wall
    return dict(result)


def _serve(
    root: Path, workers: int, cache_mib: int, allow: tuple[str, ...] = ()
) -> tuple[subprocess.Popen[bytes], str, float]:
    from benchmarks.flight_throughput import start_server

    t = time.perf_counter()
    proc, location = start_server(root, workers, cache=f"{cache_mib}MiB", allow=allow)
    return proc, location, time.perf_counter() - t


def _compare(sums: dict[str, float], ref: dict[str, float]) -> dict[str, Any]:
    keys = set(ref)
    same = sum(1 for k in keys if k in sums and sums[k] == ref[k])
    return {"chips_expected": len(keys), "chips_got": len(sums),
            "missing": len(keys - set(sums)), "extra": len(set(sums) - keys),
            "equal_fraction": same / len(keys) if keys else 1.0}


def orchestrate(args: argparse.Namespace) -> int:
    import catalog
    from benchmarks import _s2
    from benchmarks._common import RESULTS, write_result
    from tests.support.servers import RangeServer

    size = args.tile_px or (5490 if args.quick else 10980)
    served, scenes = _s2.prepare(size)
    plans = _s2.scenarios(scenes, size, args.quick)
    only = set(args.scenarios.split(",")) if args.scenarios else set(plans)
    if only - set(plans):
        raise SystemExit(f"no scenario {sorted(only - set(plans))} with {size} px files")
    contenders = args.contenders.split(",") if args.contenders else list(CONTENDERS)
    work = Path(tempfile.mkdtemp(prefix="cogflight-bench-"))
    root = work / "collections"
    root.mkdir()
    payload: dict[str, Any] = {
        "settings": {"latency_ms": args.latency_ms, "tile_px": size, "chip": [4, 256, 256],
                     "dtype": "uint16", "dataloader_workers": args.workers,
                     "cache_mib": args.cache_mib, "quick": args.quick, "gdal": GDAL_ENV},
        "scenarios": {},
    }
    with RangeServer(served, latency=args.latency_ms / 1000) as http:
        urls = {s.id: {b: http.url_for(p) for b, p in s.files.items()} for s in scenes.values()}
        for name, sc in plans.items():
            if name not in only:
                continue
            http.reset()
            t = time.perf_counter()
            files = {s.id: dict(urls[s.id]) for s in sc.scenes}
            dates = {s.id: s.date.isoformat() for s in sc.scenes}
            col = catalog.build_from_files(files, name=name, datetime=dates, progress=False)
            col.save(root / f"{name}.parquet")
            build = {"seconds": time.perf_counter() - t, "files": 4 * len(sc.scenes),
                     "requests": http.requests, "bytes": http.bytes_sent}
            spec_path = work / f"{name}.json"
            spec_path.write_text(json.dumps(sc.spec(urls)))
            epochs = 2 if name == "epoch" else 1
            base = ["--root", str(root), "--cache-mib", str(args.cache_mib), "--epochs",
                    str(epochs), "--workers", str(args.workers)]
            print(f"\n== {sc.title}: {len(sc.pairs)} chips; index of {build['files']} files "
                  f"built in {build['seconds']:.2f} s ({build['requests']} requests)",
                  flush=True)
            results: dict[str, Any] = {}
            for who in contenders:
                for _rep in range(args.repeat):
                    http.reset()
                    server = None
                    extra = list(base)
                    if who in ("flight_1", "flight_2", "torchgeo_flight"):
                        workers = 2 if who == "flight_2" else 1
                        # The imagery's HTTP server, allowed as an operator would.
                        proc, location, start_s = _serve(
                            root, workers, args.cache_mib, allow=(f"{http.url}/",)
                        )
                        server = proc
                        extra += ["--location", location]
                    kind = "flight" if who.startswith("flight_") else who
                    try:
                        r = _child(kind, spec_path, extra, args.timeout)
                    finally:
                        if server is not None:
                            r_server = _tree_rss_mib(server.pid)
                            server.terminate()
                            try:
                                server.wait(timeout=60)
                            except subprocess.TimeoutExpired:
                                server.kill()
                                server.wait()
                    r.update(requests=http.requests, bytes=http.bytes_sent)
                    if server is not None:
                        r.update(server_rss_mib=r_server, server_start_s=start_s)
                    prev = results.get(who)
                    if prev is None or r["first_batch_s"] < prev["first_batch_s"]:
                        results[who] = r
                r = results[who]
                e = r["epochs"]
                print(f"  {LABELS[who]:45s} first batch {r['first_batch_s']:6.2f} s "
                      f"(+{r['imports_s']:.1f} s imports), {e[0]['chips_per_s']:6.1f} chips/s"
                      + (f", epoch 2 {e[1]['chips_per_s']:6.1f} chips/s" if len(e) > 1 else "")
                      + f"; {r['requests']} requests, {r['bytes'] / 1e6:.0f} MB", flush=True)
            decode = _child("decode_limit", spec_path, base, args.timeout)
            print(f"  decode-only limit: {decode['chips_per_s']:.0f} chips/s "
                  f"({decode['tiles']} tiles, {decode['threads']} threads)", flush=True)
            payload["scenarios"][name] = _summarize(sc, build, results, decode)
    loop = _child("loopback_limit", None, ["--chips-hint", "640"], args.timeout)
    print(f"\nFlight loopback limit (pre-built batches): {loop['mb_per_s']:.0f} MB/s = "
          f"{loop['chips_per_s']:.0f} chips/s")
    payload["loopback_limit"] = loop
    results_dir = args.results or RESULTS
    out = write_result("suite", payload, results_dir)
    plot(payload, results_dir / "suite.png")
    (results_dir / "suite.md").write_text(table(payload))
    print(f"wrote {out}, suite.png, suite.md")
    shutil.rmtree(work, ignore_errors=True)
    return 0


def _summarize(sc: Any, build: dict[str, Any], results: dict[str, Any],
               decode: dict[str, Any]) -> dict[str, Any]:
    ref = results.get("engine", {}).get("sums")
    inc = results.get("torchgeo_gdal")
    out: dict[str, Any] = {"title": sc.title, "chips": len(sc.pairs), "scenes": len(sc.scenes),
                           "index_build": build, "decode_limit": decode, "contenders": {}}
    for who, r in results.items():
        sums = r.pop("sums")
        row = dict(r)
        if ref is not None:
            row["pixels_vs_engine"] = _compare(sums, ref)
        if inc is not None and who != "torchgeo_gdal":
            row["first_batch_speedup_vs_incumbent"] = inc["first_batch_s"] / r["first_batch_s"]
            row["throughput_vs_incumbent"] = [
                a["chips_per_s"] / b["chips_per_s"]
                for a, b in zip(r["epochs"], inc["epochs"], strict=True)
            ]
        row["throughput_vs_decode_limit"] = [
            e["chips_per_s"] / decode["chips_per_s"] for e in r["epochs"]
        ]
        if "engine" in results and who.startswith("flight"):
            row["throughput_vs_engine"] = [
                a["chips_per_s"] / b["chips_per_s"]
                for a, b in zip(r["epochs"], results["engine"]["epochs"], strict=True)
            ]
        if len(r["epochs"]) > 1:
            row["epoch2_vs_epoch1"] = r["epochs"][1]["chips_per_s"] / r["epochs"][0]["chips_per_s"]
        out["contenders"][who] = row
    return out


def table(p: dict[str, Any]) -> str:
    """The results as Markdown tables (for benchmarks/README.md and the README)."""
    s = p["settings"]
    lines = [
        f"{s['latency_ms']} ms per request, {s['tile_px']} px COGs with 1024 px tiles, chips "
        f"4 x 256 x 256 uint16, DataLoader workers {s['dataloader_workers']}, caches "
        f"{s['cache_mib']} MiB.",
        "",
        "| scenario | contender | first batch (s) | vs incumbent | chips/s | MB/s | requests "
        "| MB fetched | pixels = engine | client / server RSS (MiB) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for sc in p["scenarios"].values():
        for who, r in sc["contenders"].items():
            e = r["epochs"][0]
            speed = r.get("first_batch_speedup_vs_incumbent")
            eq = r.get("pixels_vs_engine", {}).get("equal_fraction")
            rss = f"{r['client_rss_mib']:.0f}"
            if r.get("client_workers_rss_mib", 0) > 1:
                rss += f" (+{r['client_workers_rss_mib']:.0f}/worker)"
            if "server_rss_mib" in r:
                rss += f" / {r['server_rss_mib']:.0f}"
            lines.append(
                f"| {sc['title']} | {LABELS[who]} | {r['first_batch_s']:.2f} | "
                f"{f'{speed:.1f}x' if speed else '-'} | {e['chips_per_s']:.1f} | "
                f"{e['mb_per_s']:.0f} | {r['requests']} | {r['bytes'] / 1e6:.0f} | "
                f"{f'{eq:.0%}' if eq is not None else '-'} | {rss} |"
            )
    ep = p["scenarios"].get("epoch")
    if ep:
        lines += [
            "",
            f"Training epoch ({ep['chips']} chips), epoch 1 and epoch 2:",
            "",
            "| contender | epoch 1 chips/s | epoch 2 chips/s | epoch 2 / epoch 1 | epoch 1 vs "
            "incumbent | epoch 2 vs incumbent | epoch 1 vs decode limit |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for who, r in ep["contenders"].items():
            e1, e2 = r["epochs"][0], r["epochs"][1]
            vs = r.get("throughput_vs_incumbent", [None, None])
            lines.append(
                f"| {LABELS[who]} | {e1['chips_per_s']:.1f} | {e2['chips_per_s']:.1f} | "
                f"{r['epoch2_vs_epoch1']:.1f}x | "
                + " | ".join(f"{v:.1f}x" if v else "-" for v in vs)
                + f" | {r['throughput_vs_decode_limit'][0]:.0%} |"
            )
        d = ep["decode_limit"]
        lines += ["", f"Decode-only limit on the epoch's {d['tiles']} tiles: "
                  f"{d['chips_per_s']:.0f} chips/s ({d['threads']} threads). Flight loopback "
                  f"limit: {p['loopback_limit']['chips_per_s']:.0f} chips/s "
                  f"({p['loopback_limit']['mb_per_s']:.0f} MB/s)."]
    return "\n".join(lines) + "\n"


def plot(p: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(p["scenarios"])
    who = [w for w in CONTENDERS if any(w in p["scenarios"][n]["contenders"] for n in names)]
    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 5.6))
    x = np.arange(len(names))
    width = 0.8 / max(1, len(who))
    for k, w in enumerate(who):
        vals = [p["scenarios"][n]["contenders"].get(w, {}).get("first_batch_s", np.nan)
                for n in names]
        a.bar(x + (k - (len(who) - 1) / 2) * width, vals, width, label=LABELS[w])
    a.set_yscale("log")
    a.set_xticks(x, [p["scenarios"][n]["title"].split(":")[0].replace(", ", "\n")
                     for n in names], fontsize=8)
    a.set_ylabel("time to first batch, fresh process (s, log)")
    a.set_title(f"Cold start at {p['settings']['latency_ms']:.0f} ms per request")
    a.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3)
    ep = p["scenarios"].get("epoch")
    if ep:
        ws = [w for w in who if w in ep["contenders"]]
        xs = np.arange(len(ws))
        for k, label in enumerate(("epoch 1", "epoch 2")):
            vals = [ep["contenders"][w]["epochs"][k]["chips_per_s"] for w in ws]
            bars = b.bar(xs + (k - 0.5) * 0.38, vals, 0.38, label=label)
            for bar, v in zip(bars, vals, strict=True):
                b.text(bar.get_x() + bar.get_width() / 2, v, f"{v:.0f}", ha="center",
                       va="bottom", fontsize=7)
        b.axhline(ep["decode_limit"]["chips_per_s"], color="red", linestyle="--",
                  linewidth=1, label="decode-only limit")
        b.axhline(p["loopback_limit"]["chips_per_s"], color="purple", linestyle=":",
                  linewidth=1, label="Flight loopback limit")
        b.set_yscale("log")
        b.set_xticks(xs, [SHORT[w] for w in ws], fontsize=7)
        b.set_ylabel("chips/s (log)")
        b.set_title(f"Training epoch: {ep['chips']} chips, read twice")
        b.legend(fontsize=7)
    fig.suptitle(f"{os.cpu_count()} cores; chips 4 x 256 x 256 uint16", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="5490 px files and fewer chips: a few minutes")
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--workers", type=int, default=4,
                        help="DataLoader workers of the TorchGeo contenders")
    parser.add_argument("--cache-mib", type=int, default=8192,
                        help="tile cache of cogflight; GDAL_CACHEMAX split over the workers")
    parser.add_argument("--repeat", type=int, default=1, help="fresh processes per figure "
                        "(the fastest cold start is kept)")
    parser.add_argument("--scenarios", help="comma-separated subset")
    parser.add_argument("--contenders", help=f"comma-separated subset of {','.join(CONTENDERS)}")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--results", type=Path, help="where to write (default benchmarks/results)")
    parser.add_argument("--tile-px", type=int, help="file size in pixels (default 10980, quick "
                        "5490; the cross-CRS scenario needs >= 5490)")
    # contender processes
    parser.add_argument("--run", help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--location", help=argparse.SUPPRESS)
    parser.add_argument("--epochs", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--chips-hint", type=int, default=320, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        return contender_main(args)
    return orchestrate(args)


if __name__ == "__main__":
    raise SystemExit(main())
