"""Unit tests of GeoKey decoding, CRS construction and geotransforms (no files).

User-defined CRSs are compared by meaning against pyproj CRSs built from the
equivalent PROJ strings: points are projected with the reference and brought
back to EPSG:4326 through both CRSs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pyproj
import pytest

from catalog._geokeys import (
    GeoKeyError,
    crs_from_geokeys,
    geotransform_from_tags,
    parse_geokeys,
)

# GeoKey ids.
MODEL, RASTER, CITATION = 1024, 1025, 1026
GEOGRAPHIC, GEOG_CITATION, DATUM, PRIME_MERIDIAN = 2048, 2049, 2050, 2051
ANGULAR_UNITS, ELLIPSOID, SEMI_MAJOR, SEMI_MINOR, INV_FLATTENING = 2054, 2056, 2057, 2058, 2059
PROJECTED, PCS_CITATION, PROJECTION, COORD_TRANS, LINEAR_UNITS = 3072, 3073, 3074, 3075, 3076
LINEAR_UNIT_SIZE = 3077
STD_PARALLEL1, STD_PARALLEL2, NAT_LON, NAT_LAT, FE, FN = 3078, 3079, 3080, 3081, 3082, 3083
FO_LON, FO_LAT, FO_E, FO_N, CENTER_LON, CENTER_LAT = 3084, 3085, 3086, 3087, 3088, 3089
SCALE_NAT, SCALE_CENTER, VERT_POLE_LON = 3092, 3093, 3095
USER = 32767
US_FT = 1200.0 / 3937.0

WGS84 = "+datum=WGS84 +no_defs +type=crs"


def user_projected(ct: int, **params: float) -> dict[int, object]:
    """A user-defined projected CRS on WGS 84 with method ``ct``."""
    keys: dict[int, object] = {MODEL: 1, RASTER: 1, PROJECTED: USER, GEOGRAPHIC: 4326,
                               COORD_TRANS: ct}
    names = {
        "std1": STD_PARALLEL1, "std2": STD_PARALLEL2, "nat_lon": NAT_LON, "nat_lat": NAT_LAT,
        "fe": FE, "fn": FN, "fo_lon": FO_LON, "fo_lat": FO_LAT, "fo_e": FO_E, "fo_n": FO_N,
        "c_lon": CENTER_LON, "c_lat": CENTER_LAT, "k": SCALE_NAT, "kc": SCALE_CENTER,
        "pole_lon": VERT_POLE_LON, "units": LINEAR_UNITS,
    }
    for name, value in params.items():
        keys[names[name]] = int(value) if name == "units" else float(value)
    return keys


def assert_same_meaning(
    ours: pyproj.CRS, reference: pyproj.CRS, lonlats: Sequence[tuple[float, float]]
) -> None:
    """Points projected by the reference come back to the same lon/lat through ours."""
    lon = np.array([p[0] for p in lonlats])
    lat = np.array([p[1] for p in lonlats])
    fwd = pyproj.Transformer.from_crs("EPSG:4326", reference, always_xy=True)
    x, y = fwd.transform(lon, lat)
    assert np.all(np.isfinite(x)) and np.all(np.isfinite(y))
    for crs in (reference, ours):
        back = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
        lon2, lat2 = back.transform(x, y)
        np.testing.assert_allclose(lon2, lon, rtol=0, atol=1e-7, err_msg=crs.to_wkt())
        np.testing.assert_allclose(lat2, lat, rtol=0, atol=1e-7, err_msg=crs.to_wkt())
    assert ours.is_projected == reference.is_projected
    assert [a.unit_name for a in ours.axis_info] == [a.unit_name for a in reference.axis_info]


def around(lon: float, lat: float, d: float = 2.0) -> list[tuple[float, float]]:
    return [(lon, lat), (lon - d, lat - d), (lon + d, lat + d), (lon + d, lat - d / 2),
            (lon - d / 3, lat + d)]


# ---------------------------------------------------------------------------
# parse_geokeys
# ---------------------------------------------------------------------------


def test_parse_geokeys_decodes_every_location() -> None:
    directory = np.array(
        [1, 1, 0, 6,
         MODEL, 0, 1, 1,
         PROJECTED, 0, 1, 32633,
         PCS_CITATION, 34737, 10, 0,
         GEOG_CITATION, 34737, 6, 10,
         FE, 34736, 1, 1,
         STD_PARALLEL1, 34736, 2, 0],
        dtype=np.uint16,
    )
    doubles = np.array([12.5, 500000.0, 7.0])
    keys = parse_geokeys(directory, doubles, "UTM 33N  |WGS 84|")
    assert keys == {
        MODEL: 1,
        PROJECTED: 32633,
        PCS_CITATION: "UTM 33N",
        GEOG_CITATION: "WGS 84",
        FE: 500000.0,
        STD_PARALLEL1: (12.5, 500000.0),
    }
    assert isinstance(keys[FE], float)


def test_parse_geokeys_value_in_the_directory_itself() -> None:
    directory = np.array([1, 1, 0, 2, MODEL, 0, 1, 2, GEOGRAPHIC, 34735, 1, 12, 4326])
    assert parse_geokeys(directory, None, None) == {MODEL: 2, GEOGRAPHIC: 4326}


def test_parse_geokeys_skips_keys_stored_in_other_tags() -> None:
    directory = np.array([1, 1, 0, 2, MODEL, 0, 1, 2, 4099, 33550, 1, 0])
    assert parse_geokeys(directory, None, None) == {MODEL: 2}


@pytest.mark.parametrize(
    ("directory", "doubles", "ascii_params", "match"),
    [
        ([1, 1, 0], None, None, "shorter than its 4-value header"),
        ([1, 1, 0, 3, MODEL, 0, 1, 1, PROJECTED, 0, 1, 32633], None, None, "declares 3 keys"),
        ([1, 1, 0, 2, MODEL, 0, 1, 1], None, None, "declares 2 keys but holds 1"),
        ([1, 1, 0, 1, FE, 34736, 1, 0], None, None, "past GeoDoubleParams"),
        ([1, 1, 0, 1, FE, 34736, 2, 1], [1.0, 2.0], None, "past GeoDoubleParams"),
        ([1, 1, 0, 1, PCS_CITATION, 34737, 5, 0], None, None, "past GeoAsciiParams"),
        ([1, 1, 0, 1, PCS_CITATION, 34737, 9, 2], None, "abc|", "past GeoAsciiParams"),
    ],
    ids=["no-header", "short-by-one", "short", "no-doubles", "doubles-short", "no-ascii",
         "ascii-short"],
)
def test_parse_geokeys_rejects_inconsistent_directories(
    directory: list[int], doubles: list[float] | None, ascii_params: str | None, match: str
) -> None:
    with pytest.raises(GeoKeyError, match=match):
        parse_geokeys(
            np.array(directory), None if doubles is None else np.array(doubles), ascii_params
        )
    assert issubclass(GeoKeyError, ValueError)


# ---------------------------------------------------------------------------
# EPSG codes
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("code", [32633, 32760, 3857, 3035, 2056, 27700, 5070])
def test_epsg_projected(code: int) -> None:
    crs = crs_from_geokeys({MODEL: 1, RASTER: 1, PROJECTED: code})
    assert crs.to_epsg() == code
    assert crs.equals(pyproj.CRS.from_epsg(code))


@pytest.mark.parametrize("code", [4326, 4269, 4258, 4283])
def test_epsg_geographic(code: int) -> None:
    crs = crs_from_geokeys({MODEL: 2, RASTER: 1, GEOGRAPHIC: code})
    assert crs.to_epsg() == code
    assert crs.is_geographic


def test_model_type_inferred_from_the_code_key() -> None:
    assert crs_from_geokeys({PROJECTED: 32633}).to_epsg() == 32633
    assert crs_from_geokeys({GEOGRAPHIC: 4326}).to_epsg() == 4326


def test_raster_type_does_not_change_the_crs() -> None:
    a = crs_from_geokeys({MODEL: 1, PROJECTED: 32633, RASTER: 1})
    b = crs_from_geokeys({MODEL: 1, PROJECTED: 32633, RASTER: 2})
    assert a == b


def test_projection_conversion_code_on_geographic_code_is_utm() -> None:
    keys = {MODEL: 1, PROJECTED: USER, GEOGRAPHIC: 4326, PROJECTION: 16033, LINEAR_UNITS: 9001}
    crs = crs_from_geokeys(keys)
    utm = pyproj.CRS.from_epsg(32633)
    assert crs.equals(utm, ignore_axis_order=True)
    assert_same_meaning(crs, utm, around(15.0, 45.0))


# ---------------------------------------------------------------------------
# User-defined projected CRSs, one per ProjCoordTransGeoKey method.
# ---------------------------------------------------------------------------

_METHOD_CASES = [
    pytest.param(
        user_projected(1, nat_lat=45.5, nat_lon=9.0, k=0.9996, fe=500000, fn=-100000),
        "+proj=tmerc +lat_0=45.5 +lon_0=9 +k_0=0.9996 +x_0=500000 +y_0=-100000",
        around(9.0, 45.5), id="TM",
    ),
    pytest.param(
        user_projected(7, nat_lon=110.0, k=0.997, fe=3900000, fn=900000),
        "+proj=merc +lon_0=110 +k_0=0.997 +x_0=3900000 +y_0=900000",
        around(110.0, -3.0), id="Mercator-1SP",
    ),
    pytest.param(
        user_projected(7, std1=41.0, nat_lon=51.0, fe=0, fn=0),
        "+proj=merc +lat_ts=41 +lon_0=51 +x_0=0 +y_0=0",
        around(51.0, 40.0), id="Mercator-2SP",
    ),
    pytest.param(
        user_projected(8, std1=33.0, std2=45.0, fo_lat=23.0, fo_lon=-96.0, fo_e=100, fo_n=200),
        "+proj=lcc +lat_1=33 +lat_2=45 +lat_0=23 +lon_0=-96 +x_0=100 +y_0=200",
        around(-96.0, 39.0), id="LCC-2SP",
    ),
    pytest.param(
        user_projected(9, nat_lat=46.8, nat_lon=2.337229, k=0.99987742, fe=600000, fn=2200000),
        "+proj=lcc +lat_1=46.8 +lat_0=46.8 +lon_0=2.337229 +k_0=0.99987742 +x_0=600000 "
        "+y_0=2200000",
        around(2.3, 46.8), id="LCC-1SP",
    ),
    pytest.param(
        user_projected(11, std1=29.5, std2=45.5, nat_lat=23.0, nat_lon=-96.0, fe=10, fn=20),
        "+proj=aea +lat_1=29.5 +lat_2=45.5 +lat_0=23 +lon_0=-96 +x_0=10 +y_0=20",
        around(-96.0, 37.0), id="Albers",
    ),
    pytest.param(
        user_projected(11, std1=15.5, std2=37.75, fo_lat=12.5, fo_lon=-21.25, fo_e=1234.5,
                       fo_n=-765.25),
        "+proj=aea +lat_1=15.5 +lat_2=37.75 +lat_0=12.5 +lon_0=-21.25 +x_0=1234.5 +y_0=-765.25",
        around(-21.0, 25.0), id="Albers-false-origin-keys",
    ),
    pytest.param(
        user_projected(10, c_lat=52.0, c_lon=10.0, fe=4321000, fn=3210000),
        "+proj=laea +lat_0=52 +lon_0=10 +x_0=4321000 +y_0=3210000",
        around(10.0, 52.0), id="LAEA",
    ),
    pytest.param(
        user_projected(15, nat_lat=90.0, pole_lon=0.0, k=0.994, fe=2000000, fn=2000000),
        "+proj=stere +lat_0=90 +lon_0=0 +k_0=0.994 +x_0=2000000 +y_0=2000000",
        around(30.0, 80.0), id="PolarStereographic-A",
    ),
    pytest.param(
        user_projected(15, nat_lat=-71.0, pole_lon=0.0, fe=0, fn=0),
        "+proj=stere +lat_0=-90 +lat_ts=-71 +lon_0=0 +x_0=0 +y_0=0",
        around(60.0, -75.0), id="PolarStereographic-B-south",
    ),
    pytest.param(
        user_projected(15, nat_lat=70.0, pole_lon=-45.0, fe=0, fn=0),
        "+proj=stere +lat_0=90 +lat_ts=70 +lon_0=-45 +x_0=0 +y_0=0",
        around(-40.0, 72.0), id="PolarStereographic-B-north",
    ),
    pytest.param(
        user_projected(24, c_lon=15.0, fe=100, fn=-200),
        "+proj=sinu +lon_0=15 +x_0=100 +y_0=-200",
        around(20.0, 30.0), id="Sinusoidal",
    ),
    pytest.param(
        user_projected(17, std1=30.0, c_lat=0.0, c_lon=10.0, fe=500, fn=600),
        "+proj=eqc +lat_ts=30 +lat_0=0 +lon_0=10 +x_0=500 +y_0=600",
        around(12.0, 35.0), id="Equirectangular",
    ),
    pytest.param(
        user_projected(1, nat_lat=31.1, nat_lon=-100.55, k=0.99991, fe=656166.667, fn=0,
                       units=9003),
        f"+proj=tmerc +lat_0=31.1 +lon_0=-100.55 +k_0=0.99991 +x_0={656166.667 * US_FT!r} "
        "+y_0=0 +units=us-ft",
        around(-100.0, 31.0), id="TM-US-survey-feet",
    ),
    pytest.param(
        user_projected(8, std1=33.0, std2=45.0, fo_lat=23.0, fo_lon=-96.0, fo_e=2000000,
                       fo_n=500000, units=9002),
        "+proj=lcc +lat_1=33 +lat_2=45 +lat_0=23 +lon_0=-96 +x_0=609600 +y_0=152400 +units=ft",
        around(-96.0, 39.0), id="LCC-2SP-international-feet",
    ),
    pytest.param(
        {**user_projected(1, nat_lat=0.0, nat_lon=-75.0, k=0.9999, fe=1000000, fn=0),
         LINEAR_UNITS: USER, LINEAR_UNIT_SIZE: 0.3048},
        "+proj=tmerc +lat_0=0 +lon_0=-75 +k_0=0.9999 +x_0=304800 +y_0=0 +units=ft",
        around(-75.0, 40.0), id="TM-user-defined-foot",
    ),
]


@pytest.mark.parametrize(("keys", "proj", "lonlats"), _METHOD_CASES)
def test_user_defined_projected(
    keys: Mapping[int, object], proj: str, lonlats: list[tuple[float, float]]
) -> None:
    ours = crs_from_geokeys(keys)  # type: ignore[arg-type]
    reference = pyproj.CRS.from_proj4(f"{proj} {WGS84}")
    assert_same_meaning(ours, reference, lonlats)


def test_user_defined_projected_on_user_defined_ellipsoid() -> None:
    keys = {
        **user_projected(1, nat_lat=0.0, nat_lon=-81.0, k=0.9996, fe=500000, fn=0),
        GEOGRAPHIC: USER, DATUM: USER, ELLIPSOID: 7008,  # Clarke 1866
    }
    ours = crs_from_geokeys(keys)  # type: ignore[arg-type]
    assert ours.ellipsoid is not None
    assert ours.ellipsoid.semi_major_metre == pytest.approx(6378206.4)
    reference = pyproj.CRS.from_proj4(
        "+proj=tmerc +lat_0=0 +lon_0=-81 +k_0=0.9996 +x_0=500000 +y_0=0 +ellps=clrk66 +no_defs"
    )
    # Both CRSs sit on an unknown datum: project and unproject on their own ellipsoid.
    lon, lat = np.array([-81.0, -79.5, -83.0]), np.array([30.0, 35.0, 27.5])
    x, y = pyproj.Transformer.from_crs(reference.geodetic_crs, reference, always_xy=True).transform(
        lon, lat
    )
    x2, y2 = pyproj.Transformer.from_crs(ours.geodetic_crs, ours, always_xy=True).transform(
        lon, lat
    )
    np.testing.assert_allclose(x2, x, rtol=0, atol=1e-6)
    np.testing.assert_allclose(y2, y, rtol=0, atol=1e-6)


def test_angles_in_user_defined_angular_units_are_converted() -> None:
    grads = user_projected(1, nat_lat=50.0, nat_lon=10.0, k=1.0, fe=0, fn=0)  # 45N, 9E in grad
    grads[ANGULAR_UNITS] = 9105
    ours = crs_from_geokeys(grads)  # type: ignore[arg-type]
    reference = pyproj.CRS.from_proj4(f"+proj=tmerc +lat_0=45 +lon_0=9 +k_0=1 {WGS84}")
    assert_same_meaning(ours, reference, around(9.0, 45.0))


def test_esri_pe_string_citation() -> None:
    reference = pyproj.CRS.from_proj4(
        "+proj=aea +lat_0=12.5 +lon_0=-21.25 +lat_1=15.5 +lat_2=37.75 +x_0=1234.5 "
        f"+y_0=-765.25 {WGS84}"
    )
    pe = "ESRI PE String = " + reference.to_wkt(version="WKT1_ESRI")
    for keys in ({MODEL: 1, PROJECTED: USER, PCS_CITATION: pe}, {CITATION: pe}):
        ours = crs_from_geokeys(keys)
        assert ours.equals(reference, ignore_axis_order=True)
        assert_same_meaning(ours, reference, around(-21.0, 25.0))


# ---------------------------------------------------------------------------
# User-defined geographic CRSs.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "a", "rf", "datum_name"),
    [
        ({DATUM: 6326}, 6378137.0, 298.257223563, "World Geodetic System 1984"),
        ({DATUM: 6267}, 6378206.4, 294.978698213898, "North American Datum 1927"),
        ({DATUM: USER, ELLIPSOID: 7019}, 6378137.0, 298.257222101, None),
        ({ELLIPSOID: 7022}, 6378388.0, 297.0, None),
        ({SEMI_MAJOR: 6378100.0, INV_FLATTENING: 299.5}, 6378100.0, 299.5, None),
        ({SEMI_MAJOR: 6378137.0, SEMI_MINOR: 6356752.314245179}, 6378137.0, 298.257223563,
         None),
        ({SEMI_MAJOR: 6371007.181}, 6371007.181, 0.0, None),
    ],
    ids=["datum-wgs84", "datum-nad27", "ellipsoid-grs80", "ellipsoid-intl", "a-rf", "a-b",
         "sphere"],
)
def test_user_defined_geographic(
    keys: dict[int, object], a: float, rf: float, datum_name: str | None
) -> None:
    crs = crs_from_geokeys({MODEL: 2, GEOGRAPHIC: USER, **keys})  # type: ignore[arg-type]
    assert crs.is_geographic
    assert crs.ellipsoid is not None
    assert crs.ellipsoid.semi_major_metre == pytest.approx(a, abs=1e-6)
    assert crs.ellipsoid.inverse_flattening == pytest.approx(rf, rel=1e-9)
    assert crs.prime_meridian is not None and crs.prime_meridian.longitude == 0.0
    assert [ax.unit_name for ax in crs.axis_info] == ["degree", "degree"]
    if datum_name is not None:
        assert crs.datum is not None and crs.datum.name.startswith(datum_name)


def test_user_defined_geographic_with_epsg_datum_equals_epsg_crs() -> None:
    crs = crs_from_geokeys({MODEL: 2, GEOGRAPHIC: USER, DATUM: 6326})
    assert crs.equals(pyproj.CRS.from_epsg(4326), ignore_axis_order=True)


def test_user_defined_geographic_with_prime_meridian() -> None:
    crs = crs_from_geokeys({MODEL: 2, GEOGRAPHIC: USER, ELLIPSOID: 7011, PRIME_MERIDIAN: 8903})
    assert crs.prime_meridian is not None
    assert crs.prime_meridian.longitude == pytest.approx(2.5969213, abs=1e-6)  # Paris, grad
    paris = pyproj.CRS.from_proj4("+proj=longlat +ellps=clrk80ign +pm=paris +no_defs")
    lon, lat = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(0.0, 45.0)
    lon2, lat2 = pyproj.Transformer.from_crs(paris, "EPSG:4326", always_xy=True).transform(
        0.0, 45.0
    )
    assert (lon, lat) == pytest.approx((lon2, lat2), abs=1e-7)


# ---------------------------------------------------------------------------
# CRS errors.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "match"),
    [
        ({MODEL: 3}, "geocentric"),
        ({MODEL: 3, GEOGRAPHIC: 4978}, "geocentric"),
        ({MODEL: 1, PROJECTED: 99999}, "99999 is not a known EPSG code"),
        ({MODEL: 2, GEOGRAPHIC: 12345}, "12345 is not a known EPSG code"),
        ({MODEL: 1, PROJECTED: USER, GEOGRAPHIC: 4326}, "without ProjCoordTransGeoKey"),
        ({MODEL: 1, PROJECTED: USER, GEOGRAPHIC: 4326, PROJECTION: 99999},
         "ProjectionGeoKey 99999"),
        ({MODEL: 1, PROJECTED: USER, GEOGRAPHIC: 4326, COORD_TRANS: 999}, "not supported"),
        ({MODEL: 1, PROJECTED: USER, GEOGRAPHIC: 4326, COORD_TRANS: 1, ANGULAR_UNITS: 9999},
         "GeogAngularUnitsGeoKey 9999"),
        ({MODEL: 1, PROJECTED: USER, GEOGRAPHIC: 4326, COORD_TRANS: 1, ANGULAR_UNITS: USER},
         "user-defined angular unit"),
        ({MODEL: 1, PROJECTED: USER, GEOGRAPHIC: 4326, COORD_TRANS: 1, LINEAR_UNITS: 9036},
         "ProjLinearUnitsGeoKey 9036"),
        ({MODEL: 1, PROJECTED: USER, GEOGRAPHIC: 4326, COORD_TRANS: 1, LINEAR_UNITS: USER,
          LINEAR_UNIT_SIZE: 1000.0}, "linear unit"),
        ({MODEL: 1, PROJECTED: USER, GEOGRAPHIC: 4326, COORD_TRANS: 1, NAT_LON: math.nan},
         "cannot build a CRS"),
        ({MODEL: 2, GEOGRAPHIC: USER, DATUM: 99999}, "cannot build a CRS"),
        ({MODEL: 2, GEOGRAPHIC: USER, SEMI_MAJOR: -5.0, INV_FLATTENING: 298.0},
         "cannot build a CRS"),
        ({}, "no model type"),
        ({CITATION: "just a name"}, "no model type"),
    ],
    ids=["geocentric", "geocentric-code", "unknown-projected", "unknown-geographic",
         "no-coord-trans", "unknown-projection", "unsupported-method", "unknown-angular",
         "user-angular-no-size", "km", "user-linear-km", "nan-parameter", "unknown-datum",
         "negative-axis", "empty", "citation-only"],
)
def test_crs_errors(keys: dict[int, object], match: str) -> None:
    with pytest.raises(GeoKeyError, match=match):
        crs_from_geokeys(keys)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [math.nan, math.inf], ids=["nan", "inf"])
def test_non_finite_code_key_is_a_geokey_error(value: float) -> None:
    with pytest.raises(GeoKeyError):
        crs_from_geokeys({MODEL: value, GEOGRAPHIC: 4326})


def test_user_defined_geographic_with_unsupported_angular_unit() -> None:
    with pytest.raises(GeoKeyError, match="GeogAngularUnitsGeoKey"):
        crs_from_geokeys({MODEL: 2, GEOGRAPHIC: USER, DATUM: 6326, ANGULAR_UNITS: 9999})


# ---------------------------------------------------------------------------
# geotransform_from_tags
# ---------------------------------------------------------------------------

TIEPOINT, SCALE, MATRIX = 33922, 33550, 34264


def _matrix(*coefficients: float) -> list[float]:
    """ModelTransformation of (a, b, c, d, e, f): x = a*col + b*row + c, y = d*col + e*row + f."""
    a, b, c, d, e, f = coefficients
    return [a, b, 0, c, d, e, 0, f, 0, 0, 0, 0, 0, 0, 0, 1]


def test_tiepoint_and_scale() -> None:
    tags = {TIEPOINT: np.array([0, 0, 0, 500000.0, 4100000.0, 0]),
            SCALE: np.array([10.0, 10.0, 0.0])}
    assert geotransform_from_tags(tags, False) == (500000.0, 10.0, 0.0, 4100000.0, 0.0, -10.0)


def test_tiepoint_away_from_the_origin() -> None:
    tags = {TIEPOINT: [2.0, 3.0, 0.0, 1000.0, 2000.0, 0.0], SCALE: [0.5, 0.25, 0.0]}
    assert geotransform_from_tags(tags, False) == (999.0, 0.5, 0.0, 2000.75, 0.0, -0.25)


def test_negative_y_scale_is_south_up() -> None:
    tags = {TIEPOINT: [0, 0, 0, 10.0, -50.0, 0], SCALE: [1.0, -1.0, 0.0]}
    assert geotransform_from_tags(tags, False) == (10.0, 1.0, 0.0, -50.0, 0.0, 1.0)


@pytest.mark.parametrize(
    ("matrix", "expected"),
    [
        (_matrix(10, 0, 500000, 0, -10, 4100000), (500000.0, 10.0, 0.0, 4100000.0, 0.0, -10.0)),
        (_matrix(10, 0, 500000, 0, 10, 4000000), (500000.0, 10.0, 0.0, 4000000.0, 0.0, 10.0)),
    ],
    ids=["north-up", "south-up"],
)
def test_model_transformation(matrix: list[float], expected: tuple[float, ...]) -> None:
    assert geotransform_from_tags({MATRIX: np.array(matrix)}, False) == expected


def test_model_transformation_wins_over_tiepoints() -> None:
    tags = {MATRIX: _matrix(2, 0, 100, 0, -2, 200), TIEPOINT: [0, 0, 0, 5, 6, 0],
            SCALE: [1, 1, 0]}
    assert geotransform_from_tags(tags, False) == (100.0, 2.0, 0.0, 200.0, 0.0, -2.0)


@pytest.mark.parametrize(
    "tags",
    [
        {TIEPOINT: [0, 0, 0, 500000.0, 4100000.0, 0], SCALE: [10.0, 10.0, 0.0]},
        {MATRIX: _matrix(10, 0, 500000, 0, -10, 4100000)},
    ],
    ids=["tiepoint", "matrix"],
)
def test_pixel_is_point_shifts_half_a_pixel_like_gdal(tags: dict[int, object]) -> None:
    area = geotransform_from_tags(tags, False)
    point = geotransform_from_tags(tags, True)
    assert point == (area[0] - 0.5 * area[1], area[1], 0.0, area[3] - 0.5 * area[5], 0.0,
                     area[5])
    assert point == (499995.0, 10.0, 0.0, 4100005.0, 0.0, -10.0)


def test_pixel_is_point_south_up_matrix() -> None:
    tags = {MATRIX: _matrix(10, 0, 500000, 0, 10, 4000000)}
    assert geotransform_from_tags(tags, True) == (499995.0, 10.0, 0.0, 3999995.0, 0.0, 10.0)


@pytest.mark.parametrize(
    ("tags", "match"),
    [
        ({MATRIX: _matrix(10, 2, 0, 1, -10, 0)}, "rotated"),
        ({MATRIX: _matrix(0, 10, 0, -10, 0, 0)}, "rotated"),
        ({MATRIX: [1.0, 0.0, 0.0, 0.0]}, "holds 4 values"),
        ({TIEPOINT: [0, 0, 0, 10, 50, 0, 100, 100, 0, 11, 49, 0], SCALE: [1, 1, 0]},
         "2 ground control points"),
        ({TIEPOINT: [0, 0, 0, 10, 50, 0, 100, 100, 0, 11, 49, 0]}, "ground control points"),
        ({TIEPOINT: [0, 0, 0, 10, 50, 0]}, "ground control points only"),
        ({TIEPOINT: [0, 0, 0, 10], SCALE: [1, 1, 0]}, "too short"),
        ({TIEPOINT: [0, 0, 0, 10, 50, 0], SCALE: [1.0]}, "too short"),
        ({TIEPOINT: [0, 0, 0, 10, 50, 0], SCALE: [0.0, 1.0, 0.0]}, "zero pixel size"),
        ({TIEPOINT: [0, 0, 0, 10, 50, 0], SCALE: [1.0, 0.0, 0.0]}, "zero pixel size"),
        ({MATRIX: _matrix(0, 0, 5, 0, -1, 5)}, "zero pixel size"),
        ({TIEPOINT: [0, 0, 0, 10, 50, 0], SCALE: [math.nan, 1.0, 0.0]}, "non-finite"),
        ({TIEPOINT: [0, 0, 0, math.inf, 50, 0], SCALE: [1.0, 1.0, 0.0]}, "non-finite"),
        ({MATRIX: _matrix(1, 0, 0, 0, -1, math.nan)}, "non-finite"),
        ({SCALE: [1.0, 1.0, 0.0]}, "no georeferencing"),
        ({}, "no georeferencing"),
    ],
    ids=["sheared", "rotated-90", "short-matrix", "gcps-with-scale", "gcps", "tiepoint-only",
         "short-tiepoint", "short-scale", "zero-dx", "zero-dy", "zero-matrix", "nan-scale",
         "inf-tiepoint", "nan-matrix", "scale-only", "nothing"],
)
def test_geotransform_errors(tags: dict[int, object], match: str) -> None:
    for pixel_is_point in (False, True):
        with pytest.raises(GeoKeyError, match=match):
            geotransform_from_tags(tags, pixel_is_point)
