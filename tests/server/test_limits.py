"""Limits are checked before allocation; each refusal names its limit and value."""

from __future__ import annotations

import json
import re
import resource
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from pyarrow import flight

import catalog
from catalog.testing import write_cog
from cogflight_core import EngineSettings, ServerSettings, StorageSettings, config
from cogflight_core._config import settings_fields
from flight_server import ChipEngine, ChipRequest
from flight_server.engine._plan import batch_rows, chip_buffer_bytes
from tests.support.flight_fixtures import GT, lonlat_box, query, ticket
from tests.support.messages import assert_clean, server_paths

ROOT = Path(__file__).resolve().parents[2]
ALL = "a" * 32
OTHER = "c" * 32
# 16 geometries x 4 scenes = 64 chips
SIXTEEN = [lonlat_box(120 + 30 * k, 30 * j, 20, 20) for k in range(4) for j in range(4)]


def _info(client: flight.FlightClient, doc: dict[str, Any], **kw: Any) -> flight.FlightInfo:
    return client.get_flight_info(flight.FlightDescriptor.for_command(json.dumps(doc)), **kw)


def _rss_peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.fixture(scope="module")
def served(flight_root, start_server):
    srv = start_server(flight_root.path, allow=[str(flight_root.path.parent / "data")])
    client = flight.connect(srv.location)
    yield srv, client, flight_root
    client.close()


def test_a_chip_over_max_batch_bytes_is_refused_before_allocation(served) -> None:
    """The issue's numbers: chip_size 4096, float64, 64 chips per batch: 8 GiB a batch."""
    _srv, client, root = served
    doc = query(chip_size=4096, dtype="float64", batch_rows=64, geometries={"bbox": SIXTEEN})
    before = _rss_peak_mib()
    for call in (lambda: _info(client, doc), lambda: client.do_get(ticket(doc)).read_all()):
        with pytest.raises(pa.ArrowInvalid, match=r"over the limit of 268435456 bytes per batch "
                                                  r"\(max_batch_bytes\)") as info:
            call()
        assert_clean(info.value, server_paths(root.path))
    assert _rss_peak_mib() - before < 512  # nothing near a chip (272 MiB), let alone 8 GiB


def test_batches_are_lowered_to_fit_max_batch_bytes(served, flight_root, start_server) -> None:
    # The case with one band: 64 chips of 4096 x 4096 float64 would be 9 GiB a
    # batch; the engine plans it with one chip per batch.
    alpha = flight_root.collections["alpha"]
    engine = ChipEngine()
    request = ChipRequest.create(geometries=SIXTEEN, bands=["red"], chip_size=4096,
                                 dtype="float64", batch_rows=64)
    plan = engine.plan(alpha, request)
    assert plan.chips == 64 and chip_buffer_bytes(plan.shape, plan.dtype) == 150_994_944
    assert batch_rows(plan, 64, engine.settings.max_batch_bytes) == 1
    engine.close()
    # Over Flight, small enough to read: 3 chips' worth per batch.
    per_chip = 2 * 64 * 64 * 8 + 64 * 64
    srv = start_server(flight_root.path, allow=[str(flight_root.path.parent / "data")],
                       max_batch_bytes=3 * per_chip)
    client = flight.connect(srv.location)
    doc = query(dtype="float64", geometries={"bbox": SIXTEEN[:4]})
    reader = client.do_get(ticket(doc))
    sizes = [chunk.data.num_rows for chunk in reader]
    assert sizes == [1, 2, 3, 3, 3, 3, 1]  # ramping up to the lowered 3
    lowered = client.do_get(ticket(doc)).read_all().combine_chunks()
    default = served[1].do_get(ticket(doc)).read_all().combine_chunks()  # one batch of 16
    assert lowered.equals(default)
    client.close()


@pytest.mark.parametrize("count", [10**6, 3 * 10**6])
def test_endpoints_per_plan(served, count: int) -> None:
    """The issue's numbers: shard.count 10^6 took 9.9 s and 2.2 GB; 3 x 10^6 MemoryError."""
    _srv, client, root = served
    before = _rss_peak_mib()
    with pytest.raises(pa.ArrowInvalid, match=rf"{count} endpoints asked, over the limit of "
                                              r"1024 \(max_endpoints\)") as info:
        _info(client, query(shard={"count": count}))
    assert_clean(info.value, server_paths(root.path))
    with pytest.raises(pa.ArrowInvalid, match="max_endpoints"):
        client.do_get(ticket(query(shard={"index": 0, "count": count}))).read_all()
    assert _rss_peak_mib() - before < 256
    assert len(_info(client, query(shard={"count": 1024})).endpoints) == 1024


def test_pixels_and_chips_per_request(served, flight_root, start_server) -> None:
    _srv, client, _ = served
    with pytest.raises(pa.ArrowInvalid, match=r"limit of 16777216 pixels \(max_chip_pixels\)"):
        _info(client, query(chip_size=4097))
    srv = start_server(flight_root.path, max_chips=10)
    small = flight.connect(srv.location)
    assert _info(small, query(geometries={"bbox": SIXTEEN[:2]})).total_records == 8
    with pytest.raises(pa.ArrowInvalid, match=r"makes 64 chips, over the limit of 10 "
                                              r"\(max_chips\)"):
        _info(small, query(geometries={"bbox": SIXTEEN}))
    small.close()


def test_decoded_bytes_per_tile_is_refused_before_decoding(tmp_path: Path, monkeypatch,
                                                           start_server) -> None:
    # One 2048 x 2048 uint16 tile: 8 MiB decoded from a small file. Indexed under the
    # default limit, served under a 4 MiB one.
    data = tmp_path / "data"
    data.mkdir()
    pixels = np.zeros((1, 2048, 2048), dtype=np.uint16)
    pixels[0, ::7, ::5] = 3
    write_cog(data / "big.tif", pixels, geotransform=GT, epsg=32633, tile=2048, overviews=0)
    collection = catalog.build_from_files({"big": {"red": str(data / "big.tif")}}, name="big",
                                          progress=False)
    (tmp_path / "root").mkdir()
    collection.save(tmp_path / "root" / "big.parquet")
    monkeypatch.setenv("COGFLIGHT_MAX_TILE_BYTES", "4MiB")
    config.cache_clear()
    try:
        srv = start_server(tmp_path / "root", allow=[str(data)])
        client = flight.connect(srv.location)
        doc = query(collection="big", chip_size=64, geometries={"bbox": lonlat_box(10, 10, 5, 5)})
        with pytest.raises(pa.ArrowInvalid, match=r"decodes to 8388608 bytes, over the limit "
                                                  r"of 4194304 bytes \(max_tile_bytes\)") as info:
            client.do_get(ticket(doc)).read_all()
        assert_clean(info.value, server_paths(tmp_path))
        assert ".../big.tif" in str(info.value)
        stats = json.loads(next(iter(client.do_action("stats"))).body.to_pybytes())
        assert stats["tiles_decoded"] == 0 and stats["streams_active"] == 0
        client.close()
    finally:
        monkeypatch.delenv("COGFLIGHT_MAX_TILE_BYTES")
        config.cache_clear()


def test_streams_per_token(flight_root, tmp_path: Path, start_server) -> None:
    (tmp_path / "tokens").write_text(f"{ALL}\n{OTHER}\n")
    srv = start_server(flight_root.path, allow=[str(flight_root.path.parent / "data")],
                       token_file=str(tmp_path / "tokens"), max_streams_per_token=1)
    client = flight.connect(srv.location)

    def bearer(token: str) -> flight.FlightCallOptions:
        return flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {token}".encode())])

    long = query(geometries={"bbox": [lonlat_box(c, r, 20, 20) for c in range(0, 480, 24)
                                      for r in range(0, 480, 48)]}, batch_rows=1)
    held = client.do_get(ticket(long), options=bearer(ALL))
    held.read_chunk()
    with pytest.raises(flight.FlightUnavailableError,
                       match=r"server busy for this token: it holds 1 streams, at the limit of 1 "
                             r"\(max_streams_per_token\)") as info:
        client.do_get(ticket(query()), options=bearer(ALL)).read_all()
    assert_clean(info.value, server_paths(flight_root.path))
    assert client.do_get(ticket(query()), options=bearer(OTHER)).read_all().num_rows == 4
    held.cancel()
    stats = json.loads(next(iter(client.do_action("stats", options=bearer(ALL)))).body
                       .to_pybytes())
    assert stats["rejected"] == 1 and stats["errors"] == 0  # a busy refusal is a rejection
    client.close()


def test_limits_table_matches_the_settings() -> None:
    """docs/wire-contract.md's Limits table names real settings with their defaults."""
    text = (ROOT / "docs" / "wire-contract.md").read_text()
    table = text.split("## Limits", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "`" in line]
    shown = {}
    for cls in (StorageSettings, EngineSettings, ServerSettings):
        for f, spec in settings_fields(cls):
            default = spec.shown or ("none" if f.default is None else str(f.default))
            shown[f.name] = default
    assert len(rows) >= 10
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        name = re.fullmatch(r"`(\w+)`", cells[2])
        assert name and name.group(1) in shown, row
        assert cells[1].startswith(shown[name.group(1)]), (row, shown[name.group(1)])
