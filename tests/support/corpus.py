"""A generated corpus of GeoTIFFs covering every layout cogflight must index.

Files are written by rasterio/GDAL (and tifffile for what GDAL cannot write),
so GDAL is the oracle for what each file means. Each :class:`Case` knows how
to write itself; :func:`generate` writes them all into a directory.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ValueFn = Callable[[tuple[int, int, int], str], np.ndarray]


def smooth(shape: tuple[int, int, int], dtype: str, seed: int = 0) -> np.ndarray:
    """Smooth, compressible data spanning a good part of the dtype's range."""
    bands, h, w = shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    rng = np.random.default_rng(seed)
    out = np.empty(shape, dtype=dtype)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    for b in range(bands):
        v = np.sin(x / (17 + 5 * b)) * np.cos(y / (23 + 3 * b)) + rng.normal(0, 0.05, (h, w))
        v = (v - v.min()) / (np.ptp(v) + 1e-9)
        if info is not None:
            lo = max(float(info.min), -1e6) if info.min < 0 else 0.0
            hi = min(float(info.max), 1e6)
            out[b] = (lo + v * (hi - lo)).astype(dtype)
        else:
            out[b] = (v * 200.0 - 50.0).astype(dtype)
    return out


@dataclass
class Case:
    """One corpus file: how GDAL should write it."""

    name: str
    dtype: str = "uint16"
    bands: int = 1
    width: int = 600
    height: int = 400
    tile: int = 256
    compress: str = "deflate"
    predictor: int | None = None
    interleave: str = "pixel"
    crs: Any = "EPSG:32633"
    transform: tuple[float, ...] = (500000.0, 10.0, 0.0, 4100000.0, 0.0, -10.0)  # GDAL order
    nodata: float | None = None
    overviews: tuple[int, ...] = ()
    mask: bool = False
    bigtiff: bool = False
    big_endian: bool = False
    driver: str = "GTiff"
    point: bool = False
    scales: tuple[float, ...] | None = None
    offsets: tuple[float, ...] | None = None
    descriptions: tuple[str, ...] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    writer: str = "rasterio"

    @property
    def filename(self) -> str:
        return f"{self.name}.tif"

    def write(self, directory: Path) -> Path:
        path = directory / self.filename
        if self.writer == "tifffile":
            _write_tifffile(self, path)
        else:
            _write_rasterio(self, path)
        return path


def _write_rasterio(c: Case, path: Path) -> None:
    import rasterio
    from affine import Affine
    from rasterio.crs import CRS
    from rasterio.enums import Resampling

    x0, dx, rx, y0, ry, dy = c.transform
    profile: dict[str, Any] = {
        "driver": c.driver,
        "width": c.width,
        "height": c.height,
        "count": c.bands,
        "dtype": c.dtype,
        "crs": CRS.from_user_input(c.crs) if c.crs is not None else None,
        "transform": Affine(dx, rx, x0, ry, dy, y0),
        "compress": c.compress,
        "nodata": c.nodata,
    }
    if c.driver == "GTiff":
        profile.update(tiled=True, blockxsize=c.tile, blockysize=c.tile, interleave=c.interleave)
        if c.bigtiff:
            profile["BIGTIFF"] = "YES"
        if c.big_endian:
            profile["ENDIANNESS"] = "BIG"
    else:
        profile.update(blocksize=c.tile)
        if c.bigtiff:
            profile["BIGTIFF"] = "YES"
    if c.predictor:
        profile["predictor"] = c.predictor
    if c.compress == "jpeg":
        profile["jpeg_quality"] = 90
    profile.update(c.options)
    data = smooth((c.bands, c.height, c.width), c.dtype, seed=len(c.name))
    env: dict[str, Any] = {"GDAL_TIFF_INTERNAL_MASK": True}
    with rasterio.Env(**env), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(path, "w", **profile) as ds:
            if c.point:
                ds.update_tags(AREA_OR_POINT="Point")
            ds.write(data)
            if c.mask:
                m = np.full((c.height, c.width), 255, np.uint8)
                m[: c.height // 3, : c.width // 4] = 0
                ds.write_mask(m)
            if c.scales:
                ds.scales = c.scales
            if c.offsets:
                ds.offsets = c.offsets
            if c.descriptions:
                for i, d in enumerate(c.descriptions, 1):
                    ds.set_band_description(i, d)
            if c.overviews and c.driver == "GTiff":
                ds.build_overviews(list(c.overviews), Resampling.average)


def _write_tifffile(c: Case, path: Path) -> None:
    import tifffile

    x0, dx, _, y0, _, dy = c.transform
    epsg = int(str(c.crs).split(":")[1])
    geographic = 4000 <= epsg < 5000
    keys = [1, 1, 0, 3, 1024, 0, 1, 2 if geographic else 1, 1025, 0, 1, 1,
            2048 if geographic else 3072, 0, 1, epsg]
    extratags = [
        (33550, "d", 3, (dx, -dy, 0.0), True),
        (33922, "d", 6, (0.0, 0.0, 0.0, x0, y0, 0.0), True),
        (34735, "H", len(keys), keys, True),
    ]
    if c.nodata is not None:
        extratags.append((42113, "s", 0, f"{c.nodata:g}", True))
    data = smooth((c.bands, c.height, c.width), c.dtype, seed=len(c.name))
    tifffile.imwrite(
        path,
        data if c.bands > 1 else data[0],
        tile=(c.tile, c.tile),
        compression=c.compress if c.compress != "none" else None,
        predictor=c.predictor or None,
        planarconfig="separate" if c.interleave == "band" else "contig",
        photometric="minisblack",
        extratags=extratags,
        bigtiff=c.bigtiff,
        byteorder=">" if c.big_endian else "<",
        metadata=None,
    )


def _utm_custom_aea() -> str:
    return ("+proj=aea +lat_0=12.5 +lon_0=-21.25 +lat_1=15.5 +lat_2=37.75 "
            "+x_0=1234.5 +y_0=-765.25 +ellps=GRS80 +units=m +no_defs")


CASES: list[Case] = [
    # Every compression.
    *[Case(f"comp_{c}", dtype="uint8", bands=3, compress=c)
      for c in ("none", "deflate", "lzw", "zstd", "lzma", "packbits", "jpeg", "webp")],
    *[Case(f"comp_{c}", dtype="float32", compress=c, options={"max_z_error": 0.0})
      for c in ("lerc", "lerc_deflate", "lerc_zstd")],
    Case("comp_jpeg_ycbcr", dtype="uint8", bands=3, compress="jpeg",
         options={"photometric": "YCBCR"}),
    # Every dtype, with the matching predictor and a nodata value.
    *[Case(f"dtype_{d}", dtype=d, predictor=2, nodata=(0 if d[0] == "u" else -7))
      for d in ("uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64")],
    Case("dtype_float32_nan", dtype="float32", predictor=3, nodata=float("nan")),
    Case("dtype_float64", dtype="float64", predictor=3, nodata=-9999.0),
    Case("dtype_float16", dtype="float16", predictor=3, compress="zlib", writer="tifffile",
         nodata=-1.0),
    Case("dtype_float16_sep", dtype="float16", bands=2, interleave="band", compress="zstd",
         writer="tifffile", crs="EPSG:4326", transform=(10.0, 0.01, 0.0, 50.0, 0.0, -0.01)),
    # Tile sizes and sizes that are not tile multiples, with overviews.
    *[Case(f"tile_{t}", tile=t, width=1100, height=1300, predictor=2, overviews=(2, 4))
      for t in (256, 512, 1024)],
    Case("odd_tiny", width=1, height=1, tile=16),
    Case("odd_thin", width=1000, height=3, tile=128),
    # Interleave.
    Case("interleave_pixel", bands=4, interleave="pixel", predictor=2),
    Case("interleave_band", bands=4, interleave="band", predictor=2, overviews=(2,)),
    # BigTIFF and byte order.
    Case("bigtiff", bigtiff=True, predictor=2, overviews=(2, 4)),
    Case("bigendian", big_endian=True, dtype="int16", predictor=2, nodata=-1),
    Case("bigendian_bigtiff", big_endian=True, bigtiff=True, dtype="float64", predictor=3),
    Case("tifffile_bigendian", writer="tifffile", big_endian=True, dtype="uint16",
         compress="zlib", predictor=2),
    # CRSs.
    Case("crs_4326", crs="EPSG:4326", transform=(-10.0, 0.001, 0.0, 40.0, 0.0, -0.001)),
    Case("crs_3857", crs="EPSG:3857", transform=(1.0e6, 30.0, 0.0, 6.0e6, 0.0, -30.0)),
    Case("crs_32760_south", crs="EPSG:32760", transform=(300000.0, 20.0, 0.0, 6.0e6, 0.0, -20.0)),
    Case("crs_3035_laea", crs="EPSG:3035", transform=(4.0e6, 100.0, 0.0, 3.0e6, 0.0, -100.0)),
    Case("crs_2056_swiss", crs="EPSG:2056", transform=(2.6e6, 2.0, 0.0, 1.2e6, 0.0, -2.0)),
    Case("crs_custom_aea", crs=_utm_custom_aea(), transform=(0.0, 30.0, 0.0, 0.0, 0.0, -30.0)),
    Case("crs_custom_lcc", crs="+proj=lcc +lat_0=41.5 +lon_0=-3.7 +lat_1=40.1 +lat_2=43.3 "
         "+x_0=500000 +y_0=300000 +ellps=intl +units=m +no_defs",
         transform=(400000.0, 25.0, 0.0, 320000.0, 0.0, -25.0)),
    Case("crs_custom_tm_usft", crs="+proj=tmerc +lat_0=31.1 +lon_0=-100.55 +k=0.99991 "
         "+x_0=200000.0001016 +y_0=0 +ellps=clrk66 +units=us-ft +no_defs",
         transform=(600000.0, 30.0, 0.0, 400000.0, 0.0, -30.0)),
    Case("crs_custom_geographic", crs="+proj=longlat +a=6378100 +rf=299.5 +no_defs",
         transform=(5.0, 0.01, 0.0, 45.0, 0.0, -0.01)),
    Case("crs_custom_polar", crs="+proj=stere +lat_0=90 +lat_ts=71 +lon_0=-39 +x_0=0 +y_0=0 "
         "+ellps=WGS84 +units=m +no_defs",
         transform=(-5.0e5, 100.0, 0.0, -1.0e6, 0.0, -100.0)),
    Case("crs_custom_sinu", crs="+proj=sinu +lon_0=0 +x_0=0 +y_0=0 +R=6371007.181 +units=m "
         "+no_defs", transform=(-2.0e6, 463.3, 0.0, 5.5e6, 0.0, -463.3)),
    # Orientation and registration.
    Case("south_up", transform=(500000.0, 10.0, 0.0, 4000000.0, 0.0, 10.0)),
    Case("south_up_multiband", bands=3, interleave="band", dtype="int8", nodata=-128,
         transform=(200000.0, 10.0, 0.0, 5000000.0, 0.0, 10.0)),
    Case("pixel_is_point", point=True),
    Case("pixel_is_point_4326", point=True, crs="EPSG:4326",
         transform=(100.0, 0.05, 0.0, 10.0, 0.0, -0.05)),
    # Masks, overviews, metadata.
    Case("mask", mask=True, dtype="uint8", bands=3),
    Case("mask_overviews", mask=True, overviews=(2, 4), width=1100, height=900),
    Case("cog_driver", driver="COG", dtype="uint16", bands=2, width=2000, height=1500,
         nodata=0, options={"predictor": "YES", "overview_resampling": "average"}),
    Case("cog_driver_512", driver="COG", tile=512, width=3000, height=2500,
         options={"predictor": "YES"}),
    Case("cog_mask", driver="COG", dtype="uint8", bands=3, width=1200, height=1100, mask=True),
    Case("scale_offset", bands=2, scales=(0.0001, 0.01), offsets=(-0.1, 5.0),
         descriptions=("red", "nir"), nodata=0),
]


def generate(directory: Path) -> dict[str, tuple[Case, Path]]:
    """Write every case into ``directory``; returns ``{name: (case, path)}``."""
    directory.mkdir(parents=True, exist_ok=True)
    return {c.name: (c, c.write(directory)) for c in CASES}
