"""A decoded-tile cache bounded in bytes, shared by every request in the process.

Thread-safe LRU. Entries are read-only numpy arrays (decoders hand them over
and nobody writes into them), so hits are returned without copying.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np

__all__ = ["CacheStats", "TileCache"]


@dataclass(frozen=True, slots=True)
class CacheStats:
    """Counters since the cache was created."""

    hits: int
    misses: int
    evictions: int
    entries: int
    bytes: int
    max_bytes: int

    @property
    def hit_rate(self) -> float:
        """Hits over lookups (0 when nothing was looked up)."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class TileCache:
    """LRU of decoded tiles, evicting the least recently used beyond ``max_bytes``.

    A ``max_bytes`` of 0 disables caching (every lookup misses).
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._hits = self._misses = self._evictions = 0

    def get(self, key: Hashable) -> np.ndarray | None:
        """The cached tile, or None (counts a hit or a miss)."""
        with self._lock:
            arr = self._items.get(key)
            if arr is None:
                self._misses += 1
                return None
            self._items.move_to_end(key)
            self._hits += 1
            return arr

    def put(self, key: Hashable, arr: np.ndarray) -> None:
        """Insert a tile; tiles larger than the whole budget are not kept."""
        size = int(arr.nbytes)
        if size > self.max_bytes:
            return
        arr.flags.writeable = False
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= int(old.nbytes)
            self._items[key] = arr
            self._bytes += size
            while self._bytes > self.max_bytes and self._items:
                _, evicted = self._items.popitem(last=False)
                self._bytes -= int(evicted.nbytes)
                self._evictions += 1

    def clear(self) -> None:
        """Drop every entry (counters are kept)."""
        with self._lock:
            self._items.clear()
            self._bytes = 0

    def stats(self) -> CacheStats:
        """A snapshot of the counters."""
        with self._lock:
            return CacheStats(
                self._hits,
                self._misses,
                self._evictions,
                len(self._items),
                self._bytes,
                self.max_bytes,
            )
