"""Reading headers: one file, or many files concurrently with progress."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cogflight_core import CogflightError, HeaderError, InvalidArgumentError, StorageError

from ._aio import run_sync
from ._header import HeaderRecord, header_from_raw
from ._reader import ObjectReader, RangeReader
from ._settings import settings
from ._stores import StoreOptions, StoreRegistry, default_registry
from ._tiff import read_raw_tiff

__all__ = ["HeaderResult", "read_header", "read_header_async", "read_headers_async"]

logger = logging.getLogger("cogflight.catalog")


async def read_header_async(
    href: str,
    *,
    registry: StoreRegistry | None = None,
    store_options: StoreOptions | None = None,
    read_ahead: int | None = None,
    reader: RangeReader | None = None,
) -> HeaderRecord:
    """Parse the header of one GeoTIFF; usually costs one ranged GET.

    Raises:
        HeaderError: malformed or hostile bytes.
        UnsupportedLayoutError: a TIFF the server cannot serve correctly.
        StorageError: the object cannot be read.
    """
    s = settings()
    if reader is None:
        if registry is None:
            registry = StoreRegistry(store_options) if store_options else default_registry()
        reader = registry.reader(href)
    ahead = s.read_ahead if read_ahead is None else int(read_ahead)
    if ahead < 16:
        raise InvalidArgumentError(f"read_ahead must be at least 16 bytes, got {ahead}")
    raw = await read_raw_tiff(
        reader, read_ahead=ahead, max_ifds=s.max_ifds, max_tag_bytes=s.max_tag_bytes
    )
    record = header_from_raw(reader.href, raw)
    if isinstance(reader, ObjectReader):  # exact request count, not just round trips
        object.__setattr__(record, "round_trips", raw.round_trips)
        object.__setattr__(record, "identity", reader.identity)  # what the Collection records
    return record


def read_header(
    href: str,
    *,
    registry: StoreRegistry | None = None,
    store_options: StoreOptions | None = None,
    read_ahead: int | None = None,
) -> HeaderRecord:
    """Synchronous :func:`read_header_async`."""
    return run_sync(
        read_header_async(
            href, registry=registry, store_options=store_options, read_ahead=read_ahead
        )
    )


@dataclass(frozen=True, slots=True)
class HeaderResult:
    """The outcome of reading one header in a batch: a record or an error."""

    href: str
    record: HeaderRecord | None
    error: CogflightError | None
    requests: int


async def read_headers_async(
    hrefs: Sequence[str],
    *,
    registry: StoreRegistry,
    concurrency: int | None = None,
    read_ahead: int | None = None,
    on_done: Callable[[HeaderResult], None] | None = None,
) -> dict[str, HeaderResult]:
    """Read many headers with at most ``concurrency`` in flight; never raises per file.

    Each distinct href is read once. Failures are returned, not raised, so one
    bad file does not lose the others.
    """
    limit = settings().header_concurrency if concurrency is None else int(concurrency)
    if limit < 1:
        raise InvalidArgumentError(f"concurrency must be >= 1, got {limit}")
    unique = list(dict.fromkeys(hrefs))
    semaphore = asyncio.Semaphore(limit)
    results: dict[str, HeaderResult] = {}
    started = time.perf_counter()

    async def one(href: str) -> None:
        async with semaphore:
            reader: ObjectReader | None = None
            try:
                reader = registry.reader(href)
                record = await read_header_async(href, reader=reader, read_ahead=read_ahead)
                result = HeaderResult(href, record, None, reader.requests)
            except CogflightError as exc:
                result = HeaderResult(href, None, exc, reader.requests if reader else 0)
            except Exception as exc:  # a bug or an unexpected library error: keep going
                logger.exception("unexpected error reading the header of %s", href)
                err = HeaderError(href, f"unexpected {type(exc).__name__}: {exc}")
                result = HeaderResult(href, None, err, reader.requests if reader else 0)
        results[href] = result
        if on_done is not None:
            on_done(result)

    await asyncio.gather(*(one(h) for h in unique))
    failed = sum(1 for r in results.values() if r.error is not None)
    logger.info(
        "read %d headers in %.2f s (%d failed, %d requests)",
        len(unique),
        time.perf_counter() - started,
        failed,
        sum(r.requests for r in results.values()),
    )
    return results


def is_storage_error(error: CogflightError | None) -> bool:
    """Whether a failure came from storage rather than from the file's content."""
    return isinstance(error, StorageError)
