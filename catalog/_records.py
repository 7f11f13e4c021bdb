"""The parsed header of one GeoTIFF as records: every image, overview and mask.

A :class:`HeaderRecord` holds everything the server needs to read any pixel
of a file without touching its header again: the full-resolution image and
every overview and internal mask (tile grids, offsets, byte counts, codec
parameters), the dtype, the affine geotransform, the CRS, nodata and the
per-band scale/offset/description from ``GDAL_METADATA``. Parsing lives in
``_header``; these records are plain values, shared read-only between threads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

import numpy as np
import pyproj

from ._identity import ObjectIdentity
from ._proj import crs as crs_of

__all__ = ["COMPRESSIONS", "HeaderRecord", "ImageRecord", "levels_summary", "parse_nodata"]

#: TIFF compression codes cogflight can decode, by name.
COMPRESSIONS: dict[int, str] = {
    1: "none",
    5: "lzw",
    7: "jpeg",
    8: "deflate",
    32946: "deflate",
    32773: "packbits",
    34887: "lerc",
    34925: "lzma",
    50000: "zstd",
    50001: "webp",
}


@dataclass(frozen=True, slots=True, eq=False)
class ImageRecord:
    """One tiled image of a file: full resolution, an overview or a mask."""

    width: int
    height: int
    tile_width: int
    tile_height: int
    compression: int
    predictor: int
    photometric: int
    planar_config: int
    bits_per_sample: int
    tile_offsets: np.ndarray
    tile_byte_counts: np.ndarray
    jpeg_tables: bytes | None = None
    ycbcr_subsampling: tuple[int, int] | None = None
    lerc_parameters: tuple[int, ...] | None = None

    @property
    def tiles_across(self) -> int:
        """Tile columns."""
        return -(-self.width // self.tile_width)

    @property
    def tiles_down(self) -> int:
        """Tile rows."""
        return -(-self.height // self.tile_height)

    def tile_index(self, row: int, col: int, plane: int = 0) -> int:
        """Index into ``tile_offsets`` of a tile (``plane`` for band-interleaved files)."""
        return (plane * self.tiles_down + row) * self.tiles_across + col

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ImageRecord):
            return NotImplemented
        return all(
            np.array_equal(getattr(self, f), getattr(other, f))
            if f in ("tile_offsets", "tile_byte_counts")
            else getattr(self, f) == getattr(other, f)
            for f in self.__dataclass_fields__
        )

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, eq=False)
class HeaderRecord:
    """Everything needed to read any pixel of one GeoTIFF."""

    href: str
    byte_order: Literal["<", ">"]
    bigtiff: bool
    dtype: str
    samples: int
    sample_format: int
    extra_samples: tuple[int, ...]
    crs: str
    geotransform: tuple[float, float, float, float, float, float]
    raster_type: Literal["area", "point"]
    nodata: str | None
    scales: tuple[float | None, ...]
    offsets: tuple[float | None, ...]
    descriptions: tuple[str | None, ...]
    gdal_metadata: str | None
    levels: tuple[ImageRecord, ...]
    masks: tuple[ImageRecord | None, ...]
    round_trips: int = field(default=0, compare=False)
    header_bytes: int = field(default=0, compare=False)
    identity: ObjectIdentity | None = field(default=None, compare=False)
    """The object as indexed (size, ETag, modification time), where the store said."""

    @property
    def width(self) -> int:
        """Full-resolution width in pixels."""
        return self.levels[0].width

    @property
    def height(self) -> int:
        """Full-resolution height in pixels."""
        return self.levels[0].height

    @property
    def overview_count(self) -> int:
        """Number of reduced-resolution images."""
        return len(self.levels) - 1

    @property
    def has_mask(self) -> bool:
        """Whether the full-resolution image has an internal mask."""
        return bool(self.masks) and self.masks[0] is not None

    @property
    def pyproj_crs(self) -> pyproj.CRS:
        """The CRS as a pyproj object (cached per thread: pyproj objects are not shareable)."""
        return crs_of(self.crs)

    @cached_property
    def nodata_value(self) -> float | int | None:
        """Nodata parsed for this file's dtype (int for integer dtypes, float otherwise)."""
        return parse_nodata(self.nodata, self.dtype)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(xmin, ymin, xmax, ymax)`` of the full raster in its CRS."""
        x0, dx, _, y0, _, dy = self.geotransform
        xs = (x0, x0 + dx * self.width)
        ys = (y0, y0 + dy * self.height)
        return (min(xs), min(ys), max(xs), max(ys))

    def level_geotransform(self, level: int) -> tuple[float, float, float, float, float, float]:
        """Geotransform of an overview level, scaled as GDAL does (by the size ratio)."""
        x0, dx, rx, y0, ry, dy = self.geotransform
        img = self.levels[level]
        sx = self.width / img.width
        sy = self.height / img.height
        return (x0, dx * sx, rx, y0, ry, dy * sy)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HeaderRecord):
            return NotImplemented
        return all(
            getattr(self, f) == getattr(other, f)
            for f, spec in self.__dataclass_fields__.items()
            if spec.compare
        )

    __hash__ = None  # type: ignore[assignment]


def parse_nodata(text: str | None, dtype: str) -> float | int | None:
    """Parse a GDAL_NODATA string for a dtype; None when absent or unparsable."""
    if text is None:
        return None
    t = text.strip()
    if not t:
        return None
    try:
        value = float(t)
    except ValueError:
        return None
    if np.dtype(dtype).kind in "iu":
        if not math.isfinite(value):
            return None
        try:
            return int(t)
        except ValueError:
            return int(value)
    return value


def levels_summary(levels: Sequence[ImageRecord]) -> str:
    """``"10980x10980, 5490x5490, ..."`` for logs."""
    return ", ".join(f"{lv.width}x{lv.height}" for lv in levels)
