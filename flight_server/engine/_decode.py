"""Tile decoding with imagecodecs: every codec, predictor and layout the catalog admits.

Called from a thread pool: imagecodecs releases the GIL, so tiles decode in
parallel. Output is native-endian, shaped ``(tile_height, tile_width,
samples)`` for pixel-interleaved tiles and ``(tile_height, tile_width)`` for
one plane of a band-interleaved file; masks decode to booleans (True = valid).
A tile whose decoded size is over ``max_bytes`` (``max_tile_bytes``) is refused
before anything is decompressed or allocated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import imagecodecs
import numpy as np

from catalog import HeaderRecord, ImageRecord
from cogflight_core import DecodeError, LimitExceededError

from ._jpeg import decode_ycbcr
from ._windows import TileRef

__all__ = ["decode_mask_tile", "decode_tile"]

_DECOMPRESS: dict[int, Callable[[Any], Any]] = {
    1: lambda b: b,
    5: imagecodecs.lzw_decode,
    8: imagecodecs.zlib_decode,
    32946: imagecodecs.zlib_decode,
    32773: imagecodecs.packbits_decode,
    34925: imagecodecs.lzma_decode,
    50000: imagecodecs.zstd_decode,
}
_LERC_EXTRA: dict[int, Callable[[Any], Any]] = {
    1: imagecodecs.zlib_decode,
    2: imagecodecs.zstd_decode,
}


def _fail(tile: TileRef, why: str) -> DecodeError:
    return DecodeError(tile.href, why, (tile.offset, tile.offset + tile.length))


def _check_size(tile: TileRef, shape: tuple[int, ...], itemsize: int, limit: int | None) -> None:
    size = int(np.prod(shape, dtype=object)) * itemsize
    if limit is not None and size > limit:
        raise LimitExceededError(
            f"{tile.href}: a tile of {'x'.join(map(str, shape))} samples decodes to {size} "
            f"bytes, over the limit of {limit} bytes (max_tile_bytes); re-tile the file (e.g. "
            "gdal_translate -co TILED=YES -co BLOCKXSIZE=512 -co BLOCKYSIZE=512)"
        )


def decode_tile(
    data: bytes | memoryview, tile: TileRef, header: HeaderRecord, max_bytes: int | None = None
) -> np.ndarray:
    """Decode one image tile (refused before decoding when larger than ``max_bytes``).

    Raises:
        DecodeError: the bytes are not a valid tile of this file's codec and layout.
        LimitExceededError: the decoded tile would be larger than ``max_bytes``.
    """
    img = header.levels[tile.level]
    th, tw = img.tile_height, img.tile_width
    spp = header.samples if img.planar_config == 1 else 1
    dtype = np.dtype(header.dtype)
    _check_size(tile, (th, tw, spp), dtype.itemsize, max_bytes)
    try:
        if img.compression == 7:
            arr = _jpeg(data, img, spp)
        elif img.compression == 50001:
            arr = np.asarray(imagecodecs.webp_decode(bytes(data)))
        elif img.compression == 34887:
            arr = _lerc(data, img)
        else:
            arr = _raw(data, img, header, th, tw, spp, dtype)
    except DecodeError:
        raise
    except Exception as exc:  # imagecodecs raises codec-specific errors
        raise _fail(tile, f"{type(exc).__name__}: {exc}") from exc
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.shape[:2] != (th, tw) or arr.shape[2] < spp:
        raise _fail(tile, f"decoded shape {arr.shape} does not match tile {th}x{tw}x{spp}")
    if arr.dtype != dtype:
        arr = arr.astype(dtype)
    if arr.shape[2] != spp:
        arr = arr[:, :, :spp]
    return arr if img.planar_config == 1 else arr[:, :, 0]


def _raw(
    data: bytes | memoryview,
    img: ImageRecord,
    header: HeaderRecord,
    th: int,
    tw: int,
    spp: int,
    dtype: np.dtype,
) -> np.ndarray:
    n = th * tw * spp
    nbytes = n * dtype.itemsize
    if img.compression in (8, 32946):
        # libdeflate straight into the tile's final, writable buffer: one allocation per
        # tile, and the predictor is undone in place below.
        buf = np.empty(nbytes, dtype=np.uint8)
        try:
            imagecodecs.deflate_decode(data, out=buf)  # type: ignore[arg-type]
            raw: Any = buf
        except Exception:  # a short or oddly framed stream: let zlib say what is wrong
            raw = imagecodecs.zlib_decode(data)  # type: ignore[arg-type]
    else:
        raw = _DECOMPRESS[img.compression](data)
    if len(raw) < nbytes:
        raise ValueError(f"tile decompressed to {len(raw)} bytes, expected {nbytes}")
    if img.predictor == 3:
        # The floating-point predictor works on the byte-shuffled stream; the codec
        # restores native floats itself.
        shuffled = np.frombuffer(raw, dtype=dtype.newbyteorder("="), count=n).reshape(th, tw, spp)
        return np.asarray(imagecodecs.floatpred_decode(shuffled, axis=-2))
    arr = np.frombuffer(raw, dtype=dtype.newbyteorder(header.byte_order), count=n)
    arr = arr.reshape(th, tw, spp)
    if arr.dtype != dtype:  # big-endian file: swap once into a native, writable copy
        arr = arr.astype(dtype)
    if img.predictor == 2:
        as_int = arr.view(np.dtype(f"u{dtype.itemsize}")) if dtype.kind == "f" else arr
        if as_int.flags.writeable:
            imagecodecs.delta_decode(as_int, axis=1, out=as_int)
            return arr
        out = np.asarray(imagecodecs.delta_decode(as_int, axis=1))
        return out.view(dtype) if dtype.kind == "f" else out
    return arr


def _jpeg(data: bytes | memoryview, img: ImageRecord, spp: int) -> np.ndarray:
    colorspace: int | None = None
    outcolorspace: int | None = None
    if img.planar_config != 1:
        outcolorspace = 1
    elif img.photometric == 6:  # YCbCr: GDAL returns RGB
        # 4:2:0 and 4:4:4 as GDAL's libjpeg 9 decodes them; other subsamplings below.
        rgb = decode_ycbcr(bytes(data), img.jpeg_tables, img.tile_height, img.tile_width)
        if rgb is not None:
            return rgb
        outcolorspace = 2
    elif img.photometric == 2:
        colorspace, outcolorspace = 2, 2
    return np.asarray(
        imagecodecs.jpeg8_decode(
            bytes(data),
            tables=img.jpeg_tables,
            colorspace=colorspace,
            outcolorspace=outcolorspace,
            shape=(img.tile_height, img.tile_width),
        )
    )


def _lerc(data: bytes | memoryview, img: ImageRecord) -> np.ndarray:
    extra = (img.lerc_parameters or (0, 0))[1:2]
    blob = bytes(data)
    if extra and extra[0] in _LERC_EXTRA:
        blob = _LERC_EXTRA[extra[0]](blob)
    out = imagecodecs.lerc_decode(blob)
    return np.asarray(out[0] if isinstance(out, tuple) else out)


def decode_mask_tile(
    data: bytes | memoryview, tile: TileRef, header: HeaderRecord, max_bytes: int | None = None
) -> np.ndarray:
    """Decode one internal-mask tile to booleans (True = valid)."""
    img = header.masks[tile.level]
    assert img is not None
    th, tw = img.tile_height, img.tile_width
    _check_size(tile, (th, tw), 1, max_bytes)
    try:
        raw = _DECOMPRESS[img.compression](bytes(data))
        if img.bits_per_sample == 1:
            row_bytes = (tw + 7) // 8
            packed = np.frombuffer(raw, dtype=np.uint8, count=th * row_bytes).reshape(th, row_bytes)
            return np.unpackbits(packed, axis=1)[:, :tw].astype(bool)
        return np.frombuffer(raw, dtype=np.uint8, count=th * tw).reshape(th, tw) > 0
    except Exception as exc:
        raise _fail(tile, f"mask tile: {type(exc).__name__}: {exc}") from exc
