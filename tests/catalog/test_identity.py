"""Each asset records which version of its file was indexed: size, ETag, modification time.

Recorded from the header read's own answer (no extra request), kept through save and
load, optional (Collections written before the fields existed still load and read),
and checked by every tile read: a replaced file is an error, a rebuilt Collection over
it reads the new pixels (no stale cached header or tile).
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import shapely

import catalog
from catalog import ObjectIdentity
from catalog._identity import mismatch
from catalog.testing import synthetic_scene, write_cog
from cogflight_core import UpstreamError
from flight_server import ChipEngine, ChipRequest
from tests.support.faults import FaultServer

GT = (500000.0, 10.0, 0.0, 4100000.0, 0.0, -10.0)
BOX = shapely.box(GT[0] + 2.5, GT[3] - 100 * 10 + 2.5, GT[0] + 100 * 10 - 2.5, GT[3] - 2.5)
REQUEST = ChipRequest.create(geometries=[BOX], geometry_crs="EPSG:32633")


def _cog(path: Path, seed: int) -> Path:
    write_cog(path, synthetic_scene(300, 300, 1, seed), geotransform=GT, epsg=32633, tile=256)
    return path


def _identity(col: catalog.Collection) -> ObjectIdentity | None:
    return col.header(0, col.band_names[0]).identity


def test_local_and_http_builds_record_the_identity(tmp_path: Path) -> None:
    path = _cog(tmp_path / "a.tif", 1)
    local = catalog.build_from_files([path], progress=False)
    ident = _identity(local)
    assert ident is not None and ident.size == path.stat().st_size and ident.etag is None
    assert ident.last_modified == dt.datetime.fromtimestamp(
        path.stat().st_mtime_ns // 1000 / 1e6, dt.UTC
    )
    with FaultServer(tmp_path) as server:
        remote = catalog.build_from_files([server.url_for(path)], progress=False,
                                          store_options={"allow_http": True})
        ident = _identity(remote)
        assert ident is not None and ident.etag == server.etag("a.tif")
        assert ident.size == path.stat().st_size
        assert remote.metadata["build"]["requests_max"] == 1  # no request of its own
    row = remote.table.column("asset:image")[0].as_py()
    assert row["size"] == path.stat().st_size and row["etag"] == ident.etag


def test_identity_survives_save_and_load(tmp_path: Path) -> None:
    col = catalog.build_from_files([_cog(tmp_path / "a.tif", 1)], progress=False)
    back = catalog.load(col.save(tmp_path / "c.parquet"))
    assert _identity(back) == _identity(col)


def test_collections_without_the_fields_still_load_and_read(tmp_path: Path) -> None:
    path = _cog(tmp_path / "a.tif", 2)
    col = catalog.build_from_files([path], progress=False)
    table = col.table
    i = table.schema.get_field_index("asset:image")
    arr = table.column(i).combine_chunks()
    legacy_type = pa.struct([arr.type.field("href"), arr.type.field("header")])
    legacy = pa.StructArray.from_arrays([arr.field("href"), arr.field("header")],
                                        fields=list(legacy_type))
    old = table.set_column(i, pa.field("asset:image", legacy_type), legacy)
    pa.parquet.write_table(old, tmp_path / "old.parquet")
    loaded = catalog.load(tmp_path / "old.parquet")
    assert loaded.table.schema.field("asset:image").type.equals(catalog._schema.ASSET_TYPE)
    assert _identity(loaded) is None  # nothing recorded, nothing checked
    with ChipEngine() as e:
        np.testing.assert_array_equal(e.read(loaded, REQUEST).chips, e.read(col, REQUEST).chips)


def test_a_rebuilt_collection_over_a_replaced_file_reads_the_new_pixels(tmp_path: Path) -> None:
    path = _cog(tmp_path / "a.tif", 3)
    first = catalog.build_from_files([path], progress=False)
    with ChipEngine() as e:
        before = e.read(first, REQUEST).chips
        _cog(path, 4)  # the same layout, other pixels
        later = path.stat().st_mtime + 5
        os.utime(path, (later, later))
        # Cached tiles are the indexed version's: the old Collection still means them.
        np.testing.assert_array_equal(e.read(first, REQUEST).chips, before)
        with ChipEngine() as cold, pytest.raises(UpstreamError, match="changed since the"):
            cold.read(first, REQUEST)  # a read of the file finds it replaced
        rebuilt = catalog.build_from_files([path], progress=False)
        after = e.read(rebuilt, REQUEST).chips  # same href and offsets: no stale tiles
    assert not np.array_equal(before, after)
    with ChipEngine() as fresh:
        np.testing.assert_array_equal(fresh.read(rebuilt, REQUEST).chips, after)


@pytest.mark.parametrize(
    ("indexed", "now", "changed"),
    [
        (ObjectIdentity(10, '"a"'), ObjectIdentity(10, '"a"'), None),
        (ObjectIdentity(10, '"a"'), ObjectIdentity(11, '"a"'), "now 11 bytes"),
        (ObjectIdentity(10, '"a"'), ObjectIdentity(10, '"b"'), "ETag is now"),
        (ObjectIdentity(10, 'W/"a"'), ObjectIdentity(10, '"a"'), None),  # weak comparison
        (ObjectIdentity(10, None, dt.datetime(2024, 1, 1, tzinfo=dt.UTC)),
         ObjectIdentity(10, None, dt.datetime(2024, 1, 2, tzinfo=dt.UTC)), "modified at"),
        (ObjectIdentity(10, '"a"', dt.datetime(2024, 1, 1, tzinfo=dt.UTC)),
         ObjectIdentity(10, '"a"', dt.datetime(2024, 1, 2, tzinfo=dt.UTC)), None),  # ETag wins
        (ObjectIdentity(None, None), ObjectIdentity(10, '"a"'), None),  # nothing recorded
        (None, ObjectIdentity(10, '"a"'), None),
    ],
)
def test_what_counts_as_changed(indexed, now, changed) -> None:
    why = mismatch(indexed, now)
    assert (why is None) if changed is None else (changed in (why or ""))
