"""Reading raw TIFF/BigTIFF IFDs with as few ranged requests as possible.

The reader fetches ``read_ahead`` bytes from the start of the file (one
request), walks the IFD chain inside that block, and only goes back to the
store for IFDs or tag values that lie beyond it, batching all missing tag
values into one more round of requests. Every count, offset and size is
checked against hard limits before anything is allocated, so hostile files
fail fast with :class:`~catalog.HeaderError`.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cogflight_core import HeaderError

from ._stores import RangeReader

__all__ = ["IFD", "RawTiff", "read_raw_tiff"]

# TIFF field types: numpy code (without byte order) and size in bytes.
_TYPES: dict[int, tuple[str, int]] = {
    1: ("u1", 1),  # BYTE
    2: ("S1", 1),  # ASCII
    3: ("u2", 2),  # SHORT
    4: ("u4", 4),  # LONG
    5: ("u4", 8),  # RATIONAL (two LONGs)
    6: ("i1", 1),  # SBYTE
    7: ("u1", 1),  # UNDEFINED
    8: ("i2", 2),  # SSHORT
    9: ("i4", 4),  # SLONG
    10: ("i4", 8),  # SRATIONAL
    11: ("f4", 4),  # FLOAT
    12: ("f8", 8),  # DOUBLE
    13: ("u4", 4),  # IFD
    16: ("u8", 8),  # LONG8
    17: ("i8", 8),  # SLONG8
    18: ("u8", 8),  # IFD8
}

# Tags whose values the header interpretation needs; all others are skipped unread.
WANTED_TAGS = frozenset(
    {
        254,  # NewSubfileType
        255,  # SubfileType
        256,  # ImageWidth
        257,  # ImageLength
        258,  # BitsPerSample
        259,  # Compression
        262,  # PhotometricInterpretation
        273,  # StripOffsets (presence only matters)
        277,  # SamplesPerPixel
        284,  # PlanarConfiguration
        317,  # Predictor
        322,  # TileWidth
        323,  # TileLength
        324,  # TileOffsets
        325,  # TileByteCounts
        338,  # ExtraSamples
        339,  # SampleFormat
        347,  # JPEGTables
        530,  # YCbCrSubSampling
        33550,  # ModelPixelScale
        33922,  # ModelTiepoint
        34264,  # ModelTransformation
        34735,  # GeoKeyDirectory
        34736,  # GeoDoubleParams
        34737,  # GeoAsciiParams
        42112,  # GDAL_METADATA
        42113,  # GDAL_NODATA
        50674,  # LercParameters
    }
)
_PRESENCE_ONLY = frozenset({273})
_MAX_ENTRIES = 4096
# No real file is anywhere near this; larger offsets are hostile (and overflow range requests).
_MAX_OFFSET = 2**53

_INTEGER_TYPES = frozenset({1, 3, 4, 8, 9, 16, 17})
_FLOAT_TYPES = frozenset({11, 12})
# The field types each wanted tag may have; anything else is a corrupt header.
_ALLOWED_TYPES: dict[int, frozenset[int]] = {
    **{
        tag: _INTEGER_TYPES
        for tag in (
            254,
            255,
            256,
            257,
            258,
            259,
            262,
            277,
            284,
            317,
            322,
            323,
            324,
            325,
            338,
            339,
            530,
            34735,
            50674,
        )
    },
    347: frozenset({1, 7}),
    **{tag: _FLOAT_TYPES for tag in (33550, 33922, 34264, 34736)},
    **{tag: frozenset({2}) for tag in (34737, 42112, 42113)},
}
_TYPE_NAMES = {
    1: "BYTE",
    2: "ASCII",
    3: "SHORT",
    4: "LONG",
    5: "RATIONAL",
    6: "SBYTE",
    7: "UNDEFINED",
    8: "SSHORT",
    9: "SLONG",
    10: "SRATIONAL",
    11: "FLOAT",
    12: "DOUBLE",
    13: "IFD",
    16: "LONG8",
    17: "SLONG8",
    18: "IFD8",
}


@dataclass(frozen=True, slots=True)
class IFD:
    """One image file directory: its offset and decoded values of wanted tags."""

    offset: int
    tags: dict[int, object]
    present: frozenset[int]


@dataclass(frozen=True, slots=True)
class RawTiff:
    """The IFD chain of one file plus what reading it cost."""

    byte_order: str
    bigtiff: bool
    ifds: tuple[IFD, ...]
    round_trips: int
    """Sequential rounds of requests the read took (1 when the read-ahead held everything)."""
    bytes_read: int


class _Source:
    """Sparse cache of fetched byte ranges of one file."""

    def __init__(self, reader: RangeReader, href: str) -> None:
        self.reader = reader
        self.href = href
        self.segments: list[tuple[int, memoryview]] = []
        # The longest segment at each start: tag values are looked up where they were
        # fetched, so thousands of values (256 IFDs x many tags) cost no quadratic scan.
        self._starts: dict[int, memoryview] = {}
        self.eof: int | None = None  # exact file size, once a short non-empty read revealed it
        self.ends_before: int | None = None  # an empty read at this offset: the file ends earlier
        self.round_trips = 0
        self.bytes_read = 0

    def _add(self, start: int, view: memoryview) -> None:
        self.segments.append((start, view))
        held = self._starts.get(start)
        if held is None or len(view) > len(held):
            self._starts[start] = view

    def has(self, start: int, end: int) -> bool:
        held = self._starts.get(start)
        if held is not None and end <= start + len(held):
            return True
        return any(s <= start and end <= s + len(v) for s, v in self.segments)

    def view(self, start: int, end: int) -> memoryview:
        held = self._starts.get(start)
        if held is not None and end <= start + len(held):
            return held[: end - start]
        for s, v in self.segments:
            if s <= start and end <= s + len(v):
                return v[start - s : end - s]
        raise AssertionError("view of bytes that were not fetched")  # pragma: no cover

    async def ensure(
        self, ranges: Sequence[tuple[int, int]], what: str, *, speculative: bool = False
    ) -> None:
        """Fetch the ranges not yet held; raise if the file ends before them.

        ``speculative`` reads (read-ahead) may come back short at end of file.
        """
        wanted: list[tuple[int, int]] = []
        for a, want in ranges:
            b = want
            if a < 0 or b > _MAX_OFFSET:
                raise HeaderError(
                    self.href,
                    f"{what} at bytes [{a}, {b}) lies past the end of the file (beyond any "
                    "plausible file size): the file is truncated or corrupt",
                )
            if speculative and self.eof is not None:
                b = min(want, self.eof)
                if b <= a:
                    continue  # nothing left to read ahead; precise reads report the problem
            if self.has(a, b):
                continue
            if (self.eof is not None and b > self.eof) or (
                self.ends_before is not None and b > self.ends_before
            ):
                raise self._past_end(what, a, b)
            wanted.append((a, b))
        if not wanted:
            return
        blobs = await self.reader.read_ranges(wanted)
        self.round_trips += 1
        for (a, b), blob in zip(wanted, blobs, strict=True):
            view = memoryview(blob)
            self.bytes_read += len(view)
            if len(view) > b - a:
                view = view[: b - a]
            if 0 < len(view) < b - a:
                self.eof = a + len(view) if self.eof is None else min(self.eof, a + len(view))
            elif not len(view):
                self.ends_before = a if self.ends_before is None else min(self.ends_before, a)
            if len(view):
                self._add(a, view)
        if speculative:
            return
        for a, b in wanted:
            if not self.has(a, b):
                raise self._past_end(what, a, b)

    def _past_end(self, what: str, a: int, b: int) -> HeaderError:
        if self.eof is not None:
            size = f"{self.eof} bytes"
        elif self.ends_before is not None:
            size = f"fewer than {self.ends_before} bytes"
        else:
            size = "of unknown size"
        return HeaderError(
            self.href,
            f"{what} at bytes [{a}, {b}) lies past the end of the file ({size}): "
            "the file is truncated or corrupt",
        )


async def read_raw_tiff(
    reader: RangeReader,
    *,
    read_ahead: int,
    max_ifds: int,
    max_tag_bytes: int,
    max_header_bytes: int | None = None,
) -> RawTiff:
    """Walk every IFD of a TIFF or BigTIFF file and decode the wanted tags.

    Raises:
        HeaderError: the bytes are not a TIFF, are truncated, loop, or exceed a limit.
            ``max_header_bytes`` bounds the decoded values of all IFDs together
            (default 4 x ``max_tag_bytes``), so IFDs sharing one huge value
            cannot multiply memory.
    """
    budget = 4 * max_tag_bytes if max_header_bytes is None else max_header_bytes
    href = reader.href
    src = _Source(reader, href)
    await src.ensure([(0, max(read_ahead, 16))], "the file header", speculative=True)
    if not src.segments:
        raise HeaderError(href, "the file is empty")
    head = bytes(src.segments[0][1][:16])
    if len(head) < 8:
        raise HeaderError(href, f"the file is only {len(head)} bytes long, too short for a TIFF")
    if head[:2] == b"II":
        bo = "<"
    elif head[:2] == b"MM":
        bo = ">"
    else:
        raise HeaderError(href, "not a TIFF file (no II/MM byte-order mark)")
    (magic,) = struct.unpack(bo + "H", head[2:4])
    if magic == 42:
        big = False
        (first,) = struct.unpack(bo + "I", head[4:8])
    elif magic == 43:
        big = True
        if len(head) < 16:
            raise HeaderError(href, "truncated BigTIFF header")
        bytesize, zero = struct.unpack(bo + "HH", head[4:8])
        if bytesize != 8 or zero != 0:
            raise HeaderError(href, f"invalid BigTIFF header (offset size {bytesize})")
        (first,) = struct.unpack(bo + "Q", head[8:16])
    else:
        raise HeaderError(href, f"not a TIFF file (magic number {magic}, expected 42 or 43)")

    header_size = 16 if big else 8
    count_size, entry_size, next_size = (8, 20, 8) if big else (2, 12, 4)
    entry_dtype = np.dtype(
        [
            ("tag", bo + "u2"),
            ("type", bo + "u2"),
            ("count", bo + ("u8" if big else "u4")),
            ("value", "V8" if big else "V4"),
        ]
    )
    inline = 8 if big else 4
    offset_code = bo + ("u8" if big else "u4")

    raw_ifds: list[tuple[int, np.ndarray]] = []
    seen: set[int] = set()
    offset = first
    if offset == 0:
        raise HeaderError(href, "the TIFF has no image (first IFD offset is 0)")
    while offset:
        if offset in seen:
            raise HeaderError(href, f"IFD chain loops back to offset {offset}")
        if len(raw_ifds) >= max_ifds:
            raise HeaderError(
                href, f"more than {max_ifds} IFDs; refusing to follow the chain further"
            )
        if offset < header_size:
            raise HeaderError(href, f"IFD offset {offset} points into the file header")
        seen.add(offset)
        if not src.has(offset, offset + count_size):
            await src.ensure(
                [(offset, offset + max(read_ahead, count_size))],
                f"IFD at {offset}",
                speculative=True,
            )
        await src.ensure([(offset, offset + count_size)], f"IFD at {offset}")
        (n,) = struct.unpack(bo + ("Q" if big else "H"), src.view(offset, offset + count_size))
        if n == 0 or n > _MAX_ENTRIES:
            raise HeaderError(
                href, f"IFD at {offset} declares {n} entries (allowed 1..{_MAX_ENTRIES})"
            )
        end = offset + count_size + n * entry_size + next_size
        await src.ensure([(offset, end)], f"IFD at {offset}")
        body = src.view(offset + count_size, end - next_size)
        entries = np.frombuffer(body, dtype=entry_dtype, count=n)
        raw_ifds.append((offset, entries))
        (offset,) = struct.unpack(bo + ("Q" if big else "I"), src.view(end - next_size, end))

    # Second pass: collect out-of-line values of wanted tags, fetch them in one round.
    plans: list[list[tuple[int, int, int, int, bytes | None]]] = []
    needed: list[tuple[int, int]] = []
    for ifd_offset, entries in raw_ifds:
        plan: list[tuple[int, int, int, int, bytes | None]] = []
        for tag, typ, count, value in entries.tolist():
            if tag not in WANTED_TAGS:
                continue
            if tag in _PRESENCE_ONLY:
                plan.append((tag, typ, count, -1, None))
                continue
            if typ not in _TYPES:
                raise HeaderError(href, f"tag {tag} in IFD at {ifd_offset} has unknown type {typ}")
            if typ not in _ALLOWED_TYPES[tag]:
                allowed = "/".join(_TYPE_NAMES[t] for t in sorted(_ALLOWED_TYPES[tag]))
                raise HeaderError(
                    href,
                    f"tag {tag} in IFD at {ifd_offset} has type {_TYPE_NAMES[typ]}, "
                    f"expected {allowed}",
                )
            size = count * _TYPES[typ][1]
            if size > max_tag_bytes:
                raise HeaderError(
                    href,
                    f"tag {tag} in IFD at {ifd_offset} declares {count} values ({size} bytes), "
                    f"over the {max_tag_bytes}-byte limit",
                )
            budget -= count * max(8, _TYPES[typ][1])  # decoded integers widen to 8 bytes
            if budget < 0:
                raise HeaderError(
                    href,
                    "the IFDs declare more tag values than the "
                    f"{max_header_bytes or 4 * max_tag_bytes}-byte limit for one header",
                )
            if size <= inline:
                plan.append((tag, typ, count, -1, bytes(value)[:size]))
            else:
                (value_offset,) = np.frombuffer(bytes(value), dtype=offset_code, count=1).tolist()
                if value_offset + size > _MAX_OFFSET:
                    raise HeaderError(
                        href,
                        f"tag {tag} in IFD at {ifd_offset} points to byte {value_offset}, "
                        "past the end of the file (beyond any plausible file size)",
                    )
                plan.append((tag, typ, count, value_offset, None))
                if not src.has(value_offset, value_offset + size):
                    needed.append((value_offset, value_offset + size))
        plans.append(plan)
    if needed:
        await src.ensure(needed, "tag values")

    ifds: list[IFD] = []
    decoded: dict[tuple[int, int, int], object] = {}  # IFDs may share one value: decode once
    for (ifd_offset, _entries), plan in zip(raw_ifds, plans, strict=True):
        tags: dict[int, object] = {}
        present: set[int] = set()
        for tag, typ, count, value_offset, data in plan:
            present.add(tag)
            if tag in _PRESENCE_ONLY:
                continue
            if data is not None:
                value = _decode(data, typ, count, bo)
            else:
                key = (value_offset, typ, count)
                if key not in decoded:
                    size = count * _TYPES[typ][1]
                    decoded[key] = _decode(
                        src.view(value_offset, value_offset + size), typ, count, bo
                    )
                value = decoded[key]
            if (
                typ in _INTEGER_TYPES
                and isinstance(value, np.ndarray)
                and value.size
                and (value.dtype.kind == "i" and value.min() < 0)
            ):
                raise HeaderError(href, f"tag {tag} in IFD at {ifd_offset} holds negative values")
            tags[tag] = value
        ifds.append(IFD(ifd_offset, tags, frozenset(present)))
    return RawTiff(bo, big, tuple(ifds), src.round_trips, src.bytes_read)


def _decode(buf: bytes | memoryview, typ: int, count: int, bo: str) -> object:
    """Decode a tag value: ASCII -> str, UNDEFINED -> bytes, numbers -> ndarray."""
    if typ == 2:
        return bytes(buf).split(b"\x00", 1)[0].decode("latin-1")
    if typ == 7:
        return bytes(buf)
    code, _size = _TYPES[typ]
    if typ in (5, 10):
        pairs = np.frombuffer(buf, dtype=bo + code, count=2 * count).astype(np.float64)
        den = pairs[1::2]
        return np.divide(pairs[0::2], den, out=np.zeros_like(den), where=den != 0)
    dtype = np.dtype(bo + code)
    values = np.frombuffer(buf, dtype=dtype, count=count)
    if dtype.kind in "iu":  # widen once here, so IFDs sharing a value share one array
        return values.astype(np.uint64 if dtype.kind == "u" else np.int64)
    return values.astype(dtype.newbyteorder("="))
