"""Recently planned chips, so that a stream reuses the plan its ``GetFlightInfo`` made.

A Flight client plans a query (``GetFlightInfo``: the chips, then their shards'
placement) and reads each endpoint (``DoGet``), which plans the same query again
and cuts its shard: for hundreds of geometries over dozens of scenes that is
tens of milliseconds per call on the serving path, twice or more per read. The
chips of a request depend only on the Collection and the request's geometry
fields, so they are kept here, with each shard split computed from them.

Entries are keyed by the Collection object (a reloaded Collection is another
key) and the fields that decide the chips; the cache holds at most
``max_chips`` chips and ``max_entries`` plans in all (plans of no chips count too),
least recently used out first.

Concurrency policy: thread-safe (one lock); planning itself runs outside it, so
two threads planning the same request at once both plan (and store one result).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from catalog import Collection

from ._request import ChipRequest
from ._types import Chip

__all__ = ["PlanCache"]


@dataclass
class _Entry:
    chips: list[Chip]
    shards: dict[int, list[list[int]]] = field(default_factory=dict)


def _key(collection: Collection, request: ChipRequest, bands: tuple[Any, ...]) -> Hashable:
    """What decides a request's chips: the Collection and the geometry fields."""
    return (
        id(collection),
        request.geometries,
        request.geometry_crs,
        request.chip_size,
        request.resolution,
        request.crs,
        request.mask,
        request.time_series,
        request.rows,
        request.geometry_scenes,
        request.patches,
        tuple(b.name for b in bands),
    )


class PlanCache:
    """The chips (and shard splits) of recently planned requests."""

    def __init__(self, max_chips: int = 200_000, max_entries: int = 256) -> None:
        self.max_chips = max_chips
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, tuple[Collection, _Entry]] = OrderedDict()
        self._held = 0
        self.hits = 0
        self.misses = 0

    def chips(
        self,
        collection: Collection,
        request: ChipRequest,
        bands: tuple[Any, ...],
        plan: Callable[[], list[Chip]],
    ) -> tuple[list[Chip], dict[int, list[list[int]]]]:
        """The request's chips (``plan()`` on a miss) and its cached shard splits by count.

        The returned dict is the entry's own: store a split there once computed.
        """
        key = _key(collection, request, bands)
        with self._lock:
            found = self._find(key, collection)
            if found is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return found.chips, found.shards
            self.misses += 1
        chips = plan()
        entry = _Entry(chips)
        if len(chips) <= self.max_chips:
            with self._lock:
                old = self._entries.pop(key, None)
                if old is not None:
                    self._held -= len(old[1].chips)
                self._entries[key] = (collection, entry)  # holding it keeps id() unique
                self._held += len(chips)
                while self._entries and (
                    self._held > self.max_chips or len(self._entries) > self.max_entries
                ):
                    _, (_, dropped) = self._entries.popitem(last=False)
                    self._held -= len(dropped.chips)
        return chips, entry.shards

    def shards(
        self, collection: Collection, request: ChipRequest, bands: tuple[Any, ...]
    ) -> dict[int, list[list[int]]] | None:
        """The shard splits of a request planned before (None: not in the cache)."""
        with self._lock:
            found = self._find(_key(collection, request, bands), collection)
            return found.shards if found is not None else None

    def _find(self, key: Hashable, collection: Collection) -> _Entry | None:
        """The entry of ``key`` if it is this very Collection's (under the lock)."""
        found = self._entries.get(key)
        return found[1] if found is not None and found[0] is collection else None

    def clear(self) -> None:
        """Forget every plan."""
        with self._lock:
            self._entries.clear()
            self._held = 0
