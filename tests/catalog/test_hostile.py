"""Malformed, hostile and valid-but-unservable TIFFs fail fast with a typed error.

Every case must raise :class:`catalog.HeaderError` (or its subclass
:class:`catalog.UnsupportedLayoutError` for well-formed files cogflight cannot
serve) naming the file; never hang, never allocate without bound, never leak
another exception type. Raw TIFF bytes are crafted with the small ``struct``
builder below; real files are written by rasterio (GDAL) and tifffile.
"""

from __future__ import annotations

import struct
import tracemalloc
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import tifffile
from affine import Affine
from rasterio.control import GroundControlPoint

import catalog
from catalog import HeaderError, UnsupportedLayoutError, read_header

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning"),
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),
]

# ---------------------------------------------------------------------------
# A tiny TIFF / BigTIFF builder.
# ---------------------------------------------------------------------------

BYTE, ASCII, SHORT, LONG, RATIONAL, UNDEFINED, FLOAT, DOUBLE, LONG8 = 1, 2, 3, 4, 5, 7, 11, 12, 16
_FMT = {1: "B", 3: "H", 4: "I", 6: "b", 7: "B", 8: "h", 9: "i", 11: "f", 12: "d", 16: "Q", 17: "q"}
_SIZE = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 16: 8,
         17: 8}


@dataclass
class E:
    """One IFD entry; ``count``/``raw`` override the declared count / value-or-offset field."""

    tag: int
    typ: int
    values: Sequence[float] | bytes | str = ()
    count: int | None = None
    raw: int | None = None


def _payload(e: E, bo: str) -> bytes:
    if e.typ == ASCII:
        text = e.values if isinstance(e.values, str) else bytes(e.values).decode("latin-1")
        return text.encode("latin-1") + b"\x00"
    if isinstance(e.values, bytes):
        return e.values
    if e.typ in (5, 10):
        parts = []
        for v in e.values:
            parts += [int(v), 1]
        return struct.pack(f"{bo}{len(parts)}{'I' if e.typ == 5 else 'i'}", *parts)
    if e.typ not in _FMT:  # unknown type: arbitrary bytes
        return b""
    return struct.pack(f"{bo}{len(e.values)}{_FMT[e.typ]}", *e.values)


def build_tiff(
    ifds: Sequence[Sequence[E]],
    *,
    big: bool = False,
    bo: str = "<",
    first: int | None = None,
    next_offsets: dict[int, int] | None = None,
    pad_to: int = 0,
) -> bytes:
    """Lay out header, then each IFD followed by its out-of-line values."""
    inline, count_fmt, off_fmt = (8, "Q", "Q") if big else (4, "H", "I")
    entry_size, count_size, next_size = (20, 8, 8) if big else (12, 2, 4)
    header_size = 16 if big else 8
    # First pass: positions.
    pos = header_size
    ifd_pos: list[int] = []
    for entries in ifds:
        ifd_pos.append(pos)
        pos += count_size + len(entries) * entry_size + next_size
        for e in entries:
            size = len(_payload(e, bo))
            if size > inline:
                pos += size + (size & 1)
    out = bytearray()
    mark = b"II" if bo == "<" else b"MM"
    if big:
        out += mark + struct.pack(bo + "HHHQ", 43, 8, 0, ifd_pos[0] if first is None else first)
    else:
        out += mark + struct.pack(bo + "HI", 42, ifd_pos[0] if first is None else first)
    for i, entries in enumerate(ifds):
        assert len(out) == ifd_pos[i]
        data_pos = ifd_pos[i] + count_size + len(entries) * entry_size + next_size
        body = bytearray()
        blobs = bytearray()
        for e in entries:
            payload = _payload(e, bo)
            count = e.count
            if count is None:
                count = len(payload) // _SIZE[e.typ] if e.typ in _SIZE else len(payload)
            if e.raw is not None:
                field = struct.pack(bo + off_fmt, e.raw)
            elif len(payload) <= inline:
                field = payload.ljust(inline, b"\x00")
            else:
                field = struct.pack(bo + off_fmt, data_pos + len(blobs))
                blobs += payload + b"\x00" * (len(payload) & 1)
            body += struct.pack(bo + ("HHQ" if big else "HHI"), e.tag, e.typ, count) + field
        nxt = ifd_pos[i + 1] if i + 1 < len(ifds) else 0
        if next_offsets and i in next_offsets:
            nxt = next_offsets[i]
        out += struct.pack(bo + count_fmt, len(entries)) + body
        out += struct.pack(bo + off_fmt, nxt) + blobs
    if len(out) < pad_to:
        out += b"\x00" * (pad_to - len(out))
    return bytes(out)


EPSG4326_KEYS = (1, 1, 0, 3, 1024, 0, 1, 2, 1025, 0, 1, 1, 2048, 0, 1, 4326)


def image_ifd(
    width: int = 64,
    height: int = 48,
    tile: int = 16,
    *,
    big: bool = False,
    subfile: int | None = None,
    n_offsets: int | None = None,
    extra: Sequence[E] = (),
    drop: Sequence[int] = (),
    offsets_type: int | None = None,
) -> list[E]:
    """Entries of a minimal tiled, georeferenced (EPSG:4326) uint8 image."""
    n = -(-width // tile) * -(-height // tile) if n_offsets is None else n_offsets
    otype = offsets_type or (LONG8 if big else LONG)
    entries = [
        E(256, SHORT, [width]),
        E(257, SHORT, [height]),
        E(258, SHORT, [8]),
        E(259, SHORT, [1]),
        E(262, SHORT, [1]),
        E(277, SHORT, [1]),
        E(322, SHORT, [tile]),
        E(323, SHORT, [tile]),
        E(324, otype, [16] * n),
        E(325, LONG, [tile * tile] * n),
        E(339, SHORT, [1]),
        E(33550, DOUBLE, [0.5, 0.5, 0.0]),
        E(33922, DOUBLE, [0.0, 0.0, 0.0, 10.0, 50.0, 0.0]),
        E(34735, SHORT, list(EPSG4326_KEYS)),
    ]
    if subfile is not None:
        entries.insert(0, E(254, LONG, [subfile]))
    return [e for e in entries if e.tag not in drop] + list(extra)


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def expect_error(
    path: Path, match: str | None = None, *, unsupported: bool | None = None
) -> HeaderError:
    """Parse ``path`` expecting a HeaderError that names the file."""
    with pytest.raises(HeaderError, match=match) as info:
        read_header(str(path))
    exc = info.value
    assert exc.href == str(path)
    assert str(path) in str(exc)
    if unsupported is True:
        assert isinstance(exc, UnsupportedLayoutError), repr(exc)
    elif unsupported is False:
        assert not isinstance(exc, UnsupportedLayoutError), repr(exc)
    return exc


# ---------------------------------------------------------------------------
# The builder itself makes files that parse, so hostile variants fail for their own reason.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(("big", "bo"), [(False, "<"), (True, "<"), (False, ">"), (True, ">")])
def test_builder_baseline_parses(tmp_path: Path, big: bool, bo: str) -> None:
    ovr = image_ifd(32, 24, big=big, subfile=1)
    path = write(tmp_path, "ok.tif", build_tiff([image_ifd(big=big), ovr], big=big, bo=bo))
    h = read_header(str(path))
    assert (h.width, h.height, h.dtype, h.samples) == (64, 48, "uint8", 1)
    assert h.bigtiff is big
    assert h.byte_order == bo
    assert h.crs == "EPSG:4326"
    assert h.geotransform == (10.0, 0.5, 0.0, 50.0, 0.0, -0.5)
    assert h.overview_count == 1
    assert h.levels[0].tile_offsets.tolist() == [16] * 12
    with tifffile.TiffFile(path) as tf:  # an independent reader agrees it is a TIFF
        assert [p.imagewidth for p in tf.pages] == [64, 32]


# ---------------------------------------------------------------------------
# Header bytes.
# ---------------------------------------------------------------------------


def test_empty_file(tmp_path: Path) -> None:
    expect_error(write(tmp_path, "empty.tif", b""), "empty", unsupported=False)


@pytest.mark.parametrize("n", range(1, 8))
@pytest.mark.parametrize(
    "prefix",
    [b"II*\x00\x08\x00\x00\x00", b"MM\x00*\x00\x00\x00\x08", b"II+\x00\x08\x00\x00\x00"],
    ids=["classic-le", "classic-be", "bigtiff"],
)
def test_files_shorter_than_a_header(tmp_path: Path, prefix: bytes, n: int) -> None:
    exc = expect_error(write(tmp_path, "short.tif", prefix[:n]), unsupported=False)
    assert f"only {n} bytes long, too short" in exc.reason


@pytest.mark.parametrize("n", range(8, 16))
def test_truncated_bigtiff_header(tmp_path: Path, n: int) -> None:
    header = b"II+\x00\x08\x00\x00\x00" + struct.pack("<Q", 16)
    expect_error(write(tmp_path, "short.tif", header[:n]), "BigTIFF", unsupported=False)


@pytest.mark.parametrize(
    "head",
    [
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 32,
        b"PK\x03\x04" + b"\x00" * 40,
        b"IM*\x00\x08\x00\x00\x00" + b"\x00" * 16,
        b"II\x29\x00\x08\x00\x00\x00" + b"\x00" * 16,  # magic 41
        b"MM\x00\x2c\x00\x08\x00\x00" + b"\x00" * 16,  # magic 44
        b"II\x00*\x08\x00\x00\x00" + b"\x00" * 16,  # byte order / magic mismatch
        b"\x00" * 64,
        b"\xff" * 64,
    ],
    ids=["png", "zip", "IM", "magic41", "magic44", "bo-mismatch", "zeros", "ones"],
)
def test_not_a_tiff(tmp_path: Path, head: bytes) -> None:
    exc = expect_error(write(tmp_path, "x.tif", head), unsupported=False)
    assert "not a TIFF" in exc.reason


@pytest.mark.parametrize(
    ("bytesize", "zero"), [(4, 0), (16, 0), (0, 0), (8, 1), (8, 0xFFFF)]
)
@pytest.mark.parametrize("bo", ["<", ">"])
def test_bigtiff_bad_offset_size(tmp_path: Path, bo: str, bytesize: int, zero: int) -> None:
    valid = build_tiff([image_ifd(big=True)], big=True, bo=bo)
    data = valid[:4] + struct.pack(bo + "HH", bytesize, zero) + valid[8:]
    expect_error(write(tmp_path, "big.tif", data), "BigTIFF", unsupported=False)


@pytest.mark.parametrize("big", [False, True])
def test_first_ifd_offset_zero(tmp_path: Path, big: bool) -> None:
    data = build_tiff([image_ifd(big=big)], big=big, first=0)
    expect_error(write(tmp_path, "x.tif", data), "first IFD offset is 0", unsupported=False)


_PAST = [
    pytest.param(False, 0, 10**6, id="classic-small-1e6"),
    pytest.param(False, 0, 2**32 - 8, id="classic-small-4G"),
    pytest.param(False, 200_000, 10**6, id="classic-large-1e6"),
    pytest.param(False, 200_000, 2**32 - 8, id="classic-large-4G"),
    pytest.param(True, 0, 2**63 + 5, id="big-small-2e63"),
    pytest.param(True, 0, 2**64 - 8, id="big-small-2e64"),
    pytest.param(True, 200_000, 10**6, id="big-large-1e6"),
    pytest.param(True, 200_000, 2**63 + 5, id="big-large-2e63"),
    pytest.param(
        True, 200_000, 2**64 - 8, id="big-large-2e64",
    ),
]


@pytest.mark.parametrize(("big", "pad", "offset"), _PAST)
def test_ifd_offset_past_eof(tmp_path: Path, big: bool, pad: int, offset: int) -> None:
    """Small files reveal their size in the read-ahead; large ones (pad) do not."""
    data = build_tiff([image_ifd(big=big)], big=big, next_offsets={0: offset}, pad_to=pad)
    expect_error(write(tmp_path, "x.tif", data), "past the end of the file", unsupported=False)


@pytest.mark.parametrize("big", [False, True])
@pytest.mark.parametrize("first", [True, False], ids=["first", "next"])
def test_ifd_offset_into_header(tmp_path: Path, big: bool, first: bool) -> None:
    for offset in (1, 4, 7) if not big else (1, 8, 15):
        data = build_tiff(
            [image_ifd(big=big)],
            big=big,
            first=offset if first else None,
            next_offsets=None if first else {0: offset},
        )
        expect_error(write(tmp_path, f"x{offset}.tif", data), "header", unsupported=False)


@pytest.mark.parametrize("big", [False, True])
@pytest.mark.parametrize(
    ("n", "back_to"), [(1, 0), (2, 0), (3, 1), (3, 2)], ids=["self", "A-B-A", "A-B-C-B", "C-C"]
)
def test_ifd_chain_loop(tmp_path: Path, big: bool, n: int, back_to: int) -> None:
    ifds = [image_ifd(big=big)] + [image_ifd(32, 24, big=big, subfile=1)] * (n - 1)
    layout = build_tiff(ifds, big=big)
    # The first IFD sits right after the header; find the others by re-building prefixes.
    starts = [16 if big else 8]
    for i in range(1, n):
        starts.append(len(build_tiff(ifds[:i], big=big)))
    data = build_tiff(ifds, big=big, next_offsets={n - 1: starts[back_to]})
    assert len(data) == len(layout)
    expect_error(write(tmp_path, "loop.tif", data), "loops", unsupported=False)


def _small_chain(count: int, big: bool) -> bytes:
    ifds = [image_ifd(16, 16, 16, big=big)]
    ifds += [image_ifd(16, 16, 16, big=big, subfile=1) for _ in range(count - 1)]
    return build_tiff(ifds, big=big)


@pytest.mark.parametrize("big", [False, True])
def test_ifd_chain_longer_than_max_ifds(tmp_path: Path, big: bool) -> None:
    limit = catalog.settings().max_ifds
    at_limit = write(tmp_path, "at.tif", _small_chain(limit, big))
    assert read_header(str(at_limit)).overview_count == limit - 1
    over = write(tmp_path, "over.tif", _small_chain(limit + 1, big))
    expect_error(over, f"more than {limit} IFDs", unsupported=False)


def _patch_entry_count(data: bytes, big: bool, value: int, bo: str = "<") -> bytes:
    at = 16 if big else 8
    field = struct.pack(bo + ("Q" if big else "H"), value)
    return data[:at] + field + data[at + len(field) :]


@pytest.mark.parametrize(
    ("big", "count"),
    [(False, 0), (True, 0), (False, 65535), (False, 4097), (True, 2**40), (True, 2**64 - 1)],
)
def test_ifd_entry_count_zero_or_absurd(tmp_path: Path, big: bool, count: int) -> None:
    data = _patch_entry_count(build_tiff([image_ifd(big=big)], big=big), big, count)
    tracemalloc.start()
    try:
        expect_error(write(tmp_path, "x.tif", data), "entries", unsupported=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20


def _replace(entries: list[E], new: E) -> list[E]:
    return [new if e.tag == new.tag else e for e in entries]


@pytest.mark.parametrize(
    ("big", "tag", "typ", "count"),
    [
        (False, 324, LONG, 2**32 - 1),
        (False, 325, LONG, 2**31),
        (False, 34737, ASCII, 2**32 - 1),
        (False, 33922, DOUBLE, 2**29),
        (True, 324, LONG8, 2**60),
        (True, 324, LONG8, 2**64 - 1),
        (True, 34735, SHORT, 2**40),
        (True, 325, LONG, 2**32 + 12),
    ],
)
def test_absurd_tag_count_fails_before_allocating(
    tmp_path: Path, big: bool, tag: int, typ: int, count: int
) -> None:
    entries = image_ifd(big=big, drop=[tag], extra=[E(tag, typ, count=count, raw=16)])
    path = write(tmp_path, "x.tif", build_tiff([entries], big=big, pad_to=1024))
    tracemalloc.start()
    try:
        expect_error(path, "limit", unsupported=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20


_TAG_PAST = [
    pytest.param(False, 324, 10**6, 0, id="classic-offsets-small"),
    pytest.param(False, 34735, 2**32 - 4, 0, id="classic-geokeys-4G"),
    pytest.param(False, 324, 2**32 - 40, 200_000, id="classic-offsets-large"),
    pytest.param(True, 324, 2**62, 0, id="big-offsets-small"),
    pytest.param(True, 33922, 2**62, 200_000, id="big-tiepoint-large"),
    pytest.param(
        True, 324, 2**64 - 50, 200_000, id="big-offsets-large-2e64",
    ),
]


@pytest.mark.parametrize(("big", "tag", "offset", "pad"), _TAG_PAST)
def test_tag_values_past_eof(tmp_path: Path, big: bool, tag: int, offset: int, pad: int) -> None:
    old = next(e for e in image_ifd(big=big) if e.tag == tag)
    entries = _replace(image_ifd(big=big), E(tag, old.typ, old.values, raw=offset))
    path = write(tmp_path, "x.tif", build_tiff([entries], big=big, pad_to=pad))
    expect_error(path, "past the end of the file", unsupported=False)


@pytest.mark.parametrize("big", [False, True])
def test_tag_values_straddling_eof(tmp_path: Path, big: bool) -> None:
    """The value starts inside the file and ends after it."""

    def entries(raw: int) -> list[E]:
        return _replace(image_ifd(big=big), E(324, LONG8 if big else LONG, [16] * 12, raw=raw))

    size = len(build_tiff([entries(0)], big=big))  # with ``raw`` the value is not written
    path = write(tmp_path, "x.tif", build_tiff([entries(size - 8)], big=big))
    assert path.stat().st_size == size
    expect_error(path, "past the end of the file", unsupported=False)


def test_past_eof_message_does_not_misstate_the_file_size(tmp_path: Path) -> None:
    data = build_tiff([image_ifd()], next_offsets={0: 1_000_000}, pad_to=200_000)
    exc = expect_error(write(tmp_path, "x.tif", data), "past the end", unsupported=False)
    assert "(1000000 bytes)" not in exc.reason


@pytest.mark.parametrize(
    ("n_offsets", "n_counts", "planar", "samples"),
    [(11, 12, 1, 1), (13, 12, 1, 1), (12, 11, 1, 1), (12, 12, 2, 3), (1, 1, 1, 1)],
)
def test_tile_offsets_do_not_match_the_grid(
    tmp_path: Path, n_offsets: int, n_counts: int, planar: int, samples: int
) -> None:
    entries = image_ifd(
        drop=[324, 325, 284, 277, 258],
        extra=[
            E(324, LONG, [16] * n_offsets),
            E(325, LONG, [1] * n_counts),
            E(284, SHORT, [planar]),
            E(277, SHORT, [samples]),
            E(258, SHORT, [8] * samples),
        ],
    )
    exc = expect_error(write(tmp_path, "x.tif", build_tiff([entries])), unsupported=False)
    assert "tile offsets" in exc.reason
    assert f"expected {12 * (samples if planar == 2 else 1)}" in exc.reason


@pytest.mark.parametrize("typ", [0, 14, 15, 19, 255, 65535])
@pytest.mark.parametrize("tag", [256, 324, 34735])
def test_unknown_field_type_in_wanted_tag(tmp_path: Path, tag: int, typ: int) -> None:
    entries = _replace(image_ifd(), E(tag, typ, b"\x01\x02\x03\x04", count=4, raw=16))
    path = write(tmp_path, "x.tif", build_tiff([entries]))
    exc = expect_error(path, "unknown type", unsupported=False)
    assert str(tag) in exc.reason


def test_unknown_field_type_in_other_tag_is_skipped(tmp_path: Path) -> None:
    entries = image_ifd(extra=[E(305, 99, b"", count=2**31, raw=2**31)])
    h = read_header(str(write(tmp_path, "x.tif", build_tiff([entries]))))
    assert (h.width, h.height) == (64, 48)


@pytest.mark.parametrize(
    ("tag", "entry"),
    [
        (256, E(256, ASCII, "abc")),
        (258, E(258, UNDEFINED, b"\x01\x02\x03\x04\x05")),
        (259, E(259, ASCII, "deflate")),
        (277, E(277, FLOAT, [float("inf")])),
        (322, E(322, FLOAT, [float("nan")])),
        (324, E(324, ASCII, "abcdef")),
        (338, E(338, ASCII, "xyz")),
        (33550, E(33550, ASCII, "scale")),
        (34735, E(34735, ASCII, "keys")),
        (262, E(262, UNDEFINED, b"\xff\xfe\xfd\xfc\xfb")),
    ],
    ids=["width-ascii", "bits-undefined", "compression-ascii", "samples-inf", "tilewidth-nan",
         "tileoffsets-ascii", "extrasamples-ascii", "pixelscale-ascii", "geokeys-ascii",
         "photometric-undefined"],
)
def test_wanted_tag_with_wrong_field_type(tmp_path: Path, tag: int, entry: E) -> None:
    entries = image_ifd(drop=[tag], extra=[entry])
    expect_error(write(tmp_path, "x.tif", build_tiff([entries])))


def test_geo_double_params_with_wrong_field_type(tmp_path: Path) -> None:
    keys = [1, 1, 0, 2, 1024, 0, 1, 2, 2048, 34736, 1, 0]
    entries = image_ifd(drop=[34735], extra=[E(34735, SHORT, keys), E(34736, ASCII, "abc")])
    expect_error(write(tmp_path, "x.tif", build_tiff([entries])))


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_geokey_code_stored_as_non_finite_double(tmp_path: Path, value: float) -> None:
    keys = [1, 1, 0, 2, 1024, 34736, 1, 0, 2048, 0, 1, 4326]
    entries = image_ifd(drop=[34735], extra=[E(34735, SHORT, keys), E(34736, DOUBLE, [value])])
    expect_error(write(tmp_path, "x.tif", build_tiff([entries])), unsupported=True)


def test_geokey_directory_shorter_than_declared(tmp_path: Path) -> None:
    keys = [1, 1, 0, 5, 1024, 0, 1, 2, 2048, 0, 1, 4326]  # declares 5 keys, holds 2
    entries = _replace(image_ifd(), E(34735, SHORT, keys))
    exc = expect_error(write(tmp_path, "x.tif", build_tiff([entries])), unsupported=True)
    assert "declares 5 keys" in exc.reason


def test_ifds_sharing_one_tag_value_do_not_amplify_memory(tmp_path: Path) -> None:
    tiles_across = 128
    n = tiles_across * tiles_across
    width = 16 * tiles_across

    def ifds(blob: int) -> list[list[E]]:
        shared = [E(324, LONG, count=n, raw=blob), E(325, LONG, count=n, raw=blob)]
        return [
            image_ifd(width, width, 16, subfile=sub, drop=[324, 325], extra=shared)
            for sub in [None] + [1] * 99
        ]

    blob = len(build_tiff(ifds(0))) + 8
    data = build_tiff(ifds(blob)).ljust(blob, b"\x00") + np.full(n, 16, "<u4").tobytes()
    path = write(tmp_path, "amp.tif", data)
    tracemalloc.start()
    try:
        try:
            read_header(str(path))
        except HeaderError as exc:
            assert exc.href == str(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * len(data) + 4 * 2**20, f"{peak / 2**20:.0f} MiB for a {len(data)} B file"


# ---------------------------------------------------------------------------
# Real files: truncation and byte-flip fuzzing of their header bytes.
# ---------------------------------------------------------------------------

_WANTED = catalog._tiff.WANTED_TAGS - {273}


def _write_rasterio(path: Path, **profile: Any) -> Path:
    count = profile.setdefault("count", 1)
    height, width = profile["height"], profile["width"]
    dtype = profile.setdefault("dtype", "uint8")
    profile.setdefault("driver", "GTiff")
    if "crs" not in profile and "gcps" not in profile:
        profile["crs"] = "EPSG:32633"
        profile.setdefault("transform", Affine(10, 0, 500000, 0, -10, 4100000))
    gcps = profile.pop("gcps", None)
    overviews = profile.pop("overviews", None)
    rng = np.random.default_rng(len(path.name))
    data = rng.integers(0, 200, (count, height, width)).astype(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(path, "w", **profile) as ds:
            ds.write(data)
            if gcps is not None:
                ds.gcps = (gcps, "EPSG:4326")
            if overviews:
                ds.build_overviews(overviews)
    return path


def _header_layout(path: Path) -> tuple[int, list[int]]:
    """End of the last byte a header parse needs, and every byte of IFDs and wanted tags."""
    end = 0
    spans: list[tuple[int, int]] = [(0, 16)]
    with tifffile.TiffFile(path) as tf:
        big = tf.is_bigtiff
        for page in tf.pages:
            n = len(page.tags)
            ifd_end = page.offset + (8 + 20 * n + 8 if big else 2 + 12 * n + 4)
            spans.append((page.offset, ifd_end))
            end = max(end, ifd_end)
            for tag in page.tags.values():
                if tag.code in _WANTED:
                    tag_end = tag.valueoffset + tag.valuebytecount
                    spans.append((tag.valueoffset, tag_end))
                    end = max(end, tag_end)
    positions = sorted({p for a, b in spans for p in range(a, b)})
    return end, positions


@pytest.fixture(scope="module")
def real_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("real")
    files = {
        "cog": _write_rasterio(
            d / "cog.tif", driver="COG", width=700, height=500, count=2, blocksize=128,
            compress="deflate", overview_resampling="average",
        ),
        "cog_bigtiff": _write_rasterio(
            d / "cog_big.tif", driver="COG", width=600, height=300, blocksize=128,
            dtype="int16", compress="zstd", BIGTIFF="YES", nodata=-1,
        ),
        "gtiff_be_big_mask": _write_rasterio(
            d / "be.tif", width=300, height=200, tiled=True, blockxsize=64, blockysize=64,
            count=3, BIGTIFF="YES", ENDIANNESS="BIG", crs="EPSG:4326",
            transform=Affine(0.01, 0, 10, 0, -0.01, 50), overviews=[2, 4],
        ),
    }
    path = d / "tifffile.tif"
    tifffile.imwrite(
        path,
        np.zeros((100, 90), np.float32),
        tile=(32, 32),
        compression="zlib",
        photometric="minisblack",
        metadata=None,
        extratags=[
            (33550, "d", 3, (30.0, 30.0, 0.0), True),
            (33922, "d", 6, (0.0, 0.0, 0.0, 300000.0, 5000000.0, 0.0), True),
            (34735, "H", 16, (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 2, 3072, 0, 1, 32610),
             True),
        ],
    )
    files["tifffile_point"] = path
    return files


@pytest.mark.parametrize("name", ["cog", "cog_bigtiff"])
def test_truncated_cog(tmp_path: Path, real_files: dict[str, Path], name: str) -> None:
    """A cut before the last header byte fails; a cut after it parses to the same record."""
    src = real_files[name]
    full = read_header(str(src))
    data = src.read_bytes()
    first_tile = min(int(lv.tile_offsets.min()) for lv in full.levels)
    header_end, _ = _header_layout(src)
    assert header_end <= first_tile  # a COG keeps every header byte before the imagery
    path = tmp_path / "cut.tif"
    outcomes: dict[int, bool] = {}
    for cut in [*range(0, first_tile, 1), first_tile, len(data) - 1]:
        path.write_bytes(data[:cut])
        try:
            h = read_header(str(path))
        except HeaderError as exc:
            assert exc.href == str(path)
            assert not isinstance(exc, UnsupportedLayoutError), (cut, exc)
            outcomes[cut] = False
            continue
        outcomes[cut] = True
        assert h.levels == full.levels
        assert (h.crs, h.geotransform, h.dtype, h.nodata) == (
            full.crs, full.geotransform, full.dtype, full.nodata)
    parsed = sorted(c for c, ok in outcomes.items() if ok)
    assert parsed[0] == header_end
    assert all(outcomes[c] for c in outcomes if c >= header_end)


@pytest.mark.timeout(60)
def test_byte_flip_fuzz(tmp_path: Path, real_files: dict[str, Path]) -> None:
    """Random byte changes in IFDs and tag values: a typed error or a successful parse."""
    rng = np.random.default_rng(20240917)
    unexpected: list[str] = []
    outcomes = {"ok": 0, "header": 0, "unsupported": 0}
    path = tmp_path / "fuzz.tif"
    for name, src in sorted(real_files.items()):
        original = src.read_bytes()
        _, positions = _header_layout(src)
        for i in range(100):
            data = bytearray(original)
            for _ in range(int(rng.integers(1, 4))):
                pos = int(rng.choice(positions))
                if rng.random() < 0.5:
                    data[pos] ^= 1 << int(rng.integers(0, 8))
                else:
                    data[pos] = int(rng.integers(0, 256))
            path.write_bytes(bytes(data))
            try:
                read_header(str(path))
                outcomes["ok"] += 1
            except UnsupportedLayoutError as exc:
                assert exc.href == str(path)
                outcomes["unsupported"] += 1
            except HeaderError as exc:
                assert exc.href == str(path)
                outcomes["header"] += 1
            except Exception as exc:
                unexpected.append(f"{name} mutation {i}: {type(exc).__name__}: {exc}")
    assert not unexpected, "\n".join(unexpected[:20])
    assert outcomes["header"] > 0 and outcomes["ok"] > 0, outcomes


# ---------------------------------------------------------------------------
# Valid TIFFs that cogflight cannot serve: UnsupportedLayoutError naming the file.
# ---------------------------------------------------------------------------

_TILED = {"tiled": True, "blockxsize": 64, "blockysize": 64}


def test_stripped_layout(tmp_path: Path) -> None:
    path = _write_rasterio(tmp_path / "strips.tif", width=100, height=80, tiled=False)
    expect_error(path, "stripped", unsupported=True)


@pytest.mark.parametrize(
    "transform",
    [Affine(10, 2, 500000, 1, -10, 4100000), Affine(0, 10, 500000, -10, 0, 4100000)],
    ids=["sheared", "rotated-90"],
)
def test_rotated_geotransform(tmp_path: Path, transform: Affine) -> None:
    path = _write_rasterio(
        tmp_path / "rot.tif", width=100, height=80, crs="EPSG:32633", transform=transform,
        **_TILED,
    )
    expect_error(path, "rotated", unsupported=True)


def test_no_georeferencing(tmp_path: Path) -> None:
    path = _write_rasterio(tmp_path / "plain.tif", width=100, height=80, crs=None, **_TILED)
    with tifffile.TiffFile(path) as tf:
        assert not {33550, 33922, 34264} & {t.code for t in tf.pages[0].tags.values()}
    expect_error(path, "no georeferencing", unsupported=True)


def test_geotransform_without_crs(tmp_path: Path) -> None:
    entries = image_ifd(drop=[34735])
    expect_error(write(tmp_path, "nocrs.tif", build_tiff([entries])), "no CRS", unsupported=True)


def test_gcp_only_georeferencing(tmp_path: Path) -> None:
    gcps = [
        GroundControlPoint(row=0, col=0, x=10.0, y=50.0),
        GroundControlPoint(row=0, col=100, x=11.0, y=50.1),
        GroundControlPoint(row=80, col=0, x=10.1, y=49.0),
        GroundControlPoint(row=80, col=100, x=11.2, y=49.2),
    ]
    path = _write_rasterio(
        tmp_path / "gcps.tif", width=100, height=80, gcps=gcps, crs=None, **_TILED
    )
    with rasterio.open(path) as ds:  # GDAL reads it back as GCP-georeferenced
        assert len(ds.gcps[0]) == 4
        assert ds.transform.is_identity
    expect_error(path, "ground control points", unsupported=True)


def _patch_short_tag(path: Path, code: int, value: int) -> None:
    """Overwrite an inline SHORT tag in every IFD of a file."""
    with tifffile.TiffFile(path) as tf:
        bo = tf.byteorder
        places = [p.tags[code].valueoffset for p in tf.pages if code in p.tags]
    assert places
    data = bytearray(path.read_bytes())
    for at in places:
        data[at : at + 2] = struct.pack(bo + "H", value)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("code", "name"), [(34712, "JPEG 2000"), (3, "CCITT Group 3"), (33003, "unknown")]
)
def test_unsupported_compression(tmp_path: Path, code: int, name: str) -> None:
    path = _write_rasterio(
        tmp_path / "j2k.tif", width=100, height=80, compress="deflate", overviews=[2], **_TILED
    )
    _patch_short_tag(path, 259, code)
    with tifffile.TiffFile(path) as tf:  # still a valid TIFF to another reader
        assert int(tf.pages[0].compression) == code
    exc = expect_error(path, f"compression {code}", unsupported=True)
    assert name in exc.reason


def test_ccitt_compression_patched_into_a_tifffile_file(tmp_path: Path) -> None:
    """A packbits file from tifffile parses; with Compression patched to 4 it is refused."""
    path = tmp_path / "g4.tif"
    tifffile.imwrite(
        path, np.zeros((64, 64), np.uint8), tile=(32, 32), compression="packbits",
        photometric="minisblack", metadata=None,
        extratags=[
            (33550, "d", 3, (1.0, 1.0, 0.0), True),
            (33922, "d", 6, (0.0, 0.0, 0.0, 0.0, 64.0, 0.0), True),
            (34735, "H", 8, (1, 1, 0, 1, 1024, 0, 1, 2), True),
        ],
    )
    assert read_header(str(path)).levels[0].compression == 32773
    _patch_short_tag(path, 259, 4)
    exc = expect_error(path, "compression 4", unsupported=True)
    assert "CCITT Group 4" in exc.reason


def test_multi_page_tiff(tmp_path: Path) -> None:
    path = tmp_path / "pages.tif"
    geotags = [
        (33550, "d", 3, (1.0, 1.0, 0.0), True),
        (33922, "d", 6, (0.0, 0.0, 0.0, 10.0, 50.0, 0.0), True),
        (34735, "H", 16, EPSG4326_KEYS, True),
    ]
    with tifffile.TiffWriter(path) as tw:
        for i in range(2):
            tw.write(
                np.full((64, 64), i, np.uint8), tile=(32, 32), photometric="minisblack",
                metadata=None, extratags=geotags,
            )
    with tifffile.TiffFile(path) as tf:
        assert [p.subfiletype for p in tf.pages] == [0, 0]
    expect_error(path, "multi-page", unsupported=True)


@pytest.mark.parametrize(
    ("dtype", "options", "words"),
    [
        ("uint8", {"nbits": 1}, "1-bit"),
        ("uint16", {"nbits": 12}, "12-bit"),
        ("uint8", {"nbits": 4}, "4-bit"),
        ("complex64", {}, "complex"),
        ("complex128", {}, "complex"),
        ("complex_int16", {}, "complex int"),
    ],
    ids=["1bit", "12bit", "4bit", "complex64", "complex128", "cint16"],
)
def test_unsupported_sample_types(
    tmp_path: Path, dtype: str, options: dict[str, Any], words: str
) -> None:
    write_dtype = "complex64" if dtype == "complex_int16" else dtype
    path = tmp_path / "s.tif"
    profile: dict[str, Any] = {"width": 100, "height": 80, "dtype": dtype, **_TILED, **options}
    if dtype == "complex_int16":
        data = np.zeros((1, 80, 100), write_dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with rasterio.open(
                path, "w", driver="GTiff", count=1, crs="EPSG:32633",
                transform=Affine(10, 0, 500000, 0, -10, 4100000), **profile,
            ) as ds:
                ds.write(data)
    else:
        _write_rasterio(path, **profile)
    exc = expect_error(path, "samples are not supported", unsupported=True)
    assert words in exc.reason


# ---------------------------------------------------------------------------
# Limits and value ranges (issue 10, 5 and 7): refused while indexing, by name.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        (E(338, SHORT, [65535]), "ExtraSamples"),
        (E(338, SHORT, [0, 3]), "ExtraSamples"),
        (E(50674, LONG, [4, 2**32 - 1]), "LercParameters"),
    ],
    ids=["extrasamples-65535", "extrasamples-3", "lerc-huge"],
)
def test_values_out_of_their_index_range(tmp_path: Path, entry: E, words: str) -> None:
    """A mutated ExtraSamples of 65535 became ``ArrowInvalid`` out of the builder."""
    path = write(tmp_path, "v.tif", build_tiff([image_ifd(extra=[entry])]))
    expect_error(path, words, unsupported=False)


def test_ycbcr_subsampling_out_of_range(tmp_path: Path) -> None:
    entries = [E(262, SHORT, [6]) if e.tag == 262 else e for e in image_ifd()]
    entries = [E(259, SHORT, [7]) if e.tag == 259 else e for e in entries]
    entries = [E(277, SHORT, [3]) if e.tag == 277 else e for e in entries]
    entries = [E(258, SHORT, [8, 8, 8]) if e.tag == 258 else e for e in entries]
    path = write(tmp_path, "y.tif", build_tiff([[*entries, E(530, SHORT, [65535, 2])]]))
    expect_error(path, "YCbCrSubSampling", unsupported=False)


def test_samples_over_the_limit_refused_in_bounded_work(tmp_path: Path) -> None:
    """65,535 declared bands: refused naming ``max_samples`` before any per-band work."""
    entries = [E(277, SHORT, [65535]) if e.tag == 277 else e for e in image_ifd()]
    entries = [E(258, SHORT, [8] * 65535) if e.tag == 258 else e for e in entries]
    path = write(tmp_path, "bands.tif", build_tiff([entries]))
    tracemalloc.start()
    try:
        exc = expect_error(path, "max_samples", unsupported=True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "65535 samples" in exc.reason and "COGFLIGHT_MAX_SAMPLES" in exc.reason
    assert peak < 64 << 20, peak


@pytest.mark.parametrize(
    ("width", "height", "samples", "planar", "bits", "refused"),
    [
        (65536, 16384, 1, 1, 8, True),  # the 1 GiB tile
        (16384, 16384, 1, 1, 8, False),  # exactly 256 MiB: at the limit
        (16384, 16384, 2, 2, 8, False),  # planar: one sample per tile
        (16384, 16384, 2, 1, 8, True),  # interleaved: two samples per tile
        (8192, 8192, 1, 1, 64, True),  # 512 MiB of float64
    ],
)
def test_tiles_over_max_tile_bytes(tmp_path: Path, width: int, height: int, samples: int,
                                   planar: int, bits: int, refused: bool) -> None:
    n = samples if planar == 2 else 1
    fmt = 3 if bits == 64 else 1
    entries = image_ifd(width, height, tile=1, n_offsets=n,
                        drop=(256, 257, 322, 323, 258, 277, 339),
                        extra=[E(256, LONG, [width]), E(257, LONG, [height]),
                               E(322, LONG, [width]), E(323, LONG, [height]),
                               E(258, SHORT, [bits] * samples), E(277, SHORT, [samples]),
                               E(339, SHORT, [fmt] * samples), E(284, SHORT, [planar])])
    path = write(tmp_path, "t.tif", build_tiff([entries]))
    if refused:
        exc = expect_error(path, "max_tile_bytes", unsupported=True)
        assert "COGFLIGHT_MAX_TILE_BYTES" in exc.reason
    else:
        assert read_header(str(path)).levels[0].tile_width == width
