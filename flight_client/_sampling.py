"""Where to cut chips: random chips inside scene footprints, or a regular grid over an area.

Pure functions over a Collection's index (as returned by ``Client.index``); they
return geometries for a query, so the server cuts the chips.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cogflight_core import InvalidArgumentError

__all__ = ["grid_boxes", "random_points", "scene_grids"]


def scene_grids(index: pa.Table, asset: str | None = None) -> list[dict[str, Any]]:
    """Per scene: id, CRS, native geotransform and size (from the first asset's header)."""
    assets = [c for c in index.column_names if c.startswith("asset:")]
    if not assets:
        raise InvalidArgumentError("the table is not a Collection index (no asset: columns)")
    col = index.column(f"asset:{asset}" if asset else assets[0])
    header = pc.struct_field(col, "header")
    gts = pc.struct_field(header, "geotransform").to_pylist()
    levels = pc.struct_field(header, "levels").to_pylist()
    ids = index.column("id").to_pylist()
    crss = index.column("crs").to_pylist()
    out = []
    for i, (gt, lv) in enumerate(zip(gts, levels, strict=True)):
        if gt is None:
            continue
        out.append(
            {
                "id": ids[i],
                "crs": crss[i],
                "transform": gt,
                "width": lv[0]["width"],
                "height": lv[0]["height"],
            }
        )
    return out


def random_points(
    index: pa.Table,
    *,
    size: int,
    count: int,
    seed: int = 0,
    res: float | None = None,
) -> list[tuple[float, float]]:
    """Centres (lon, lat) of ``count`` random ``size``-pixel chips lying inside scenes.

    Like TorchGeo's ``RandomGeoSampler``: a scene is drawn with probability
    proportional to its area, then a chip position uniformly inside it. Query with
    ``chip_size=size`` (and ``resolution=res`` when resampling) to get the chips.
    """
    import pyproj

    if size < 1 or count < 0:
        raise InvalidArgumentError("size must be >= 1 and count >= 0")
    grids = scene_grids(index)
    if not grids:
        raise InvalidArgumentError("no scene to sample from")
    rng = np.random.default_rng(seed)
    extents = []
    for g in grids:
        x0, dx, _, y0, _, dy = g["transform"]
        r = res or abs(dx)
        xs = sorted((x0, x0 + dx * g["width"]))
        ys = sorted((y0, y0 + dy * g["height"]))
        half_x, half_y = size * r / 2, size * abs(r if res else dy) / 2
        extents.append((xs[0] + half_x, ys[0] + half_y, xs[1] - half_x, ys[1] - half_y))
    areas = np.array([max(e[2] - e[0], 0) * max(e[3] - e[1], 0) for e in extents])
    if areas.sum() <= 0:
        raise InvalidArgumentError(f"no scene is larger than a {size}-pixel chip")
    picks = rng.choice(len(grids), size=count, p=areas / areas.sum())
    out: list[tuple[float, float]] = []
    transformers: dict[str, Any] = {}
    for i in picks:
        e = extents[i]
        x, y = rng.uniform(e[0], e[2]), rng.uniform(e[1], e[3])
        crs = grids[i]["crs"]
        t = transformers.get(crs)
        if t is None:
            t = transformers[crs] = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
        lon, lat = t.transform(x, y)
        out.append((float(lon), float(lat)))
    return out


def grid_boxes(
    bounds: Sequence[float],
    *,
    size: float,
    stride: float | None = None,
) -> list[tuple[float, float, float, float]]:
    """Boxes of ``size`` (CRS units) every ``stride`` covering ``bounds``, row by row.

    Like TorchGeo's ``GridGeoSampler``: the last row and column are shifted back
    to end at the bounds, so the area is covered without chips sticking out.
    """
    xmin, ymin, xmax, ymax = (float(v) for v in bounds)
    stride = size if stride is None else stride
    if size <= 0 or stride <= 0 or xmax <= xmin or ymax <= ymin:
        raise InvalidArgumentError("grid: size and stride must be positive, bounds non-empty")
    nx = max(1, math.ceil((xmax - xmin - size) / stride) + 1)
    ny = max(1, math.ceil((ymax - ymin - size) / stride) + 1)
    boxes = []
    for j in range(ny):
        y1 = min(ymax, ymax - j * stride) if j < ny - 1 else ymin + size
        y1 = max(y1, ymin + min(size, ymax - ymin))
        for i in range(nx):
            x0 = xmin + i * stride if i < nx - 1 else xmax - size
            x0 = max(x0, xmin)
            boxes.append((x0, y1 - size, x0 + size, y1))
    return boxes
