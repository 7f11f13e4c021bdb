"""flight_server: turns tickets into pixels and streams them.

The chip engine (:class:`ChipEngine`) reads exact chips from a Collection:
plan (geometry -> window -> tiles -> byte ranges), fetch (obstore, coalesced,
concurrent), decode (imagecodecs in a thread pool, with a shared decoded-tile
cache), assemble (windows, masks, resampling, time series). It is callable
in-process and sits under the Flight service.
"""

from ._cache import CacheStats, TileCache
from ._engine import ChipBatch, ChipEngine, ChipPlan, ChipResult, ChipStream, EngineStats, Grid
from ._errors import (
    ChipReadError,
    DecodeError,
    EngineError,
    InvalidRequestError,
    LimitExceededError,
    PartialFailureError,
    UpstreamError,
)
from ._query import QUERY_VERSION, Query, parse_query
from ._request import RESAMPLING, ChipRequest
from ._roots import CollectionNotFoundError, CollectionRoot
from ._serve import Server, ServerConfig, serve
from ._service import FlightService, load_tokens
from ._settings import EngineSettings, engine_settings

__all__ = [
    "QUERY_VERSION",
    "RESAMPLING",
    "CacheStats",
    "ChipBatch",
    "ChipEngine",
    "ChipPlan",
    "ChipReadError",
    "ChipRequest",
    "ChipResult",
    "ChipStream",
    "CollectionNotFoundError",
    "CollectionRoot",
    "DecodeError",
    "EngineError",
    "EngineSettings",
    "EngineStats",
    "FlightService",
    "Grid",
    "InvalidRequestError",
    "LimitExceededError",
    "PartialFailureError",
    "Query",
    "Server",
    "ServerConfig",
    "TileCache",
    "UpstreamError",
    "engine_settings",
    "load_tokens",
    "parse_query",
    "serve",
]
