"""What a caller asks the chip engine for, validated field by field."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from shapely.geometry.base import BaseGeometry

from ._errors import InvalidArgumentError
from ._geometry import parse_crs, to_geometries

__all__ = ["RESAMPLING", "ChipRequest"]

RESAMPLING = ("nearest", "bilinear")
Resampling = Literal["nearest", "bilinear"]


def _pair(value: Any, name: str, kind: type) -> tuple[Any, Any] | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidArgumentError(f"{name}: expected a number or [y, x] pair, got {value!r}")
    if isinstance(value, int | float):
        value = (value, value)
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2:
        raise InvalidArgumentError(f"{name}: expected a number or a pair, got {value!r}")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise InvalidArgumentError(f"{name}: expected numbers, got {value!r}")
        if kind is int and (float(v) != int(v)):
            raise InvalidArgumentError(f"{name}: expected whole numbers, got {value!r}")
        if not np.isfinite(v) or v <= 0:
            raise InvalidArgumentError(f"{name}: values must be positive, got {value!r}")
        out.append(kind(v))
    return (out[0], out[1])


@dataclass(frozen=True)
class ChipRequest:
    """A validated request for chips from one Collection.

    Build one with :meth:`create`, which checks every field and raises
    :class:`~flight_server.InvalidArgumentError` naming the field at fault.
    """

    geometries: tuple[BaseGeometry, ...]
    geometry_crs: str = "EPSG:4326"
    bands: tuple[str, ...] | None = None
    chip_size: tuple[int, int] | None = None  # (height, width)
    resolution: tuple[float, float] | None = None  # (x, y) pixel size in the target CRS
    crs: str | None = None
    resampling: Resampling = "nearest"
    time_series: bool = False
    mask: bool = False
    all_touched: bool = False
    dtype: str | None = None
    scale_offset: bool = False
    batch_rows: int = 64
    columns: tuple[str, ...] = ()
    on_error: Literal["raise", "skip"] = "raise"
    rows: tuple[int, ...] | None = field(default=None)  # restrict to these Collection rows
    shard: tuple[int, int] | None = None  # (index, count): this part of the planned chips

    @classmethod
    def create(
        cls,
        *,
        geometries: Any,
        geometry_crs: str = "EPSG:4326",
        bands: Sequence[str] | None = None,
        chip_size: int | Sequence[int] | None = None,
        resolution: float | Sequence[float] | None = None,
        crs: str | None = None,
        resampling: str = "nearest",
        time_series: bool = False,
        mask: bool = False,
        all_touched: bool = False,
        dtype: str | None = None,
        scale_offset: bool = False,
        batch_rows: int = 64,
        columns: Sequence[str] = (),
        on_error: str = "raise",
        rows: Sequence[int] | None = None,
        shard: Sequence[int] | None = None,
    ) -> ChipRequest:
        """Validate and normalize a request (see the class fields for meanings).

        ``chip_size`` is ``n`` or ``[height, width]`` pixels; ``resolution`` is ``r``
        or ``[x, y]`` in units of ``crs`` (or of each scene's CRS when ``crs`` is
        None); geometries are in ``geometry_crs``.
        """
        geoms = tuple(to_geometries(geometries))
        if not isinstance(geometry_crs, str):
            raise InvalidArgumentError(f"geometry_crs: expected a CRS string, got {geometry_crs!r}")
        parse_crs(geometry_crs)
        if crs is not None:
            if not isinstance(crs, str):
                raise InvalidArgumentError(f"crs: expected a CRS string, got {crs!r}")
            parse_crs(crs)
        band_tuple: tuple[str, ...] | None = None
        if bands is not None:
            if isinstance(bands, str) or not isinstance(bands, Sequence) or not bands:
                raise InvalidArgumentError("bands: expected a non-empty list of band names")
            if not all(isinstance(b, str) for b in bands):
                raise InvalidArgumentError(f"bands: expected band names, got {list(bands)!r}")
            if len(set(bands)) != len(bands):
                raise InvalidArgumentError(f"bands: a band is repeated in {list(bands)}")
            band_tuple = tuple(bands)
        size = _pair(chip_size, "chip_size", int)
        res = _pair(resolution, "resolution", float)
        if resampling not in RESAMPLING:
            raise InvalidArgumentError(
                f"resampling: expected one of {', '.join(RESAMPLING)}, got {resampling!r}"
            )
        for name, flag in (
            ("time_series", time_series),
            ("mask", mask),
            ("all_touched", all_touched),
            ("scale_offset", scale_offset),
        ):
            if not isinstance(flag, bool):
                raise InvalidArgumentError(f"{name}: expected true or false, got {flag!r}")
        if dtype is not None:
            try:
                np_dtype = np.dtype(dtype)
            except TypeError as exc:
                raise InvalidArgumentError(f"dtype: unknown dtype {dtype!r}") from exc
            if np_dtype.kind not in "iuf" or np_dtype.itemsize > 8:
                raise InvalidArgumentError(
                    f"dtype: expected an integer or float dtype, got {dtype!r}"
                )
            dtype = np_dtype.name
        if isinstance(batch_rows, bool) or not isinstance(batch_rows, int) or batch_rows < 1:
            raise InvalidArgumentError(
                f"batch_rows: expected a positive integer, got {batch_rows!r}"
            )
        if (
            isinstance(columns, str)
            or not isinstance(columns, Sequence)
            or not all(isinstance(c, str) for c in columns)
        ):
            raise InvalidArgumentError("columns: expected a list of column names")
        if on_error not in ("raise", "skip"):
            raise InvalidArgumentError(f"on_error: expected 'raise' or 'skip', got {on_error!r}")
        row_tuple = None
        if rows is not None:
            row_tuple = tuple(int(r) for r in rows)
        shard_pair = None
        if shard is not None:
            if (
                isinstance(shard, str)
                or not isinstance(shard, Sequence)
                or len(shard) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in shard)
            ):
                raise InvalidArgumentError(f"shard: expected (index, count), got {shard!r}")
            index, count = int(shard[0]), int(shard[1])
            if count < 1 or not 0 <= index < count:
                raise InvalidArgumentError(
                    f"shard: index must be in [0, count) and count >= 1, got {index}/{count}"
                )
            shard_pair = (index, count)
        return cls(
            geometries=geoms,
            geometry_crs=geometry_crs,
            bands=band_tuple,
            chip_size=size,
            resolution=res,
            crs=crs,
            resampling=resampling,  # type: ignore[arg-type]
            time_series=time_series,
            mask=mask,
            all_touched=all_touched,
            dtype=dtype,
            scale_offset=scale_offset,
            batch_rows=batch_rows,
            columns=tuple(columns),
            on_error=on_error,  # type: ignore[arg-type]
            rows=row_tuple,
            shard=shard_pair,
        )
