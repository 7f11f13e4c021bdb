"""Why a request makes no chip, in words a user can act on.

An empty result is valid (an epoch over a narrow filter may be empty) but is most
often a mistake: a bbox outside the data, swapped longitude and latitude, metres
under the default EPSG:4326. The server sends this explanation with every plan
and stream of a query that makes no chip; the Python client raises it as an
:class:`~cogflight_core.EmptyResultWarning`. Pure, reads only the Collection's table.
"""

from __future__ import annotations

import pyproj
import shapely

from catalog import Collection, same_crs

from ._request import ChipRequest

__all__ = ["explain_empty"]


def _box(bounds: tuple[float, ...]) -> str:
    return "[" + ", ".join(f"{v:.6g}" for v in bounds) + "]"


def _extent(collection: Collection, rows: list[int], crs: str) -> tuple[float, ...] | None:
    """Bounds of these rows' footprints (lon/lat) in ``crs``; None when it cannot project."""
    wkb = collection.table.column("geometry").take(rows).to_pylist()
    footprints = [g for g in shapely.from_wkb(wkb) if g is not None]
    if not footprints:
        return None
    bounds = shapely.union_all(footprints).bounds
    if same_crs(crs, "EPSG:4326"):
        return tuple(bounds)
    try:
        t = pyproj.Transformer.from_crs("OGC:CRS84", crs, always_xy=True)
        out = t.transform_bounds(bounds[0], bounds[1], bounds[2], bounds[3], densify_pts=21)
    except pyproj.exceptions.ProjError:
        return None
    return tuple(float(v) for v in out)


def explain_empty(collection: Collection, request: ChipRequest) -> str:
    """One sentence on why ``request`` makes no chip over ``collection``."""
    n = len(collection)
    rows = list(range(n)) if request.rows is None else list(request.rows)
    name = collection.name
    if not rows:
        return (
            f"the query makes no chip: its filter selects none of the {n} scenes of {name!r}; "
            "widen the filter (date_range, cloud_cover_lt, where, ids)"
        )
    crs = request.geometry_crs
    scenes = _extent(collection, rows, "EPSG:4326" if request.patches else crs)
    where = f" cover {_box(scenes)}" if scenes is not None else ""
    selected = f"the {len(rows)} selected scenes of {name!r}{where}"
    if request.patches:
        return (
            f"the query makes no chip: no patch of {selected} (EPSG:4326) intersects its "
            "geometries; check their CRS (geometries.crs) and extent"
        )
    if request.geometry_scenes is not None:
        return (
            f"the query makes no chip: geometry_scenes names none of the scenes each geometry "
            f"intersects among {selected} ({crs})"
        )
    query = shapely.union_all(list(request.geometries)).bounds if request.geometries else None
    asked = f"its geometries cover {_box(query)} ({crs})" if query is not None else "it"
    hint = (
        "; longitude and latitude swapped? (EPSG:4326 takes longitude first)"
        if same_crs(crs, "EPSG:4326")
        else "; is geometries.crs the CRS the coordinates are in?"
    )
    return f"the query makes no chip: {asked} and {selected} ({crs}); they do not intersect{hint}"
