"""One range fetcher for every read of object bytes: file headers and tiles.

:func:`coalesce` merges nearby ranges of one object into runs (closer than
``gap`` bytes, up to ``max_run_bytes`` per run), and :class:`RangeFetcher`
issues one ranged GET per run. Reads come in two kinds:

- *lenient* (header reads): a body may be short, or empty, at the end of the
  file; the caller learns the file size from it.
- *exact* (tile reads): the bytes were indexed, so a short body means the object
  changed; it is retried within the retry budget (a store may cut a body short),
  then :class:`ObjectChangedError` says the file changed since indexing.

Every store error is translated once, through :func:`translate_storage_error`,
into the :class:`~catalog.StorageError` family. :class:`FetchStats` counts
requests, bytes, retries, errors and requests per href.

Concurrency policy: coroutines run on the caller's event loop; the runs of one
call are fetched concurrently. An optional :class:`asyncio.Semaphore` bounds the
requests in flight (the engine shares one per event loop). Counters are plain
integers, touched only from that loop.

obstore's runtime does not survive ``fork``: a child forked after its parent
read through obstore hangs on its first request. The fetcher records its first
request and refuses, with an error saying what to do, to read in such a child
(start workers with ``spawn`` or ``forkserver``).
"""

from __future__ import annotations

import asyncio
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import obstore
import obstore.exceptions as obs_exc

from cogflight_core import (
    AccessDeniedError,
    InvalidArgumentError,
    ObjectChangedError,
    ObjectNotFoundError,
    StorageError,
    config,
)

from ._settings import settings

if TYPE_CHECKING:
    from obstore.store import ObjectStore

__all__ = [
    "CHANGED_SINCE_INDEXING",
    "FetchStats",
    "ObjectChangedError",
    "ObjectReader",
    "RangeFetcher",
    "RangeReader",
    "Run",
    "coalesce",
    "is_range_past_end",
    "translate_storage_error",
]

CHANGED_SINCE_INDEXING = (
    "the file is shorter than its indexed header says: it was truncated or replaced "
    "since the Collection was built; rebuild the Collection"
)


_FORKED = (
    "cannot read in a process forked after obstore ran in its parent (obstore's runtime "
    "does not survive fork); start worker processes with multiprocessing 'spawn' or "
    "'forkserver'"
)
# [this process has read through obstore, an ancestor had when this process was forked]
_obstore_used = [False, False]


def _after_fork_in_child() -> None:
    _obstore_used[1] = _obstore_used[1] or _obstore_used[0]
    _obstore_used[0] = False


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)


def is_range_past_end(exc: BaseException) -> bool:
    """Whether a store refused a range because it starts at or after the end of the object."""
    if isinstance(exc, obs_exc.NotFoundError | FileNotFoundError):
        return False
    text = str(exc)
    return any(
        marker in text
        for marker in ("StartTooLarge", "Range Not Satisfiable", "status: 416", "InvalidRange")
    )


def translate_storage_error(href: str, exc: BaseException) -> StorageError:
    """Map an obstore/OS error onto the catalog hierarchy, keeping the message short."""
    first = str(exc).strip().split("\n", 1)[0][:500]
    if isinstance(exc, obs_exc.NotFoundError | FileNotFoundError):
        return ObjectNotFoundError(href, "object not found")
    if isinstance(exc, obs_exc.PermissionDeniedError | obs_exc.UnauthenticatedError):
        return AccessDeniedError(
            href,
            f"access denied ({first}); set credentials in the environment, or pass "
            "store options such as anonymous=True or requester_pays=True",
        )
    return StorageError(href, f"{type(exc).__name__}: {first}")


@dataclass(frozen=True, slots=True)
class Run:
    """One request: bytes ``[start, end)`` covering the ranges ``members`` (in byte order)."""

    start: int
    end: int
    members: tuple[int, ...]

    @property
    def size(self) -> int:
        """Bytes this request asks for."""
        return self.end - self.start


def coalesce(
    ranges: Sequence[tuple[int, int]], *, gap: int, max_run_bytes: int | None = None
) -> list[Run]:
    """Merge ranges ``[start, end)`` closer than ``gap`` bytes into runs, in byte order.

    A run stops growing at ``max_run_bytes`` (None: unbounded): past that one request
    saves little latency while every range in it waits for its last byte. Ranges
    that overlap a run, or lie inside it, always join it (they cost no extra bytes).
    """
    order = sorted(range(len(ranges)), key=lambda i: ranges[i])
    runs: list[Run] = []
    for i in order:
        start, end = ranges[i]
        if runs:
            last = runs[-1]
            grown = max(last.end, end)
            fits = max_run_bytes is None or grown - last.start <= max_run_bytes
            if start <= last.end + gap and (fits or grown == last.end):
                runs[-1] = Run(last.start, grown, (*last.members, i))
                continue
        runs.append(Run(start, end, (i,)))
    return runs


@dataclass
class FetchStats:
    """What a fetcher did: requests, bytes received, short-read retries, errors."""

    requests: int = 0
    bytes: int = 0
    retries: int = 0
    errors: int = 0
    per_href_requests: dict[str, int] = field(default_factory=lambda: defaultdict(int))


class RangeFetcher:
    """Coalesced, counted, translated range reads of objects in obstore stores.

    Args:
        gap: merge ranges of one object closer than this many bytes.
        max_run_bytes: largest coalesced request (default: ``COGFLIGHT_MAX_RUN_BYTES``).
        max_retries: retries of a short exact read (default: ``COGFLIGHT_MAX_RETRIES``).
        limit: a semaphore bounding requests in flight, shared with other fetchers of
            the same event loop (None: unbounded).
    """

    def __init__(
        self,
        *,
        gap: int = 64 * 1024,
        max_run_bytes: int | None = None,
        max_retries: int | None = None,
        limit: asyncio.Semaphore | None = None,
    ) -> None:
        if gap < 0:
            raise InvalidArgumentError(f"gap must be >= 0, got {gap}")
        self.gap = gap
        self.max_run_bytes = (
            config().engine.max_run_bytes if max_run_bytes is None else max_run_bytes
        )
        self.max_retries = settings().max_retries if max_retries is None else max_retries
        self.stats = FetchStats()
        self._limit = limit

    def plan(self, ranges: Sequence[tuple[int, int]]) -> list[Run]:
        """The requests that fetch ``ranges`` of one object (see :func:`coalesce`)."""
        return coalesce(ranges, gap=self.gap, max_run_bytes=self.max_run_bytes)

    async def read_ranges(
        self,
        store: ObjectStore,
        path: str,
        href: str,
        ranges: Sequence[tuple[int, int]],
        *,
        exact: bool = False,
    ) -> list[memoryview]:
        """The bytes of each range, one request per run, runs fetched concurrently.

        Lenient reads (``exact=False``) may return short or empty views at the end of
        the object, never longer ones.
        """
        for start, end in ranges:
            if start < 0 or end <= start:
                raise InvalidArgumentError(f"invalid byte range [{start}, {end}) for {href}")
        runs = self.plan(ranges)
        blobs = await asyncio.gather(
            *(self.get(store, path, href, run.start, run.end, exact=exact) for run in runs)
        )
        out: list[memoryview] = [memoryview(b"")] * len(ranges)
        for run, blob in zip(runs, blobs, strict=True):
            for i in run.members:
                start, end = ranges[i]
                out[i] = blob[start - run.start : end - run.start]
        return out

    async def get(
        self, store: ObjectStore, path: str, href: str, start: int, end: int, *, exact: bool
    ) -> memoryview:
        """One ranged GET of ``[start, end)``.

        Raises:
            ObjectChangedError: an exact read came back short (after the retry budget),
                or starts past the end of the object.
            StorageError: the store failed (ObjectNotFoundError, AccessDeniedError, ...).
        """
        attempt = 0
        while True:
            view = await self._request(store, path, href, start, end, exact=exact)
            if not exact or len(view) == end - start:
                return view
            attempt += 1
            if attempt > self.max_retries:
                self.stats.errors += 1
                raise ObjectChangedError(
                    href,
                    f"{CHANGED_SINCE_INDEXING} (the store returned {len(view)} of "
                    f"{end - start} bytes, {attempt} attempts)",
                )
            self.stats.retries += 1
            await asyncio.sleep(min(0.1 * 2**attempt, 2.0))

    async def _request(
        self, store: ObjectStore, path: str, href: str, start: int, end: int, *, exact: bool
    ) -> memoryview:
        if _obstore_used[1]:
            self.stats.errors += 1
            raise StorageError(href, _FORKED)
        _obstore_used[0] = True
        limit = self._limit
        if limit is not None:
            await limit.acquire()
        try:
            self.stats.requests += 1
            self.stats.per_href_requests[href] += 1
            try:
                data = await obstore.get_range_async(store, path, start=start, end=end)
            except Exception as exc:
                if is_range_past_end(exc):
                    if not exact:
                        return memoryview(b"")
                    self.stats.errors += 1
                    raise ObjectChangedError(
                        href,
                        f"{CHANGED_SINCE_INDEXING} (the range starts past the end of the object)",
                    ) from exc
                self.stats.errors += 1
                raise translate_storage_error(href, exc) from exc
        finally:
            if limit is not None:
                limit.release()
        view = memoryview(data)
        self.stats.bytes += len(view)
        return view


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

    @property
    def href(self) -> str:
        """The object's href."""
        return self._href

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
        views = await self._fetcher.read_ranges(self._store, self._path, self._href, ranges)
        return list(views)
