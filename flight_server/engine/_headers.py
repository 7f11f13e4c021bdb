"""Parsed file headers of Collection rows, cached across requests.

A Collection holds every asset's header as Arrow structs; turning one into a
:class:`~catalog.HeaderRecord` costs a few hundred microseconds, and every
chip of every request needs one per file. :class:`HeaderCache` keeps the
records by href, the identity of their indexed tile offsets and the object's
recorded size, ETag and modification time (so a Collection rebuilt over a
rewritten file never hits a stale record).

Concurrency policy: thread-safe. Planning runs in callers' threads while
rendering runs on the engine loop; one lock guards the LRU, and parsing
happens outside it (two threads may parse the same header once each).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from catalog import Band, Collection, HeaderRecord, asset_column
from cogflight_core import CogflightError, InvalidArgumentError

__all__ = ["HeaderCache"]

HeaderKey = tuple[object, ...]


class HeaderCache:
    """An LRU of parsed headers, at most ``max_entries`` of them."""

    def __init__(self, max_entries: int = 8192) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.max_entries = max_entries
        self._items: OrderedDict[HeaderKey, HeaderRecord] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def get(self, collection: Collection, row: int, band: Band) -> HeaderRecord:
        """The header of the file holding ``band`` in scene ``row``.

        Raises:
            InvalidArgumentError: the scene has no such asset, or its header is unusable.
        """
        value = collection.table.column(asset_column(band.asset))[row]
        if not value.is_valid:
            raise InvalidArgumentError(f"scene {row} has no asset {band.asset!r}")
        offsets = value["header"]["levels"][0]["tile_offsets"]
        key = (
            str(value["href"].as_py()),
            len(offsets),
            offsets[0].as_py() if len(offsets) else 0,
            value["size"].as_py(),  # the object's identity: a rebuilt Collection over a
            value["etag"].as_py(),  # replaced file never hits the old record
            value["last_modified"].as_py(),
        )
        with self._lock:
            header = self._items.get(key)
            if header is not None:
                self._items.move_to_end(key)
                return header
        try:
            header = collection.header(row, band.name)
        except CogflightError as exc:
            raise InvalidArgumentError(str(exc)) from exc
        with self._lock:
            self._items[key] = header
            self._items.move_to_end(key)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)
        return header

    def clear(self) -> None:
        """Drop every record."""
        with self._lock:
            self._items.clear()
