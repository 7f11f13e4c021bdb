"""The wire contract, version 1: a query (or ticket) is a UTF-8 JSON object.

Documented in ``docs/wire-contract.md``. Parsing is strict: unknown keys, wrong
types and out-of-range values are rejected with an
:class:`~flight_server.InvalidRequestError` naming the field, and a query can
only name a Collection the server serves, never a path or URL.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._errors import InvalidRequestError

__all__ = ["QUERY_VERSION", "Query", "parse_query"]

QUERY_VERSION = 1
MAX_TICKET_BYTES = 32 * 1024 * 1024
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

_TOP = {
    "v",
    "collection",
    "index",
    "bands",
    "filter",
    "geometries",
    "chip_size",
    "resolution",
    "crs",
    "resampling",
    "time_series",
    "mask",
    "all_touched",
    "dtype",
    "scale_offset",
    "batch_rows",
    "columns",
    "shard",
    "on_error",
}
_FILTER = {"date_range", "cloud_cover_lt", "bbox", "ids", "where"}
_GEOMETRY_KINDS = ("bbox", "wkb_base64", "geojson")


@dataclass(frozen=True)
class Query:
    """A parsed, validated query: which Collection, which scenes, which chips."""

    collection: str
    index: bool
    filter: dict[str, Any]
    request: dict[str, Any]
    shard: tuple[int, int] | None
    shard_count: int | None
    document: dict[str, Any]

    def ticket(self, shard: tuple[int, int] | None = None) -> bytes:
        """A self-contained ticket for this query (optionally one shard of it)."""
        doc = dict(self.document)
        if shard is not None:
            doc["shard"] = {"index": shard[0], "count": shard[1]}
        return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _expect(value: Any, kinds: type | tuple[type, ...], field: str, what: str) -> Any:
    if isinstance(value, bool) and bool not in (kinds if isinstance(kinds, tuple) else (kinds,)):
        raise InvalidRequestError(f"{field}: expected {what}, got {value!r}")
    if not isinstance(value, kinds):
        raise InvalidRequestError(f"{field}: expected {what}, got {_type_name(value)}")
    return value


def _number_or_pair(value: Any, field: str) -> Any:
    if isinstance(value, list):
        if len(value) != 2:
            raise InvalidRequestError(f"{field}: expected a number or [y, x], got {value!r}")
        for v in value:
            _expect(v, (int, float), field, "numbers")
        return value
    return _expect(value, (int, float), field, "a number or a pair of numbers")


def _geometries(value: Any) -> tuple[Any, str]:
    doc = _expect(value, dict, "geometries", 'an object like {"bbox": [...], "crs": "EPSG:4326"}')
    unknown = sorted(set(doc) - {*_GEOMETRY_KINDS, "crs"})
    if unknown:
        raise InvalidRequestError(
            f"geometries: unknown key {unknown[0]!r}; use one of {', '.join(_GEOMETRY_KINDS)} "
            "and optionally crs"
        )
    kinds = [k for k in _GEOMETRY_KINDS if k in doc]
    if len(kinds) != 1:
        raise InvalidRequestError(
            f"geometries: give exactly one of {', '.join(_GEOMETRY_KINDS)}, got {kinds or 'none'}"
        )
    crs = doc.get("crs", "EPSG:4326")
    _expect(crs, str, "geometries.crs", "a CRS string such as 'EPSG:4326'")
    kind = kinds[0]
    data = doc[kind]
    if kind == "bbox":
        _expect(data, list, "geometries.bbox", "[xmin, ymin, xmax, ymax] or a list of them")
        boxes = data if data and isinstance(data[0], list) else [data]
        for i, b in enumerate(boxes):
            where = f"geometries.bbox[{i}]"
            _expect(b, list, where, "[xmin, ymin, xmax, ymax]")
            if len(b) != 4:
                raise InvalidRequestError(f"{where}: expected 4 numbers, got {len(b)}")
            for v in b:
                _expect(v, (int, float), where, "numbers")
        return [tuple(b) for b in boxes], crs
    if kind == "wkb_base64":
        _expect(data, list, "geometries.wkb_base64", "a list of base64 strings")
        out = []
        for i, item in enumerate(data):
            _expect(item, str, f"geometries.wkb_base64[{i}]", "a base64 string")
            try:
                out.append(base64.b64decode(item, validate=True))
            except (binascii.Error, ValueError) as exc:
                raise InvalidRequestError(
                    f"geometries.wkb_base64[{i}]: not valid base64 ({exc})"
                ) from exc
        return out, crs
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        return data, crs
    _expect(data, list, "geometries.geojson", "a list of GeoJSON geometries or Features")
    for i, item in enumerate(data):
        _expect(item, dict, f"geometries.geojson[{i}]", "a GeoJSON object")
    return data, crs


def _filter(value: Any) -> dict[str, Any]:
    doc = _expect(value, dict, "filter", "an object")
    unknown = sorted(set(doc) - _FILTER)
    if unknown:
        raise InvalidRequestError(
            f"filter: unknown key {unknown[0]!r}; use {', '.join(sorted(_FILTER))}"
        )
    out: dict[str, Any] = {}
    if "date_range" in doc:
        dr = doc["date_range"]
        if not isinstance(dr, str | list):
            raise InvalidRequestError(
                f"filter.date_range: expected 'start/end' or [start, end], got {_type_name(dr)}"
            )
        out["date_range"] = dr
    if "cloud_cover_lt" in doc:
        out["cloud_cover_lt"] = _expect(
            doc["cloud_cover_lt"], (int, float), "filter.cloud_cover_lt", "a number"
        )
    if "bbox" in doc:
        b = _expect(doc["bbox"], list, "filter.bbox", "[xmin, ymin, xmax, ymax] in EPSG:4326")
        if len(b) != 4:
            raise InvalidRequestError(f"filter.bbox: expected 4 numbers, got {len(b)}")
        for v in b:
            _expect(v, (int, float), "filter.bbox", "numbers")
        out["bbox"] = b
    if "ids" in doc:
        ids = _expect(doc["ids"], list, "filter.ids", "a list of scene ids")
        for v in ids:
            _expect(v, str, "filter.ids", "strings")
        out["ids"] = ids
    if "where" in doc:
        out["where"] = _expect(
            doc["where"], list, "filter.where", "a list of [column, op, value] predicates"
        )
    return out


def parse_query(data: bytes | str | Mapping[str, Any]) -> Query:
    """Parse and validate a query or ticket (bytes, str or an already decoded object)."""
    if isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
        if len(raw) > MAX_TICKET_BYTES:
            raise InvalidRequestError(
                f"ticket: {len(raw)} bytes, over the {MAX_TICKET_BYTES}-byte limit"
            )
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidRequestError("ticket: not UTF-8 text (expected a JSON object)") from exc
    else:
        text = data if isinstance(data, str) else json.dumps(data)
    try:
        doc = json.loads(text) if isinstance(text, str) else text
    except ValueError as exc:
        raise InvalidRequestError(f"ticket: not valid JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise InvalidRequestError(f"ticket: expected a JSON object, got {_type_name(doc)}")
    unknown = sorted(set(doc) - _TOP)
    if unknown:
        raise InvalidRequestError(
            f"{unknown[0]}: unknown key (v{QUERY_VERSION} keys are {', '.join(sorted(_TOP))})"
        )
    if "v" not in doc:
        raise InvalidRequestError(f'v: missing; send "v": {QUERY_VERSION}')
    if doc["v"] != QUERY_VERSION or isinstance(doc["v"], bool):
        raise InvalidRequestError(
            f"v: this server speaks version {QUERY_VERSION}, got {doc['v']!r}"
        )
    name = doc.get("collection")
    if name is None:
        raise InvalidRequestError("collection: missing; name a Collection this server serves")
    _expect(name, str, "collection", "a Collection name")
    if not _NAME.match(name):
        raise InvalidRequestError(
            f"collection: {name[:80]!r} is not a Collection name (letters, digits, '.', '_', "
            "'-'; no paths or URLs)"
        )
    index = doc.get("index", False)
    _expect(index, bool, "index", "true or false")
    flt = _filter(doc["filter"]) if "filter" in doc else {}
    request: dict[str, Any] = {}
    shard: tuple[int, int] | None = None
    shard_count: int | None = None
    if "shard" in doc:
        sd = _expect(doc["shard"], dict, "shard", 'an object like {"index": 0, "count": 4}')
        extra = sorted(set(sd) - {"index", "count"})
        if extra:
            raise InvalidRequestError(f"shard: unknown key {extra[0]!r}")
        count = _expect(sd.get("count"), int, "shard.count", "a positive integer")
        if count < 1:
            raise InvalidRequestError(f"shard.count: must be >= 1, got {count}")
        if "index" in sd:
            idx = _expect(sd["index"], int, "shard.index", "an integer")
            if not 0 <= idx < count:
                raise InvalidRequestError(f"shard.index: must be in [0, {count}), got {idx}")
            shard = (idx, count)
        else:
            shard_count = count
    if index:
        chip_keys = sorted(set(doc) - {"v", "collection", "index"})
        if chip_keys:
            raise InvalidRequestError(f"{chip_keys[0]}: not allowed with index: true")
        return Query(name, True, {}, {}, None, None, doc)
    if "geometries" not in doc:
        raise InvalidRequestError(
            'geometries: missing; e.g. {"bbox": [xmin, ymin, xmax, ymax], "crs": "EPSG:4326"}'
        )
    geoms, crs = _geometries(doc["geometries"])
    request["geometries"] = geoms
    request["geometry_crs"] = crs
    if "bands" in doc:
        bands = _expect(doc["bands"], list, "bands", "a list of band names")
        for b in bands:
            _expect(b, str, "bands", "band names (strings)")
        request["bands"] = bands
    if "chip_size" in doc:
        request["chip_size"] = _number_or_pair(doc["chip_size"], "chip_size")
    if "resolution" in doc:
        request["resolution"] = _number_or_pair(doc["resolution"], "resolution")
    for key, kind, what in (
        ("crs", str, "a CRS string"),
        ("resampling", str, "'nearest' or 'bilinear'"),
        ("time_series", bool, "true or false"),
        ("mask", bool, "true or false"),
        ("all_touched", bool, "true or false"),
        ("dtype", str, "a dtype name such as 'float32'"),
        ("scale_offset", bool, "true or false"),
        ("batch_rows", int, "a positive integer"),
        ("on_error", str, "'raise' or 'skip'"),
    ):
        if key in doc:
            request[key] = _expect(doc[key], kind, key, what)
    if "columns" in doc:
        cols = _expect(doc["columns"], list, "columns", "a list of column names")
        for c in cols:
            _expect(c, str, "columns", "column names (strings)")
        request["columns"] = cols
    return Query(name, False, flt, request, shard, shard_count, doc)
