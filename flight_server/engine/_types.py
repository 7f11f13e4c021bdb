"""The engine's value types: grids, planned chips, plans, batches, results, statistics.

Plain data, no behaviour beyond derived properties; every stage passes these
forward. Instances are immutable except the arrays of a batch, which the
engine hands over and never touches again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
from shapely.geometry.base import BaseGeometry

from catalog import Band
from cogflight_core import ChipReadError

from ._cache import CacheStats
from ._windows import GeoTransform

__all__ = ["Chip", "ChipBatch", "ChipPlan", "ChipResult", "EngineStats", "Grid", "concat_batches"]


@dataclass(frozen=True, slots=True)
class Grid:
    """An output pixel grid: CRS, GDAL-order geotransform and size."""

    crs: str
    transform: GeoTransform
    height: int
    width: int

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(xmin, ymin, xmax, ymax)`` in the grid CRS."""
        x0, dx, _, y0, _, dy = self.transform
        xs = (x0, x0 + dx * self.width)
        ys = (y0, y0 + dy * self.height)
        return (min(xs), min(ys), max(xs), max(ys))


@dataclass(frozen=True, slots=True)
class Chip:
    """One planned chip: which geometry, which scenes (a time series: by date), which grid."""

    index: int
    geometry_index: int
    rows: tuple[int, ...]  # one scene, or a time series ordered by datetime
    grid: Grid
    polygon: BaseGeometry | None  # in the grid CRS, when masking


@dataclass
class ChipBatch:
    """A batch of chips: pixels, validity and per-chip metadata.

    ``chips`` is ``[N, C, H, W]`` (``[N, T, C, H, W]`` for time series),
    ``valid`` is ``[N, H, W]`` (``[N, T, H, W]``) with True where a pixel holds
    data: inside the raster, inside the polygon when masking, set in the
    file's internal mask, and no band equal to its nodata.
    """

    chips: np.ndarray
    valid: np.ndarray
    meta: pa.Table
    bands: tuple[Band, ...]
    time_series: bool = False

    def __len__(self) -> int:
        return int(self.chips.shape[0])

    def to_record_batch(self) -> pa.RecordBatch:
        """The batch as Arrow, pixels as ``arrow.fixed_shape_tensor`` (zero-copy)."""
        from ._arrow import batch_to_arrow

        return batch_to_arrow(self)


@dataclass
class ChipResult:
    """Every chip of a request in memory, plus the failures of ``on_error="skip"``."""

    chips: np.ndarray
    valid: np.ndarray
    meta: pa.Table
    bands: tuple[Band, ...]
    failures: list[ChipReadError] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.chips.shape[0])


@dataclass(frozen=True)
class EngineStats:
    """A snapshot of what an engine did since it started."""

    requests: int
    bytes_fetched: int
    tiles_decoded: int
    decode_seconds: float
    chips: int
    errors: int
    retries: int
    cache: CacheStats


@dataclass(frozen=True)
class ChipPlan:
    """What a request will produce, decided before any pixel is read.

    ``shape`` is every chip's shape (``[C, H, W]`` or ``[T, C, H, W]``), computed over
    all chips of the request so that every shard of it agrees; ``chips`` counts the
    chips of this shard (``total_chips`` those of the whole request).
    """

    collection: str
    bands: tuple[Band, ...]
    dtype: np.dtype
    shape: tuple[int, ...]
    chips: int
    total_chips: int
    time_series: bool
    schema: pa.Schema
    items: tuple[Chip, ...] = field(repr=False, default=())

    @property
    def chip_bytes(self) -> int:
        """Bytes of one chip's pixels."""
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    @property
    def grid_shape(self) -> tuple[int, int]:
        """``(height, width)`` of every chip's pixels."""
        return (self.shape[-2], self.shape[-1])

    @property
    def steps(self) -> int | None:
        """Time steps per chip (None unless a time series)."""
        return self.shape[0] if self.time_series else None

    def empty_result(self, failures: list[ChipReadError]) -> ChipResult:
        """The result of a request that produced no chip (shapes and schema still hold)."""
        valid_shape = (self.shape[0], *self.shape[2:]) if self.time_series else self.shape[1:]
        meta = pa.schema([f for f in self.schema if f.name not in ("chip", "valid")])
        return ChipResult(
            np.zeros((0, *self.shape), dtype=self.dtype),
            np.zeros((0, *valid_shape), dtype=bool),
            meta.empty_table(),
            self.bands,
            failures,
        )


def concat_batches(
    batches: list[ChipBatch], failures: list[ChipReadError], plan: ChipPlan
) -> ChipResult:
    """Every batch of a stream as one result (in memory)."""
    if not batches:
        return plan.empty_result(failures)
    return ChipResult(
        np.concatenate([b.chips for b in batches]),
        np.concatenate([b.valid for b in batches]),
        pa.concat_tables([b.meta for b in batches]),
        plan.bands,
        failures,
    )
