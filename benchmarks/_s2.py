"""A dataset shaped like Earth Search's Sentinel-2 L2A, and the benchmark scenarios over it.

Four MGRS-like tiles (two UTM zones), each 4 bands (B02, B03, B04, B08) of uint16
COGs laid out like Earth Search's: 1024 px tiles, DEFLATE + predictor 2, nodata 0,
internal overviews, 10 m pixels, 10980 x 10980 (``--quick``: 5490 x 5490). The
pixels are smooth fields plus sensor-like noise, so a compressed tile weighs about
what a real one does (~1 MB). GDAL writes each tile's files once; every date of a
tile is a hard link to them, under its own name, so the 42 scenes cost 16 files of
disk and page cache while every contender still sees 42 distinct files.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import CACHE

BANDS = ("B02", "B03", "B04", "B08")
RES = 10.0
CHIP = 256  # pixels


@dataclass(frozen=True)
class Tile:
    name: str
    epsg: int
    x0: float
    y0: float
    first_date: dt.date
    dates: int


# Origins like Sentinel-2's (x multiple of 10 ending in ...980, 100 km apart, 9.8 km
# overlap). T32TQR and T33TUL overlap across the zone 32/33 boundary near 12 E.
TILES = {
    "33TWN": Tile("33TWN", 32633, 499980.0, 5200020.0, dt.date(2024, 1, 5), 15),
    "33TXN": Tile("33TXN", 32633, 599980.0, 5200020.0, dt.date(2024, 1, 7), 15),
    "32TQR": Tile("32TQR", 32632, 699960.0, 5200020.0, dt.date(2024, 1, 2), 6),
    "33TUL": Tile("33TUL", 32633, 199980.0, 5200020.0, dt.date(2024, 1, 4), 6),
}


@dataclass
class Scene:
    id: str
    tile: str
    date: dt.date
    files: dict[str, Path]  # band -> local path (a hard link)


@dataclass
class Scenario:
    """Chips = every (position, scene) pair where the scene covers the position."""

    name: str
    title: str
    scenes: list[Scene]
    crs: str  # the target grid's CRS
    positions: list[tuple[float, float, float, float]]  # chip bboxes in ``crs``
    time_series: bool
    pairs: list[tuple[int, str]] = field(default_factory=list)  # (position, scene id)

    def spec(self, urls: dict[str, dict[str, str]]) -> dict[str, Any]:
        """What a contender process needs, as JSON."""
        return {
            "name": self.name,
            "crs": self.crs,
            "positions": self.positions,
            "time_series": self.time_series,
            "pairs": self.pairs,
            "scenes": [
                {"id": s.id, "date": s.date.isoformat(), "tile": s.tile, "urls": urls[s.id]}
                for s in self.scenes
            ],
        }


def _texture(size: int, seed: int) -> np.ndarray:
    """Smooth fields plus noise, built from a 2048 px pattern (fast to make at 10980 px)."""
    rng = np.random.default_rng(seed)
    n = 2048
    y = np.linspace(0, 12, n, dtype=np.float32)[:, None]
    x = np.linspace(0, 12, n, dtype=np.float32)[None, :]
    base = 1800 + 900 * np.sin(x + seed) * np.cos(0.8 * y) + 350 * np.sin(2.3 * x * y / 12)
    block = (base + rng.normal(0, 45, (n, n))).clip(1, 12000).astype(np.uint16)
    reps = -(-size // n)
    return np.tile(block, (reps, reps))[:size, :size]


def _write_tile_band(path: Path, tile: Tile, band: int, size: int) -> None:
    import rasterio
    from affine import Affine

    tmp = path.with_suffix(".partial.tif")
    profile = {
        "driver": "COG", "width": size, "height": size, "count": 1, "dtype": "uint16",
        "crs": f"EPSG:{tile.epsg}", "nodata": 0, "blocksize": 1024, "compress": "deflate",
        "predictor": 2, "num_threads": "all_cpus",
        "transform": Affine(RES, 0, tile.x0, 0, -RES, tile.y0),
    }
    with rasterio.open(tmp, "w", **profile) as ds:
        ds.write(_texture(size, 31 * band + sum(map(ord, tile.name)))[None])
    os.replace(tmp, path)


def prepare(size: int, log: Any = print) -> tuple[Path, dict[str, Scene]]:
    """Write (once) the tile files and the per-date hard links; return the scenes."""
    root = CACHE / f"s2-{size}"
    base, served = root / "tiles", root / "served"
    base.mkdir(parents=True, exist_ok=True)
    served.mkdir(parents=True, exist_ok=True)
    scenes: dict[str, Scene] = {}
    for tile in TILES.values():
        for b, band in enumerate(BANDS):
            src = base / f"{tile.name}_{band}.tif"
            if not src.exists():
                log(f"writing {src.name} ({size} x {size}, GDAL COG driver)")
                _write_tile_band(src, tile, b, size)
        for k in range(tile.dates):
            date = tile.first_date + dt.timedelta(days=5 * k)
            sid = f"S2_T{tile.name}_{date:%Y%m%d}"
            files = {}
            for band in BANDS:
                link = served / f"{sid}_{band}.tif"
                if not link.exists():
                    os.link(base / f"{tile.name}_{band}.tif", link)
                files[band] = link
            scenes[sid] = Scene(sid, tile.name, date, files)
    return served, scenes


def _tile_box(tile: Tile, size: int) -> tuple[float, float, float, float]:
    return (tile.x0, tile.y0 - RES * size, tile.x0 + RES * size, tile.y0)


def _random_chips(
    rng: np.random.Generator, box: tuple[float, float, float, float], n: int
) -> list[tuple[float, float, float, float]]:
    """``n`` chip boxes on the 10 m grid, wholly inside ``box``."""
    span = CHIP * RES
    out = []
    for _ in range(n):
        cx = rng.integers(0, int((box[2] - box[0] - span) / RES) + 1)
        cy = rng.integers(0, int((box[3] - box[1] - span) / RES) + 1)
        x0, y0 = box[0] + cx * RES, box[1] + cy * RES
        out.append((float(x0), float(y0), float(x0 + span), float(y0 + span)))
    return out


def _covering(
    scenes: list[Scene], crs: str, positions: list[Any], size: int
) -> list[tuple[int, str]]:
    """(position, scene) pairs where the scene's raster holds the whole chip."""
    from pyproj import Transformer

    pairs = []
    for p, (x0, y0, x1, y1) in enumerate(positions):
        for s in scenes:
            tile = TILES[s.tile]
            t = Transformer.from_crs(crs, f"EPSG:{tile.epsg}", always_xy=True)
            bx0, by0, bx1, by1 = t.transform_bounds(x0, y0, x1, y1, densify_pts=5)
            tb = _tile_box(tile, size)
            if tb[0] <= bx0 and bx1 <= tb[2] and tb[1] <= by0 and by1 <= tb[3]:
                pairs.append((p, s.id))
    return pairs


def scenarios(scenes: dict[str, Scene], size: int, quick: bool) -> dict[str, Scenario]:
    """The four workloads, with fixed seeds (the same chips for every contender)."""
    rng = np.random.default_rng(2024)
    by_tile: dict[str, list[Scene]] = {}
    for s in scenes.values():
        by_tile.setdefault(s.tile, []).append(s)
    km = 1000.0
    size_m = RES * size
    wn, xn = TILES["33TWN"], TILES["33TXN"]
    out: dict[str, Scenario] = {}

    # A: one 10 km AOI inside T33TWN, every chip through all 15 dates.
    ax, ay = wn.x0 + 0.4 * size_m, wn.y0 - 0.5 * size_m
    aoi = (ax, ay - 10 * km, ax + 10 * km, ay)
    out["single_aoi"] = Scenario(
        "single_aoi", "single AOI, 15 scenes (time series)", by_tile["33TWN"], "EPSG:32633",
        _random_chips(rng, aoi, 4 if quick else 16), time_series=True,
    )
    # B: six 8 km AOIs over two tiles (outside their overlap), 30 scenes.
    aois = []
    for k in range(6):
        t = wn if k % 2 == 0 else xn
        ox = t.x0 + (0.15 + 0.1 * (k // 2)) * (size_m - 10 * km) if t is wn else t.x0 + 12 * km
        oy = t.y0 - (0.2 + 0.25 * (k // 2)) * size_m
        aois.append((ox, oy - 8 * km, ox + 8 * km, oy))
    per_aoi = 1 if quick else 3
    positions = [c for a in aois[: 4 if quick else 6] for c in _random_chips(rng, a, per_aoi)]
    out["multi_aoi"] = Scenario(
        "multi_aoi", "multi-AOI, 30 scenes", by_tile["33TWN"] + by_tile["33TXN"],
        "EPSG:32633", positions, time_series=False,
    )
    # C: an AOI across the zone 32/33 boundary, 6 + 6 scenes, on the zone 33 grid.
    import shapely
    from pyproj import Transformer

    qr, ul = TILES["32TQR"], TILES["33TUL"]
    to33 = Transformer.from_crs("EPSG:32632", "EPSG:32633", always_xy=True)
    qr_box = shapely.Polygon(
        [to33.transform(x, y) for x, y in shapely.box(*_tile_box(qr, size)).exterior.coords]
    )
    both = qr_box.intersection(shapely.box(*_tile_box(ul, size)))
    if both.area > (10 * km) ** 2:  # files of 5490 px and more overlap across the zones
        cx, cy = both.centroid.x, both.centroid.y
        cx, cy = round(cx / RES) * RES, round(cy / RES) * RES
        aoi = (cx - 4 * km, cy - 4 * km, cx + 4 * km, cy + 4 * km)
        out["cross_crs"] = Scenario(
            "cross_crs", "cross-CRS AOI, 12 scenes (time series)",
            by_tile["32TQR"] + by_tile["33TUL"], "EPSG:32633",
            _random_chips(rng, aoi, 3 if quick else 12), time_series=True,
        )
    # D: a training epoch: random chips anywhere in the 30 scenes of B, read twice.
    # Chips outside the tiles' overlap, so that each one hits one tile's 15 dates.
    boxes = [
        (wn.x0, wn.y0 - size_m, min(xn.x0, wn.x0 + size_m), wn.y0),
        (max(wn.x0 + size_m, xn.x0), xn.y0 - size_m, xn.x0 + size_m, xn.y0),
    ]
    n = 8 if quick else 32
    positions = [c for k in range(n) for c in _random_chips(rng, boxes[k % 2], 1)]
    out["epoch"] = Scenario(
        "epoch", f"training epoch: {len(positions)} random chips x 15 dates, twice",
        by_tile["33TWN"] + by_tile["33TXN"], "EPSG:32633", positions, time_series=False,
    )
    for sc in out.values():
        sc.pairs = _covering(sc.scenes, sc.crs, sc.positions, size)
        if not sc.pairs:
            raise RuntimeError(f"scenario {sc.name}: no chip inside a scene")
    return out
