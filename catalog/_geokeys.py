"""GeoTIFF georeferencing: GeoKeys to a CRS, model tags to an affine geotransform.

Pure functions, no I/O. CRS construction follows libgeotiff/GDAL: an EPSG code
when the file has one, otherwise the user-defined datum, ellipsoid, projection
method and parameters (or an embedded ESRI PE string). Angles are converted
from ``GeogAngularUnitsGeoKey`` to degrees and false eastings/northings from
``ProjLinearUnitsGeoKey`` to metres, as PROJ expects.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pyproj
from pyproj._crs import CoordinateOperation, Datum, Ellipsoid, PrimeMeridian
from pyproj.crs import GeographicCRS, ProjectedCRS
from pyproj.crs.coordinate_system import Cartesian2DCS
from pyproj.crs.datum import CustomDatum, CustomEllipsoid, CustomPrimeMeridian
from pyproj.crs.enums import Cartesian2DCSAxis

__all__ = ["GeoKeyError", "crs_from_geokeys", "geotransform_from_tags", "parse_geokeys"]

USER_DEFINED = 32767
GeoKeyValue = int | float | str | tuple[float, ...]

# GeoKey ids used below.
MODEL_TYPE, RASTER_TYPE, GT_CITATION = 1024, 1025, 1026
GEOGRAPHIC_TYPE, GEOG_CITATION, GEOG_DATUM, GEOG_PRIME_MERIDIAN = 2048, 2049, 2050, 2051
GEOG_ANGULAR_UNITS, GEOG_ANGULAR_UNIT_SIZE, GEOG_ELLIPSOID = 2054, 2055, 2056
GEOG_SEMI_MAJOR, GEOG_SEMI_MINOR, GEOG_INV_FLATTENING, GEOG_PM_LONG = 2057, 2058, 2059, 2061
PROJECTED_TYPE, PCS_CITATION, PROJECTION, PROJ_COORD_TRANS = 3072, 3073, 3074, 3075
PROJ_LINEAR_UNITS, PROJ_LINEAR_UNIT_SIZE = 3076, 3077
STD_PARALLEL1, STD_PARALLEL2 = 3078, 3079
NAT_ORIGIN_LONG, NAT_ORIGIN_LAT, FALSE_EASTING, FALSE_NORTHING = 3080, 3081, 3082, 3083
FALSE_ORIGIN_LONG, FALSE_ORIGIN_LAT, FALSE_ORIGIN_EASTING, FALSE_ORIGIN_NORTHING = (
    3084,
    3085,
    3086,
    3087,
)
CENTER_LONG, CENTER_LAT, CENTER_EASTING, CENTER_NORTHING = 3088, 3089, 3090, 3091
SCALE_AT_NAT_ORIGIN, SCALE_AT_CENTER, AZIMUTH_ANGLE, STRAIGHT_VERT_POLE_LONG = (
    3092,
    3093,
    3094,
    3095,
)
RECTIFIED_GRID_ANGLE = 3096

_LAT = (NAT_ORIGIN_LAT, FALSE_ORIGIN_LAT, CENTER_LAT)
_LON = (NAT_ORIGIN_LONG, FALSE_ORIGIN_LONG, CENTER_LONG)
_FE = (FALSE_EASTING, FALSE_ORIGIN_EASTING, CENTER_EASTING)
_FN = (FALSE_NORTHING, FALSE_ORIGIN_NORTHING, CENTER_NORTHING)
_FO_LAT = (FALSE_ORIGIN_LAT, NAT_ORIGIN_LAT, CENTER_LAT)
_FO_LON = (FALSE_ORIGIN_LONG, NAT_ORIGIN_LONG, CENTER_LONG)
_FO_FE = (FALSE_ORIGIN_EASTING, FALSE_EASTING, CENTER_EASTING)
_FO_FN = (FALSE_ORIGIN_NORTHING, FALSE_NORTHING, CENTER_NORTHING)
_C_LAT = (CENTER_LAT, NAT_ORIGIN_LAT, FALSE_ORIGIN_LAT)
_C_LON = (CENTER_LONG, NAT_ORIGIN_LONG, FALSE_ORIGIN_LONG)
_C_FE = (FALSE_EASTING, CENTER_EASTING, FALSE_ORIGIN_EASTING)
_C_FN = (FALSE_NORTHING, CENTER_NORTHING, FALSE_ORIGIN_NORTHING)
_K = (SCALE_AT_NAT_ORIGIN, SCALE_AT_CENTER)
_KC = (SCALE_AT_CENTER, SCALE_AT_NAT_ORIGIN)

# ProjCoordTransGeoKey -> (PROJ method, {PROJ parameter: geokey fallback chain}).
# "a:" marks angles, "l:" lengths, "s:" scale factors.
_METHODS: dict[int, tuple[str, dict[str, tuple[int, ...]]]] = {
    1: ("tmerc", {"a:lat_0": _LAT, "a:lon_0": _LON, "s:k_0": _K, "l:x_0": _FE, "l:y_0": _FN}),
    3: (
        "omerc +no_uoff",
        {
            "a:lat_0": _C_LAT,
            "a:lonc": _C_LON,
            "a:alpha": (AZIMUTH_ANGLE,),
            "a:gamma": (RECTIFIED_GRID_ANGLE,),
            "s:k_0": _KC,
            "l:x_0": _C_FE,
            "l:y_0": _C_FN,
        },
    ),
    7: ("merc", {"a:lon_0": _LON, "s:k_0": _K, "l:x_0": _FE, "l:y_0": _FN}),
    8: (
        "lcc",
        {
            "a:lat_1": (STD_PARALLEL1,),
            "a:lat_2": (STD_PARALLEL2,),
            "a:lat_0": _FO_LAT,
            "a:lon_0": _FO_LON,
            "l:x_0": _FO_FE,
            "l:y_0": _FO_FN,
        },
    ),
    9: (
        "lcc",
        {
            "a:lat_1": _LAT,
            "a:lat_0": _LAT,
            "a:lon_0": _LON,
            "s:k_0": _K,
            "l:x_0": _FE,
            "l:y_0": _FN,
        },
    ),
    10: ("laea", {"a:lat_0": _C_LAT, "a:lon_0": _C_LON, "l:x_0": _C_FE, "l:y_0": _C_FN}),
    11: (
        "aea",
        {
            "a:lat_1": (STD_PARALLEL1,),
            "a:lat_2": (STD_PARALLEL2,),
            "a:lat_0": _LAT,
            "a:lon_0": _LON,
            "l:x_0": _FE,
            "l:y_0": _FN,
        },
    ),
    12: ("aeqd", {"a:lat_0": _C_LAT, "a:lon_0": _C_LON, "l:x_0": _C_FE, "l:y_0": _C_FN}),
    13: (
        "eqdc",
        {
            "a:lat_1": (STD_PARALLEL1,),
            "a:lat_2": (STD_PARALLEL2,),
            "a:lat_0": _LAT,
            "a:lon_0": _LON,
            "l:x_0": _FE,
            "l:y_0": _FN,
        },
    ),
    14: ("stere", {"a:lat_0": _LAT, "a:lon_0": _LON, "s:k_0": _K, "l:x_0": _FE, "l:y_0": _FN}),
    16: ("sterea", {"a:lat_0": _LAT, "a:lon_0": _LON, "s:k_0": _K, "l:x_0": _FE, "l:y_0": _FN}),
    17: (
        "eqc",
        {
            "a:lat_ts": (STD_PARALLEL1,),
            "a:lat_0": _C_LAT,
            "a:lon_0": _C_LON,
            "l:x_0": _FE,
            "l:y_0": _FN,
        },
    ),
    18: ("cass", {"a:lat_0": _LAT, "a:lon_0": _LON, "l:x_0": _FE, "l:y_0": _FN}),
    19: ("gnom", {"a:lat_0": _C_LAT, "a:lon_0": _C_LON, "l:x_0": _FE, "l:y_0": _FN}),
    20: ("mill", {"a:lat_0": _C_LAT, "a:lon_0": _C_LON, "l:x_0": _FE, "l:y_0": _FN}),
    21: ("ortho", {"a:lat_0": _C_LAT, "a:lon_0": _C_LON, "l:x_0": _FE, "l:y_0": _FN}),
    22: ("poly", {"a:lat_0": _LAT, "a:lon_0": _LON, "l:x_0": _FE, "l:y_0": _FN}),
    23: ("robin", {"a:lon_0": _C_LON, "l:x_0": _FE, "l:y_0": _FN}),
    24: ("sinu", {"a:lon_0": _C_LON, "l:x_0": _FE, "l:y_0": _FN}),
    25: ("vandg", {"a:lon_0": _C_LON, "l:x_0": _FE, "l:y_0": _FN}),
    26: ("nzmg", {"a:lat_0": _LAT, "a:lon_0": _LON, "l:x_0": _FE, "l:y_0": _FN}),
    27: (
        "tmerc +axis=wsu",
        {"a:lat_0": _LAT, "a:lon_0": _LON, "s:k_0": _K, "l:x_0": _FE, "l:y_0": _FN},
    ),
}

_ANGULAR_TO_DEGREES = {9101: 180.0 / math.pi, 9102: 1.0, 9105: 0.9, 9104: 1.0 / 3600.0}
_LINEAR_TO_METRES = {9001: 1.0, 9002: 0.3048, 9003: 1200.0 / 3937.0}
_LINEAR_AXES = {
    9001: Cartesian2DCSAxis.EASTING_NORTHING,
    9002: Cartesian2DCSAxis.EASTING_NORTHING_FT,
    9003: Cartesian2DCSAxis.EASTING_NORTHING_US_FT,
}


class GeoKeyError(ValueError):
    """The GeoKeys (or model tags) do not describe a usable georeferencing."""


def parse_geokeys(
    directory: np.ndarray, doubles: np.ndarray | None, ascii_params: str | None
) -> dict[int, GeoKeyValue]:
    """Decode a GeoKeyDirectory into ``{key id: value}``."""
    d = np.asarray(directory, dtype=np.int64).ravel()
    if d.size < 4:
        raise GeoKeyError("GeoKeyDirectory is shorter than its 4-value header")
    n = int(d[3])
    if d.size < 4 + 4 * n:
        raise GeoKeyError(f"GeoKeyDirectory declares {n} keys but holds {(d.size - 4) // 4}")
    keys: dict[int, GeoKeyValue] = {}
    for i in range(n):
        key, location, count, value = (int(x) for x in d[4 + 4 * i : 8 + 4 * i])
        if location == 0:
            keys[key] = value
        elif location == 34736:
            if doubles is None or value + count > len(doubles):
                raise GeoKeyError(f"GeoKey {key} points past GeoDoubleParams")
            vals = tuple(float(x) for x in doubles[value : value + count])
            keys[key] = vals[0] if count == 1 else vals
        elif location == 34737:
            if ascii_params is None or value + count > len(ascii_params) + 1:
                raise GeoKeyError(f"GeoKey {key} points past GeoAsciiParams")
            keys[key] = ascii_params[value : value + count].rstrip("|\x00 ")
        elif location == 34735:
            keys[key] = int(d[value]) if 0 <= value < d.size else 0
        # Keys stored in other tags are not used for georeferencing; skip them.
    return keys


def crs_from_geokeys(keys: Mapping[int, GeoKeyValue]) -> pyproj.CRS:
    """Build the CRS a GeoTIFF declares.

    Raises:
        GeoKeyError: no CRS can be built (geocentric, unknown code, missing parameters).
    """
    keys = {k: v for k, v in keys.items() if k != RASTER_TYPE}
    model = _int(keys.get(MODEL_TYPE))
    try:
        if model == 3:
            raise GeoKeyError("geocentric model (GTModelType 3) is not a raster CRS")
        if model == 1 or (model is None and PROJECTED_TYPE in keys):
            return _projected(keys)
        if model == 2 or (model is None and GEOGRAPHIC_TYPE in keys):
            unit = _int(keys.get(GEOG_ANGULAR_UNITS))
            if unit not in (None, 9102):
                raise GeoKeyError(
                    f"geographic raster in GeogAngularUnitsGeoKey {unit}: only degrees (9102) "
                    "are supported"
                )
            return _geographic(keys)
        pe = _esri_pe(keys)
        if pe is not None:
            return pe
    except pyproj.exceptions.CRSError as exc:
        raise GeoKeyError(f"cannot build a CRS from the GeoKeys: {exc}") from exc
    raise GeoKeyError(
        "the GeoKeys declare no model type and no CRS code; assign a CRS, "
        "for example with `gdal_edit.py -a_srs EPSG:XXXX`"
    )


def _int(value: GeoKeyValue | None) -> int | None:
    """A GeoKey code as an int; codes stored as non-integral doubles are corrupt."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise GeoKeyError(f"a GeoKey code holds the non-integral value {value!r}")
    return int(value)


def _float(keys: Mapping[int, GeoKeyValue], chain: tuple[int, ...]) -> float | None:
    for key in chain:
        v = keys.get(key)
        if isinstance(v, int | float):
            return float(v)
        if isinstance(v, tuple) and v:
            return float(v[0])
    return None


def _esri_pe(keys: Mapping[int, GeoKeyValue]) -> pyproj.CRS | None:
    for key in (PCS_CITATION, GT_CITATION, GEOG_CITATION):
        text = keys.get(key)
        if isinstance(text, str) and text.startswith("ESRI PE String = "):
            return pyproj.CRS.from_wkt(text[len("ESRI PE String = ") :])
    return None


def _projected(keys: Mapping[int, GeoKeyValue]) -> pyproj.CRS:
    code = _int(keys.get(PROJECTED_TYPE))
    if code not in (None, 0, USER_DEFINED):
        try:
            return pyproj.CRS.from_epsg(code)
        except pyproj.exceptions.CRSError as exc:
            raise GeoKeyError(f"ProjectedCSTypeGeoKey {code} is not a known EPSG code") from exc
    pe = _esri_pe(keys)
    if pe is not None:
        return pe
    geog = _geographic(keys)
    unit = _int(keys.get(PROJ_LINEAR_UNITS)) or 9001
    if unit == USER_DEFINED:
        size = _float(keys, (PROJ_LINEAR_UNIT_SIZE,))
        matches = [u for u, m in _LINEAR_TO_METRES.items() if size and abs(m - size) < 1e-12]
        if not matches:
            raise GeoKeyError(f"user-defined linear unit of {size} m is not supported")
        unit = matches[0]
    if unit not in _LINEAR_TO_METRES:
        raise GeoKeyError(f"ProjLinearUnitsGeoKey {unit} is not supported (metre or foot only)")
    cs = Cartesian2DCS(axis=_LINEAR_AXES[unit])
    projection = _int(keys.get(PROJECTION))
    if projection not in (None, 0, USER_DEFINED):
        try:
            conversion = CoordinateOperation.from_epsg(projection)
        except pyproj.exceptions.CRSError as exc:
            raise GeoKeyError(f"ProjectionGeoKey {projection} is not a known EPSG code") from exc
    else:
        conversion = _conversion(keys, _LINEAR_TO_METRES[unit])
    name = keys.get(PCS_CITATION) or keys.get(GT_CITATION) or "unnamed"
    return pyproj.CRS(
        ProjectedCRS(conversion=conversion, geodetic_crs=geog, cartesian_cs=cs, name=str(name))
    )


def _conversion(keys: Mapping[int, GeoKeyValue], to_metres: float) -> CoordinateOperation:
    method = _int(keys.get(PROJ_COORD_TRANS))
    if method is None:
        raise GeoKeyError("user-defined projected CRS without ProjCoordTransGeoKey")
    deg = _angle_factor(keys)
    if method == 15:  # polar stereographic: variant A at the pole, else B
        lat = _float(keys, _LAT) or 90.0
        lon = _float(keys, (STRAIGHT_VERT_POLE_LONG, *_LON)) or 0.0
        fe = (_float(keys, _FE) or 0.0) * to_metres
        fn = (_float(keys, _FN) or 0.0) * to_metres
        k = _float(keys, _K)
        lat, lon = lat * deg, lon * deg
        if abs(abs(lat) - 90.0) < 1e-9:
            proj = f"+proj=stere +lat_0={lat!r} +lon_0={lon!r} +k_0={k or 1.0!r}"
        else:
            proj = f"+proj=stere +lat_0={math.copysign(90.0, lat)!r} +lat_ts={lat!r} +lon_0={lon!r}"
        proj += f" +x_0={fe!r} +y_0={fn!r}"
    elif method in _METHODS:
        name, params = _METHODS[method]
        if method == 7 and STD_PARALLEL1 in keys:  # Mercator variant B
            params = {**params, "a:lat_ts": (STD_PARALLEL1,)}
            params.pop("s:k_0", None)
        parts = [f"+proj={name}"]
        for spec, chain in params.items():
            kind, pname = spec.split(":")
            value = _float(keys, chain)
            if value is None:
                continue
            if kind == "a":
                value *= deg
            elif kind == "l":
                value *= to_metres
            parts.append(f"+{pname}={value!r}")
        proj = " ".join(parts)
    else:
        raise GeoKeyError(
            f"projection method ProjCoordTransGeoKey={method} is not supported; "
            "re-save the file with an EPSG code"
        )
    op = pyproj.CRS.from_proj4(proj + " +ellps=WGS84 +units=m +no_defs").coordinate_operation
    if op is None:  # pragma: no cover - PROJ always yields one for a projected CRS
        raise GeoKeyError(f"PROJ built no conversion from {proj!r}")
    return op


def _angle_factor(keys: Mapping[int, GeoKeyValue]) -> float:
    unit = _int(keys.get(GEOG_ANGULAR_UNITS)) or 9102
    if unit == USER_DEFINED:
        size = _float(keys, (GEOG_ANGULAR_UNIT_SIZE,))
        if not size:
            raise GeoKeyError("user-defined angular unit without GeogAngularUnitSizeGeoKey")
        return size * 180.0 / math.pi
    if unit not in _ANGULAR_TO_DEGREES:
        raise GeoKeyError(f"GeogAngularUnitsGeoKey {unit} is not supported")
    return _ANGULAR_TO_DEGREES[unit]


def _geographic(keys: Mapping[int, GeoKeyValue]) -> pyproj.CRS:
    code = _int(keys.get(GEOGRAPHIC_TYPE))
    if code not in (None, 0, USER_DEFINED):
        try:
            crs = pyproj.CRS.from_epsg(code)
        except pyproj.exceptions.CRSError as exc:
            raise GeoKeyError(f"GeographicTypeGeoKey {code} is not a known EPSG code") from exc
        return crs
    datum_code = _int(keys.get(GEOG_DATUM))
    pm_code = _int(keys.get(GEOG_PRIME_MERIDIAN))
    if pm_code not in (None, 0, USER_DEFINED):
        pm = PrimeMeridian.from_epsg(pm_code)
    elif GEOG_PM_LONG in keys:
        pm = CustomPrimeMeridian(
            longitude=(_float(keys, (GEOG_PM_LONG,)) or 0.0) * _angle_factor(keys)
        )
    else:
        pm = PrimeMeridian.from_epsg(8901)
    if datum_code not in (None, 0, USER_DEFINED) and pm_code in (None, 0, 8901, USER_DEFINED):
        datum = Datum.from_epsg(datum_code)
    else:
        ell_code = _int(keys.get(GEOG_ELLIPSOID))
        if ell_code not in (None, 0, USER_DEFINED):
            ellipsoid = Ellipsoid.from_epsg(ell_code)
        elif GEOG_SEMI_MAJOR in keys:
            a = _float(keys, (GEOG_SEMI_MAJOR,))
            b = _float(keys, (GEOG_SEMI_MINOR,))
            rf = _float(keys, (GEOG_INV_FLATTENING,))
            if rf:
                ellipsoid = CustomEllipsoid(semi_major_axis=a, inverse_flattening=rf)
            elif b:
                ellipsoid = CustomEllipsoid(semi_major_axis=a, semi_minor_axis=b)
            else:
                ellipsoid = CustomEllipsoid(semi_major_axis=a, semi_minor_axis=a)
        else:
            from_datum = (
                Datum.from_epsg(datum_code).ellipsoid
                if datum_code not in (None, 0, USER_DEFINED)
                else None
            )
            # Without a datum ellipsoid, fall back to WGS 84 as GDAL does.
            ellipsoid = from_datum if from_datum is not None else Ellipsoid.from_epsg(7030)
        datum = CustomDatum(ellipsoid=ellipsoid, prime_meridian=pm)
    name = keys.get(GEOG_CITATION) or "unnamed"
    return pyproj.CRS(GeographicCRS(name=str(name), datum=datum))


def geotransform_from_tags(
    tags: Mapping[int, object], pixel_is_point: bool
) -> tuple[float, float, float, float, float, float]:
    """The GDAL-order geotransform ``(x0, dx, rx, y0, ry, dy)`` of the model tags.

    Raises:
        GeoKeyError: no affine georeferencing (missing tags or ground control points).
    """
    matrix = tags.get(34264)
    tiepoints = tags.get(33922)
    scale = tags.get(33550)
    if matrix is not None:
        m = np.asarray(matrix, dtype=np.float64)
        if m.size != 16:
            raise GeoKeyError(f"ModelTransformationTag holds {m.size} values, expected 16")
        gt = [float(m[3]), float(m[0]), float(m[1]), float(m[7]), float(m[4]), float(m[5])]
    elif tiepoints is not None and scale is not None:
        tp = np.asarray(tiepoints, dtype=np.float64)
        sc = np.asarray(scale, dtype=np.float64)
        if tp.size < 6 or sc.size < 2:
            raise GeoKeyError("ModelTiepoint/ModelPixelScale are too short")
        if tp.size > 6:
            raise GeoKeyError(
                f"georeferenced by {tp.size // 6} ground control points, not an affine "
                "transform; warp it first (gdalwarp) to a regular grid"
            )
        i, j, x, y = tp[0], tp[1], tp[3], tp[4]
        sx, sy = sc[0], sc[1]
        gt = [float(x - i * sx), float(sx), 0.0, float(y + j * sy), 0.0, float(-sy)]
    elif tiepoints is not None:
        raise GeoKeyError(
            "georeferenced by ground control points only (no ModelPixelScale); "
            "warp it to a regular grid first"
        )
    else:
        raise GeoKeyError(
            "no georeferencing: the file has neither ModelTransformation nor "
            "ModelTiepoint + ModelPixelScale tags"
        )
    if pixel_is_point:
        gt[0] -= gt[1] * 0.5 + gt[2] * 0.5
        gt[3] -= gt[4] * 0.5 + gt[5] * 0.5
    if not all(math.isfinite(v) for v in gt):
        raise GeoKeyError(f"the geotransform holds non-finite values {gt}")
    if gt[2] != 0.0 or gt[4] != 0.0:
        raise GeoKeyError(
            f"the geotransform is rotated or sheared (terms {gt[2]}, {gt[4]}); cogflight "
            "reads north-up or south-up grids only: warp it first (gdalwarp)"
        )
    if gt[1] == 0.0 or gt[5] == 0.0:
        raise GeoKeyError(f"the geotransform has a zero pixel size {gt}")
    return (gt[0], gt[1], gt[2], gt[3], gt[4], gt[5])
