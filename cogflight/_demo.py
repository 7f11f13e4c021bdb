"""``cogflight demo``: the main job end to end, with no server to run and no internet.

Generate sample COGs, index their headers into a Collection, save, reload and
filter it (``catalog``); then start an embedded Flight server over the saved
Collections and stream chips into PyTorch tensors, cold, warm and through a
``DataLoader`` (``flight_server`` + ``flight_client``). It composes all three
packages, which is why it lives on top of them. Single-threaded; the DataLoader
epoch uses worker processes.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

__all__ = ["register", "run_demo", "stream_demo"]


def run_demo(*, workdir: Path, collections: Path) -> int:
    """Generate sample COGs, index them into a Collection, save, reload, filter; print it all."""
    from catalog import build_from_files, load
    from catalog.testing import write_sample_scenes

    t0 = time.perf_counter()
    scenes = write_sample_scenes(workdir)
    t1 = time.perf_counter()
    files = sum(len(s.files) for s in scenes)
    print(
        f"1. sample COGs: {len(scenes)} scenes x {len(scenes[0].files)} bands = {files} files "
        f"in {workdir}/ ({t1 - t0:.2f} s)"
    )

    collection = build_from_files(
        {s.id: s.files for s in scenes},
        name="demo",
        datetime={s.id: s.datetime for s in scenes},
        progress=False,
    )
    t2 = time.perf_counter()
    build = collection.metadata["build"]
    print(
        f"2. indexed headers of {build['files']} files in {t2 - t1:.3f} s; requests per "
        f"header: median {build['requests_median']:.0f}, max {build['requests_max']}"
    )

    target = collection.save(collections / "demo.parquet")
    reloaded = load(target)
    print(
        f"3. saved and reloaded {target}: {len(reloaded)} scenes, bands "
        f"{', '.join(reloaded.band_names)}"
    )

    h = reloaded.header(0, "red")
    print(
        f"   scene {reloaded.ids[0]}: {h.width}x{h.height} {h.dtype}, {h.crs}, "
        f"{len(h.levels[0].tile_offsets)} tiles of {h.levels[0].tile_width}px, "
        f"{h.overview_count} overviews, nodata {h.nodata}"
    )

    summer = reloaded.subset(date_range="2024-06-01/2024-08-31")
    bbox = reloaded.describe()["bbox"]
    west = reloaded.subset(bbox=(bbox[0], bbox[1], (bbox[0] + bbox[2]) / 2, bbox[3]))
    print(
        f"4. filters: {len(summer)} scenes in summer 2024; {len(west)} intersect the western "
        f"half of the extent"
    )
    print("   id                          datetime             crs")
    for row in reloaded.table.select(["id", "datetime", "crs"]).to_pylist():
        print(f"   {row['id']:27s} {row['datetime']:%Y-%m-%d %H:%M}     {row['crs']}")
    _stream(collections, reloaded.name)
    print(f"done in {time.perf_counter() - t0:.2f} s. Next: `cogflight info {target}`")
    return 0


def _stream(collections: Path, name: str) -> None:
    """Serve the Collection in-process and stream chips into torch, when installed."""
    try:  # the catalog works alone; streaming needs torch (an extra)
        import torch  # noqa: F401
    except ImportError:
        print("5. (install cogflight[torch] to stream chips into PyTorch tensors)")
        return
    server_log = logging.getLogger("cogflight.server")
    level = server_log.level
    server_log.setLevel(logging.WARNING)  # the demo prints its own summary
    try:
        got = stream_demo(collections, name)
    finally:
        server_log.setLevel(level)
    print(
        f"5. embedded Flight server over {collections}/ at {got['location']} "
        f"(started in {got['start_s'] * 1000:.0f} ms)"
    )
    for label, what in (("cold", "tiles fetched and decoded"), ("warm", "tile cache")):
        r = got[label]
        print(
            f"   {label} ({what}): {r['chips']} chips of {r['chip_shape']} in "
            f"{r['batches']} batches (up to {r['batch_rows']}) "
            f"{r['dtype']}, {r['mb']:.0f} MB; first batch after {r['first_batch_s']:.3f} s, "
            f"all in {r['total_s']:.2f} s = {r['chips_per_s']:.0f} chips/s "
            f"({r['mb'] / r['total_s']:.0f} MB/s); tensors sharing the received buffers "
            f"{r['zero_copy']}, copied {r['copied']}"
        )
    e = got["epoch"]
    print(
        f"6. one shuffled epoch of a ChipDataset through DataLoader(num_workers="
        f"{e['workers']}): {e['chips']} chips ({e['unique']} distinct) in "
        f"{e['total_s']:.2f} s = {e['chips_per_s']:.0f} chips/s"
    )
    s = got["server"]
    print(
        f"   server: {s['streams']} streams, {s['chips_sent']} chips sent, "
        f"{s['requests']} range requests ({s['bytes_fetched'] / 1e6:.0f} MB), "
        f"{s['tiles_decoded']} tiles decoded, cache hit rate {s['cache_hit_rate']:.0%}"
    )


def stream_demo(
    collections: Path, name: str, *, chips: int = 192, chip_size: int = 256, workers: int = 2
) -> dict[str, Any]:
    """Stream random chips of ``name`` from an embedded server; return what happened.

    Three passes over the same query: cold (tiles fetched and decoded), warm (from
    the server's tile cache), and one epoch of a ``ChipDataset`` through a
    ``DataLoader`` with ``workers`` worker processes.
    """
    import flight_client as fc

    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    with fc.connect(root=collections) as client:
        out["location"] = client.location
        out["start_s"] = time.perf_counter() - t0
        index = client.index(name)
        centres = fc.random_points(index, size=chip_size, count=chips, seed=0)
        query: dict[str, Any] = {"geometries": centres, "chip_size": chip_size, "batch_rows": 16}
        for label in ("cold", "warm"):
            before = fc.stats()
            t = time.perf_counter()
            first = None
            n = nbytes = batches = 0
            shape = dtype = None
            for batch in client.chips(name, **query):
                tensors = fc.to_torch(batch)
                if first is None:
                    first = time.perf_counter() - t
                    shape, dtype = list(tensors["chip"].shape[1:]), tensors["chip"].dtype
                batches += 1
                n += len(tensors["chip"])
                nbytes += tensors["chip"].nbytes
            total = time.perf_counter() - t
            after = fc.stats()
            out[label] = {
                "chips": n,
                "batches": batches,
                "mb": nbytes / 1e6,
                "first_batch_s": first,
                "total_s": total,
                "chips_per_s": n / total,
                "chip_shape": shape,
                "batch_rows": query["batch_rows"],
                "dtype": str(dtype),
                "zero_copy": after["zero_copy"] - before["zero_copy"],
                "copied": after["realigned"] - before["realigned"],
            }
        out["epoch"] = _loader_epoch(client, name, query, workers)
        out["server"] = client.stats()
    return out


def _loader_epoch(client: Any, name: str, query: dict[str, Any], workers: int) -> dict[str, Any]:
    from torch.utils.data import DataLoader

    import flight_client as fc

    dataset = fc.ChipDataset(client, name, shuffle=True, seed=0, **query)
    loader = DataLoader(dataset, batch_size=32, num_workers=workers, collate_fn=fc.collate)
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


def _cmd_demo(args: argparse.Namespace) -> int:
    return run_demo(workdir=Path(args.workdir), collections=Path(args.collections))


def register(sub: Any) -> None:
    """Add ``demo`` to the command line."""
    p = sub.add_parser(
        "demo",
        help="run the main job on generated sample COGs",
        description="Generate sample COGs, index them, serve them from an embedded Flight "
        "server and stream chips into PyTorch tensors. Needs no server and no internet.",
    )
    p.add_argument(
        "--workdir", default="demo-data", help="where sample COGs go (default demo-data)"
    )
    p.add_argument(
        "--collections", default="collections", help="where Collections go (default collections)"
    )
    p.set_defaults(func=_cmd_demo)
