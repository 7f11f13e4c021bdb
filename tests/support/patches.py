"""A small scene Collection (two overlapping UTM scenes) and labelled patches over it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import shapely

import catalog
from catalog.testing import synthetic_scene, write_cog

GT = (500000.0, 10.0, 0.0, 4100000.0, 0.0, -10.0)
SHIFT = 2000.0  # scene b starts 200 pixels east of scene a: they overlap over 312 columns


def patch_box(c0: int, r0: int, w: int, h: int) -> shapely.Polygon:
    """A box (scene a's pixel grid) whose window is exactly (c0, r0, w, h): shrunk 1/4 pixel."""
    x0, y0 = GT[0] + c0 * GT[1], GT[3] + r0 * GT[5]
    return shapely.box(x0 + 2.5, y0 - h * 10 + 2.5, x0 + w * 10 - 2.5, y0 - 2.5)


def scene_collection(base: Path) -> tuple[catalog.Collection, dict[str, Path]]:
    """Scenes 'a' (May) and 'b' (June), 512 x 512, two bands, EPSG:32633; band b1 only."""
    base.mkdir(parents=True, exist_ok=True)
    paths = {}
    for i, sid in enumerate(("a", "b")):
        p = base / f"{sid}.tif"
        gt = (GT[0] + SHIFT * i, *GT[1:])
        write_cog(p, synthetic_scene(512, 512, 2, 7 + i), geotransform=gt, epsg=32633,
                  nodata=0, tile=256)
        paths[sid] = p
    col = catalog.build_from_files(
        {sid: {"b1": str(p)} for sid, p in paths.items()}, name="scenes", progress=False,
        datetime={"a": dt.date(2024, 5, 1), "b": dt.date(2024, 6, 1)},
    )
    return col, paths


def patch_table(n: int = 24, seed: int = 3) -> pa.Table:
    """``n`` labelled boxes (EPSG:32633 WKB) of 8-32 pixels; every third is 'val'."""
    rng = np.random.default_rng(seed)
    boxes, labels, splits = [], [], []
    for i in range(n):
        c0, r0 = int(rng.integers(0, 680)), int(rng.integers(0, 470))
        w, h = int(rng.integers(8, 33)), int(rng.integers(8, 33))
        c0 = min(c0, 712 - w)
        boxes.append(patch_box(c0, r0, w, h))
        labels.append(int(i % 5))
        splits.append("train" if i % 3 else "val")
    return pa.table({
        "id": [f"p{i:02d}" for i in range(n)],
        "geometry": shapely.to_wkb(boxes).tolist(),
        "label": pa.array(labels, pa.int16()),
        "split": splits,
    })
