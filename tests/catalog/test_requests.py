"""Header reads cost one ranged GET per file when the header fits the read-ahead."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import rasterio
import tifffile
from affine import Affine

from catalog import StoreRegistry, read_header
from catalog.testing import synthetic_scene, write_cog
from tests.support.corpus import CASES, Case
from tests.support.servers import RangeServer


def _header_end(path: Path) -> int:
    """Last byte of any IFD or tag value, i.e. how far a reader must look (tifffile's view)."""
    end = 0
    with tifffile.TiffFile(path) as tf:
        entry = 20 if tf.is_bigtiff else 12
        for page in tf.pages:
            end = max(end, page.offset + 16 + len(page.tags) * entry)
            for tag in page.tags:
                end = max(end, tag.valueoffset + tag.valuebytecount)
    return end


@pytest.fixture(scope="module")
def served_corpus(corpus: dict[str, tuple[Case, Path]]):
    root = next(iter(corpus.values()))[1].parent
    with RangeServer(root) as server:
        yield server, corpus


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_one_request_when_header_fits(served_corpus, case: Case) -> None:
    server, corpus = served_corpus
    _, path = corpus[case.name]
    registry = StoreRegistry({"allow_http": True})
    url = server.url_for(path)
    server.reset()
    h = read_header(url, registry=registry)
    reqs = server.per_path()[f"/{path.name}"]
    local = read_header(str(path))
    assert replace(h, href=local.href) == local  # same record over HTTP as locally
    if _header_end(path) <= 64 * 1024:
        assert reqs == 1, f"{case.name}: header within the read-ahead but {reqs} requests"
    else:
        # Beyond the read-ahead: one more request per IFD outside it, plus one for values.
        assert reqs <= 2 + len(h.levels) + len(h.masks)


def test_read_ahead_grows_only_when_needed(tmp_path: Path) -> None:
    path = tmp_path / "big_header.tif"
    with rasterio.open(path, "w", driver="COG", width=6000, height=6000, count=1,
                       dtype="uint8", crs="EPSG:32633", blocksize=256, compress="deflate",
                       transform=Affine(10, 0, 500000, 0, -10, 4000000)) as ds:
        ds.write(np.zeros((1, 6000, 6000), np.uint8))
    with RangeServer(tmp_path) as server:
        registry = StoreRegistry({"allow_http": True})
        big = read_header(server.url_for(path), registry=registry)
        assert server.requests == 1  # 64 KiB covers ~550 tiles of offsets per level
        server.reset()
        small = read_header(server.url_for(path), registry=registry, read_ahead=2048)
        assert small == big
        assert 2 <= server.requests <= 4
        ranges = [r.range for r in server.records]
        assert ranges[0] == "bytes=0-2047"


def test_latency_does_not_multiply(tmp_path: Path) -> None:
    """With 50 ms per request, a header still costs one round trip."""
    write_cog(tmp_path / "a.tif", synthetic_scene(600, 600, 2, 1), geotransform=(0, 1, 0, 0, 0, -1),
              epsg=32633)
    with RangeServer(tmp_path, latency=0.05) as server:
        h = read_header(server.url_for(tmp_path / "a.tif"),
                        registry=StoreRegistry({"allow_http": True}))
        assert h.round_trips == 1
        assert server.requests == 1
