"""Sentinel-2 L2A scenes shaped like Earth Search v1 items, backed by real small COGs.

:func:`write_items` writes COGs with rasterio (the ``COG`` driver: uint16, DEFLATE,
predictor 2, 512-pixel blocks, nodata 0, overviews) under ``root`` in Earth Search's
``sentinel-s2-l2a-cogs/<zone>/<band>/<square>/<year>/<month>/<id>/<file>.tif`` layout
and returns STAC item dicts (``collection="sentinel-2-l2a"``) whose GeoTIFF assets
point at ``base_url`` (a :class:`tests.support.servers.RangeServer` serving ``root``).

Scenes are 1100 x 1100 pixels at 10 m (partial edge tiles and two overviews),
550 x 550 at 20 m (one overview), 184 x 184 at 60 m (one partial tile). ``red``
and ``nir`` are written per scene with distinct data (so their tile byte counts
differ from scene to scene); the other bands of a tile are hard links to one
file per resolution, still one path per asset as on Earth Search. Partial
scenes have a nodata corner in ``red``/``nir`` and a footprint without it.

Assets that are not GeoTIFF data (``thumbnail``, ``granule_metadata``,
``tileinfo_metadata``, the ``*-jp2`` variants) and the ``visual`` asset (a
GeoTIFF without the ``data`` role) point at URLs that do not exist: a builder
must never request them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "BANDS",
    "COG_TYPE",
    "NON_GEOTIFF_ASSETS",
    "TILES",
    "BandInfo",
    "Tile",
    "href_path",
    "write_items",
]

COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
COLLECTION = "sentinel-2-l2a"
#: Where item links point: a closed loopback port, so nothing ever follows them off-host.
DEFAULT_API = "http://127.0.0.1:9/v1"


@dataclass(frozen=True)
class BandInfo:
    """One Earth Search Sentinel-2 asset that is a COG."""

    key: str
    file: str
    gsd: int
    common_name: str | None
    description: str
    wavelength: float | None = None
    fwhm: float | None = None


BANDS: tuple[BandInfo, ...] = (
    BandInfo("coastal", "B01", 60, "coastal", "Coastal aerosol (band 1)", 0.443, 0.027),
    BandInfo("blue", "B02", 10, "blue", "Blue (band 2)", 0.49, 0.098),
    BandInfo("green", "B03", 10, "green", "Green (band 3)", 0.56, 0.045),
    BandInfo("red", "B04", 10, "red", "Red (band 4)", 0.665, 0.038),
    BandInfo("rededge1", "B05", 20, "rededge", "Red edge 1 (band 5)", 0.704, 0.019),
    BandInfo("rededge2", "B06", 20, "rededge", "Red edge 2 (band 6)", 0.74, 0.018),
    BandInfo("rededge3", "B07", 20, "rededge", "Red edge 3 (band 7)", 0.783, 0.028),
    BandInfo("nir", "B08", 10, "nir", "NIR 1 (band 8)", 0.842, 0.145),
    BandInfo("nir08", "B8A", 20, "nir08", "NIR 2 (band 8A)", 0.865, 0.033),
    BandInfo("nir09", "B09", 60, "nir09", "NIR 3 (band 9)", 0.945, 0.026),
    BandInfo("swir16", "B11", 20, "swir16", "SWIR 1 (band 11)", 1.61, 0.143),
    BandInfo("swir22", "B12", 20, "swir22", "SWIR 2 (band 12)", 2.19, 0.242),
    BandInfo("scl", "SCL", 20, None, "Scene classification map (SCL)"),
)
NON_GEOTIFF_ASSETS = ("thumbnail", "granule_metadata", "tileinfo_metadata")
_UNIQUE = ("red", "nir")  # written per scene; the rest are hard links per tile
_SIZE = {10: 1100, 20: 550, 60: 184}


@dataclass(frozen=True)
class Tile:
    """An MGRS tile: where its scenes sit and when they were taken."""

    code: str
    epsg: int
    x0: float
    y0: float
    first: dt.datetime
    scenes: int

    @property
    def zone(self) -> int:
        return int(self.code[:2])

    @property
    def band(self) -> str:
        return self.code[2]

    @property
    def square(self) -> str:
        return self.code[3:]


TILES: tuple[Tile, ...] = (
    Tile("33TUM", 32633, 300000.0, 5000040.0,
         dt.datetime(2024, 5, 3, 10, 7, 41, 612000, tzinfo=dt.UTC), 9),
    Tile("32TNT", 32632, 499980.0, 5200020.0,
         dt.datetime(2024, 5, 1, 10, 27, 19, 24000, tzinfo=dt.UTC), 8),
    Tile("32TMT", 32632, 399960.0, 5200020.0,
         dt.datetime(2024, 5, 1, 10, 27, 22, 991000, tzinfo=dt.UTC), 8),
)


def href_path(href: str) -> str:
    """The URL path of an href, as :class:`tests.support.servers.RangeServer` records it."""
    from urllib.parse import urlsplit

    return urlsplit(href).path


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _pattern(h: int, w: int, seed: int, dtype: str) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    fx, fy = 23.0 + 3.1 * (seed % 7), 31.0 + 2.3 * (seed % 11)
    v = np.sin(x / fx + seed) * np.cos(y / fy - 0.5 * seed)
    out: np.ndarray
    if dtype == "uint8":  # a scene classification: classes 1..11
        out = (1 + ((v + 1.0) * 5.0)).astype(np.uint8)
    else:
        out = (1500.0 + 1200.0 * v + 7.0 * (seed % 13)).astype(np.uint16)
    return out


def _write_cog(path: Path, data: np.ndarray, *, epsg: int, x0: float, y0: float,
               gsd: float) -> None:
    import rasterio
    from affine import Affine
    from rasterio.crs import CRS

    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = data.shape
    profile: dict[str, Any] = {
        "driver": "COG", "width": w, "height": h, "count": 1, "dtype": str(data.dtype),
        "crs": CRS.from_epsg(epsg), "transform": Affine(gsd, 0.0, x0, 0.0, -gsd, y0),
        "compress": "DEFLATE", "predictor": 2, "blocksize": 512, "nodata": 0,
        "level": 1, "overview_resampling": "nearest",  # fast to write; layout unchanged
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(path, "w", **profile) as ds:
            ds.write(data, 1)


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _cut_fraction(i: int) -> float:
    """Fraction of the west/north corner cut off a partial scene (0: a full scene)."""
    return 0.4 if i % 4 == 1 else 0.0


def _footprint(tile: Tile, cut: float) -> dict[str, Any]:
    import pyproj

    n = _SIZE[10]
    px = [(0.0, 0.0), (n, 0.0), (n, n), (0.0, n)] if not cut else [
        (cut * n, 0.0), (n, 0.0), (n, n), (0.0, n), (0.0, cut * n)]
    xs = [tile.x0 + 10.0 * c for c, _ in px]
    ys = [tile.y0 - 10.0 * r for _, r in px]
    to_ll = pyproj.Transformer.from_crs(tile.epsg, 4326, always_xy=True)
    lon, lat = to_ll.transform(xs, ys)
    ring = [[float(a), float(b)] for a, b in zip(lon, lat, strict=True)]
    ring.append(ring[0])
    return {"type": "Polygon", "coordinates": [ring]}


def _bbox(geometry: dict[str, Any]) -> list[float]:
    ring = geometry["coordinates"][0]
    xs = [p[0] for p in ring]
    ys = [p[1] for p in ring]
    return [min(xs), min(ys), max(xs), max(ys)]


def _asset(band: BandInfo, href: str, tile: Tile) -> dict[str, Any]:
    n = _SIZE[band.gsd]
    rb: dict[str, Any] = {"nodata": 0, "data_type": "uint8" if band.key == "scl" else "uint16",
                          "spatial_resolution": band.gsd}
    asset: dict[str, Any] = {
        "href": href,
        "type": COG_TYPE,
        "title": (f"{band.description} - {band.gsd}m" if band.key != "scl"
                  else band.description),
        "proj:shape": [n, n],
        "proj:transform": [band.gsd, 0, tile.x0, 0, -band.gsd, tile.y0],
    }
    if band.key == "scl":
        asset["raster:bands"] = [rb]
        asset["roles"] = ["data"]
        return asset
    asset["eo:bands"] = [{
        "name": band.key, "common_name": band.common_name, "description": band.description,
        "center_wavelength": band.wavelength, "full_width_half_max": band.fwhm,
    }]
    asset["gsd"] = band.gsd
    rb.update({"bits_per_sample": 15, "scale": 0.0001, "offset": -0.1})
    asset["raster:bands"] = [rb]
    asset["roles"] = ["data", "reflectance"]
    return asset


def _properties(tile: Tile, when: dt.datetime, *, i: int, k: int, platform: str,
                item_id: str, cut: float) -> dict[str, Any]:
    created = when + dt.timedelta(hours=6, minutes=17, seconds=k)
    cloud = [12.533, 0.0, 47.25, 30.0, 3.71, 88.06, 29.999, 61.4, 9.1, 35.2, 71.9][i % 11]
    product = (f"S2{platform[-1].upper()}_MSIL2A_{when:%Y%m%dT%H%M%S}_N0510_R022_T{tile.code}_"
               f"{created:%Y%m%dT%H%M%S}.SAFE")
    s3_path = (f"s3://sentinel-cogs/sentinel-s2-l2a-cogs/{tile.zone}/{tile.band}/{tile.square}/"
               f"{when.year}/{when.month}/{item_id}")
    return {
        "created": _iso(created),
        "platform": platform,
        "constellation": "sentinel-2",
        "instruments": ["msi"],
        "eo:cloud_cover": cloud,
        "proj:epsg": tile.epsg,
        "mgrs:utm_zone": tile.zone,
        "mgrs:latitude_band": tile.band,
        "mgrs:grid_square": tile.square,
        "grid:code": f"MGRS-{tile.code}",
        "view:sun_azimuth": round(140.0 + 1.37 * i, 6),
        "view:sun_elevation": round(55.0 + 0.71 * k, 6),
        "s2:degraded_msi_data_percentage": 0,
        "s2:nodata_pixel_percentage": round(100.0 * cut * cut / 2.0, 6),
        "s2:saturated_defective_pixel_percentage": 0,
        "s2:dark_features_percentage": round(0.1 * (i % 5), 6),
        "s2:cloud_shadow_percentage": round(cloud / 9.0, 6),
        "s2:vegetation_percentage": round(60.0 - cloud / 2.0, 6),
        "s2:not_vegetated_percentage": 17.5,
        "s2:water_percentage": 4.25,
        "s2:unclassified_percentage": 0.5,
        "s2:medium_proba_clouds_percentage": round(cloud * 0.3, 6),
        "s2:high_proba_clouds_percentage": round(cloud * 0.5, 6),
        "s2:thin_cirrus_percentage": round(cloud * 0.2, 6),
        "s2:snow_ice_percentage": 0,
        "s2:product_type": "S2MSI2A",
        "s2:processing_baseline": "05.10",
        "s2:product_uri": product,
        "s2:generation_time": _iso(created - dt.timedelta(hours=5)),
        "s2:datatake_id": f"GS2{platform[-1].upper()}_{when:%Y%m%dT%H%M%S}_0{37900 + i}_N05.10",
        "s2:datatake_type": "INS-NOBS",
        "s2:datastrip_id": (f"S2{platform[-1].upper()}_OPER_MSI_L2A_DS_2BPS_"
                            f"{created:%Y%m%dT%H%M%S}_S{when:%Y%m%dT%H%M%S}_N05.10"),
        "s2:granule_id": (f"S2{platform[-1].upper()}_OPER_MSI_L2A_TL_2BPS_"
                          f"{created:%Y%m%dT%H%M%S}_A0{37900 + i}_T{tile.code}_N05.10"),
        "s2:reflectance_conversion_factor": round(0.97 + 0.0005 * k, 6),
        "datetime": _iso(when),
        "s2:sequence": "0",
        "earthsearch:s3_path": s3_path,
        "earthsearch:payload_id": (f"roda-sentinel2/workflow-sentinel2-to-stac/"
                                   f"{hashlib.sha1(item_id.encode()).hexdigest()[:32]}"),
        "earthsearch:boa_offset_applied": True,
        "processing:software": {"sentinel2-to-stac": "0.1.1"},
        "updated": _iso(created + dt.timedelta(minutes=3)),
    }


def write_items(root: str | Path, base_url: str, *, api_url: str = DEFAULT_API,
                ) -> list[dict[str, Any]]:
    """Write the COGs under ``root``; return Earth Search-shaped items (newest first).

    Args:
        root: directory the range server serves.
        base_url: the range server's URL (``http://127.0.0.1:<port>``).
        api_url: where item links point (never followed by the code under test).
    """
    root = Path(root)
    base = base_url.rstrip("/")
    items: list[dict[str, Any]] = []
    jobs: list[tuple[Path, int, float, Tile]] = []
    i = 0
    for t_index, tile in enumerate(TILES):
        prefix = (f"sentinel-s2-l2a-cogs/{tile.zone}/{tile.band}/{tile.square}")
        shared_dir = root / "_shared" / tile.code
        templates: dict[int | str, Path] = {}
        for gsd in (10, 20, 60):
            templates[gsd] = shared_dir / f"r{gsd}m.tif"
            _write_cog(templates[gsd], _pattern(_SIZE[gsd], _SIZE[gsd], 100 + gsd + t_index,
                                                "uint16"),
                       epsg=tile.epsg, x0=tile.x0, y0=tile.y0, gsd=gsd)
        templates["scl"] = shared_dir / "scl.tif"
        _write_cog(templates["scl"], _pattern(_SIZE[20], _SIZE[20], 7 + t_index, "uint8"),
                   epsg=tile.epsg, x0=tile.x0, y0=tile.y0, gsd=20)
        for k in range(tile.scenes):
            when = tile.first + dt.timedelta(days=5 * k)
            platform = "sentinel-2a" if (k + t_index) % 2 == 0 else "sentinel-2b"
            item_id = f"S2{platform[-1].upper()}_{tile.code}_{when:%Y%m%d}_0_L2A"
            folder = f"{prefix}/{when.year}/{when.month}/{item_id}"
            cut = _cut_fraction(i)
            assets: dict[str, Any] = {}
            for band in BANDS:
                rel = f"{folder}/{band.file}.tif"
                if band.key in _UNIQUE:
                    jobs.append((root / rel, i * 2 + (band.key == "nir"), cut, tile))
                else:
                    _link(templates["scl" if band.key == "scl" else band.gsd], root / rel)
                assets[band.key] = _asset(band, f"{base}/{rel}", tile)
            tiles_path = (f"{base}/tiles/{tile.zone}/{tile.band}/{tile.square}/{when.year}/"
                          f"{when.month}/{when.day}/0")
            assets["thumbnail"] = {"href": f"{base}/{folder}/thumbnail.jpg", "type": "image/jpeg",
                                   "title": "Thumbnail image", "roles": ["thumbnail"]}
            assets["granule_metadata"] = {"href": f"{base}/{folder}/granule_metadata.xml",
                                          "type": "application/xml", "roles": ["metadata"]}
            assets["tileinfo_metadata"] = {"href": f"{base}/{folder}/tileinfo_metadata.json",
                                           "type": "application/json", "roles": ["metadata"]}
            assets["visual"] = {"href": f"{base}/{folder}/TCI.tif", "type": COG_TYPE,
                                "title": "True color image", "roles": ["visual"],
                                "proj:shape": [_SIZE[10], _SIZE[10]]}
            for band in BANDS:
                sub = "R60m" if band.gsd == 60 else ("R20m" if band.gsd == 20 else "R10m")
                jp2 = {k2: v for k2, v in assets[band.key].items() if k2 not in ("href", "type")}
                assets[f"{band.key}-jp2"] = {"href": f"{tiles_path}/{sub}/{band.file}.jp2",
                                             "type": "image/jp2", **jp2}
            geometry = _footprint(tile, cut)
            items.append({
                "type": "Feature",
                "stac_version": "1.0.0",
                "id": item_id,
                "properties": _properties(tile, when, i=i, k=k, platform=platform,
                                          item_id=item_id, cut=cut),
                "geometry": geometry,
                "links": [
                    {"rel": "self", "type": "application/geo+json",
                     "href": f"{api_url}/collections/{COLLECTION}/items/{item_id}"},
                    {"rel": "canonical", "type": "application/json",
                     "href": f"s3://sentinel-cogs/{folder}/{item_id}.json"},
                    {"rel": "license",
                     "href": "https://sentinel.esa.int/documents/247904/690755/"
                             "Sentinel_Data_Legal_Notice"},
                    {"rel": "derived_from", "type": "application/geo+json",
                     "href": f"{api_url}/collections/sentinel-2-l1c/items/"
                             f"{item_id.replace('L2A', 'L1C')}"},
                    {"rel": "parent", "type": "application/json",
                     "href": f"{api_url}/collections/{COLLECTION}"},
                    {"rel": "collection", "type": "application/json",
                     "href": f"{api_url}/collections/{COLLECTION}"},
                    {"rel": "root", "type": "application/json", "href": api_url},
                    {"rel": "thumbnail", "href": f"{api_url}/collections/{COLLECTION}/items/"
                                                  f"{item_id}/thumbnail"},
                ],
                "assets": assets,
                "bbox": _bbox(geometry),
                "stac_extensions": [
                    "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
                    "https://stac-extensions.github.io/file/v2.1.0/schema.json",
                    "https://stac-extensions.github.io/grid/v1.1.0/schema.json",
                    "https://stac-extensions.github.io/mgrs/v1.0.0/schema.json",
                    "https://stac-extensions.github.io/processing/v1.1.0/schema.json",
                    "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
                    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
                    "https://stac-extensions.github.io/sentinel-2/v1.0.0/schema.json",
                    "https://stac-extensions.github.io/view/v1.0.0/schema.json",
                ],
                "collection": COLLECTION,
            })
            i += 1
    # GDAL releases the GIL while it compresses: write the per-scene files in threads.
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        list(pool.map(lambda job: _write_scene_band(*job), jobs))
    items.sort(key=lambda it: it["properties"]["datetime"], reverse=True)
    return items


def _write_scene_band(path: Path, seed: int, cut: float, tile: Tile) -> None:
    n = _SIZE[10]
    data = _pattern(n, n, seed, "uint16")
    if cut:
        r, c = np.mgrid[0:n, 0:n]
        data[(c / n + r / n) < cut] = 0
    _write_cog(path, data, epsg=tile.epsg, x0=tile.x0, y0=tile.y0, gsd=10)
