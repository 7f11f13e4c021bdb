"""The demo: the main job on an embedded default, with no server and no internet."""

from __future__ import annotations

import time
from pathlib import Path

from ._build import build_from_files
from ._collection import Collection, load
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
    _cut_chips(reloaded)
    print(f"done in {time.perf_counter() - t0:.2f} s. Next: `cogflight info {target}`")
    return 0


def _cut_chips(collection: Collection) -> None:
    """Cut chips in-process with the engine, when the server package is installed."""
    try:
        from flight_server import ChipEngine, ChipRequest
    except ImportError:  # the catalog works alone; the engine ships with flight_server
        return
    import numpy as np

    rng = np.random.default_rng(0)
    boxes = collection.table.column("bbox").to_pylist()
    geoms = []
    for _ in range(64):  # small boxes at random places inside random scenes
        b = boxes[int(rng.integers(len(boxes)))]
        dx, dy = (b["xmax"] - b["xmin"]) * 0.2, (b["ymax"] - b["ymin"]) * 0.2
        x = float(rng.uniform(b["xmin"] + dx, b["xmax"] - dx))
        y = float(rng.uniform(b["ymin"] + dy, b["ymax"] - dy))
        geoms.append((x - 1e-4, y - 1e-4, x + 1e-4, y + 1e-4))
    request = ChipRequest.create(geometries=geoms, chip_size=128, batch_rows=16)
    with ChipEngine() as engine:
        t = time.perf_counter()
        result = engine.read(collection, request)
        cold = time.perf_counter() - t
        t = time.perf_counter()
        engine.read(collection, request)
        warm = time.perf_counter() - t
    n = len(result)
    print(
        f"5. engine: {n} chips {list(result.chips.shape[1:])} {result.chips.dtype} cut from "
        f"the index in {cold:.2f} s cold ({n / cold:.0f} chips/s), {warm:.2f} s warm; "
        f"{result.valid.mean():.0%} of pixels valid"
    )
