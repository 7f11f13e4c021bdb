"""A bounded fuzz pass: the TIFF header parser and the query parser (issue 10).

(a) Headers: mutations of REAL headers (the generated corpus of ``tests/support/corpus.py``,
written by GDAL and tifffile): bit flips and byte substitutions in IFDs and wanted tag
values, integer fields (counts, values, offsets of IFD entries) set to extremes,
truncations. Each input goes through the production parser (``read_header_async`` over
an in-memory range reader) and, when it parses, into the Collection's index column, as
a build would. (b) Queries: random JSON documents around the wire contract's fields,
and raw bytes, through :func:`cogflight_core.parse_query`.

Every input must end in success or a typed cogflight error (``CogflightError``; for
headers ``HeaderError``), within 2 s of CPU time (measured twice when over) and 64 MiB
(tracemalloc peak): limits that only a pathological case reaches, not benchmarks.
Generation is derandomized (the same inputs every run); ``COGFLIGHT_FUZZ_EXAMPLES``
sets the examples per test (default 300). The longer run (about 5 minutes on a 2-core
machine), with a summary of the outcomes written as JSON::

    COGFLIGHT_FUZZ_EXAMPLES=25000 COGFLIGHT_FUZZ_REPORT=/tmp/fuzz.json \\
        .venv/bin/python -m pytest -q -p no:cacheprovider tests/catalog/test_fuzz.py
"""

from __future__ import annotations

import json
import os
import struct
import time
import tracemalloc
from collections import Counter
from collections.abc import Coroutine, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import catalog
from catalog._read import read_header_async
from catalog._schema import ASSET_TYPE, header_to_dict
from catalog._tiff import WANTED_TAGS
from cogflight_core import CogflightError, HeaderError, chip_fields, parse_query

EXAMPLES = int(os.environ.get("COGFLIGHT_FUZZ_EXAMPLES", "300"))
TIME_LIMIT_S = 2.0
MEMORY_LIMIT = 64 << 20
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,  # the per-input time limit is checked below, without flakiness
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
OUTCOMES: Counter[str] = Counter()
SLOWEST: dict[str, float] = {"header": 0.0, "query": 0.0}
SLOWEST_INPUT: dict[str, str] = {}
PEAK: dict[str, int] = {"header": 0, "query": 0}

pytestmark = pytest.mark.timeout(max(120, EXAMPLES // 10))


@pytest.fixture(scope="module", autouse=True)
def report() -> Iterator[None]:
    """Write the outcome counts to ``COGFLIGHT_FUZZ_REPORT`` (for the documented long run)."""
    started = time.perf_counter()
    yield
    path = os.environ.get("COGFLIGHT_FUZZ_REPORT")
    if path:
        doc = {
            "examples_per_test": EXAMPLES,
            "outcomes": dict(sorted(OUTCOMES.items())),
            "slowest_s": SLOWEST,
            "slowest_input": SLOWEST_INPUT,
            "peak_bytes": PEAK,
            "seconds": round(time.perf_counter() - started, 1),
        }
        Path(path).write_text(json.dumps(doc, indent=2))


def _measure(fn: Any, args: tuple[Any, ...]) -> tuple[str, Any, float, int]:
    tracemalloc.start()
    started = time.thread_time()  # CPU time of this thread: immune to a busy machine
    try:
        try:
            value: Any = fn(*args)
            outcome = "ok"
        except CogflightError as exc:
            value, outcome = exc, type(exc).__name__
        elapsed = time.thread_time() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return outcome, value, elapsed, peak


def _bounded(kind: str, fn: Any, *args: Any, what: str = "") -> tuple[str, Any]:
    """Run one input: its outcome (``ok`` or the error class), within the time and memory.

    An input over the time limit is measured once more: only one slow both times (a
    pathological input, not a pause of the machine) fails.
    """
    outcome, value, elapsed, peak = _measure(fn, args)
    if elapsed >= TIME_LIMIT_S:
        elapsed = min(elapsed, _measure(fn, args)[2])
    if elapsed > SLOWEST[kind]:
        SLOWEST[kind] = elapsed
        SLOWEST_INPUT[kind] = what[:300]
    PEAK[kind] = max(PEAK[kind], peak)
    OUTCOMES[f"{kind}:{outcome}"] += 1
    assert elapsed < TIME_LIMIT_S, f"one {kind} input took {elapsed:.2f} s of CPU: {what[:200]}"
    assert peak < MEMORY_LIMIT, f"one {kind} input peaked at {peak} bytes: {what[:200]}"
    return outcome, value


# -- (a) headers ------------------------------------------------------------------------------


class MemoryReader:
    """A :class:`catalog.RangeReader` over bytes in memory (short at end, never longer)."""

    def __init__(self, href: str, data: bytes) -> None:
        self._href = href
        self._data = memoryview(data)
        self.requests = 0

    @property
    def href(self) -> str:
        return self._href

    async def read_ranges(self, ranges: Sequence[tuple[int, int]]) -> list[bytes | memoryview]:
        self.requests += len(ranges)
        return [self._data[max(0, a) : max(0, b)] for a, b in ranges]


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    """Drive a coroutine that never waits (the memory reader answers at once)."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise AssertionError("the header parser waited on something other than its reader")


@dataclass(frozen=True, repr=False)
class Header:
    """One real file's header bytes and where its mutable fields are."""

    name: str
    data: bytes
    positions: tuple[int, ...]  # every byte of IFDs and wanted tag values
    entries: tuple[tuple[int, bool], ...]  # (offset of an IFD entry, bigtiff)
    values: tuple[tuple[int, int, int], ...]  # integer values of wanted tags: (at, size, count)
    byte_order: str

    def __repr__(self) -> str:  # hypothesis prints failing inputs: not the bytes
        return f"Header({self.name!r})"


class Headers(list[Header]):
    """The corpus headers, printed short in hypothesis reports."""

    def __repr__(self) -> str:
        return f"<{len(self)} corpus headers>"


def _layout(name: str, path: Path) -> Header:
    spans: list[tuple[int, int]] = [(0, 16)]
    entries: list[tuple[int, bool]] = []
    values: list[tuple[int, int, int]] = []
    end = 16
    with tifffile.TiffFile(path) as tf:
        big = tf.is_bigtiff
        bo = tf.byteorder
        for page in tf.pages:
            n = len(page.tags)
            count_size, entry_size = (8, 20) if big else (2, 12)
            ifd_end = page.offset + count_size + entry_size * n + (8 if big else 4)
            spans.append((page.offset, ifd_end))
            entries += [(page.offset + count_size + entry_size * i, big) for i in range(n)]
            end = max(end, ifd_end)
            for tag in page.tags.values():
                if tag.code in WANTED_TAGS:
                    spans.append((tag.valueoffset, tag.valueoffset + tag.valuebytecount))
                    size = _INT_SIZES.get(int(tag.dtype))
                    if size:
                        values.append((tag.valueoffset, size, tag.count))
                    end = max(end, tag.valueoffset + tag.valuebytecount)
    data = path.read_bytes()[: max(end, 64 * 1024)]  # a header read never needs more
    positions = tuple(sorted({p for a, b in spans for p in range(a, min(b, len(data)))}))
    return Header(name, data, positions, tuple(entries), tuple(values), bo)


@pytest.fixture(scope="module")
def headers(corpus) -> Headers:
    return Headers(_layout(name, path) for name, (_case, path) in sorted(corpus.items()))


_INT_SIZES = {1: 1, 3: 2, 4: 4, 6: 1, 8: 2, 9: 4, 16: 8, 17: 8}  # TIFF integer types
EXTREMES = (0, 1, 2, 0x7F, 0xFF, 0x7FFF, 0xFFFF, 2**31 - 1, 2**32 - 1, 2**53, 2**63 - 1, 2**64 - 1)


def mutations_of(h: Header) -> st.SearchStrategy[tuple[Any, ...]]:
    """One mutation of ``h``: positions and fields drawn over its own layout, uniformly."""
    pos = st.integers(0, len(h.positions) - 1)
    entry = st.integers(0, max(0, len(h.entries) - 1))
    value = st.integers(0, max(0, len(h.values) - 1))
    field = st.sampled_from(("count", "value", "type", "tag"))
    extreme = st.sampled_from(EXTREMES)
    return st.one_of(
        st.tuples(st.just("flip"), pos, st.integers(0, 7)),
        st.tuples(st.just("byte"), pos, st.integers(0, 255)),
        st.tuples(st.just("field"), entry, field, extreme),
        st.tuples(st.just("value"), value, st.integers(0, 3), extreme),
        st.tuples(st.just("value"), value, st.integers(0, 2**16), extreme),
        st.tuples(st.just("truncate"), st.integers(0, len(h.data)), st.just(0)),
    )


def _mutate(h: Header, mutations: Sequence[tuple[Any, ...]]) -> bytes:
    data = bytearray(h.data)
    for m in mutations:
        kind, where = m[0], m[1]
        if kind in ("flip", "byte") and h.positions[where % len(h.positions)] >= len(data):
            continue  # truncated away already
        if kind == "field" and (
            not h.entries or h.entries[where % len(h.entries)][0] + 20 > len(data)
        ):
            continue
        if kind == "value" and not h.values:
            continue
        if kind == "value":  # one integer of a wanted tag (a count, size, code...) to an extreme
            at, size, n = h.values[where % len(h.values)]
            at += size * (m[2] % max(1, n))
            if at + size <= len(data):
                value = m[3] & ((1 << (8 * size)) - 1)
                data[at : at + size] = value.to_bytes(
                    size, "little" if h.byte_order == "<" else "big"
                )
        elif kind == "flip":
            pos = h.positions[where % len(h.positions)]
            data[pos] ^= 1 << m[2]
        elif kind == "byte":
            data[h.positions[where % len(h.positions)]] = m[2]
        elif kind == "field":
            at, big = h.entries[where % len(h.entries)]
            field, value = m[2], m[3]
            off, size = {
                "tag": (0, 2),
                "type": (2, 2),
                "count": (4, 8 if big else 4),
                "value": (12 if big else 8, 8 if big else 4),
            }[field]
            value &= (1 << (8 * size)) - 1
            code = {2: "H", 4: "I", 8: "Q"}[size]
            data[at + off : at + off + size] = struct.pack(h.byte_order + code, value)
        else:
            data = data[: where % (len(data) + 1)]
    return bytes(data)


def _parse_and_index(href: str, data: bytes) -> Any:
    """The production parse, then the index row a build would write for the header."""
    reader = MemoryReader(href, data)
    record = _run(read_header_async(href, reader=reader))
    pa.array([{"href": href, "header": header_to_dict(record)}], ASSET_TYPE)
    assert reader.requests < 2000, reader.requests
    return record


def test_the_corpus_parses_unmutated(headers: list[Header]) -> None:
    for h in headers:
        outcome, value = _bounded("header", _parse_and_index, h.name, h.data, what=h.name)
        assert outcome in ("ok", "UnsupportedLayoutError"), (h.name, value)


@FUZZ
@given(data=st.data())
def test_mutated_real_headers_fail_typed_and_bounded(headers: list[Header], data) -> None:
    h = headers[data.draw(st.integers(0, len(headers) - 1), label="file index")]
    mutations = data.draw(st.lists(mutations_of(h), min_size=1, max_size=4), label="mutations")
    outcome, value = _bounded(
        "header", _parse_and_index, h.name, _mutate(h, mutations), what=f"{h.name} {mutations}"
    )
    if outcome != "ok":
        assert isinstance(value, HeaderError), repr(value)  # incl. UnsupportedLayoutError
        assert value.href == h.name and h.name in str(value)


def test_mutated_headers_through_a_real_build(headers: list[Header], tmp_path: Path) -> None:
    """A few mutations end to end (files on disk, obstore, the builder): typed or kept."""
    good = tmp_path / "good.tif"
    source = next(h for h in headers if h.name == "tile_256")
    good.write_bytes(source.data)
    for i in range(12):
        bad = tmp_path / f"m{i}.tif"
        bad.write_bytes(
            _mutate(source, [("field", 7 * i + 3, ("count", "value")[i % 2], EXTREMES[i])])
        )
        try:
            c = catalog.build_from_files([good, bad], progress=False)
        except catalog.BuildError:
            raise AssertionError("the good file was lost") from None
        assert c.ids[0] == "good"
        assert all(f.scene_id == f"m{i}" for f in c.failures)


# -- (b) queries ------------------------------------------------------------------------------

FIELD_NAMES = [
    *(spec.wire or name for name, spec in chip_fields().items()),
    "v",
    "collection",
    "index",
    "geometries.crs",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(
        ["EPSG:4326", "nearest", "raise", "skip", "float32", "2024-01-01/..", "red", "s2"]
    ),
)


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    keys = st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=12))
    return st.one_of(st.lists(inner, max_size=6), st.dictionaries(keys, inner, max_size=6))


json_values = st.recursive(scalars, _containers, max_leaves=40)
# Values each field accepts, so that many documents get past the first field's check.
VALID: dict[str, list[Any]] = {
    "geometries": [
        {"bbox": [0, 0, 1, 1]},
        {"bbox": [[0, 0, 1, 1], [1, 1, 2, 2]], "crs": "x"},
        {"geojson": [{"type": "Point", "coordinates": [1, 2]}]},
        {"wkb_base64": ["AQEAAAAAAAAAAADwPwAAAAAAAABA"]},
    ],
    "bands": [["red"], ["red", "nir"]],
    "filter": [
        {"ids": ["a"]},
        {"date_range": "2024-01-01/..", "cloud_cover_lt": 20},
        {"where": [["label", "==", 1]], "bbox": [0, 0, 1, 1]},
    ],
    "chip_size": [32, [8, 16]],
    "resolution": [10, [10, 20.5]],
    "crs": ["EPSG:32632"],
    "resampling": ["nearest", "bilinear"],
    "time_series": [True, False],
    "mask": [True],
    "all_touched": [False],
    "dtype": ["float32"],
    "scale_offset": [True],
    "batch_rows": [7],
    "columns": [["label"]],
    "ramp": [False, True],
    "geometry_scenes": [[["a"]], [["a", "b"], []]],
    "patches": [True, "centre"],
    "shard": [{"index": 0, "count": 2}, {"count": 3}],
    "on_error": ["skip", "raise"],
    "skip": [0, 3],
}
assert set(VALID) == set(chip_fields()) - {"geometry_crs"}, "add the new field to VALID"


def _mostly(valid: st.SearchStrategy[Any], other: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``valid`` 7 times in 8 (``one_of`` would weigh each of ``other``'s branches as one)."""
    return st.integers(0, 7).flatmap(lambda k: valid if k else other)


def _field(name: str) -> st.SearchStrategy[Any]:
    return _mostly(st.sampled_from(VALID[name]), json_values)  # mostly valid: go deep


queries = st.fixed_dictionaries(
    {
        "v": _mostly(st.just(1), scalars),
        "collection": _mostly(st.just("s2"), scalars),
        "geometries": _field("geometries"),
    },
    optional={
        **{name: _field(name) for name in VALID if name != "geometries"},
        "index": _mostly(st.just(False), scalars),
    },
).flatmap(
    lambda doc: st.dictionaries(st.text(max_size=8), json_values, max_size=2).map(
        lambda extra: {**doc, **extra} if extra and len(doc) % 5 == 0 else doc
    )
)


@FUZZ
@given(doc=queries, as_bytes=st.booleans())
def test_random_queries_parse_or_fail_typed(doc: dict[str, Any], as_bytes: bool) -> None:
    payload: Any = json.dumps(doc).encode() if as_bytes else doc
    _bounded("query", parse_query, payload, what=repr(doc))


@FUZZ
@given(
    raw=st.one_of(
        st.binary(max_size=200),
        st.integers(1, 50_000).map(lambda n: b"[" * n + b"]" * n),
        st.integers(1, 50_000).map(lambda n: b'{"v":' * n + b"1" + b"}" * n),
        st.text(max_size=200).map(str.encode),
    )
)
def test_random_bytes_parse_or_fail_typed(raw: bytes) -> None:
    _bounded("query", parse_query, raw, what=repr(raw[:100]))
