"""The errors :mod:`flight_server` raises: families of the one tree in :mod:`cogflight_core`.

Errors from below (catalog, obstore, imagecodecs, pyproj) are translated at the
boundary with ``raise ... from exc``; the Flight layer maps each family to its
status code through :data:`cogflight_core.STATUS_TABLE`.
"""

from cogflight_core import (
    ChipReadError,
    CogflightError,
    CollectionNotFoundError,
    DecodeError,
    InvalidArgumentError,
    LimitExceededError,
    PartialFailureError,
    UnavailableError,
    UpstreamError,
)

__all__ = [
    "ChipReadError",
    "CogflightError",
    "CollectionNotFoundError",
    "DecodeError",
    "InvalidArgumentError",
    "LimitExceededError",
    "PartialFailureError",
    "UnavailableError",
    "UpstreamError",
]
