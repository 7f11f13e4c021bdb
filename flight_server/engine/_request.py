"""What a caller asks the chip engine for, validated field by field.

The fields are the wire contract's (:class:`cogflight_core.ChipQuery`, declared
once): :meth:`ChipRequest.create` takes exactly those keywords, and the
dataclass fields of :class:`ChipRequest` hold the only defaults. Checks here
are the Python-side ones (tuples, numpy numbers, shapely geometries); what
needs a Collection (band names, columns) is checked when the engine plans.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Unpack

import numpy as np
from shapely.geometry.base import BaseGeometry

from catalog import check_lonlat, same_crs, to_geometries
from cogflight_core import ChipQuery, InvalidArgumentError, chip_fields

from ._geometry import parse_crs

__all__ = ["RESAMPLING", "ChipRequest"]

RESAMPLING = ("nearest", "bilinear")
Resampling = Literal["nearest", "bilinear"]


def _pair(value: Any, name: str, kind: type) -> tuple[Any, Any] | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidArgumentError(f"{name}: expected a number or [y, x] pair, got {value!r}")
    if isinstance(value, int | float | np.integer | np.floating):
        value = (value, value)
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2:
        raise InvalidArgumentError(f"{name}: expected a number or a pair, got {value!r}")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating):
            raise InvalidArgumentError(f"{name}: expected numbers, got {value!r}")
        if kind is int and (float(v) != int(v)):
            raise InvalidArgumentError(f"{name}: expected whole numbers, got {value!r}")
        if not np.isfinite(v) or v <= 0:
            raise InvalidArgumentError(f"{name}: values must be positive, got {value!r}")
        out.append(kind(v))
    return (out[0], out[1])


def _crs(value: Any, name: str) -> str | None:
    if value is None and name == "crs":
        return None
    if not isinstance(value, str):
        raise InvalidArgumentError(f"{name}: expected a CRS string, got {value!r}")
    parse_crs(value)
    return value


def _bands(value: Any, name: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, Sequence) or not value:
        raise InvalidArgumentError(f"{name}: expected a non-empty list of band names")
    if not all(isinstance(b, str) for b in value):
        raise InvalidArgumentError(f"{name}: expected band names, got {list(value)!r}")
    if len(set(value)) != len(value):
        raise InvalidArgumentError(f"{name}: a band is repeated in {list(value)}")
    return tuple(value)


def _flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise InvalidArgumentError(f"{name}: expected true or false, got {value!r}")
    return bool(value)


def _choice(*options: str) -> Callable[[Any, str], str]:
    def check(value: Any, name: str) -> str:
        if not isinstance(value, str) or value not in options:
            raise InvalidArgumentError(
                f"{name}: expected one of {', '.join(options)}, got {value!r}"
            )
        return value

    return check


def _dtype(value: Any, name: str) -> str | None:
    if value is None:
        return None
    try:
        dtype = np.dtype(value)
    except TypeError as exc:
        raise InvalidArgumentError(f"{name}: unknown dtype {value!r}") from exc
    if dtype.kind not in "iuf" or dtype.itemsize > 8:
        raise InvalidArgumentError(f"{name}: expected an integer or float dtype, got {value!r}")
    return str(dtype.name)


def _batch_rows(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise InvalidArgumentError(f"{name}: expected a positive integer, got {value!r}")
    return int(value)


def _scene_lists(value: Any, name: str) -> tuple[frozenset[str], ...]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise InvalidArgumentError(f"{name}: expected a list of scene-id lists, one per geometry")
    out = []
    for item in value:
        if isinstance(item, str) or not isinstance(item, Sequence):
            raise InvalidArgumentError(f"{name}: expected a list of scene ids for each geometry")
        if not all(isinstance(v, str) for v in item):
            raise InvalidArgumentError(f"{name}: scene ids are strings")
        out.append(frozenset(item))
    return tuple(out)


def _patches(value: Any, name: str) -> bool | str:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, bool | np.bool_):
        return bool(value)
    raise InvalidArgumentError(f"{name}: expected true, false or a geometry column name")


def _skip(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise InvalidArgumentError(f"{name}: expected an integer >= 0, got {value!r}")
    return int(value)


def _columns(value: Any, name: str) -> tuple[str, ...]:
    if (
        isinstance(value, str)
        or not isinstance(value, Sequence)
        or not all(isinstance(c, str) for c in value)
    ):
        raise InvalidArgumentError(f"{name}: expected a list of column names")
    return tuple(value)


def _geometries(value: Any, name: str) -> tuple[BaseGeometry, ...]:
    return tuple(to_geometries(value, name))


def _no_filter(value: Any, name: str) -> None:
    raise InvalidArgumentError(
        f"{name}: a ChipRequest takes chip fields only; select scenes with "
        "Collection.subset(...) or rows=..."
    )


# One normaliser per chip field of the wire contract (tests check the two agree).
_NORMALISE: dict[str, Callable[[Any, str], Any]] = {
    "geometries": _geometries,
    "geometry_crs": _crs,
    "bands": _bands,
    "filter": _no_filter,
    "chip_size": lambda v, n: _pair(v, n, int),
    "resolution": lambda v, n: _pair(v, n, float),
    "crs": _crs,
    "resampling": _choice(*RESAMPLING),
    "time_series": _flag,
    "mask": _flag,
    "all_touched": _flag,
    "dtype": _dtype,
    "scale_offset": _flag,
    "batch_rows": _batch_rows,
    "ramp": _flag,
    "geometry_scenes": _scene_lists,
    "patches": _patches,
    "columns": _columns,
    "on_error": _choice("raise", "skip"),
    "skip": _skip,
}


def _rows(value: Sequence[int] | None) -> tuple[int, ...] | None:
    return None if value is None else tuple(int(r) for r in value)


def _shard(value: Sequence[int] | Mapping[str, int] | None) -> tuple[int, int] | None:
    """``(index, count)``, or the wire's ``{"index": i, "count": n}``."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        value = (value.get("index"), value.get("count"))  # type: ignore[assignment]
    if (
        isinstance(value, str)
        or not isinstance(value, Sequence)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        raise InvalidArgumentError(f"shard: expected (index, count), got {value!r}")
    index, count = int(value[0]), int(value[1])
    if count < 1 or not 0 <= index < count:
        raise InvalidArgumentError(
            f"shard: index must be in [0, count) and count >= 1, got {index}/{count}"
        )
    return (index, count)


@dataclass(frozen=True)
class ChipRequest:
    """A validated request for chips from one Collection.

    Build one with :meth:`create`, which checks every field and raises
    :class:`~flight_server.InvalidArgumentError` naming the field at fault. The
    defaults below are the only ones: the wire contract documents the same.
    """

    geometries: tuple[BaseGeometry, ...] = ()  # optional with ``patches``
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
    ramp: bool = True  # batches 1, 2, 4, ... with the first chip fetched alone
    geometry_scenes: tuple[frozenset[str], ...] | None = None  # scene ids per geometry
    patches: bool | str = False  # one chip per row, from its own (or this column's) geometry
    columns: tuple[str, ...] = ()
    on_error: Literal["raise", "skip"] = "raise"
    skip: int = 0  # chips of this stream (after ``shard``) left out at its start
    rows: tuple[int, ...] | None = field(default=None)  # restrict to these Collection rows
    shard: tuple[int, int] | None = None  # (index, count): this part of the planned chips

    @classmethod
    def create(  # type: ignore[misc]  # ``shard`` replaces the wire's {"index", "count"} form
        cls,
        *,
        rows: Sequence[int] | None = None,
        shard: Sequence[int] | Mapping[str, int] | None = None,
        **fields: Unpack[ChipQuery],
    ) -> ChipRequest:
        """Validate and normalise a request from the wire contract's chip fields.

        ``chip_size`` is ``n`` or ``[height, width]`` pixels; ``resolution`` is ``r``
        or ``[x, y]`` in units of ``crs`` (or of each scene's CRS when ``crs`` is
        None); geometries are in ``geometry_crs`` (any form :func:`catalog.to_geometries`
        reads). ``rows`` restricts the request to these Collection rows; ``shard`` is
        ``(index, count)``: this part of the planned chips.

        Raises:
            InvalidArgumentError: an unknown keyword, or a field's value is wrong (the
                message names the field).
        """
        given: dict[str, Any] = dict(fields)
        known = chip_fields()
        unknown = [name for name in given if name not in known or name == "shard"]
        if unknown:
            raise InvalidArgumentError(
                f"{unknown[0]}: unknown field; ChipRequest.create takes "
                f"{', '.join(n for n in known if n != 'shard')}, rows and shard"
            )
        if "geometries" not in given and given.get("patches") in (None, False):
            raise InvalidArgumentError(
                "geometries: missing; give bbox tuples, shapely geometries, WKB or GeoJSON"
            )
        values: dict[str, Any] = {
            name: _NORMALISE[name](value, name) for name, value in given.items()
        }
        geometries = values.get("geometries", ())
        if geometries and same_crs(values.get("geometry_crs", "EPSG:4326"), "EPSG:4326"):
            check_lonlat(geometries, "geometries")
        return cls(**values, rows=_rows(rows), shard=_shard(shard))


def _check_declaration() -> None:
    """Every chip field of the wire has a normaliser and (but ``filter``) a dataclass field."""
    wire = set(chip_fields()) - {"shard"}
    ours = {f.name for f in dataclasses.fields(ChipRequest)} - {"rows", "shard"}
    if set(_NORMALISE) != wire or ours != wire - {"filter"}:  # pragma: no cover
        raise RuntimeError(
            f"ChipRequest is out of step with the wire contract: {sorted(wire ^ set(_NORMALISE))}"
            f" {sorted(ours ^ (wire - {'filter'}))}"
        )


_check_declaration()
