"""The chip engine over a faulty object server: GDAL's pixels after retries, or a clear error.

A corpus of COGs in every codec cogflight reads without an integrity check and with
one (GDAL-written DEFLATE, ZSTD, LZW, PackBits, uncompressed, and cogflight's own
GDAL-free DEFLATE writer) is served by :class:`~tests.support.faults.FaultServer`, and
each fault is injected into the request that fetches a chip's tiles. rasterio's read
of the original file is the oracle. What is guaranteed, and tested here:

- every fault another request cures (5xx, 429, reset, cut body, Range ignored, a
  shifted or short range): rasterio's pixels, after exactly one retry, counted in the
  engine's ``retries``;
- the same fault on every request: :class:`~cogflight_core.UpstreamError` naming the
  file and byte range, and no chip;
- a replaced object (new content and ETag, on HTTP and on S3): an error saying the
  object changed since the Collection was built; never the new file's pixels;
- bytes damaged inside a correct answer (a flipped byte, a body shifted under a
  correct ``Content-Range``): the transport cannot tell. A codec with a checksum
  (DEFLATE's zlib stream ends in an Adler-32) fails to decode, the engine fetches the
  tile again, and the pixels are right. Codecs without one (LZW, PackBits,
  uncompressed and, as GDAL writes it, ZSTD with no frame checksum) may decode the
  damaged bytes into wrong pixels: only TCP's checksum and TLS protect them in
  transit, and nothing protects against a store that serves damaged bytes. The test
  measures, per codec, which outcomes occur, and asserts the codecs with a checksum
  never give wrong pixels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from rasterio.windows import Window as RioWindow

import catalog
from catalog.testing import write_cog
from cogflight_core import ChipReadError, DecodeError, ObjectChangedError, UpstreamError
from flight_server import ChipEngine, ChipRequest
from tests.conftest import s3_options
from tests.support.corpus import smooth
from tests.support.faults import Fault, FaultServer

GT = (500000.0, 10.0, 0.0, 4100000.0, 0.0, -10.0)
WINDOW = (100, 50, 300, 300)  # col, row, width, height: four of the six 256-pixel tiles
GDAL_CODECS: dict[str, dict[str, Any]] = {
    "deflate": {"compress": "deflate", "predictor": 2},
    "zstd": {"compress": "zstd", "predictor": 2},
    "lzw": {"compress": "lzw", "predictor": 2},
    "packbits": {"compress": "packbits"},
    "none": {"compress": "none"},
}
CODECS = (*GDAL_CODECS, "deflate-cogflight")
CHECKSUMMED = {"deflate", "deflate-cogflight"}  # zlib streams end in an Adler-32
CURABLE = [
    Fault("status", 500),
    Fault("status", 503),
    Fault("status", 429, retry_after="0"),
    Fault("reset"),
    Fault("truncate"),
    Fault("ignore_range"),
    Fault("wrong_range"),
    Fault("short"),
]


def _write(directory: Path, codec: str) -> Path:
    path = directory / f"{codec}.tif"
    data = smooth((1, 400, 600), "uint16", seed=3)
    if codec == "deflate-cogflight":
        write_cog(path, data, geotransform=GT, epsg=32633, tile=256, overviews=0)
        return path
    with rasterio.open(path, "w", driver="GTiff", width=600, height=400, count=1,
                       dtype="uint16", crs="EPSG:32633", transform=Affine.from_gdal(*GT),
                       tiled=True, blockxsize=256, blockysize=256,
                       **GDAL_CODECS[codec]) as ds:
        ds.write(data)
    return path


def _box(c0: int, r0: int, w: int, h: int) -> shapely.Polygon:
    x0, y0 = GT[0] + c0 * GT[1], GT[3] + r0 * GT[5]
    return shapely.box(x0 + 2.5, y0 + h * GT[5] + 2.5, x0 + w * GT[1] - 2.5, y0 - 2.5)


REQUEST = ChipRequest.create(geometries=[_box(*WINDOW)], geometry_crs="EPSG:32633")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory):
    """``{codec: (local file, Collection over HTTP, expected pixels)}`` and the server."""
    base = tmp_path_factory.mktemp("fault-corpus")
    originals = tmp_path_factory.mktemp("fault-originals")
    out: dict[str, tuple[Path, catalog.Collection, np.ndarray]] = {}
    with FaultServer(base) as server:
        for codec in CODECS:
            path = _write(base, codec)
            (originals / path.name).write_bytes(path.read_bytes())
            col = catalog.build_from_files([server.url_for(path)], name=codec, progress=False,
                                           store_options={"allow_http": True})
            c0, r0, w, h = WINDOW
            with rasterio.open(path) as ds:
                expected = ds.read(1, window=RioWindow(c0, r0, w, h))
            out[codec] = (path, col, expected)
        yield server, out, originals


@pytest.fixture
def engine(corpus):
    server, _, originals = corpus
    server.clear()
    for p in originals.iterdir():  # undo any replacement
        target = server.root / p.name
        if target.read_bytes() != p.read_bytes():
            target.write_bytes(p.read_bytes())
    policy = catalog.AccessPolicy([f"{server.url}/"])
    with ChipEngine(cache_bytes=0, policy=policy) as e:
        yield e


def _read(engine: ChipEngine, col: catalog.Collection) -> np.ndarray:
    return engine.read(col, REQUEST).chips[0, 0]


def test_the_corpus_reads_as_gdal_does_with_no_fault(corpus, engine) -> None:
    _, cols, _ = corpus
    for codec, (_, col, expected) in cols.items():
        np.testing.assert_array_equal(_read(engine, col), expected, err_msg=codec)
        header = col.header(0, col.band_names[0])
        assert header.identity is not None and header.identity.etag, codec  # recorded
    assert engine.stats().retries == 0


@pytest.mark.parametrize("fault", CURABLE, ids=str)
@pytest.mark.parametrize("codec", CODECS)
def test_curable_faults_give_gdals_pixels_after_one_counted_retry(
    corpus, engine, codec: str, fault: Fault
) -> None:
    server, cols, _ = corpus
    path, col, expected = cols[codec]
    server.inject(path.name, fault)
    np.testing.assert_array_equal(_read(engine, col), expected)
    assert engine.stats().retries == 1
    assert server.faulted() >= 1


@pytest.mark.parametrize("fault", [Fault("status", 503), Fault("reset"), Fault("ignore_range"),
                                   Fault("wrong_range")], ids=str)
def test_lasting_faults_are_an_error_naming_the_file(corpus, engine, fault: Fault) -> None:
    server, cols, _ = corpus
    path, col, _ = cols["lzw"]
    server.always(path.name, fault)
    with pytest.raises(UpstreamError) as info:
        _read(engine, col)
    err = info.value
    assert err.href == server.url_for(path) and err.byte_range is not None
    assert f"({engine.stats().retries + 1} attempts)" in str(err)
    assert engine.stats().retries == catalog.settings().max_retries


@pytest.mark.parametrize("codec", ["deflate", "none"])
def test_a_replaced_object_is_an_error_not_other_pixels(corpus, engine, codec: str) -> None:
    server, cols, _ = corpus
    path, col, _ = cols[codec]
    other = smooth((1, 400, 600), "uint16", seed=99)
    with rasterio.open(path) as ds:
        profile = ds.profile
    replacement = path.with_suffix(".new")
    with rasterio.open(replacement, "w", **profile) as ds:
        ds.write(other)  # the same layout, other pixels
    server.replace(path.name, replacement.read_bytes())
    replacement.unlink()
    server.reset()
    with pytest.raises(UpstreamError, match="changed since the Collection was built") as info:
        _read(engine, col)
    assert "rebuild" in str(info.value)
    # If-Match sent, refused at once (one request per run of tiles; no retries).
    assert server.records and {int(r.status) for r in server.records} == {412}
    assert engine.stats().retries == 0


def _outcome(engine: ChipEngine, col: catalog.Collection, expected: np.ndarray) -> str:
    try:
        chip = _read(engine, col)
    except DecodeError:
        return "error"
    return "correct" if np.array_equal(chip, expected) else "wrong"


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("kind", ["flip", "lie_range"])
def test_damaged_bytes_under_right_headers(corpus, engine, codec: str, kind: str) -> None:
    server, cols, _ = corpus
    path, col, expected = cols[codec]
    img = col.header(0, col.band_names[0]).levels[0]
    # Inside the first tile the chip needs (uncompressed: pixel row 128, column 200), in the
    # request that starts with that tile.
    at = int(img.tile_byte_counts[0]) // 2 + 400
    start = int(img.tile_offsets[0])
    outcomes = []
    for _ in range(3):  # the fault once, then a clean answer
        server.inject(path.name, Fault(kind, at=at, shift=int(img.tile_byte_counts[0]) // 3,
                                       start=start))
        outcomes.append(_outcome(engine, col, expected))
    if codec in CHECKSUMMED:
        # The damage fails to decode, the tile is fetched again: always the right pixels.
        assert outcomes == ["correct"] * 3, outcomes
        assert engine.stats().retries == 3
    else:
        # No checksum: the engine cannot know. Correct pixels, a decode error or wrong
        # pixels may result; what this codec did is recorded here for the docs.
        assert set(outcomes) <= {"correct", "error", "wrong"}, outcomes
    if codec == "none" and kind == "flip":
        assert outcomes == ["wrong"] * 3  # the documented limit: raw bytes carry no check


def test_a_replaced_object_on_s3_is_an_error(tmp_path: Path, moto_s3, monkeypatch) -> None:
    endpoint, s3 = moto_s3
    s3.create_bucket(Bucket="faults")
    first = _write(tmp_path, "deflate")
    s3.upload_file(str(first), "faults", "cogs/a.tif")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    opts = {k: v for k, v in s3_options(endpoint).items() if k != "config"}
    col = catalog.build_from_files(["s3://faults/cogs/a.tif"], store_options=opts,
                                   progress=False)
    identity = col.header(0, col.band_names[0]).identity
    assert identity is not None and identity.etag and identity.size == first.stat().st_size
    c0, r0, w, h = WINDOW
    with rasterio.open(first) as ds:
        expected = ds.read(1, window=RioWindow(c0, r0, w, h))
    policy = catalog.AccessPolicy(["s3://faults/"])
    with ChipEngine(cache_bytes=0, policy=policy) as e:
        np.testing.assert_array_equal(_read(e, col), expected)
        second = tmp_path / "second.tif"
        with rasterio.open(first) as ds:
            profile = ds.profile
        with rasterio.open(second, "w", **profile) as ds:
            ds.write(smooth((1, 400, 600), "uint16", seed=5))
        s3.upload_file(str(second), "faults", "cogs/a.tif")  # replaced: a new ETag
        with pytest.raises(ChipReadError, match="changed since the Collection was built"):
            _read(e, col)
        assert e.stats().retries == 0
    assert issubclass(ObjectChangedError, catalog.StorageError)
