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

import json
import re
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any, TypedDict

from . import _checks as checks
from ._checks import GEOMETRY_KINDS, Check
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


def _filter(value: Any, field: str) -> dict[str, Any]:
    doc = checks.expect(value, dict, field, "an object")
    unknown = sorted(set(doc) - set(FILTER_FIELDS))
    if unknown:
        raise InvalidArgumentError(
            f"{field}: unknown key {unknown[0]!r}; use {', '.join(sorted(FILTER_FIELDS))}"
        )
    return {k: FILTER_FIELDS[k].check(v, f"{field}.{k}") for k, v in doc.items()}


# -- the declaration -------------------------------------------------------------------------------

FILTER_FIELDS: dict[str, Field] = {
    "date_range": Field(
        '`"start/end"` or `[start, end]`',
        "any date",
        "ISO 8601, inclusive; a date covers its whole day; `..` or null is open",
        checks.date_range,
    ),
    "cloud_cover_lt": Field("number", "any", "`eo:cloud_cover` below this", checks.number),
    "bbox": Field(
        "`[xmin, ymin, xmax, ymax]`",
        "anywhere",
        "scenes whose footprint intersects it (EPSG:4326)",
        checks.bbox,
    ),
    "ids": Field("[string]", "every scene", "these scene ids", checks.strings("scene ids")),
    "where": Field(
        "`[[column, op, value], ...]`",
        "none",
        "ops `== != < <= > >= in`, `not in`, `is null`, `is not null`, on any Collection "
        "column; all conditions are ANDed",
        checks.where,
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
            checks.geometries,
        ),
    ]
    geometry_crs: Annotated[
        str,
        Field(
            "string",
            "`EPSG:4326`",
            "CRS of the geometries",
            checks.ignore,
            wire="geometries.crs",
        ),
    ]
    bands: Annotated[
        Sequence[str],
        Field("[string]", "all, in Collection order", "band names", checks.strings("band names")),
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
            checks.number_or_pair("h, w", whole=True),
        ),
    ]
    resolution: Annotated[
        float | Sequence[float],
        Field(
            "number or `[x, y]`",
            "native",
            "target pixel size, in units of `crs`",
            checks.number_or_pair("x, y", whole=False),
        ),
    ]
    crs: Annotated[
        str,
        Field(
            "string",
            "each scene's own",
            "target CRS (then `resolution` defaults to native)",
            checks.string("a CRS string such as 'EPSG:32632'"),
        ),
    ]
    resampling: Annotated[
        str,
        Field(
            '`"nearest"` or `"bilinear"`',
            '`"nearest"`',
            "when the target grid is not the file's",
            checks.choice("nearest", "bilinear"),
        ),
    ]
    time_series: Annotated[
        bool,
        Field(
            "bool",
            "`false`",
            "one chip per geometry, stacking every scene by date",
            checks.boolean,
        ),
    ]
    mask: Annotated[
        bool,
        Field(
            "bool",
            "`false`",
            "set pixels outside the polygon to the fill and mark them invalid",
            checks.boolean,
        ),
    ]
    all_touched: Annotated[
        bool,
        Field(
            "bool",
            "`false`",
            "with `mask`: every pixel the polygon touches is inside (GDAL's rule)",
            checks.boolean,
        ),
    ]
    dtype: Annotated[
        str,
        Field(
            "string",
            "the bands' common type",
            "output dtype (lossless integer casts or any float)",
            checks.string("a dtype name such as 'float32'"),
        ),
    ]
    scale_offset: Annotated[
        bool,
        Field(
            "bool",
            "`false`",
            "apply each band's scale/offset (float output, invalid = NaN)",
            checks.boolean,
        ),
    ]
    batch_rows: Annotated[
        int,
        Field(
            "int",
            "64",
            "chips per RecordBatch in steady state; each stream starts with batches "
            "of 1, 2, 4, ... chips (see `ramp`)",
            checks.positive_int,
        ),
    ]
    ramp: Annotated[
        bool,
        Field(
            "bool",
            "`true`",
            "start with a one-chip batch fetched alone, then 2, 4, ... chips: the first chip "
            "after about one round trip; `false`: full batches from the start, for a consumer "
            "that uses nothing before the whole stream has arrived",
            checks.boolean,
        ),
    ]
    geometry_scenes: Annotated[
        Sequence[Sequence[str]],
        Field(
            "[[string]]",
            "every scene the filter selects",
            "per geometry, the ids of the scenes it takes (one list per geometry): many "
            "samples, each over its own scenes or dates, in one request",
            checks.string_lists("scene ids"),
        ),
    ]
    patches: Annotated[
        bool | str,
        Field(
            "bool or string",
            "`false`",
            "one chip per selected Collection row, cut from the row's own `geometry` "
            "(`true`) or from the lon/lat WKB column named, over that row's own assets; "
            "`geometries` is then optional and keeps the rows whose patch intersects one; "
            "`geometry_index` is the row's position in the Collection",
            checks.flag_or_name("a geometry column name"),
        ),
    ]
    columns: Annotated[
        Sequence[str],
        Field(
            "[string]",
            "none",
            "Collection columns to pass through (labels, splits...)",
            checks.strings("column names"),
        ),
    ]
    shard: Annotated[
        Mapping[str, int],
        Field(
            '`{"index": i, "count": n}`',
            "the whole query",
            'in `DoGet`: only this part of the chips. In `GetFlightInfo`: `{"count": n}` '
            "asks for n endpoints (default: the server's `--shards`, else one per worker)",
            checks.shard,
        ),
    ]
    on_error: Annotated[
        str,
        Field(
            '`"raise"` or `"skip"`',
            '`"raise"`',
            "stop at the first chip that cannot be read correctly, or leave it out",
            checks.choice("raise", "skip"),
        ),
    ]
    skip: Annotated[
        int,
        Field(
            "int >= 0",
            "0",
            "leave out this many chips at the start of the stream (after `shard`): a client "
            "resuming a broken stream skips what it already has (see `ordinal`)",
            checks.non_negative_int,
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
        "(no other keys but `filter`, which keeps the rows of the scenes it selects) |",
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
    checks.expect(name, str, "collection", "a Collection name")
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
        raise InvalidArgumentError(f"ticket: expected a JSON object, got {checks.type_name(doc)}")
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
    index = checks.boolean(doc.get("index", False), "index")
    if index:  # the index rows, of the scenes ``filter`` selects when it is given
        chip_keys = sorted(set(doc) - {*_TOP_ONLY, "filter"})
        if chip_keys:
            raise InvalidArgumentError(f"{chip_keys[0]}: not allowed with index: true")
        selected = _filter(doc["filter"], "filter") if "filter" in doc else {}
        return Query(name, True, selected, {}, None, None, doc)
    if "geometries" not in doc and doc.get("patches") in (None, False):
        raise InvalidArgumentError(
            'geometries: missing; e.g. {"bbox": [xmin, ymin, xmax, ymax], "crs": "EPSG:4326"} '
            '(or "patches": true for one chip per Collection row)'
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
            checks.expect(request["geometry_crs"], str, "geometries.crs", "a CRS string")
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
