"""Building wire-contract v1 queries from Python arguments (no server code needed)."""

from __future__ import annotations

import base64
import json
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

from ._errors import InvalidArgumentError

__all__ = ["build_query"]


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
        f"geometries: expected bbox tuples, shapely geometries, WKB or GeoJSON, got "
        f"{type(value).__name__}"
    )


def geometries_field(geometries: Any, crs: str) -> dict[str, Any]:
    """The ``geometries`` object of a query from any accepted Python form."""
    if isinstance(geometries, Mapping):
        if (
            geometries.get("type") in ("FeatureCollection", "Feature")
            or "coordinates" in geometries
        ):
            return {
                "geojson": geometries
                if geometries.get("type") == "FeatureCollection"
                else [geometries],
                "crs": crs,
            }
        if any(k in geometries for k in ("bbox", "wkb_base64", "geojson")):
            return {"crs": crs, **geometries}
    if getattr(geometries, "ndim", None) in (1, 2) and hasattr(geometries, "tolist"):
        geometries = geometries.tolist()  # numpy: one box or point, or one per row
    if _is_bbox(geometries):
        return {"bbox": [float(v) for v in geometries], "crs": crs}
    if _numbers(geometries, 2):
        return {"geojson": [_point(geometries)], "crs": crs}
    if hasattr(geometries, "to_pylist") and not isinstance(geometries, Sequence):
        geometries = geometries.to_pylist()  # a pyarrow WKB array
    if isinstance(geometries, Sequence) and not isinstance(geometries, str | bytes):
        items = list(geometries)
        if not items:
            raise InvalidArgumentError("geometries: no geometries given")
        if all(_is_bbox(g) for g in items):
            return {"bbox": [[float(v) for v in g] for g in items], "crs": crs}
        if all(_numbers(g, 2) for g in items):  # (x, y) pairs: points, for chip_size chips
            return {"geojson": [_point(g) for g in items], "crs": crs}
        if all(isinstance(g, Mapping) for g in items):
            return {"geojson": list(items), "crs": crs}
        return {"wkb_base64": [base64.b64encode(_wkb(g)).decode() for g in items], "crs": crs}
    return {"wkb_base64": [base64.b64encode(_wkb(geometries)).decode()], "crs": crs}


def build_query(
    collection: str,
    *,
    geometries: Any,
    geometry_crs: str = "EPSG:4326",
    bands: Sequence[str] | None = None,
    filter: Mapping[str, Any] | None = None,
    chip_size: int | Sequence[int] | None = None,
    resolution: float | Sequence[float] | None = None,
    crs: str | None = None,
    resampling: str | None = None,
    time_series: bool | None = None,
    mask: bool | None = None,
    all_touched: bool | None = None,
    dtype: str | None = None,
    scale_offset: bool | None = None,
    batch_rows: int | None = None,
    columns: Sequence[str] | None = None,
    shard: Mapping[str, int] | None = None,
    on_error: str | None = None,
) -> dict[str, Any]:
    """A v1 query object; None arguments are left out (the server's defaults apply)."""
    if not isinstance(collection, str) or not collection:
        raise InvalidArgumentError("collection: expected a Collection name")
    doc: dict[str, Any] = {
        "v": 1,
        "collection": collection,
        "geometries": geometries_field(geometries, geometry_crs),
    }
    optional = {
        "bands": list(bands) if bands is not None else None,
        "filter": dict(filter) if filter else None,
        "chip_size": list(chip_size) if isinstance(chip_size, Sequence) else chip_size,
        "resolution": list(resolution) if isinstance(resolution, Sequence) else resolution,
        "crs": crs,
        "resampling": resampling,
        "time_series": time_series,
        "mask": mask,
        "all_touched": all_touched,
        "dtype": dtype,
        "scale_offset": scale_offset,
        "batch_rows": batch_rows,
        "columns": list(columns) if columns else None,
        "shard": dict(shard) if shard else None,
        "on_error": on_error,
    }
    doc.update({k: v for k, v in optional.items() if v is not None})
    json.dumps(doc)  # fail here, not on the wire, if something is not JSON
    return doc
