"""The demo: the main job on an embedded default, with no server and no internet."""

from __future__ import annotations

import time
from pathlib import Path

from ._build_files import build_from_files
from ._collection import load
from ._samples import write_sample_scenes

__all__ = ["run_demo"]


def run_demo(*, workdir: Path, collections: Path) -> int:
    """Generate sample COGs, index them into a Collection, save, reload, filter; print it all."""
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
    try:  # the catalog works alone; streaming needs the client and torch (an extra)
        import torch  # noqa: F401

        from flight_client._demo import stream_demo
    except ImportError:
        print("5. (install cogflight[torch] to stream chips into PyTorch tensors)")
        return
    import logging

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
            f"   {label} ({what}): {r['chips']} chips in {r['batches']} batches of "
            f"{r['batch_shape']} "
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
