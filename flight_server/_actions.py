"""The Flight actions: health, collections, describe, stats (one JSON document each).

Concurrency policy: called on the service's control threads; reads the service's
counters under its lock.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from pyarrow import flight

from cogflight_core import InvalidArgumentError

from ._query import parse_query

if TYPE_CHECKING:
    from ._service import FlightService

__all__ = ["ACTIONS", "run_action"]

ACTIONS = {
    "health": "Liveness: status, Collections served and unavailable, uptime, process id.",
    "collections": "Every Collection served: name, scenes, bands.",
    "describe": "One Collection's summary; body: the Collection name.",
    "stats": "Streams, chips, requests, bytes fetched, cache hit rate, errors.",
}


def run_action(
    service: FlightService, context: flight.ServerCallContext, action: flight.Action
) -> Any:
    """The JSON document of one action; INVALID_ARGUMENT for an unknown one."""
    kind = action.type
    body = action.body.to_pybytes() if action.body is not None else b""
    if kind == "health":
        auth = context.get_middleware("auth")
        allowed = auth.allowed if auth is not None else None
        unavailable = {
            name: reason
            for name, reason in service.root.problems().items()
            if allowed is None or name in allowed
        }
        return {
            "status": "draining" if service.draining else "ok",
            "collections": len(service.root.names()),
            # Collection files under the root that are not served, with the reason.
            "unavailable": unavailable,
            "uptime_s": round(service.uptime_s, 1),
            "pid": os.getpid(),
            "worker": service.worker,
            "location": service.location,
            # Every location the server places endpoints on (itself, its workers or the
            # replicas it advertises): where a client goes when this one is lost.
            "locations": list(service.locations),
        }
    if kind == "collections":
        auth = context.get_middleware("auth")
        out = []
        for name in service.root.names():
            if auth is not None and auth.allowed is not None and name not in auth.allowed:
                continue
            c = service.root.get(name)
            out.append({"name": name, "scenes": len(c), "bands": list(c.band_names)})
        return out
    if kind == "describe":
        name = body.decode("utf-8", "replace")  # as do_get reads it: no stripping
        parse_query({"v": 1, "collection": name, "index": True})
        service.authorize(context, name)
        return service.root.get(name).describe()
    if kind == "stats":
        s = service.engine.stats()
        counters = service.counters()
        active = service.active_streams
        return {
            **counters,
            "streams_active": active,
            "worker": service.worker,
            "requests": s.requests,
            "bytes_fetched": s.bytes_fetched,
            "tiles_decoded": s.tiles_decoded,
            "chips": s.chips,
            "engine_errors": s.errors,
            "retries": s.retries,
            "cache_hit_rate": round(s.cache.hit_rate, 4),
            "cache_bytes": s.cache.bytes,
            "cache_entries": s.cache.entries,
        }
    raise InvalidArgumentError(f"action: unknown action {kind!r}; available: {', '.join(ACTIONS)}")
