"""catalog: what imagery exists and how to read it, without decoding a pixel.

A Collection is a GeoParquet table with one row per scene; for every asset it
holds the href and the parsed GeoTIFF header (tile offsets and byte counts of
every image, overview and mask; dtype; codec; transform; CRS), so a server can
read any pixel without touching a file header again.

Builders: :func:`build_from_files`, :func:`build_from_table`,
:func:`build_from_stac` and :func:`build` (registered datasets). Open a saved
Collection with :func:`load`.
"""

from typing import Any

from cogflight_core import (
    AccessDeniedError,
    BuildError,
    BuildFailure,
    CogflightError,
    CollectionError,
    DatasetNotFoundError,
    HeaderError,
    InvalidArgumentError,
    ObjectNotFoundError,
    SchemaVersionError,
    StacError,
    StorageError,
    UnsupportedLayoutError,
)
from cogflight_core._deprecated import deprecated_attribute

from ._build import BuildOptions
from ._build_files import build_from_files
from ._build_table import build_from_table
from ._collection import Collection, load
from ._fetch import FetchStats, ObjectChangedError, RangeFetcher, Run, coalesce
from ._filters import WHERE_OPS, SceneFilter, parse_date_range, select_rows
from ._footprint import geometry_to_crs84
from ._geometry import GEOMETRY_TYPES, as_geometry, bbox_geometry, check_lonlat, to_geometries
from ._header import COMPRESSIONS, HeaderRecord, ImageRecord, parse_nodata
from ._http import HttpReader
from ._identity import ObjectIdentity
from ._patches import make_patches, with_columns
from ._policy import AccessPolicy
from ._proj import crs as cached_crs
from ._proj import same_crs
from ._proj import transformer as cached_transformer
from ._read import read_header, read_header_async
from ._registry import DatasetEntry, build, get_dataset, list_datasets, register_dataset
from ._schema import SCHEMA_VERSION, Band, asset_column
from ._settings import Settings, parse_bytes, settings
from ._stac import build_from_stac
from ._stores import (
    ObjectReader,
    RangeReader,
    StoreOptions,
    StoreRegistry,
    default_registry,
    is_range_past_end,
    normalize_href,
    translate_storage_error,
)

__all__ = [
    "COMPRESSIONS",
    "GEOMETRY_TYPES",
    "SCHEMA_VERSION",
    "WHERE_OPS",
    "AccessDeniedError",
    "AccessPolicy",
    "Band",
    "BuildError",
    "BuildFailure",
    "BuildOptions",
    "CogflightError",
    "Collection",
    "CollectionError",
    "DatasetEntry",
    "DatasetNotFoundError",
    "FetchStats",
    "HeaderError",
    "HeaderRecord",
    "HttpReader",
    "ImageRecord",
    "InvalidArgumentError",
    "ObjectChangedError",
    "ObjectIdentity",
    "ObjectNotFoundError",
    "ObjectReader",
    "RangeFetcher",
    "RangeReader",
    "Run",
    "SceneFilter",
    "SchemaVersionError",
    "Settings",
    "StacError",
    "StorageError",
    "StoreOptions",
    "StoreRegistry",
    "UnsupportedLayoutError",
    "as_geometry",
    "asset_column",
    "bbox_geometry",
    "build",
    "build_from_files",
    "build_from_stac",
    "build_from_table",
    "cached_crs",
    "cached_transformer",
    "check_lonlat",
    "coalesce",
    "default_registry",
    "geometry_to_crs84",
    "get_dataset",
    "is_range_past_end",
    "list_datasets",
    "load",
    "make_patches",
    "normalize_href",
    "parse_bytes",
    "parse_date_range",
    "parse_nodata",
    "read_header",
    "read_header_async",
    "register_dataset",
    "same_crs",
    "select_rows",
    "settings",
    "to_geometries",
    "translate_storage_error",
    "with_columns",
]


def __getattr__(name: str) -> Any:
    """Old names, deprecated for one release."""
    return deprecated_attribute(
        __name__, name, {"CatalogError": ("cogflight_core.CogflightError", CogflightError)}
    )
