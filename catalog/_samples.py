"""Sample cloud-optimized GeoTIFFs for the demo and benchmarks, written without GDAL.

The writer lays files out as COGs are laid out: every IFD and tag value at the
front (so one ranged GET reads the whole header), then tile data from the
smallest overview to full resolution. Pixels are smooth synthetic "landscapes"
so compression ratios and overviews look like real imagery.
"""

from __future__ import annotations

import datetime as dt
import os
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["SampleScene", "synthetic_scene", "write_cog", "write_sample_scenes"]

_SAMPLE_FORMAT = {"u": 1, "i": 2, "f": 3}


def _overview(a: np.ndarray) -> np.ndarray:
    """Halve a [C, H, W] array by 2x2 averaging (odd edges repeat the last pixel)."""
    c, h, w = a.shape
    padded = np.pad(a.astype(np.float64), ((0, 0), (0, h % 2), (0, w % 2)), mode="edge")
    out = padded.reshape(c, (h + 1) // 2, 2, (w + 1) // 2, 2).mean(axis=(2, 4))
    if a.dtype.kind in "iu":
        out = np.rint(out)
    result: np.ndarray = out.astype(a.dtype)
    return result


def _encode_tile(tile: np.ndarray, predictor: int, compression: int) -> bytes:
    """Encode one [th, tw, C] tile: horizontal differencing, then DEFLATE."""
    if predictor == 2:
        enc = tile.copy()
        enc[:, 1:, :] = tile[:, 1:, :] - tile[:, :-1, :]
        tile = enc
    raw = np.ascontiguousarray(tile).astype(tile.dtype.newbyteorder("<"), copy=False).tobytes()
    return zlib.compress(raw, 6) if compression == 8 else raw


def write_cog(
    path: str | os.PathLike[str],
    data: np.ndarray,
    *,
    geotransform: Sequence[float],
    epsg: int,
    nodata: float | None = None,
    tile: int = 256,
    overviews: int = 2,
    compression: str = "deflate",
    descriptions: Sequence[str] | None = None,
) -> int:
    """Write ``data`` (``[bands, height, width]``) as a COG; returns the file size.

    North-up, pixel-interleaved, little-endian classic TIFF with predictor 2
    (integers) and DEFLATE (or no) compression. ``epsg`` 4xxx codes are written
    as geographic, others as projected CRSs.
    """
    if data.ndim != 3:
        raise ValueError("data must be [bands, height, width]")
    comp = {"deflate": 8, "none": 1}[compression]
    predictor = 2 if data.dtype.kind in "iu" and comp == 8 else 1
    levels = [data]
    for _ in range(overviews):
        if min(levels[-1].shape[1:]) <= tile:
            break
        levels.append(_overview(levels[-1]))
    bands = data.shape[0]
    itemsize = data.dtype.itemsize
    fill = 0 if nodata is None else nodata

    encoded: list[list[bytes]] = []
    for lv in levels:
        _, h, w = lv.shape
        tiles = []
        for ty in range(0, h, tile):
            for tx in range(0, w, tile):
                block = np.full((tile, tile, bands), fill, dtype=lv.dtype)
                part = lv[:, ty : ty + tile, tx : tx + tile]
                block[: part.shape[1], : part.shape[2], :] = np.moveaxis(part, 0, -1)
                tiles.append(_encode_tile(block, predictor, comp))
        encoded.append(tiles)

    def entries_for(
        i: int, lv: np.ndarray
    ) -> list[tuple[int, int, list[int] | bytes | list[float]]]:
        _, h, w = lv.shape
        n = len(encoded[i])
        e: list[tuple[int, int, list[int] | bytes | list[float]]] = [
            (254, 4, [1 if i else 0]),
            (256, 4, [w]),
            (257, 4, [h]),
            (258, 3, [itemsize * 8] * bands),
            (259, 3, [comp]),
            (262, 3, [1]),
            (277, 3, [bands]),
            (284, 3, [1]),
            (317, 3, [predictor]),
            (322, 3, [tile]),
            (323, 3, [tile]),
            (324, 4, [0] * n),  # patched below
            (325, 4, [len(t) for t in encoded[i]]),
            (339, 3, [_SAMPLE_FORMAT[data.dtype.kind]] * bands),
        ]
        if bands > 1:
            e.append((338, 3, [0] * (bands - 1)))
        if i == 0:
            x0, dx, _, y0, _, dy = geotransform
            geographic = 4000 <= epsg < 5000
            keys = [
                1,
                1,
                0,
                3,
                1024,
                0,
                1,
                2 if geographic else 1,
                1025,
                0,
                1,
                1,
                2048 if geographic else 3072,
                0,
                1,
                epsg,
            ]
            e += [
                (33550, 12, [dx, -dy, 0.0]),
                (33922, 12, [0.0, 0.0, 0.0, x0, y0, 0.0]),
                (34735, 3, keys),
            ]
            if descriptions:
                items = "".join(
                    f'<Item name="DESCRIPTION" sample="{b}" role="description">{d}</Item>'
                    for b, d in enumerate(descriptions)
                )
                e.append((42112, 2, f"<GDALMetadata>{items}</GDALMetadata>\x00".encode()))
            if nodata is not None:
                e.append((42113, 2, f"{nodata:g}\x00".encode()))
        return sorted(e, key=lambda t: t[0])

    sizes = {2: 1, 3: 2, 4: 4, 12: 8}
    ifds = [entries_for(i, lv) for i, lv in enumerate(levels)]

    def value_bytes(typ: int, val: list[int] | bytes | list[float]) -> bytes:
        if isinstance(val, bytes):
            return val
        code = {3: "H", 4: "I", 12: "d"}[typ]
        return struct.pack(f"<{len(val)}{code}", *val)

    # Lay out: header, then per IFD its entries and out-of-line values.
    offset = 8
    ifd_offsets = []
    for e in ifds:
        ifd_offsets.append(offset)
        offset += 2 + 12 * len(e) + 4
        for typ, val in ((t, v) for _, t, v in e):
            n = len(val) * (1 if isinstance(val, bytes) else sizes[typ])
            if n > 4:
                offset += n + (n & 1)
    data_start = offset
    # Tile data: smallest overview first, full resolution last (COG order).
    tile_offsets: list[list[int]] = [[] for _ in levels]
    pos = data_start
    for i in reversed(range(len(levels))):
        for t in encoded[i]:
            tile_offsets[i].append(pos)
            pos += len(t)
    out = bytearray(b"II*\x00" + struct.pack("<I", ifd_offsets[0]))
    for i, entries in enumerate(ifds):
        e = [(tag, typ, tile_offsets[i] if tag == 324 else val) for tag, typ, val in entries]
        body = bytearray(struct.pack("<H", len(e)))
        values = bytearray()
        value_pos = ifd_offsets[i] + 2 + 12 * len(e) + 4
        for tag, typ, val in e:
            vb = value_bytes(typ, val)
            count = len(val)
            if len(vb) <= 4:
                body += struct.pack("<HHI", tag, typ, count) + vb.ljust(4, b"\x00")
            else:
                body += struct.pack("<HHII", tag, typ, count, value_pos + len(values))
                values += vb + (b"\x00" if len(vb) & 1 else b"")
        nxt = ifd_offsets[i + 1] if i + 1 < len(ifds) else 0
        body += struct.pack("<I", nxt)
        out += body + values
    assert len(out) == data_start, (len(out), data_start)
    with open(path, "wb") as fh:
        fh.write(out)
        for i in reversed(range(len(levels))):
            for t in encoded[i]:
                fh.write(t)
    return pos


def synthetic_scene(
    height: int, width: int, bands: int, seed: int, dtype: str = "uint16"
) -> np.ndarray:
    """Smooth fields plus texture, different per band, in a reflectance-like range."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.zeros((height, width), np.float32)
    for _ in range(6):
        fx, fy = rng.uniform(0.002, 0.02, 2)
        px, py = rng.uniform(0, 2 * np.pi, 2)
        base += np.sin(x * fx + px) * np.cos(y * fy + py)
    base = (base - base.min()) / (np.ptp(base) + 1e-6)
    out = np.empty((bands, height, width), dtype=dtype)
    for b in range(bands):
        texture = rng.normal(0, 0.03, (height, width)).astype(np.float32)
        v = np.clip(base * (0.6 + 0.15 * b) + 0.1 * b / max(bands, 1) + texture, 0, 1)
        out[b] = (v * 8000 + 200).astype(dtype)
    return out


@dataclass(frozen=True, slots=True)
class SampleScene:
    """A generated scene: id, date, and one file per band."""

    id: str
    datetime: dt.datetime
    epsg: int
    files: dict[str, str]


def write_sample_scenes(
    directory: str | os.PathLike[str],
    *,
    scenes: int = 6,
    size: int = 1024,
    bands: Sequence[str] = ("blue", "green", "red", "nir"),
) -> list[SampleScene]:
    """Write Sentinel-2-like scenes (one uint16 COG per band, two UTM zones) once.

    Files already present are kept, so repeated demo runs start at once.
    """
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for s in range(scenes):
        epsg = 32633 if s % 2 == 0 else 32634
        x0 = 600_000.0 + 2_000.0 * (s // 2)
        y0 = 5_200_000.0 - 1_500.0 * (s // 2)
        when = dt.datetime(2024, 3 + s, 1 + 3 * s, 10, 0, tzinfo=dt.UTC)
        scene_id = f"S2DEMO_{epsg % 100}_{when:%Y%m%d}"
        files = {}
        data: np.ndarray | None = None
        for b, band in enumerate(bands):
            path = root / f"{scene_id}_{band}.tif"
            files[band] = str(path)
            if path.exists():
                continue
            if data is None:
                data = synthetic_scene(size, size, len(bands), seed=1000 + s)
            tmp = path.with_suffix(".tif.partial")
            write_cog(
                tmp,
                data[b : b + 1],
                geotransform=(x0, 10.0, 0.0, y0, 0.0, -10.0),
                epsg=epsg,
                nodata=0,
                tile=256,
                overviews=2,
                descriptions=[band],
            )
            os.replace(tmp, path)
        out.append(SampleScene(scene_id, when, epsg, files))
    return out
