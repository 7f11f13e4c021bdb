"""Benchmark: index headers of 200 COGs served over HTTP with injected latency.

Measures, in one run on one machine:
- requests per header and build time of ``catalog.build_from_files`` for 200
  Sentinel-2-shaped COGs (10980 x 10980 uint16, 1024 px tiles, DEFLATE +
  predictor 2, 4 overviews) behind a loopback range server adding 50 ms to
  every request, at several header concurrencies (default settings = 64);
- the same open through GDAL (rasterio ``/vsicurl/``, recommended cloud
  settings, 64 threads): requests per file and total time;
- requests per header over the test corpus (every layout the tests cover).

Writes ``results/header_build.json`` and ``results/header_build.png``.
Run: ``python -m benchmarks.header_build [--files 200] [--latency-ms 50]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

import catalog
from benchmarks._common import CACHE, RESULTS, write_result
from tests.support.servers import RangeServer


def sentinel2_like(path: Path) -> None:
    """One 10980 x 10980 uint16 COG laid out like Earth Search's Sentinel-2 L2A bands."""
    import rasterio
    from rasterio.transform import from_origin

    y = np.linspace(0, 1, 10980, dtype=np.float32)[:, None]
    x = np.linspace(0, 1, 10980, dtype=np.float32)[None, :]
    data = (2000 + 1500 * np.sin(7 * x) * np.cos(5 * y)).astype(np.uint16)[None]
    tmp = path.with_suffix(".partial.tif")
    with rasterio.open(tmp, "w", driver="COG", width=10980, height=10980, count=1,
                       dtype="uint16", crs="EPSG:32633", nodata=0, blocksize=1024,
                       compress="deflate", predictor=2, overview_resampling="average",
                       transform=from_origin(600000, 5300040, 10, 10)) as ds:
        ds.write(data)
    os.replace(tmp, path)


def prepare(files: int) -> Path:
    """``files`` hard links of one Sentinel-2-shaped COG (distinct URLs, no extra disk)."""
    root = CACHE / "header_build"
    root.mkdir(parents=True, exist_ok=True)
    master = root / "master.tif"
    if not master.exists():
        print("writing the Sentinel-2-shaped master COG (once)...", flush=True)
        sentinel2_like(master)
    for i in range(files):
        link = root / f"T{i:04d}_B04.tif"
        if not link.exists():
            os.link(master, link)
    return root


def cogflight_build(server: RangeServer, names: list[str], concurrency: int | None) -> dict:
    urls = [f"{server.url}/{n}" for n in names]
    server.reset()
    t0 = time.perf_counter()
    c = catalog.build_from_files(urls, store_options={"allow_http": True},
                                 concurrency=concurrency, progress=False)
    seconds = time.perf_counter() - t0
    per = list(server.per_path().values())
    assert len(c) == len(names) and not c.failures
    return {"seconds": seconds, "requests": server.requests,
            "requests_per_file_median": statistics.median(per),
            "requests_per_file_max": max(per), "bytes": server.bytes_sent}


def gdal_open(server: RangeServer, names: list[str], threads: int) -> dict:
    import rasterio

    env = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES":
           "YES", "VSI_CACHE": "TRUE", "GDAL_HTTP_MULTIPLEX": "YES", "CPL_VSIL_CURL_CACHE_SIZE":
           str(200 * 1024 * 1024)}

    def one(name: str) -> tuple[int, int]:
        with rasterio.Env(**env), rasterio.open(f"/vsicurl/{server.url}/{name}") as ds:
            return len(ds.overviews(1)), ds.block_shapes[0][0]

    server.reset()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(one, names))
    seconds = time.perf_counter() - t0
    assert all(r == (4, 1024) for r in results), results[:3]
    per = list(server.per_path().values())
    return {"seconds": seconds, "requests": server.requests,
            "requests_per_file_median": statistics.median(per),
            "requests_per_file_max": max(per), "bytes": server.bytes_sent}


def corpus_requests() -> dict:
    from tests.support.corpus import generate

    with tempfile.TemporaryDirectory() as d:
        cases = generate(Path(d))
        with RangeServer(d) as server:
            registry = catalog.StoreRegistry({"allow_http": True})
            counts = {}
            for name, (_, path) in cases.items():
                server.reset()
                catalog.read_header(server.url_for(path), registry=registry)
                counts[name] = server.requests
    values = list(counts.values())
    return {"files": len(values), "median": statistics.median(values), "max": max(values),
            "over_one": {k: v for k, v in counts.items() if v > 1}}


def plot(payload: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = payload["cogflight"]
    labels = [f"cogflight\nconc. {r['concurrency']}{' (default)' if r['default'] else ''}"
              for r in runs]
    values = [r["seconds"] for r in runs]
    labels.append(f"GDAL /vsicurl/\n{payload['gdal']['threads']} threads")
    values.append(payload["gdal"]["seconds"])
    fig, ax = plt.subplots(figsize=(8, 4))
    bars = ax.bar(labels, values, color=["#2a7"] * len(runs) + ["#999"])
    ax.axhline(1.0, color="red", linestyle="--", linewidth=1, label="1 s target")
    for b, v in zip(bars, values, strict=True):
        ax.text(b.get_x() + b.get_width() / 2, v, f"{v:.2f}s", ha="center", va="bottom")
    ax.set_ylabel("seconds to index all headers")
    ax.set_title(
        f"{payload['files']} COG headers over HTTP, {payload['latency_ms']} ms per request"
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    root = prepare(args.files)
    names = [f"T{i:04d}_B04.tif" for i in range(args.files)]
    payload: dict = {"files": args.files, "latency_ms": args.latency_ms, "cogflight": []}
    with RangeServer(root, latency=args.latency_ms / 1000) as server:
        for conc in (None, 16, 128):
            runs = [cogflight_build(server, names, conc) for _ in range(args.repeat)]
            best = min(runs, key=lambda r: r["seconds"])
            entry = {"concurrency": conc or catalog.settings().header_concurrency,
                     "default": conc is None, **best,
                     "seconds_all": [round(r["seconds"], 4) for r in runs]}
            payload["cogflight"].append(entry)
            print(f"cogflight concurrency {entry['concurrency']:>4}: {best['seconds']:.3f} s "
                  f"(runs {entry['seconds_all']}), requests/file median "
                  f"{best['requests_per_file_median']} max {best['requests_per_file_max']}")
        payload["gdal"] = {"threads": 64, **gdal_open(server, names, 64)}
        print(f"GDAL /vsicurl/ 64 threads: {payload['gdal']['seconds']:.3f} s, requests/file "
              f"median {payload['gdal']['requests_per_file_median']} max "
              f"{payload['gdal']['requests_per_file_max']}")
    payload["corpus"] = corpus_requests()
    print(f"corpus: {payload['corpus']['files']} layouts, requests per header median "
          f"{payload['corpus']['median']} max {payload['corpus']['max']}")
    out = write_result("header_build", payload)
    plot(payload, RESULTS / "header_build.png")
    print(f"wrote {out} and {RESULTS / 'header_build.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
