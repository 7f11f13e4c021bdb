"""flight_server: turns tickets into pixels and streams them.

The chip engine (:class:`ChipEngine`) reads exact chips from a Collection:
plan (geometry -> window -> tiles -> byte ranges), fetch (obstore, coalesced,
concurrent), decode (imagecodecs in a thread pool, with a shared decoded-tile
cache), assemble (windows, masks, resampling, time series). It is callable
in-process and sits under the Flight service.
"""

from ._cache import CacheStats, TileCache
from ._engine import ChipBatch, ChipEngine, ChipResult, ChipStream, EngineStats, Grid
from ._errors import (
    ChipReadError,
    DecodeError,
    EngineError,
    InvalidRequestError,
    LimitExceededError,
    PartialFailureError,
    UpstreamError,
)
from ._request import RESAMPLING, ChipRequest
from ._settings import EngineSettings, engine_settings

__all__ = [
    "RESAMPLING",
    "CacheStats",
    "ChipBatch",
    "ChipEngine",
    "ChipReadError",
    "ChipRequest",
    "ChipResult",
    "ChipStream",
    "DecodeError",
    "EngineError",
    "EngineSettings",
    "EngineStats",
    "Grid",
    "InvalidRequestError",
    "LimitExceededError",
    "PartialFailureError",
    "TileCache",
    "UpstreamError",
    "engine_settings",
]
