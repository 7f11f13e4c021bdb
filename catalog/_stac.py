"""Collections from a STAC API item search (pystac-client)."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Unpack

import pyarrow as pa
import shapely
from shapely.geometry import shape

from cogflight_core import BuildError, InvalidArgumentError, StacError

from ._build import BandSpec, BuildOptions, SceneSpec, assemble, rewrite_href, to_utc
from ._collection import Collection
from ._filters import parse_date_range
from ._schema import RESERVED_COLUMNS
from ._stores import StoreOptions, normalize_href

__all__ = ["build_from_stac", "properties_table"]

logger = logging.getLogger("cogflight.catalog")

_TIME_KEYS = ("start_datetime", "end_datetime", "created", "updated")
_GEOTIFF_TYPES = ("image/tiff", "image/vnd.stac.geotiff", "image/geotiff")


def properties_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """One column per property key; mixed or nested values that Arrow cannot type become JSON."""
    keys: list[str] = list(dict.fromkeys(k for r in rows for k in r))
    columns: dict[str, pa.Array] = {}
    for key in keys:
        values = [r.get(key) for r in rows]
        name = key if key not in RESERVED_COLUMNS else f"properties.{key}"
        if name != key:
            logger.warning(
                "STAC property %r renamed to %r (clashes with a Collection column)", key, name
            )
        if key in _TIME_KEYS or key.endswith("datetime"):
            try:
                columns[name] = pa.array(
                    [to_utc(v, key) for v in values], pa.timestamp("us", tz="UTC")
                )
                continue
            except InvalidArgumentError:
                pass
        try:
            arr = pa.array(values)
            if pa.types.is_null(arr.type):
                arr = pa.array(values, pa.string())
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):
            arr = pa.array(
                [None if v is None else json.dumps(v, default=str) for v in values], pa.string()
            )
        columns[name] = arr
    if not columns:
        return pa.table({"__row": pa.array(range(len(rows)), pa.int64())}).drop(["__row"])
    return pa.table(columns)


def _dotted(obj: Mapping[str, Any], path: str) -> Any:
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _sample_namer(key: str, eo_names: list[str]) -> Callable[[int], list[str]]:
    """Names for the samples of an asset: its eo:bands names when they fit, else key_N."""

    def names(n: int) -> list[str]:
        if len(eo_names) == n:
            return eo_names
        return [key] if n == 1 else [f"{key}_{i + 1}" for i in range(n)]

    return names


def _is_data_asset(asset: Mapping[str, Any]) -> bool:
    media = str(asset.get("type") or "").lower()
    roles = asset.get("roles") or []
    return any(t in media for t in _GEOTIFF_TYPES) and (not roles or "data" in roles)


def _band_names(asset: Mapping[str, Any]) -> list[str]:
    names = []
    for b in asset.get("eo:bands") or asset.get("bands") or []:
        if isinstance(b, Mapping):
            names.append(str(b.get("name") or b.get("common_name") or ""))
    return [n for n in names if n]


def build_from_stac(
    stac_api: Any,
    collection: str | Sequence[str],
    *,
    bbox: Sequence[float] | None = None,
    intersects: Any = None,
    date_range: Any = None,
    query: Mapping[str, Any] | None = None,
    filter: Mapping[str, Any] | None = None,
    ids: Sequence[str] | None = None,
    max_items: int | None = None,
    band_map: Mapping[str, str | Sequence[str]] | None = None,
    href_key: str | Sequence[str] = "href",
    href_rewrite: Mapping[str, str] | None = None,
    name: str | None = None,
    store_options: StoreOptions | None = None,
    page_size: int = 100,
    **options: Unpack[BuildOptions],
) -> Collection:
    """Build a Collection from a STAC API item search.

    Args:
        stac_api: the API root URL (or an open ``pystac_client.Client``).
        collection: STAC collection id(s) to search.
        bbox, intersects, date_range, query, filter, ids, max_items: the search
            (``date_range`` as ``"2024-01-01/2024-06-30"`` or ``(start, end)``).
        band_map: ``{asset_key: band_name}`` or ``{asset_key: [names per sample]}``;
            default: every GeoTIFF data asset, named by its key (multi-band
            assets by their ``eo:bands`` names).
        href_key: where the href sits in each asset, e.g. ``"alternate.s3.href"``
            (a list tries each in turn).
        href_rewrite: ``{prefix: replacement}`` applied to hrefs.
        store_options: how to reach the assets (requester pays, Planetary Computer...).

    Raises:
        StacError: the search failed.
        BuildError: no item could be indexed (or ``strict`` and one failed).
    """
    collections = [collection] if isinstance(collection, str) else list(collection)
    if not collections:
        raise InvalidArgumentError("collection: give at least one STAC collection id")
    if page_size < 1 or (max_items is not None and max_items < 1):
        raise InvalidArgumentError("page_size and max_items must be positive")
    datetime_arg = None
    if date_range is not None:
        start, end = parse_date_range(date_range)
        datetime_arg = (
            f"{start.isoformat().replace('+00:00', 'Z') if start else '..'}/"
            f"{end.isoformat().replace('+00:00', 'Z') if end else '..'}"
        )
    api_url = stac_api if isinstance(stac_api, str) else getattr(stac_api, "self_href", None)
    import pystac_client  # only here: it weighs 0.1 s of every import of catalog
    import pystac_client.exceptions

    try:
        client = pystac_client.Client.open(stac_api) if isinstance(stac_api, str) else stac_api
        search = client.search(
            collections=collections,
            bbox=list(bbox) if bbox is not None else None,
            intersects=intersects,
            datetime=datetime_arg,
            query=dict(query) if query else None,
            filter=dict(filter) if filter else None,
            ids=list(ids) if ids else None,
            max_items=max_items,
            limit=page_size,
        )
        # Plain dicts: pystac's Item objects migrate extensions (proj:epsg -> proj:code).
        items = list(search.items_as_dicts())
    except (pystac_client.exceptions.APIError, OSError, ValueError, TypeError) as exc:
        raise StacError(f"STAC search on {api_url} for {collections} failed: {exc}") from exc
    except Exception as exc:
        raise StacError(f"STAC search on {api_url} failed: {type(exc).__name__}: {exc}") from exc
    if not items:
        raise BuildError(f"the STAC search on {api_url} for {collections} returned no items")
    logger.info("STAC search returned %d items from %s", len(items), api_url)

    keys = [href_key] if isinstance(href_key, str) else list(href_key)
    rewrite = dict(href_rewrite or {})
    first_assets: dict[str, Mapping[str, Any]] = {}
    for it in items:
        for k, a in (it.get("assets") or {}).items():
            first_assets.setdefault(k, a)
    specs: list[BandSpec] = []
    auto: dict[str, Callable[[int], list[str]]] = {}
    if band_map is None:
        for key, asset in first_assets.items():
            if _is_data_asset(asset):
                auto[key] = _sample_namer(key, _band_names(asset))
        if not auto:
            raise BuildError(
                f"items of {collections} have no GeoTIFF data assets; pass band_map="
                f"{{asset: band}} choosing from {sorted(first_assets)}"
            )
    else:
        for key, names in band_map.items():
            if key not in first_assets:
                raise InvalidArgumentError(
                    f"band_map: no item has an asset {key!r}; assets are {sorted(first_assets)}"
                )
            if isinstance(names, str):
                specs.append(BandSpec(names, key, 0))
            else:
                specs.extend(BandSpec(str(n), key, i) for i, n in enumerate(names))
    wanted = [b.asset for b in specs] + list(auto)

    # Fallbacks for what a file's own header may lack, per (asset, sample).
    band_info: dict[tuple[str, int], dict[str, Any]] = {}
    for key in dict.fromkeys(wanted):
        asset_doc = first_assets[key]
        raster = asset_doc.get("raster:bands") or []
        eo = asset_doc.get("eo:bands") or []
        for i in range(max(len(raster), len(eo))):
            info: dict[str, Any] = {}
            if i < len(raster) and isinstance(raster[i], Mapping):
                info.update(
                    {
                        k: raster[i][k]
                        for k in ("scale", "offset", "nodata")
                        if raster[i].get(k) is not None
                    }
                )
            if i < len(eo) and isinstance(eo[i], Mapping) and eo[i].get("description"):
                info["description"] = str(eo[i]["description"])
            if info:
                band_info[(key, i)] = info

    scenes: list[SceneSpec] = []
    props: list[dict[str, Any]] = []
    seen: set[str] = set()
    for it in items:
        item_id = str(it.get("id"))
        if item_id in seen:
            logger.warning("STAC search returned item %r twice; keeping the first", item_id)
            continue
        seen.add(item_id)
        p = dict(it.get("properties") or {})
        when = to_utc(p.pop("datetime", None) or p.get("start_datetime"), f"{item_id}.datetime")
        assets: dict[str, str] = {}
        for key in dict.fromkeys(wanted):
            item_asset = (it.get("assets") or {}).get(key)
            if item_asset is None:
                continue
            href = next((h for k in keys if isinstance(h := _dotted(item_asset, k), str)), None)
            if href is None:
                continue
            href = rewrite_href(href, rewrite)
            assets[key] = normalize_href(href)
        geom = shape(it["geometry"]) if it.get("geometry") else None
        if geom is not None and not geom.is_valid:
            geom = shapely.make_valid(geom)
        p["collection"] = it.get("collection")
        scenes.append(SceneSpec(item_id, when, assets, geom, row=len(props)))
        props.append(p)
    return assemble(
        scenes,
        name=name or collections[0],
        bands=specs,
        auto_bands=auto,
        passthrough=properties_table(props),
        store_options=store_options,
        band_info=band_info,
        source={
            "kind": "stac",
            "stac_api": api_url,
            "collections": collections,
            "bbox": list(bbox) if bbox is not None else None,
            "datetime": datetime_arg,
            "query": dict(query) if query else None,
            "searched_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        },
        **options,
    )
