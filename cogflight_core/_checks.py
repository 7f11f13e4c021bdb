"""JSON-level checks of query fields: types, ranges, shapes; each names the field it checks.

Pure functions over decoded JSON (standard library only). The declaration in
``_wire`` attaches one to every field; a check raises
:class:`~cogflight_core.InvalidArgumentError` naming the field, or returns the
value (normalised where the wire allows several spellings).
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Callable
from typing import Any

from ._errors import InvalidArgumentError

__all__ = [
    "GEOMETRY_KINDS",
    "Check",
    "bbox",
    "boolean",
    "choice",
    "date_range",
    "expect",
    "geometries",
    "ignore",
    "non_negative_int",
    "number",
    "number_or_pair",
    "points",
    "positive_int",
    "shard",
    "string",
    "strings",
    "type_name",
    "where",
]

GEOMETRY_KINDS = ("bbox", "wkb_base64", "geojson")
Check = Callable[[Any, str], Any]


def type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def expect(value: Any, kinds: type | tuple[type, ...], field: str, what: str) -> Any:
    allowed = kinds if isinstance(kinds, tuple) else (kinds,)
    if isinstance(value, bool) and bool not in allowed:
        raise InvalidArgumentError(f"{field}: expected {what}, got {value!r}")
    if not isinstance(value, kinds):
        raise InvalidArgumentError(f"{field}: expected {what}, got {type_name(value)}")
    return value


def number(value: Any, field: str, what: str = "a number") -> float | int:
    expect(value, (int, float), field, what)
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidArgumentError(f"{field}: expected a finite number, got {value!r}")
    return value  # type: ignore[no-any-return]


def boolean(value: Any, field: str) -> bool:
    return expect(value, bool, field, "true or false")  # type: ignore[no-any-return]


def string(what: str) -> Check:
    def check(value: Any, field: str) -> str:
        return expect(value, str, field, what)  # type: ignore[no-any-return]

    return check


def flag_or_name(what: str) -> Check:
    """True, false, or a non-empty string (``what``)."""

    def check(value: Any, field: str) -> bool | str:
        if isinstance(value, str) and value:
            return value
        return expect(value, bool, field, f"true, false or {what}")  # type: ignore[no-any-return]

    return check


def choice(*options: str) -> Check:
    def check(value: Any, field: str) -> str:
        if value not in options or not isinstance(value, str):
            raise InvalidArgumentError(
                f"{field}: expected one of {', '.join(map(repr, options))}, got {value!r}"
            )
        return str(value)

    return check


def strings(what: str) -> Check:
    def check(value: Any, field: str) -> list[str]:
        expect(value, list, field, f"a list of {what}")
        for v in value:
            expect(v, str, field, f"{what} (strings)")
        return value  # type: ignore[no-any-return]

    return check


def string_lists(what: str) -> Check:
    """A list of lists of strings (e.g. scene ids per geometry)."""

    def check(value: Any, field: str) -> list[list[str]]:
        expect(value, list, field, f"a list of lists of {what}")
        for item in value:
            expect(item, list, field, f"a list of lists of {what}")
            for v in item:
                expect(v, str, field, f"{what} (strings)")
        return value  # type: ignore[no-any-return]

    return check


def positive_int(value: Any, field: str) -> int:
    expect(value, int, field, "a positive integer")
    if value < 1:
        raise InvalidArgumentError(f"{field}: expected a positive integer, got {value}")
    return value  # type: ignore[no-any-return]


def non_negative_int(value: Any, field: str) -> int:
    expect(value, int, field, "an integer >= 0")
    if value < 0:
        raise InvalidArgumentError(f"{field}: expected an integer >= 0, got {value}")
    return value  # type: ignore[no-any-return]


def number_or_pair(order: str, *, whole: bool) -> Check:
    """A positive number or a pair of them (``whole``: integral values, as pixel counts)."""

    def one(v: Any, field: str, what: str) -> Any:
        number(v, field, what)
        if v <= 0:
            raise InvalidArgumentError(f"{field}: values must be positive, got {v!r}")
        if whole and float(v) != int(v):
            raise InvalidArgumentError(f"{field}: expected whole numbers, got {v!r}")
        return v

    def check(value: Any, field: str) -> Any:
        if isinstance(value, list):
            if len(value) != 2:
                raise InvalidArgumentError(
                    f"{field}: expected a number or [{order}], got {len(value)} values"
                )
            return [one(v, field, "numbers") for v in value]
        return one(value, field, f"a number or [{order}]")

    return check


def bbox(value: Any, field: str) -> list[float]:
    expect(value, list, field, "[xmin, ymin, xmax, ymax]")
    if len(value) != 4:
        raise InvalidArgumentError(f"{field}: expected 4 numbers, got {len(value)}")
    for v in value:
        number(v, field, "numbers")
    return value  # type: ignore[no-any-return]


def geometries(value: Any, field: str) -> dict[str, Any]:
    doc = expect(value, dict, field, 'an object like {"bbox": [...], "crs": "EPSG:4326"}')
    unknown = sorted(set(doc) - {*GEOMETRY_KINDS, "crs"})
    if unknown:
        raise InvalidArgumentError(
            f"{field}: unknown key {unknown[0]!r}; use one of {', '.join(GEOMETRY_KINDS)} "
            "and optionally crs"
        )
    kinds = [k for k in GEOMETRY_KINDS if k in doc]
    if len(kinds) != 1:
        raise InvalidArgumentError(
            f"{field}: give exactly one of {', '.join(GEOMETRY_KINDS)}, got {kinds or 'none'}"
        )
    kind = kinds[0]
    data = doc[kind]
    where = f"{field}.{kind}"
    if kind == "bbox":
        expect(data, list, where, "[xmin, ymin, xmax, ymax] or a list of them")
        boxes = data if data and isinstance(data[0], list) else [data]
        parsed: Any = [tuple(bbox(b, f"{where}[{i}]")) for i, b in enumerate(boxes)]
    elif kind == "wkb_base64":
        expect(data, list, where, "a list of base64 strings")
        parsed = []
        for i, item in enumerate(data):
            expect(item, str, f"{where}[{i}]", "a base64 string")
            try:
                parsed.append(base64.b64decode(item, validate=True))
            except (binascii.Error, ValueError) as exc:
                raise InvalidArgumentError(f"{where}[{i}]: not valid base64 ({exc})") from exc
    elif isinstance(data, dict) and data.get("type") == "FeatureCollection":
        feats: list[Any] = data.get("features")  # type: ignore[assignment]
        expect(feats, list, f"{where}.features", "a list of GeoJSON Features")
        for i, item in enumerate(feats):
            expect(item, dict, f"{where}.features[{i}]", "a GeoJSON Feature")
        parsed = data
    else:
        expect(data, list, where, "a list of GeoJSON geometries or Features")
        for i, item in enumerate(data):
            expect(item, dict, f"{where}[{i}]", "a GeoJSON object")
        parsed = data
    return {"geometries": parsed, "geometry_crs": doc.get("crs", "EPSG:4326")}


def date_range(value: Any, field: str) -> Any:
    if isinstance(value, list):
        if len(value) != 2:
            raise InvalidArgumentError(f"{field}: expected [start, end], got {len(value)} values")
        for v in value:
            if v is not None:
                expect(v, str, field, "ISO 8601 strings or null")
        return value
    return expect(value, str, field, "'start/end' or [start, end]")


def where(value: Any, field: str) -> list[Any]:
    expect(value, list, field, "a list of [column, op, value] predicates")
    for i, pred in enumerate(value):
        expect(pred, list, f"{field}[{i}]", "[column, op, value]")
    return value  # type: ignore[no-any-return]


def shard(value: Any, field: str) -> dict[str, int]:
    doc = expect(value, dict, field, 'an object like {"index": 0, "count": 4}')
    extra = sorted(set(doc) - {"index", "count"})
    if extra:
        raise InvalidArgumentError(f"{field}: unknown key {extra[0]!r}")
    count = expect(doc.get("count"), int, f"{field}.count", "a positive integer")
    if count < 1:
        raise InvalidArgumentError(f"{field}.count: must be >= 1, got {count}")
    if "index" in doc:
        idx = expect(doc["index"], int, f"{field}.index", "an integer")
        if not 0 <= idx < count:
            raise InvalidArgumentError(f"{field}.index: must be in [0, {count}), got {idx}")
    return doc  # type: ignore[no-any-return]


def ignore(value: Any, field: str) -> Any:  # checked with the field it belongs to
    return value


MAX_NEIGHBOURHOOD = 15
MAX_NEAREST_VALID = 32


def points(value: Any, field: str) -> dict[str, int]:
    """Point sampling: ``{"neighbourhood": odd n <= 15, "nearest_valid": 0..32}``."""
    doc = expect(value, dict, field, 'an object like {"neighbourhood": 3, "nearest_valid": 2}')
    extra = sorted(set(doc) - {"neighbourhood", "nearest_valid"})
    if extra:
        raise InvalidArgumentError(
            f"{field}: unknown key {extra[0]!r}; use neighbourhood, nearest_valid"
        )
    size = expect(doc.get("neighbourhood", 1), int, f"{field}.neighbourhood", "an odd integer")
    if size < 1 or size % 2 == 0 or size > MAX_NEIGHBOURHOOD:
        raise InvalidArgumentError(
            f"{field}.neighbourhood: expected an odd integer from 1 to {MAX_NEIGHBOURHOOD} "
            f"(1: the pixel alone, 3: its 3x3 neighbourhood), got {size}"
        )
    reach = expect(doc.get("nearest_valid", 0), int, f"{field}.nearest_valid", "an integer")
    if not 0 <= reach <= MAX_NEAREST_VALID:
        raise InvalidArgumentError(
            f"{field}.nearest_valid: expected pixels from 0 to {MAX_NEAREST_VALID}, got {reach}"
        )
    return {"neighbourhood": size, "nearest_valid": reach}
