"""The errors :mod:`catalog` raises: families of the one tree in :mod:`cogflight_core`.

Errors from libraries below (obstore, pyarrow, pyproj, pystac-client) are
translated at the boundary with ``raise ... from exc`` so callers catch one
family (:class:`~cogflight_core.CogflightError`).
"""

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

__all__ = [
    "AccessDeniedError",
    "BuildError",
    "BuildFailure",
    "CogflightError",
    "CollectionError",
    "DatasetNotFoundError",
    "HeaderError",
    "InvalidArgumentError",
    "ObjectNotFoundError",
    "SchemaVersionError",
    "StacError",
    "StorageError",
    "UnsupportedLayoutError",
]
