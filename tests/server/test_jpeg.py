"""JPEG tiles against GDAL (rasterio): every JPEG layout, every level, the measured bound.

The rasterio wheel's GDAL decodes JPEG through IJG libjpeg 9f, which rebuilds 4:2:0
chroma with a 16x16 inverse DCT per 8x8 block instead of libjpeg-turbo's triangle
upsampling (up to ~70 DN apart). The engine reproduces libjpeg 9 (engine/_jpeg.py):
exact up to quality 85; at 90-95 a few flat blocks decode to chroma samples that two
coefficient sets explain, costing up to 2 DN; at 100 (quantisation step 1) up to 4 DN.
RGB, grey and 4:4:4 YCbCr JPEG are exact; 4:2:2 still goes through libjpeg-turbo.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib.cbook
import numpy as np
import pytest
import rasterio
import shapely
import tifffile
from affine import Affine
from PIL import Image
from rasterio.enums import Resampling
from rasterio.windows import Window as RioWindow

import catalog
from flight_server import ChipEngine, ChipRequest, DecodeError
from flight_server.engine._decode import decode_tile
from flight_server.engine._jpeg import decode_ycbcr
from flight_server.engine._windows import TileRef
from tests.support.corpus import CASES

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")

# Measured bound per JPEG quality: (max |engine - GDAL| in DN, % of values off by > 1).
BOUND = {50: (0, 0.0), 75: (0, 0.0), 85: (0, 0.0), 90: (2, 0.1), 95: (2, 0.5), 100: (4, 10.0)}
# 4:2:2 is left to libjpeg-turbo; the file below measures 67 DN.
BOUND_422 = 70


def _photo(height: int, width: int) -> np.ndarray:
    """A real photograph (matplotlib's grace_hopper.jpg), mirrored out to the size, (3, h, w)."""
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        a = np.asarray(Image.open(f).convert("RGB"))
    reps = (-(-height // a.shape[0]), -(-width // a.shape[1]))
    row = np.concatenate([a if j % 2 == 0 else a[:, ::-1] for j in range(reps[1])], axis=1)
    big = np.concatenate([row if i % 2 == 0 else row[::-1] for i in range(reps[0])], axis=0)
    return np.ascontiguousarray(big[:height, :width].transpose(2, 0, 1))


def _aerial(height: int, width: int, seed: int) -> np.ndarray:
    """Aerial-like RGB: fields with crop rows, roads, red roofs, sensor noise, (3, h, w)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    n = max(8, height * width // 20000)
    cy, cx = rng.uniform(0, height, n), rng.uniform(0, width, n)
    field = np.zeros((height, width), np.int64)
    nearest = np.full((height, width), np.inf)
    for k in range(n):
        d = (y - cy[k]) ** 2 + (x - cx[k]) ** 2
        closer = d < nearest
        nearest[closer], field[closer] = d[closer], k
    palette = np.array([[86, 110, 52], [140, 128, 80], [110, 140, 60], [170, 150, 110],
                        [60, 80, 40], [120, 100, 70]], dtype=np.float64)  # fmt: skip
    out = palette[rng.integers(0, len(palette), n)][field].transpose(2, 0, 1)
    out = out + 12 * np.sin((x * np.cos(field) + y * np.sin(field)) / 3.0)
    out = out + rng.normal(0, 9, out.shape)
    for _ in range(4):
        a, c = rng.uniform(0, np.pi), rng.uniform(-width, width)
        road = np.abs(x * np.cos(a) + y * np.sin(a) - c) < 4
        out[:, road] = 185 + rng.normal(0, 4, (3, int(road.sum())))
    for _ in range(max(3, n // 2)):
        r0, c0 = rng.integers(0, height - 20), rng.integers(0, width - 20)
        r1, c1 = r0 + rng.integers(6, 18), c0 + rng.integers(6, 18)
        out[:, r0:r1, c0:c1] = np.array([170, 60, 50])[:, None, None]
    return np.clip(out, 0, 255).astype(np.uint8)


def _write(
    path: Path,
    data: np.ndarray,
    *,
    tile: int,
    quality: int,
    photometric: str | None = "YCBCR",
    overviews: tuple[int, ...] = (),
) -> Path:
    bands, height, width = data.shape
    extra = {"photometric": photometric} if photometric else {}
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=width,
        height=height,
        count=bands,
        dtype="uint8",
        tiled=True,
        blockxsize=tile,
        blockysize=tile,
        compress="jpeg",
        jpeg_quality=quality,
        crs="EPSG:32633",
        transform=Affine(10, 0, 500000, 0, -10, 4100000),
        **extra,
    ) as ds:
        ds.write(data)
        if overviews:
            ds.build_overviews(list(overviews), Resampling.average)
    return path


def _write_tifffile(path: Path, data: np.ndarray, subsampling: tuple[int, int]) -> Path:
    """YCbCr JPEG with a chroma subsampling GDAL does not write (libjpeg-turbo's encoder)."""
    geokeys = [1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32633]
    tifffile.imwrite(
        path, data.transpose(1, 2, 0), tile=(256, 256), photometric="ycbcr",
        compression="jpeg", compressionargs={"level": 90}, subsampling=subsampling,
        extratags=[(33550, "d", 3, (10.0, 10.0, 0.0), True),
                   (33922, "d", 6, (0.0, 0.0, 0.0, 500000.0, 4100000.0, 0.0), True),
                   (34735, "H", len(geokeys), geokeys, True)],
    )  # fmt: skip
    return path


def _tiles(path: Path, level: int) -> tuple[catalog.HeaderRecord, list[tuple[TileRef, bytes]]]:
    header = catalog.read_header(str(path))
    img = header.levels[level]
    raw = path.read_bytes()
    refs = []
    for i, (off, n) in enumerate(zip(img.tile_offsets, img.tile_byte_counts, strict=True)):
        ref = TileRef(str(path), level, i, int(off), int(n))
        refs.append((ref, raw[ref.offset : ref.offset + ref.length]))
    return header, refs


def _decode_level(path: Path, level: int) -> np.ndarray:
    """One whole level through the engine's tile decoder, (h, w, bands)."""
    header, tiles = _tiles(path, level)
    img = header.levels[level]
    th, tw = img.tile_height, img.tile_width
    across = -(-img.width // tw)
    out = np.zeros((-(-img.height // th) * th, across * tw, header.samples), np.uint8)
    for ref, data in tiles:
        r, c = divmod(ref.index, across)
        out[r * th : (r + 1) * th, c * tw : (c + 1) * tw] = decode_tile(data, ref, header).reshape(
            th, tw, -1
        )
    return out[: img.height, : img.width]


def _gdal_level(path: Path, level: int) -> np.ndarray:
    with rasterio.open(path, **({"overview_level": level - 1} if level else {})) as ds:
        return ds.read().transpose(1, 2, 0)


def _diff(got: np.ndarray, ref: np.ndarray) -> tuple[int, float]:
    assert got.shape == ref.shape
    d = np.abs(got.astype(np.int16) - ref.astype(np.int16))
    return int(d.max()), 100.0 * float((d > 1).mean())


def _assert_levels(path: Path, quality: int) -> None:
    most, share = BOUND[quality]
    levels = len(catalog.read_header(str(path)).levels)
    for level in range(levels):
        worst, over = _diff(_decode_level(path, level), _gdal_level(path, level))
        assert worst <= most, f"level {level}: {worst} DN"
        assert over <= share, f"level {level}: {over:.3f} % of values off by more than 1"


@pytest.mark.parametrize(
    ("kind", "size", "tile", "quality", "overviews"),
    [
        ("photo", (1300, 1500), 256, 75, (2, 4)),
        ("photo", (1300, 1500), 512, 90, (2,)),
        ("photo", (1000, 1100), 1024, 85, ()),
        ("photo", (1000, 1100), 256, 95, ()),
        ("aerial", (900, 1100), 512, 75, (2, 4)),
        ("aerial", (1000, 1000), 256, 90, ()),
        ("aerial", (1000, 1000), 256, 95, ()),
        ("aerial", (600, 700), 256, 100, ()),
        ("aerial", (600, 700), 256, 50, ()),
    ],
)
def test_ycbcr_420_within_bound(
    tmp_path: Path,
    kind: str,
    size: tuple[int, int],
    tile: int,
    quality: int,
    overviews: tuple[int, ...],
) -> None:
    """GDAL-written 4:2:0 YCbCr COGs, edge tiles and overviews included."""
    data = _photo(*size) if kind == "photo" else _aerial(*size, seed=quality)
    path = _write(tmp_path / "a.tif", data, tile=tile, quality=quality, overviews=overviews)
    _assert_levels(path, quality)


@pytest.mark.parametrize("name", ["comp_jpeg", "comp_jpeg_ycbcr"])
def test_corpus_jpeg_exact(tmp_path: Path, name: str) -> None:
    """The corpus JPEG files (smooth data, quality 90), RGB and YCbCr: bit-exact."""
    case = next(c for c in CASES if c.name == name)
    path = case.write(tmp_path)
    assert _diff(_decode_level(path, 0), _gdal_level(path, 0)) == (0, 0.0)


@pytest.mark.parametrize("photometric", ["RGB", None])
def test_rgb_and_grey_jpeg_exact(tmp_path: Path, photometric: str | None) -> None:
    """JPEG without YCbCr has no chroma to upsample: bit-exact."""
    data = _aerial(600, 700, seed=5)
    path = _write(tmp_path / "a.tif", data if photometric else data[:1], tile=256, quality=90,
                  photometric=photometric, overviews=(2,))  # fmt: skip
    for level in range(2):
        assert _diff(_decode_level(path, level), _gdal_level(path, level)) == (0, 0.0)


def test_ycbcr_444_exact(tmp_path: Path) -> None:
    """4:4:4: no upsampling, and jdcolor.c's conversion (libjpeg-turbo's differs by 1 DN)."""
    path = _write_tifffile(tmp_path / "a.tif", _aerial(512, 768, seed=9), (1, 1))
    assert _diff(_decode_level(path, 0), _gdal_level(path, 0)) == (0, 0.0)


def test_ycbcr_422_falls_back_to_libjpeg_turbo(tmp_path: Path) -> None:
    """4:2:2 is not reproduced: decoded by libjpeg-turbo, within the documented bound."""
    path = _write_tifffile(tmp_path / "a.tif", _aerial(512, 768, seed=9), (2, 1))
    header, tiles = _tiles(path, 0)
    img = header.levels[0]
    assert decode_ycbcr(tiles[0][1], img.jpeg_tables, img.tile_height, img.tile_width) is None
    worst, _ = _diff(_decode_level(path, 0), _gdal_level(path, 0))
    assert worst <= BOUND_422


def test_engine_windows_within_bound(tmp_path: Path) -> None:
    """Through ChipEngine: windows inside tiles, across tile edges and past the raster edge."""
    quality = 90
    path = _write(tmp_path / "a.tif", _photo(1300, 1500), tile=512, quality=quality)
    col = catalog.build_from_files([path], name="jpeg", progress=False)
    h = col.header(0, col.band_names[0])
    gt = h.geotransform
    wins = [(3, 5, 200, 150), (500, 490, 40, 50), (1400, 1250, 150, 90), (300, 700, 700, 520)]
    geoms = []
    for c0, r0, w, hh in wins:  # shrunk by a quarter pixel: geometry_window is exact
        x0, y1 = gt[0] + c0 * gt[1], gt[3] + r0 * gt[5]
        x1, y0 = gt[0] + (c0 + w) * gt[1], gt[3] + (r0 + hh) * gt[5]
        geoms.append(shapely.box(x0 + 2.5, y0 + 2.5, x1 - 2.5, y1 - 2.5))
    most, share = BOUND[quality]
    with ChipEngine(cache_bytes=64 * 1024**2) as engine:
        res = engine.read(col, ChipRequest.create(geometries=geoms, geometry_crs=h.crs))
    with rasterio.open(path) as ds:
        for i, (c0, r0, w, hh) in enumerate(wins):
            ref = ds.read(window=RioWindow(c0, r0, w, hh), boundless=True, fill_value=0)
            w_in, h_in = min(w, ds.width - c0), min(hh, ds.height - r0)
            got = res.chips[i][:, :h_in, :w_in].transpose(1, 2, 0)
            worst, over = _diff(got, ref[:, :h_in, :w_in].transpose(1, 2, 0))
            assert worst <= most and over <= share


def test_corrupt_ycbcr_tile_is_a_decode_error(tmp_path: Path) -> None:
    """A truncated or garbled YCbCr tile fails loudly, never decodes to made-up pixels."""
    path = _write(tmp_path / "a.tif", _aerial(512, 512, seed=1), tile=256, quality=75)
    header, tiles = _tiles(path, 0)
    ref, data = tiles[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for bad in (data[: len(data) // 2], data[:200] + bytes(len(data) - 200)):
            with pytest.raises(DecodeError):
                decode_tile(bad, ref, header)
