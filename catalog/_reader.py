"""Header reads of one object: a :class:`RangeReader` over the one range fetcher.

The header parser depends only on the small :class:`RangeReader` protocol;
:class:`ObjectReader` implements it for an object in an obstore store, with
counters of its own (what a header read cost) and the object's identity as
the store reported it on the first answer (size, ETag, modification time),
which the Collection records. Later requests of the same header read expect
that identity, so a file replaced between two of them is an error, not a
header stitched from two files.

Concurrency policy: one reader per header read, used from one event loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from ._fetch import RangeFetcher
from ._identity import ObjectIdentity

if TYPE_CHECKING:
    from obstore.store import ObjectStore

__all__ = ["ObjectReader", "RangeReader"]


class RangeReader(Protocol):
    """Reads byte ranges of one object; all the header parser depends on."""

    @property
    def href(self) -> str:
        """The object's href, for error messages."""
        ...

    async def read_ranges(self, ranges: Sequence[tuple[int, int]]) -> list[bytes | memoryview]:
        """Return the bytes of each ``[start, end)``; short at end of file, never longer."""
        ...


class ObjectReader:
    """A :class:`RangeReader` of one object: lenient reads through its own :class:`RangeFetcher`.

    Its counters are its own, so a header read knows exactly what it cost.
    """

    def __init__(self, store: ObjectStore, path: str, href: str, *, coalesce: int = 64 * 1024):
        self._store = store
        self._path = path
        self._href = href
        self._fetcher = RangeFetcher(gap=coalesce)
        self._identity: ObjectIdentity | None = None

    @property
    def href(self) -> str:
        """The object's href."""
        return self._href

    @property
    def identity(self) -> ObjectIdentity | None:
        """The object's size, ETag and modification time, from the first answer."""
        return self._identity

    @property
    def retries(self) -> int:
        """Requests repeated after a failure so far."""
        return self._fetcher.stats.retries

    @property
    def requests(self) -> int:
        """Requests issued so far."""
        return self._fetcher.stats.requests

    @property
    def bytes_read(self) -> int:
        """Bytes received so far."""
        return self._fetcher.stats.bytes

    async def read_ranges(self, ranges: Sequence[tuple[int, int]]) -> list[bytes | memoryview]:
        """Fetch ranges concurrently, one request per coalesced run."""
        views = await self._fetcher.read_ranges(
            self._store,
            self._path,
            self._href,
            ranges,
            identity=self._identity,
            on_identity=self._learn,
        )
        return list(views)

    def _learn(self, identity: ObjectIdentity) -> None:
        if self._identity is None and identity.known:
            self._identity = identity
