"""The one range fetcher: coalescing rules, short reads, retries, errors and counters."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from obstore.store import LocalStore

from catalog import (
    ObjectChangedError,
    ObjectNotFoundError,
    ObjectReader,
    RangeFetcher,
    Run,
    StorageError,
    coalesce,
)


def test_coalesce_merges_within_the_gap() -> None:
    ranges = [(0, 10), (15, 20), (100, 110)]
    assert coalesce(ranges, gap=0) == [Run(0, 10, (0,)), Run(15, 20, (1,)), Run(100, 110, (2,))]
    assert coalesce(ranges, gap=5) == [Run(0, 20, (0, 1)), Run(100, 110, (2,))]
    assert coalesce(ranges, gap=79) == [Run(0, 20, (0, 1)), Run(100, 110, (2,))]
    assert coalesce(ranges, gap=80) == [Run(0, 110, (0, 1, 2))]  # a gap of exactly 80 bytes


def test_coalesce_adjacent_ranges_share_a_request_even_without_a_gap() -> None:
    assert coalesce([(0, 10), (10, 20)], gap=0) == [Run(0, 20, (0, 1))]


def test_coalesce_orders_by_offset_and_keeps_indices() -> None:
    runs = coalesce([(50, 60), (0, 10), (12, 20)], gap=4)
    assert runs == [Run(0, 20, (1, 2)), Run(50, 60, (0,))]
    assert [r.size for r in runs] == [20, 10]


def test_coalesce_size_cap() -> None:
    ranges = [(i * 10, i * 10 + 10) for i in range(10)]  # 100 contiguous bytes
    runs = coalesce(ranges, gap=0, max_run_bytes=30)
    assert [(r.start, r.end) for r in runs] == [(0, 30), (30, 60), (60, 90), (90, 100)]
    assert [m for r in runs for m in r.members] == list(range(10))
    assert coalesce(ranges, gap=0, max_run_bytes=None) == [Run(0, 100, tuple(range(10)))]
    # A range larger than the cap is one request of its own.
    assert coalesce([(0, 50), (50, 60)], gap=0, max_run_bytes=30) == [
        Run(0, 50, (0,)), Run(50, 60, (1,))]


def test_coalesce_overlaps_and_duplicates_join_whatever_the_cap() -> None:
    # A range inside a run costs nothing more, so it joins even past the cap.
    assert coalesce([(0, 50), (10, 20), (10, 20)], gap=0, max_run_bytes=30) == [
        Run(0, 50, (0, 1, 2))]
    assert coalesce([(0, 20), (10, 30)], gap=0) == [Run(0, 30, (0, 1))]
    assert coalesce([], gap=10) == []


@pytest.fixture
def blob(tmp_path: Path) -> tuple[LocalStore, str, bytes]:
    data = bytes(range(256)) * 4  # 1024 bytes
    (tmp_path / "blob.bin").write_bytes(data)
    return LocalStore(str(tmp_path)), "blob.bin", data


def test_read_ranges_one_request_per_run_and_counts(blob) -> None:
    store, path, data = blob
    fetcher = RangeFetcher(gap=16, max_run_bytes=1024, max_retries=0)
    ranges = [(0, 10), (20, 30), (500, 600), (598, 610)]
    views = asyncio.run(fetcher.read_ranges(store, path, "href", ranges))
    assert [bytes(v) for v in views] == [data[a:b] for a, b in ranges]
    s = fetcher.stats
    assert s.requests == 2 and s.per_href_requests == {"href": 2}
    assert s.bytes == 30 + 110 and s.retries == 0 and s.errors == 0


def test_lenient_reads_may_be_short_at_end_of_file(blob) -> None:
    store, path, data = blob
    fetcher = RangeFetcher(gap=0, max_retries=0)
    short, past = asyncio.run(
        fetcher.read_ranges(store, path, "href", [(1000, 1100), (2000, 2100)]))
    assert bytes(short) == data[1000:] and bytes(past) == b""
    assert fetcher.stats.errors == 0


def test_exact_reads_retry_short_bodies_then_say_the_file_changed(blob) -> None:
    store, path, _ = blob
    fetcher = RangeFetcher(gap=0, max_retries=1)
    with pytest.raises(ObjectChangedError, match="truncated or replaced") as info:
        asyncio.run(fetcher.get(store, path, "href", 1000, 1100, exact=True))
    assert "24 of 100 bytes, 2 attempts" in str(info.value)
    assert isinstance(info.value, StorageError) and info.value.href == "href"
    s = fetcher.stats
    assert (s.requests, s.retries, s.errors) == (2, 1, 1)
    with pytest.raises(ObjectChangedError, match="starts past the end"):
        asyncio.run(fetcher.get(store, path, "href", 2000, 2100, exact=True))


def test_store_errors_are_translated(blob) -> None:
    store, _, _ = blob
    fetcher = RangeFetcher(gap=0, max_retries=0)
    with pytest.raises(ObjectNotFoundError, match=r"missing\.bin: object not found"):
        asyncio.run(fetcher.get(store, "nope.bin", "missing.bin", 0, 10, exact=True))
    assert fetcher.stats.errors == 1


def test_limit_bounds_requests_in_flight(blob) -> None:
    store, path, data = blob

    async def run() -> tuple[list[bytes], int]:
        limit = asyncio.Semaphore(1)
        fetcher = RangeFetcher(gap=0, max_retries=0, limit=limit)
        views = await fetcher.read_ranges(store, path, "h", [(0, 1), (100, 101), (200, 201)])
        return [bytes(v) for v in views], limit._value  # released again afterwards

    views, value = asyncio.run(run())
    assert views == [data[0:1], data[100:101], data[200:201]] and value == 1


def test_object_reader_counts_its_own_requests(blob) -> None:
    store, path, data = blob
    reader = ObjectReader(store, path, "href", coalesce=8)
    views = asyncio.run(reader.read_ranges([(0, 4), (8, 12), (900, 1200)]))
    assert [bytes(v) for v in views] == [data[0:4], data[8:12], data[900:]]
    assert reader.requests == 2 and reader.bytes_read == 12 + 124
    with pytest.raises(ValueError, match="invalid byte range"):
        asyncio.run(reader.read_ranges([(5, 5)]))
