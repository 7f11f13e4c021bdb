"""One range fetcher for every read of object bytes: file headers and tiles.

:func:`coalesce` merges nearby ranges of one object into runs (closer than
``gap`` bytes, up to ``max_run_bytes`` per run), and :class:`RangeFetcher`
issues one ranged GET per run. Reads come in two kinds:

- *lenient* (header reads): a body may be short, or empty, at the end of the
  file; the caller learns the file size from it.
- *exact* (tile reads): the bytes were indexed, so a short body means the object
  changed; it is retried within the retry budget (a store may cut a body short),
  then :class:`ObjectChangedError` says the file changed since indexing.

Before every request (every retry too) the data access policy checks the href;
``http(s)`` hrefs go through :class:`~catalog._http.HttpReader` (redirects and
connected addresses checked by the same policy) when the fetcher has one, and
through obstore otherwise. Each answer is checked: the range is the one asked
for (a shifted or short ``Content-Range``, or ``Range`` ignored, is a *content
error*), and the object is the one indexed (its identity: size, ETag,
modification time; ``If-Match`` is sent with a strong ETag), else
:class:`ObjectChangedError`. Failures another request may cure (5xx, 429 after
its ``Retry-After``, resets, timeouts, cut bodies, content errors) are retried
here, and only here (obstore's own retries are off), with exponential backoff,
up to ``max_retries`` times; each retry is counted.

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
import logging
import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import obstore
import obstore.exceptions as obs_exc
from obstore.store import HTTPStore, LocalStore

from cogflight_core import (
    AccessDeniedError,
    CogflightError,
    InvalidArgumentError,
    ObjectChangedError,
    ObjectNotFoundError,
    StorageError,
    config,
)

from ._http import HttpReader, RangePastEndError
from ._identity import CHANGED, ObjectIdentity, mismatch
from ._policy import AccessPolicy
from ._quiesce import tracked
from ._retryable import ContentError, RetryableError, obstore_failure_kind
from ._settings import settings

if TYPE_CHECKING:
    from obstore.store import ObjectStore

__all__ = [
    "CHANGED_SINCE_INDEXING",
    "FetchStats",
    "Fetched",
    "ObjectChangedError",
    "RangeFetcher",
    "Run",
    "coalesce",
    "is_range_past_end",
    "translate_storage_error",
]

logger = logging.getLogger("cogflight.catalog")

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


@dataclass(frozen=True, slots=True)
class Fetched:
    """One answered request: its bytes and the object's identity as the store reported it."""

    data: memoryview
    identity: ObjectIdentity | None


class RangeFetcher:
    """Coalesced, counted, translated range reads, checked by the data access policy.

    Args:
        gap: merge ranges of one object closer than this many bytes.
        max_run_bytes: largest coalesced request (default: ``COGFLIGHT_MAX_RUN_BYTES``).
        max_retries: retries of a failed or wrong answer (default: ``COGFLIGHT_MAX_RETRIES``).
        limit: a semaphore bounding requests in flight, shared with other fetchers of
            the same event loop (None: unbounded).
        policy: the data access policy, checked before every request (None: every
            href is allowed, as for code reading its own files).
        http: the reader of ``http(s)`` hrefs (their redirects and addresses checked
            by its policy). None: obstore's, unless ``policy`` restricts reads, in
            which case the fetcher makes its own (close it with :meth:`aclose`).
        backoff_s: first wait before a retry, doubling up to ``max_backoff_s``.
    """

    def __init__(
        self,
        *,
        gap: int = 64 * 1024,
        max_run_bytes: int | None = None,
        max_retries: int | None = None,
        limit: asyncio.Semaphore | None = None,
        policy: AccessPolicy | None = None,
        http: HttpReader | None = None,
        backoff_s: float = 0.05,
        max_backoff_s: float = 5.0,
    ) -> None:
        if gap < 0:
            raise InvalidArgumentError(f"gap must be >= 0, got {gap}")
        self.gap = gap
        self.max_run_bytes = (
            config().engine.max_run_bytes if max_run_bytes is None else max_run_bytes
        )
        self.max_retries = settings().max_retries if max_retries is None else max_retries
        self.stats = FetchStats()
        self.policy = policy
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._limit = limit
        self._http = http
        self._own_http = False

    def plan(self, ranges: Sequence[tuple[int, int]]) -> list[Run]:
        """The requests that fetch ``ranges`` of one object (see :func:`coalesce`)."""
        return coalesce(ranges, gap=self.gap, max_run_bytes=self.max_run_bytes)

    async def aclose(self) -> None:
        """Close the HTTP reader this fetcher made for itself, if any."""
        if self._own_http and self._http is not None:
            await self._http.aclose()

    async def read_ranges(
        self,
        store: ObjectStore,
        path: str,
        href: str,
        ranges: Sequence[tuple[int, int]],
        *,
        exact: bool = False,
        identity: ObjectIdentity | None = None,
        on_identity: Callable[[ObjectIdentity], None] | None = None,
    ) -> list[memoryview]:
        """The bytes of each range, one request per run, runs fetched concurrently.

        Lenient reads (``exact=False``) may return short or empty views at the end of
        the object, never longer ones. ``identity``: the object as indexed (a replaced
        object is an error); ``on_identity`` learns what the store said about it.
        """
        for start, end in ranges:
            if start < 0 or end <= start:
                raise InvalidArgumentError(f"invalid byte range [{start}, {end}) for {href}")
        runs = self.plan(ranges)
        fetched = await asyncio.gather(
            *(
                self.fetch(store, path, href, run.start, run.end, exact=exact, identity=identity)
                for run in runs
            )
        )
        out: list[memoryview] = [memoryview(b"")] * len(ranges)
        for run, got in zip(runs, fetched, strict=True):
            if on_identity is not None and got.identity is not None:
                on_identity(got.identity)
            for i in run.members:
                start, end = ranges[i]
                out[i] = got.data[start - run.start : end - run.start]
        return out

    async def get(
        self,
        store: ObjectStore,
        path: str,
        href: str,
        start: int,
        end: int,
        *,
        exact: bool,
        identity: ObjectIdentity | None = None,
        asset: str | None = None,
    ) -> memoryview:
        """One ranged GET of ``[start, end)`` (see :meth:`fetch`)."""
        got = await self.fetch(
            store, path, href, start, end, exact=exact, identity=identity, asset=asset
        )
        return got.data

    async def fetch(
        self,
        store: ObjectStore,
        path: str,
        href: str,
        start: int,
        end: int,
        *,
        exact: bool,
        identity: ObjectIdentity | None = None,
        asset: str | None = None,
    ) -> Fetched:
        """One ranged GET of ``[start, end)``, retried within the budget when worth it.

        Before every attempt the policy checks ``href`` (``asset`` names it in a
        refusal). Each retry is counted in ``stats.retries``.

        Raises:
            PermissionDeniedError: the policy refuses the href (or a redirect).
            ObjectChangedError: the object is not the one indexed (``identity``), an
                exact read came back short after the retry budget, or starts past the
                end of the object.
            StorageError: the store failed (ObjectNotFoundError, AccessDeniedError,
                or a retryable failure that lasted the whole budget).
        """
        attempt = 0
        while True:
            if self.policy is not None:
                self.policy.check(href, asset=asset, resolve=False)
            try:
                got = await self._request(store, path, href, start, end, exact, identity, asset)
                if exact and len(got.data) != end - start:
                    raise ContentError(
                        href, f"the store returned {len(got.data)} of {end - start} bytes"
                    )
                return got
            except RetryableError as exc:
                attempt += 1
                if attempt > self.max_retries:
                    self.stats.errors += 1
                    raise _exhausted(href, exc, attempt, short=exact) from exc
                self.stats.retries += 1
                logger.debug("retry %d of %s [%d, %d): %s", attempt, href, start, end, exc)
                await asyncio.sleep(self._delay(attempt, exc.retry_after))
            except CogflightError:
                self.stats.errors += 1
                raise

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        backoff = min(float(self.backoff_s) * 2.0 ** (attempt - 1), float(self.max_backoff_s))
        if retry_after is not None:
            return min(max(float(retry_after), backoff), float(self.max_backoff_s))
        return backoff

    async def _request(
        self,
        store: ObjectStore,
        path: str,
        href: str,
        start: int,
        end: int,
        exact: bool,
        identity: ObjectIdentity | None,
        asset: str | None,
    ) -> Fetched:
        http = self._http_reader() if isinstance(store, HTTPStore) else None
        if http is None and _obstore_used[1]:
            raise StorageError(href, _FORKED)
        limit = self._limit
        if limit is not None:
            await limit.acquire()
        try:
            self.stats.requests += 1
            self.stats.per_href_requests[href] += 1
            try:
                if http is not None:
                    got = await self._http_get(http, href, start, end, identity, asset)
                else:
                    _obstore_used[0] = True
                    got = await _obstore_get(store, path, href, start, end, identity)
            except (RangePastEndError, _PastEndError) as exc:
                if not exact:
                    return Fetched(memoryview(b""), None)
                raise ObjectChangedError(
                    href, f"{CHANGED_SINCE_INDEXING} (the range starts past the end of the object)"
                ) from exc
        finally:
            if limit is not None:
                limit.release()
        self.stats.bytes += len(got.data)
        why = mismatch(identity, got.identity)
        if why is not None:
            raise ObjectChangedError(href, CHANGED.format(what=why))
        return got

    def _http_reader(self) -> HttpReader | None:
        """The HTTP reader of this fetcher: given, or made when the policy restricts reads."""
        if self._http is None and self.policy is not None and not self.policy.is_open:
            s = settings()
            self._http = HttpReader(self.policy, timeout_s=s.request_timeout_s)
            self._own_http = True
        return self._http

    async def _http_get(
        self,
        http: HttpReader,
        href: str,
        start: int,
        end: int,
        identity: ObjectIdentity | None,
        asset: str | None,
    ) -> Fetched:
        etag = identity.strong_etag if identity is not None else None
        got = await http.get_range(href, start, end, if_match=etag, label=asset)
        return Fetched(got.data, got.identity)


class _PastEndError(Exception):
    """obstore refused a range that starts at or after the end of the object."""


async def _obstore_get(
    store: ObjectStore,
    path: str,
    href: str,
    start: int,
    end: int,
    identity: ObjectIdentity | None,
) -> Fetched:
    """One ranged GET through obstore (its retries are off: the fetcher retries)."""
    options: dict[str, Any] = {"range": (start, end)}
    etag = identity.strong_etag if identity is not None else None
    if etag:
        options["if_match"] = etag
    try:
        result = await tracked(obstore.get_async(store, path, options=options))  # type: ignore[arg-type]
        data = await tracked(result.bytes_async())
    except Exception as exc:
        if is_range_past_end(exc):
            raise _PastEndError() from exc
        if isinstance(exc, obs_exc.PreconditionError):
            raise ObjectChangedError(
                href, CHANGED.format(what="its ETag no longer matches")
            ) from exc
        kind = obstore_failure_kind(exc)
        err = translate_storage_error(href, exc)
        if kind == "content":
            raise ContentError(href, err.reason) from exc
        if kind == "transient" and type(err) is StorageError:
            raise RetryableError(href, err.reason) from exc
        raise err from exc
    got_start, got_end = result.range
    view = memoryview(data)
    if got_start != start or got_end > end or len(view) != got_end - got_start:
        raise ContentError(
            href,
            f"the store sent {len(view)} bytes for [{got_start}, {got_end}), "
            f"asked [{start}, {end})",
        )
    local = isinstance(store, LocalStore)
    return Fetched(view, ObjectIdentity.from_meta(result.meta, local=local))


def _exhausted(href: str, exc: RetryableError, attempts: int, *, short: bool) -> StorageError:
    """The error of a retryable failure that lasted the whole retry budget."""
    if short and isinstance(exc, ContentError) and exc.reason.startswith("the store returned"):
        return ObjectChangedError(
            href, f"{CHANGED_SINCE_INDEXING} ({exc.reason}, {attempts} attempts)"
        )
    return StorageError(href, f"{exc.reason} ({attempts} attempts)")
