"""Building wire-contract v1 queries from Python arguments (no server code needed).

The arguments are :class:`cogflight_core.ChipQuery`'s fields: :func:`build_query`
walks that declaration, turns each Python value into its JSON form (tuples and
numpy values become lists and numbers, ``geometries`` any accepted form, a field
with a ``wire`` path goes there: ``geometry_crs`` -> ``geometries.crs``), and
checks the result with :func:`cogflight_core.parse_query`, the server's own
parser. A new field in the declaration needs no change here unless its Python
form needs a converter of its own (only ``geometries`` does). Pure functions.
"""

from __future__ import annotations

import base64
import json
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Unpack

from cogflight_core import (
    QUERY_VERSION,
    ChipQuery,
    InvalidArgumentError,
    Query,
    chip_fields,
    parse_query,
)

__all__ = ["build_index_query", "build_query", "geometries_field", "jsonable", "split_query"]


def jsonable(value: Any) -> Any:
    """``value`` in JSON types: tuples and arrays as lists, numpy scalars as numbers."""
    if isinstance(value, str | bytes | bool | int | float) or value is None:
        return value
    if isinstance(value, Mapping):
        return {k: jsonable(v) for k, v in value.items()}
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return jsonable(value.tolist())
    if isinstance(value, Sequence):
        return [jsonable(v) for v in value]
    return value  # not JSON: the caller's json.dumps names it


def _numbers(value: Any, n: int) -> bool:
    """``n`` real numbers (Python or numpy), in a sequence or a 1-d array."""
    if hasattr(value, "tolist") and getattr(value, "ndim", None) == 1:
        value = value.tolist()
    return (
        isinstance(value, Sequence)
        and not isinstance(value, str | bytes)
        and len(value) == n
        and all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value)
    )


def _is_bbox(value: Any) -> bool:
    return _numbers(value, 4)


def _point(value: Sequence[float]) -> dict[str, Any]:
    return {"type": "Point", "coordinates": [float(v) for v in value]}


def _wkb(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    to_wkb = getattr(value, "wkb", None)  # shapely geometries, without importing shapely
    if isinstance(to_wkb, bytes):
        return to_wkb
    raise InvalidArgumentError(
        f"geometries: expected bbox tuples, (x, y) points, shapely geometries, WKB or "
        f"GeoJSON, got {type(value).__name__}"
    )


def geometries_field(geometries: Any) -> dict[str, Any]:
    """The ``geometries`` object of a query from any accepted Python form (without ``crs``).

    Accepted: a bbox tuple or a list of them, (x, y) points, shapely geometries,
    WKB bytes, GeoJSON (geometries, Features, a FeatureCollection), a pyarrow WKB
    array, numpy arrays of boxes or points, or the wire object itself.
    """
    if isinstance(geometries, Mapping):
        if (
            geometries.get("type") in ("FeatureCollection", "Feature")
            or "coordinates" in geometries
        ):
            if geometries.get("type") == "FeatureCollection":
                return {"geojson": jsonable(geometries)}
            return {"geojson": [jsonable(geometries)]}
        if any(k in geometries for k in ("bbox", "wkb_base64", "geojson")):
            return jsonable(geometries)  # type: ignore[no-any-return]
    if getattr(geometries, "ndim", None) in (1, 2) and hasattr(geometries, "tolist"):
        geometries = geometries.tolist()  # numpy: one box or point, or one per row
    if _is_bbox(geometries):
        return {"bbox": [float(v) for v in geometries]}
    if _numbers(geometries, 2):
        return {"geojson": [_point(geometries)]}
    if hasattr(geometries, "to_pylist") and not isinstance(geometries, Sequence):
        geometries = geometries.to_pylist()  # a pyarrow WKB array
    if isinstance(geometries, Sequence) and not isinstance(geometries, str | bytes):
        items = list(geometries)
        if not items:
            raise InvalidArgumentError("geometries: no geometries given")
        if all(_is_bbox(g) for g in items):
            return {"bbox": [[float(v) for v in g] for g in items]}
        if all(_numbers(g, 2) for g in items):  # (x, y) pairs: points, for chip_size chips
            return {"geojson": [_point(g) for g in items]}
        if all(isinstance(g, Mapping) for g in items):
            return {"geojson": [jsonable(g) for g in items]}
        return {"wkb_base64": [base64.b64encode(_wkb(g)).decode() for g in items]}
    return {"wkb_base64": [base64.b64encode(_wkb(geometries)).decode()]}


# Fields whose Python form needs more than :func:`jsonable`.
_CONVERTERS: dict[str, Callable[[Any], Any]] = {"geometries": geometries_field}


def _place(doc: dict[str, Any], path: str, value: Any, name: str) -> None:
    """Put ``value`` at a dotted wire path (``geometries.crs``)."""
    *parents, leaf = path.split(".")
    target = doc
    for key in parents:
        target = target.setdefault(key, {})
    if leaf in target and target[leaf] != value:
        raise InvalidArgumentError(
            f"{name}: {value!r} conflicts with {path} {target[leaf]!r}; give one of them"
        )
    target[leaf] = value


def _parsed(doc: dict[str, Any]) -> Query:
    """``doc`` as the wire contract's own parser reads its JSON text (or its error)."""
    try:
        text = json.dumps(doc)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"query: a value is not JSON ({exc})") from exc
    return parse_query(text)


def build_query(collection: str, **fields: Unpack[ChipQuery]) -> dict[str, Any]:
    """A v1 query object for ``collection``; None arguments are left out (server defaults).

    Raises:
        InvalidArgumentError: an unknown argument, a value of the wrong form, or a
            query the wire contract refuses (the message names the field).
    """
    specs = chip_fields()
    unknown = sorted(set(fields) - set(specs))
    if unknown:
        raise InvalidArgumentError(
            f"{unknown[0]}: unknown argument; the query's fields are {', '.join(specs)}"
        )
    if fields.get("geometries") is None and not fields.get("patches"):
        raise InvalidArgumentError(
            "geometries: missing; give bbox tuples, (x, y) points, shapely geometries, WKB "
            "or GeoJSON"
        )
    doc: dict[str, Any] = {"v": QUERY_VERSION, "collection": collection}
    for name, spec in specs.items():  # declaration order: geometries before geometry_crs
        value = fields.get(name)
        if value is None:
            continue
        wire = _CONVERTERS.get(name, jsonable)(value)
        if spec.wire is not None:
            _place(doc, spec.wire, wire, name)
        else:
            doc[name] = wire
    query = _parsed(doc)
    # Every ticket names its geometries' CRS: the contract's default when none was given.
    if "geometries" in doc:
        doc["geometries"].setdefault("crs", query.request["geometry_crs"])
    return doc


def build_index_query(collection: str, filter: Mapping[str, Any] | None) -> dict[str, Any]:
    """A v1 index query: the Collection's index rows, those matching ``filter`` if given."""
    doc: dict[str, Any] = {"v": QUERY_VERSION, "collection": collection, "index": True}
    if filter is not None:
        doc["filter"] = jsonable(filter)
    _parsed(doc)
    return doc


def split_query(
    doc: Mapping[str, Any], given: Mapping[str, Any], *, reader: str
) -> tuple[str | None, dict[str, Any]]:
    """``(collection, fields)`` of a wire query document, completed by ``given`` fields.

    For consumers that take a whole query document (Ray, Spark) as well as fields.

    Raises:
        InvalidArgumentError: another version, an index query, a field given both ways.
    """
    body = dict(doc)
    if body.pop("v", QUERY_VERSION) != QUERY_VERSION:
        raise InvalidArgumentError(f"v: this client speaks version {QUERY_VERSION}")
    if body.pop("index", False):
        raise InvalidArgumentError(f"index: {reader} reads chips, not a Collection's index")
    collection = body.pop("collection", None)
    both = sorted(set(body) & set(given))
    if both:
        raise InvalidArgumentError(f"{both[0]}: given in the query document and as an argument")
    return collection, {**body, **given}
