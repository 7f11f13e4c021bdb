"""flight_server: turns tickets into pixels and streams them.

The chip engine (:class:`ChipEngine`, the sub-package :mod:`flight_server.engine`,
split by stage) reads exact chips from a Collection: plan (geometry -> window
-> tiles -> byte ranges), fetch (catalog's range fetcher: coalesced,
concurrent), decode (imagecodecs in a thread pool, with a shared decoded-tile
cache), assemble (windows, masks, resampling, time series). It is callable
in-process and sits under the Flight service.
"""

from typing import Any

from catalog import AccessPolicy
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
from cogflight_core._deprecated import deprecated_attribute

from ._query import QUERY_VERSION, Query, parse_query
from ._roots import CollectionRoot
from ._serve import Server, ServerConfig, serve
from ._service import FlightService, load_tokens
from .engine import (
    RESAMPLING,
    CacheStats,
    ChipBatch,
    ChipEngine,
    ChipPlan,
    ChipRequest,
    ChipResult,
    ChipStream,
    EngineSettings,
    EngineStats,
    Grid,
    TileCache,
    engine_settings,
)

__all__ = [
    "QUERY_VERSION",
    "RESAMPLING",
    "AccessPolicy",
    "CacheStats",
    "ChipBatch",
    "ChipEngine",
    "ChipPlan",
    "ChipReadError",
    "ChipRequest",
    "ChipResult",
    "ChipStream",
    "CogflightError",
    "CollectionNotFoundError",
    "CollectionRoot",
    "DecodeError",
    "EngineSettings",
    "EngineStats",
    "FlightService",
    "Grid",
    "InvalidArgumentError",
    "LimitExceededError",
    "PartialFailureError",
    "Query",
    "Server",
    "ServerConfig",
    "TileCache",
    "UnavailableError",
    "UpstreamError",
    "engine_settings",
    "load_tokens",
    "parse_query",
    "serve",
]


def __getattr__(name: str) -> Any:
    """Old names, deprecated for one release."""
    return deprecated_attribute(
        __name__,
        name,
        {
            "EngineError": ("cogflight_core.CogflightError", CogflightError),
            "InvalidRequestError": ("flight_server.InvalidArgumentError", InvalidArgumentError),
        },
    )
