"""The chip engine, split by stage; :class:`ChipEngine` is its facade.

One job per module, data flowing forward::

    _request    ChipRequest: the wire contract's chip fields, validated
    _plan       request -> scenes (STRtree) -> grids -> chips; pure, no I/O
    _windows    window and tile maths (geometry -> window -> tiles -> byte ranges)
    _headers    parsed headers of Collection rows (locked LRU)
    _tiles      decoded tiles: cache -> in-flight futures -> coalesced fetches
    _decode     imagecodecs decoding of one tile (in the decode pool)
    _cache      the decoded-tile cache (bounded in bytes)
    _render     one chip from a per-request Render: direct reads or resampling
    _warp       warp planning and resampling (nearest, bilinear)
    _rasterize  polygon masks by GDAL's rules
    _assemble   pasting, fills, scale/offset, batch buffers; pure numpy
    _columns    the metadata columns, specified once (schema and rows)
    _arrow      batches as Arrow (fixed_shape_tensor, zero-copy)
    _produce    batch scheduling, in order, oldest batch first
    _stream     ChipStream: sync and async consumption of the producer's queue
    _runtime    loop thread, decode pool, tile loader, store registries, fork reset
    _pool       the priority executor of the decode pool
    _types      value types: Grid, Chip, ChipPlan, ChipBatch, ChipResult, EngineStats
    _engine     ChipEngine: the facade

Fetching bytes is :class:`catalog.RangeFetcher`'s job (shared with header reads);
query geometries are read by :func:`catalog.to_geometries`.
"""

from ._cache import CacheStats, TileCache
from ._empty import explain_empty
from ._engine import ChipEngine
from ._request import RESAMPLING, ChipRequest
from ._settings import EngineSettings, engine_settings
from ._stream import ChipStream
from ._types import ChipBatch, ChipPlan, ChipResult, EngineStats, Grid

__all__ = [
    "RESAMPLING",
    "CacheStats",
    "ChipBatch",
    "ChipEngine",
    "ChipPlan",
    "ChipRequest",
    "ChipResult",
    "ChipStream",
    "EngineSettings",
    "EngineStats",
    "Grid",
    "TileCache",
    "engine_settings",
    "explain_empty",
]
