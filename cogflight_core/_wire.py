"""The wire contract, version 1: every field of a query, declared once.

A query (or ticket) is a UTF-8 JSON object. :class:`ChipQuery` declares its chip
fields as Python arguments, each annotated with a :class:`Field` that gives its
JSON form, default and meaning. Everything else derives from that declaration:
:func:`parse_query` (the server's strict JSON parser), the client's query builder
and ``Client.chips`` (typed ``**fields: Unpack[ChipQuery]``), the engine's
``ChipRequest`` and the field table of ``docs/wire-contract.md`` (:func:`field_table`).

Parsing checks JSON types and ranges only; what needs geometry or the Collection
(shapes, CRSs, band names) is checked by the server. The module is
dependency-free: the remote client uses it without the server's packages.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any, TypedDict

from ._errors import InvalidArgumentError, LimitExceededError

__all__ = [
    "FILTER_FIELDS",
    "GEOMETRY_KINDS",
    "MAX_TICKET_BYTES",
    "QUERY_VERSION",
    "ChipQuery",
    "Field",
    "Query",
    "chip_fields",
    "field_table",
    "parse_query",
]

QUERY_VERSION = 1
MAX_TICKET_BYTES = 32 * 1024 * 1024
MAX_JSON_DEPTH = 64
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
GEOMETRY_KINDS = ("bbox", "wkb_base64", "geojson")

Check = Callable[[Any, str], Any]


@dataclass(frozen=True, slots=True)
class Field:
    """How one query field travels: JSON type, default, meaning, and its JSON check."""

    json_type: str
    """The JSON form, as the docs write it."""
    default: str
    """What the server uses when the field is absent (documentation)."""
    meaning: str
    """One line for the docs table."""
    check: Check
    """Validates the decoded JSON value (raising naming the field); returns it normalised."""
    wire: str | None = None
    """The JSON key when it differs from the Python name (``geometry_crs``)."""


# -- JSON checks ---------------------------------------------------------------------------------


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _expect(value: Any, kinds: type | tuple[type, ...], field: str, what: str) -> Any:
    allowed = kinds if isinstance(kinds, tuple) else (kinds,)
    if isinstance(value, bool) and bool not in allowed:
        raise InvalidArgumentError(f"{field}: expected {what}, got {value!r}")
    if not isinstance(value, kinds):
        raise InvalidArgumentError(f"{field}: expected {what}, got {_type_name(value)}")
    return value


def _number(value: Any, field: str, what: str = "a number") -> float | int:
    _expect(value, (int, float), field, what)
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidArgumentError(f"{field}: expected a finite number, got {value!r}")
    return value  # type: ignore[no-any-return]


def _boolean(value: Any, field: str) -> bool:
    return _expect(value, bool, field, "true or false")  # type: ignore[no-any-return]


def _string(what: str) -> Check:
    def check(value: Any, field: str) -> str:
        return _expect(value, str, field, what)  # type: ignore[no-any-return]

    return check


def _choice(*options: str) -> Check:
    def check(value: Any, field: str) -> str:
        if value not in options or not isinstance(value, str):
            raise InvalidArgumentError(
                f"{field}: expected one of {', '.join(map(repr, options))}, got {value!r}"
            )
        return str(value)

    return check


def _strings(what: str) -> Check:
    def check(value: Any, field: str) -> list[str]:
        _expect(value, list, field, f"a list of {what}")
        for v in value:
            _expect(v, str, field, f"{what} (strings)")
        return value  # type: ignore[no-any-return]

    return check


def _positive_int(value: Any, field: str) -> int:
    _expect(value, int, field, "a positive integer")
    if value < 1:
        raise InvalidArgumentError(f"{field}: expected a positive integer, got {value}")
    return value  # type: ignore[no-any-return]


def _number_or_pair(order: str, *, whole: bool) -> Check:
    """A positive number or a pair of them (``whole``: integral values, as pixel counts)."""

    def one(v: Any, field: str, what: str) -> Any:
        _number(v, field, what)
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


def _bbox(value: Any, field: str) -> list[float]:
    _expect(value, list, field, "[xmin, ymin, xmax, ymax]")
    if len(value) != 4:
        raise InvalidArgumentError(f"{field}: expected 4 numbers, got {len(value)}")
    for v in value:
        _number(v, field, "numbers")
    return value  # type: ignore[no-any-return]


def _geometries(value: Any, field: str) -> dict[str, Any]:
    doc = _expect(value, dict, field, 'an object like {"bbox": [...], "crs": "EPSG:4326"}')
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
        _expect(data, list, where, "[xmin, ymin, xmax, ymax] or a list of them")
        boxes = data if data and isinstance(data[0], list) else [data]
        if not boxes:
            raise InvalidArgumentError(f"{where}: no boxes given")
        parsed: Any = [tuple(_bbox(b, f"{where}[{i}]")) for i, b in enumerate(boxes)]
    elif kind == "wkb_base64":
        _expect(data, list, where, "a list of base64 strings")
        parsed = []
        for i, item in enumerate(data):
            _expect(item, str, f"{where}[{i}]", "a base64 string")
            try:
                parsed.append(base64.b64decode(item, validate=True))
            except (binascii.Error, ValueError) as exc:
                raise InvalidArgumentError(f"{where}[{i}]: not valid base64 ({exc})") from exc
    elif isinstance(data, dict) and data.get("type") == "FeatureCollection":
        feats: list[Any] = data.get("features")  # type: ignore[assignment]
        _expect(feats, list, f"{where}.features", "a list of GeoJSON Features")
        for i, item in enumerate(feats):
            _expect(item, dict, f"{where}.features[{i}]", "a GeoJSON Feature")
        parsed = data
    else:
        _expect(data, list, where, "a list of GeoJSON geometries or Features")
        for i, item in enumerate(data):
            _expect(item, dict, f"{where}[{i}]", "a GeoJSON object")
        parsed = data
    return {"geometries": parsed, "geometry_crs": doc.get("crs", "EPSG:4326")}


def _date_range(value: Any, field: str) -> Any:
    if isinstance(value, list):
        if len(value) != 2:
            raise InvalidArgumentError(f"{field}: expected [start, end], got {len(value)} values")
        for v in value:
            if v is not None:
                _expect(v, str, field, "ISO 8601 strings or null")
        return value
    return _expect(value, str, field, "'start/end' or [start, end]")


def _where(value: Any, field: str) -> list[Any]:
    _expect(value, list, field, "a list of [column, op, value] predicates")
    for i, pred in enumerate(value):
        _expect(pred, list, f"{field}[{i}]", "[column, op, value]")
    return value  # type: ignore[no-any-return]


def _filter(value: Any, field: str) -> dict[str, Any]:
    doc = _expect(value, dict, field, "an object")
    unknown = sorted(set(doc) - set(FILTER_FIELDS))
    if unknown:
        raise InvalidArgumentError(
            f"{field}: unknown key {unknown[0]!r}; use {', '.join(sorted(FILTER_FIELDS))}"
        )
    return {k: FILTER_FIELDS[k].check(v, f"{field}.{k}") for k, v in doc.items()}


def _shard(value: Any, field: str) -> dict[str, int]:
    doc = _expect(value, dict, field, 'an object like {"index": 0, "count": 4}')
    extra = sorted(set(doc) - {"index", "count"})
    if extra:
        raise InvalidArgumentError(f"{field}: unknown key {extra[0]!r}")
    count = _expect(doc.get("count"), int, f"{field}.count", "a positive integer")
    if count < 1:
        raise InvalidArgumentError(f"{field}.count: must be >= 1, got {count}")
    if "index" in doc:
        idx = _expect(doc["index"], int, f"{field}.index", "an integer")
        if not 0 <= idx < count:
            raise InvalidArgumentError(f"{field}.index: must be in [0, {count}), got {idx}")
    return doc  # type: ignore[no-any-return]


def _ignore(value: Any, field: str) -> Any:  # checked with the field it belongs to
    return value


# -- the declaration -------------------------------------------------------------------------------

FILTER_FIELDS: dict[str, Field] = {
    "date_range": Field(
        '`"start/end"` or `[start, end]`',
        "any date",
        "ISO 8601, inclusive; a date covers its whole day; `..` or null is open",
        _date_range,
    ),
    "cloud_cover_lt": Field("number", "any", "`eo:cloud_cover` below this", _number),
    "bbox": Field(
        "`[xmin, ymin, xmax, ymax]`",
        "anywhere",
        "scenes whose footprint intersects it (EPSG:4326)",
        _bbox,
    ),
    "ids": Field("[string]", "every scene", "these scene ids", _strings("scene ids")),
    "where": Field(
        "`[[column, op, value], ...]`",
        "none",
        "ops `== != < <= > >= in`, `not in`, `is null`, `is not null`, on any Collection "
        "column; all conditions are ANDed",
        _where,
    ),
}


class ChipQuery(TypedDict, total=False):
    """The chip fields of a v1 query, as Python arguments (``Client.chips(name, **fields)``).

    Each annotation carries the :class:`Field` that says how it travels; the server's
    parser, the client's builder, ``ChipRequest`` and the docs all read it.
    """

    geometries: Annotated[
        Any,
        Field(
            "object",
            "required",
            "exactly one of `bbox` (`[xmin, ymin, xmax, ymax]` or a list of them), "
            "`wkb_base64` (list of base64 WKB) or `geojson` (list of geometries or "
            "Features, or a FeatureCollection), plus `crs`. From Python: bbox tuples, "
            "(x, y) points, shapely geometries, WKB or GeoJSON",
            _geometries,
        ),
    ]
    geometry_crs: Annotated[
        str,
        Field(
            "string",
            "`EPSG:4326`",
            "CRS of the geometries",
            _ignore,
            wire="geometries.crs",
        ),
    ]
    bands: Annotated[
        Sequence[str],
        Field("[string]", "all, in Collection order", "band names", _strings("band names")),
    ]
    filter: Annotated[
        Mapping[str, Any],
        Field("object", "every scene", "scene selection; keys below (`filter.*`)", _filter),
    ]
    chip_size: Annotated[
        int | Sequence[int],
        Field(
            "int or `[h, w]`",
            "the geometry's window",
            "fixed-size chips centred on each geometry; without it, each chip is the pixel "
            "window covering the geometry's bounds at native resolution",
            _number_or_pair("h, w", whole=True),
        ),
    ]
    resolution: Annotated[
        float | Sequence[float],
        Field(
            "number or `[x, y]`",
            "native",
            "target pixel size, in units of `crs`",
            _number_or_pair("x, y", whole=False),
        ),
    ]
    crs: Annotated[
        str,
        Field(
            "string",
            "each scene's own",
            "target CRS (then `resolution` defaults to native)",
            _string("a CRS string such as 'EPSG:32632'"),
        ),
    ]
    resampling: Annotated[
        str,
        Field(
            '`"nearest"` or `"bilinear"`',
            '`"nearest"`',
            "when the target grid is not the file's",
            _choice("nearest", "bilinear"),
        ),
    ]
    time_series: Annotated[
        bool,
        Field(
            "bool",
            "`false`",
            "one chip per geometry, stacking every scene by date",
            _boolean,
        ),
    ]
    mask: Annotated[
        bool,
        Field(
            "bool",
            "`false`",
            "set pixels outside the polygon to the fill and mark them invalid",
            _boolean,
        ),
    ]
    all_touched: Annotated[
        bool,
        Field(
            "bool",
            "`false`",
            "with `mask`: every pixel the polygon touches is inside (GDAL's rule)",
            _boolean,
        ),
    ]
    dtype: Annotated[
        str,
        Field(
            "string",
            "the bands' common type",
            "output dtype (lossless integer casts or any float)",
            _string("a dtype name such as 'float32'"),
        ),
    ]
    scale_offset: Annotated[
        bool,
        Field(
            "bool",
            "`false`",
            "apply each band's scale/offset (float output, invalid = NaN)",
            _boolean,
        ),
    ]
    batch_rows: Annotated[
        int,
        Field("int", "64", "chips per RecordBatch", _positive_int),
    ]
    columns: Annotated[
        Sequence[str],
        Field(
            "[string]",
            "none",
            "Collection columns to pass through (labels, splits...)",
            _strings("column names"),
        ),
    ]
    shard: Annotated[
        Mapping[str, int],
        Field(
            '`{"index": i, "count": n}`',
            "the whole query",
            'in `DoGet`: only this part of the chips. In `GetFlightInfo`: `{"count": n}` '
            "asks for n endpoints (default: the server's `--shards`, else one per worker)",
            _shard,
        ),
    ]
    on_error: Annotated[
        str,
        Field(
            '`"raise"` or `"skip"`',
            '`"raise"`',
            "stop at the first chip that cannot be read correctly, or leave it out",
            _choice("raise", "skip"),
        ),
    ]


@cache
def chip_fields() -> dict[str, Field]:
    """Every chip field by Python name, in declaration order."""
    hints = typing.get_type_hints(ChipQuery, include_extras=True)
    out: dict[str, Field] = {}
    for name, hint in hints.items():
        spec = next(m for m in hint.__metadata__ if isinstance(m, Field))
        out[name] = spec
    return out


def wire_keys() -> dict[str, str]:
    """Top-level JSON key -> Python name, for the chip fields that have their own key."""
    return {name: name for name, spec in chip_fields().items() if spec.wire is None}


_TOP_ONLY = ("v", "collection", "index")


def field_table() -> str:
    """The docs' field table (markdown), generated from the declaration."""
    rows = [
        "| key | type | default | meaning |",
        "|-----|------|---------|---------|",
        "| `v` | `1` | required | contract version |",
        "| `collection` | string | required | a Collection the server serves |",
        "| `index` | bool | `false` | `true`: stream the Collection's index instead of chips "
        "(no other keys) |",
    ]
    for name, spec in chip_fields().items():
        rows.append(
            f"| `{spec.wire or name}` | {spec.json_type} | {spec.default} | {spec.meaning} |"
        )
        if name == "filter":
            for key, sub in FILTER_FIELDS.items():
                rows.append(f"| `filter.{key}` | {sub.json_type} | {sub.default} | {sub.meaning} |")
    return "\n".join(rows)


# -- parsing -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    """A parsed, validated query: which Collection, which scenes, which chips.

    ``request`` holds the chip fields by Python name (``geometries`` decoded:
    bbox tuples, WKB bytes or GeoJSON), ready for ``ChipRequest.create``.
    """

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


def _reject_constant(name: str) -> Any:
    raise InvalidArgumentError(f"ticket: {name} is not a JSON number; send finite numbers")


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of decoded JSON, stopping past ``limit`` (iterative: no recursion)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, d = stack.pop()
        if d > deepest:
            deepest = d
            if deepest > limit:
                return deepest
        if isinstance(item, dict):
            stack.extend((v, d + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, d + 1) for v in item)
    return deepest


def _decode(data: bytes | str | Mapping[str, Any]) -> Any:
    if isinstance(data, Mapping):
        return dict(data)
    if isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
        if len(raw) > MAX_TICKET_BYTES:
            raise LimitExceededError(
                f"ticket: {len(raw)} bytes, over the limit of {MAX_TICKET_BYTES} bytes"
            )
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidArgumentError("ticket: not UTF-8 text (expected a JSON object)") from exc
    else:
        text = data
    try:
        doc = json.loads(text, parse_constant=_reject_constant)
    except RecursionError as exc:
        raise InvalidArgumentError(
            f"ticket: JSON nested too deeply (the limit is {MAX_JSON_DEPTH} levels)"
        ) from exc
    except ValueError as exc:
        if isinstance(exc, InvalidArgumentError):
            raise
        raise InvalidArgumentError(f"ticket: not valid JSON ({exc})") from exc
    if _depth(doc, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise InvalidArgumentError(
            f"ticket: JSON nested too deeply (the limit is {MAX_JSON_DEPTH} levels)"
        )
    return doc


def check_collection_name(name: Any) -> str:
    """A Collection name: letters, digits, ``.``, ``_``, ``-``; never a path or URL."""
    if name is None:
        raise InvalidArgumentError("collection: missing; name a Collection this server serves")
    _expect(name, str, "collection", "a Collection name")
    if not _NAME.match(name):
        raise InvalidArgumentError(
            f"collection: {name[:80]!r} is not a Collection name (letters, digits, '.', '_', "
            "'-'; no paths or URLs)"
        )
    return name  # type: ignore[no-any-return]


def parse_query(data: bytes | str | Mapping[str, Any]) -> Query:
    """Parse and validate a query or ticket (bytes, str or an already decoded object).

    Raises:
        InvalidArgumentError: a key is unknown or a value has the wrong type or range;
            the message names the field.
    """
    doc = _decode(data)
    if not isinstance(doc, dict):
        raise InvalidArgumentError(f"ticket: expected a JSON object, got {_type_name(doc)}")
    keys = wire_keys()
    allowed = {*_TOP_ONLY, *keys}
    unknown = sorted(set(doc) - allowed)
    if unknown:
        raise InvalidArgumentError(
            f"{unknown[0][:80]}: unknown key (v{QUERY_VERSION} keys are "
            f"{', '.join(sorted(allowed))})"
        )
    if "v" not in doc:
        raise InvalidArgumentError(f'v: missing; send "v": {QUERY_VERSION}')
    if doc["v"] != QUERY_VERSION or isinstance(doc["v"], bool):
        raise InvalidArgumentError(
            f"v: this server speaks version {QUERY_VERSION}, got {str(doc['v'])[:40]!r}"
        )
    name = check_collection_name(doc.get("collection"))
    index = _boolean(doc.get("index", False), "index")
    if index:
        chip_keys = sorted(set(doc) - set(_TOP_ONLY))
        if chip_keys:
            raise InvalidArgumentError(f"{chip_keys[0]}: not allowed with index: true")
        return Query(name, True, {}, {}, None, None, doc)
    if "geometries" not in doc:
        raise InvalidArgumentError(
            'geometries: missing; e.g. {"bbox": [xmin, ymin, xmax, ymax], "crs": "EPSG:4326"}'
        )
    fields = chip_fields()
    request: dict[str, Any] = {}
    flt: dict[str, Any] = {}
    shard: tuple[int, int] | None = None
    shard_count: int | None = None
    for key, value in doc.items():
        if key in _TOP_ONLY:
            continue
        checked = fields[keys[key]].check(value, key)
        if key == "geometries":
            request.update(checked)
            _expect(request["geometry_crs"], str, "geometries.crs", "a CRS string")
        elif key == "filter":
            flt = checked
        elif key == "shard":
            if "index" in checked:
                shard = (checked["index"], checked["count"])
            else:
                shard_count = checked["count"]
        else:
            request[key] = checked
    return Query(name, False, flt, request, shard, shard_count, doc)
