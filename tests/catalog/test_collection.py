"""Collections: save (atomic), load, subset, and reading by DuckDB, GeoPandas and PyArrow."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shapely

import catalog
from catalog.testing import synthetic_scene, write_cog
from tests.conftest import s3_options


@pytest.fixture(scope="module")
def coll(tmp_path_factory: pytest.TempPathFactory) -> catalog.Collection:
    """Eight scenes in two UTM zones, with labels and cloud cover passed through."""
    root = tmp_path_factory.mktemp("coll")
    rows = []
    for i in range(8):
        paths = {}
        for band in ("red", "nir"):
            p = root / f"s{i}_{band}.tif"
            write_cog(p, synthetic_scene(200, 300, 1, i), epsg=32633 if i < 4 else 32634,
                      geotransform=(400000.0 + 5000 * (i % 4), 10, 0, 5100000.0, 0, -10),
                      nodata=0)
            paths[band] = str(p)
        rows.append({"id": f"s{i}", "datetime": dt.datetime(2024, 1 + i, 15, tzinfo=dt.UTC),
                     "red": paths["red"], "nir": paths["nir"], "eo:cloud_cover": 10.0 * i,
                     "label": i % 3, "split": "train" if i % 2 else "val"})
    table = pa.Table.from_pylist(rows)
    return catalog.build_from_table(table, name="eight", bands={"red": "red", "nir": "nir"},
                                    progress=False)


def test_roundtrip(coll: catalog.Collection, tmp_path: Path) -> None:
    target = coll.save(tmp_path / "sub" / "eight.parquet")
    loaded = catalog.load(target)
    assert loaded.table.equals(coll.table)
    assert loaded.name == "eight" and loaded.bands == coll.bands and len(loaded) == 8
    assert loaded.header(3, "nir") == coll.header(3, "nir")
    meta = json.loads(pq.read_schema(target).metadata[b"cogflight"])
    assert meta["schema_version"] == catalog.SCHEMA_VERSION
    assert [b["name"] for b in meta["bands"]] == ["red", "nir"]


def test_geoparquet_metadata(coll: catalog.Collection, tmp_path: Path) -> None:
    target = coll.save(tmp_path / "eight.parquet")
    geo = json.loads(pq.read_schema(target).metadata[b"geo"])
    assert geo["version"] == "1.1.0" and geo["primary_column"] == "geometry"
    col = geo["columns"]["geometry"]
    assert col["encoding"] == "WKB"
    assert col["geometry_types"] == ["Polygon"]
    assert col["crs"]["id"] == {"authority": "OGC", "code": "CRS84"}
    assert col["covering"]["bbox"]["xmin"] == ["bbox", "xmin"]
    geoms = shapely.from_wkb(coll.table.column("geometry").to_pylist())
    assert col["bbox"] == pytest.approx(list(shapely.total_bounds(geoms)))


def test_geopandas_reads_it(coll: catalog.Collection, tmp_path: Path) -> None:
    import geopandas as gpd

    target = coll.save(tmp_path / "eight.parquet")
    df = gpd.read_parquet(target)
    assert df.crs.equals("OGC:CRS84")
    assert list(df["id"]) == coll.ids
    assert df.geometry.iloc[5].equals(shapely.from_wkb(coll.table.column("geometry")[5].as_py()))
    assert df["label"].tolist() == coll.table.column("label").to_pylist()


def test_duckdb_sql(coll: catalog.Collection, tmp_path: Path) -> None:
    import duckdb

    target = coll.save(tmp_path / "eight.parquet")
    con = duckdb.connect()
    rows = con.execute(
        f"""SELECT id, "asset:red".header.dtype AS dtype, len("asset:red".header.levels) AS n
            FROM '{target}' WHERE "eo:cloud_cover" < 35 AND split = 'train'
            AND bbox.xmin > 13.0 AND bbox.xmax < 15.0 ORDER BY datetime"""
    ).fetchall()
    assert rows == [("s1", "uint16", 1), ("s3", "uint16", 1)]
    assert con.execute(f"SELECT count(*) FROM '{target}' GROUP BY crs ORDER BY 1").fetchall() == [
        (4,), (4,)]
    kv = dict(con.execute(f"SELECT decode(key), decode(value) FROM parquet_kv_metadata("
                          f"'{target}')").fetchall())
    assert json.loads(kv["geo"])["version"] == "1.1.0"
    href = con.execute(f"""SELECT "asset:nir".href FROM '{target}' WHERE id = 's6'""").fetchone()
    assert href is not None and href[0] == coll.header(6, "nir").href


def test_pyarrow_dataset_reads_it(coll: catalog.Collection, tmp_path: Path) -> None:
    import pyarrow.dataset as ds

    target = coll.save(tmp_path / "eight.parquet")
    t = ds.dataset(target).to_table(filter=ds.field("label") == 0, columns=["id"])
    assert t.column("id").to_pylist() == ["s0", "s3", "s6"]


def test_subset(coll: catalog.Collection) -> None:
    assert coll.subset(ids=["s2", "s5"]).ids == ["s2", "s5"]
    assert coll.subset(date_range="2024-03-01/2024-05-15").ids == ["s2", "s3", "s4"]
    assert coll.subset(date_range=("2024-07", None)).ids == ["s6", "s7"]
    assert coll.subset(date_range="2024-02").ids == ["s1"]
    assert coll.subset(cloud_cover_lt=25).ids == ["s0", "s1", "s2"]
    assert coll.subset(where=[["label", "==", 1]]).ids == ["s1", "s4", "s7"]
    assert coll.subset(where=[["split", "in", ["val"]], ["label", ">=", 1]]).ids == ["s2", "s4"]
    assert coll.subset(where=[["eo:cloud_cover", "is not null"]]).ids == coll.ids
    # Spatial: the first scene's footprint in lon/lat, and the same box in UTM.
    g0 = shapely.from_wkb(coll.table.column("geometry")[0].as_py())
    hits = coll.subset(bbox=g0.centroid.buffer(1e-4).bounds).ids
    assert "s0" in hits and not {"s1", "s2", "s3"} & set(hits)
    assert coll.subset(geometry=shapely.box(401000, 5098000, 402000, 5099000),
                       geometry_crs="EPSG:32633").ids[:1] == ["s0"]
    assert coll.subset(geometry=json.loads(shapely.to_geojson(g0.centroid))).ids[0] == "s0"
    combined = coll.subset(ids=["s0", "s4"], cloud_cover_lt=5)
    assert combined.ids == ["s0"] and combined.bands == coll.bands
    assert len(coll.subset(bbox=(-10, -10, -9, -9))) == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"where": [["nope", "==", 1]]}, "no column 'nope'"),
        ({"where": [["label", "~", 1]]}, "unknown op"),
        ({"where": [["label", "==", "x"]]}, "cannot compare"),
        ({"where": "label == 1"}, "where"),
        ({"where": [["label", "in", 3]]}, "list of values"),
        ({"date_range": "2024-13-01/2024-12-01"}, "date_range"),
        ({"date_range": "2024-05-01/2024-01-01"}, "after"),
        ({"cloud_cover_lt": "low"}, "cloud_cover_lt"),
        ({"bbox": (1, 2, 3)}, "bbox"),
        ({"bbox": (3, 2, 1, 4)}, "min <= max"),
        ({"geometry": b"not wkb"}, "geometry"),
        ({"geometry": (0, 0, 1, 1), "geometry_crs": "EPSG:999999"}, "geometry_crs"),
        ({"ids": "s1"}, "ids"),
    ],
)
def test_subset_rejects_bad_arguments(coll: catalog.Collection, kwargs: dict, match: str) -> None:
    with pytest.raises(catalog.InvalidArgumentError, match=match):
        coll.subset(**kwargs)


def test_band_and_header_errors(coll: catalog.Collection) -> None:
    with pytest.raises(catalog.InvalidArgumentError, match=r"unknown band 'blue'.*red, nir"):
        coll.header(0, "blue")
    with pytest.raises(catalog.InvalidArgumentError, match="out of range"):
        coll.header(99, "red")


def test_save_is_atomic(coll: catalog.Collection, tmp_path: Path,
                        monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "eight.parquet"
    coll.save(target)
    before = target.read_bytes()
    import catalog._collection as mod

    def crash(table: pa.Table, sink: object) -> None:
        sink.write(b"PAR1 half a file")  # type: ignore[attr-defined]
        raise KeyboardInterrupt("simulated crash mid-write")

    monkeypatch.setattr(mod, "_write", crash)
    with pytest.raises(KeyboardInterrupt):
        coll.subset(ids=["s0"]).save(target)
    assert target.read_bytes() == before  # the old Collection is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eight.parquet"]  # no temp left
    with pytest.raises(KeyboardInterrupt):
        coll.save(tmp_path / "new.parquet")
    assert not (tmp_path / "new.parquet").exists()
    with pytest.raises(catalog.CollectionError):
        catalog.load(tmp_path / "new.parquet")


def test_load_rejects_what_is_not_a_collection(coll: catalog.Collection, tmp_path: Path) -> None:
    with pytest.raises(catalog.CollectionError, match="not found"):
        catalog.load(tmp_path / "absent.parquet")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(catalog.CollectionError, match="Parquet"):
        catalog.load(tmp_path / "junk.parquet")
    pq.write_table(pa.table({"a": [1]}), tmp_path / "plain.parquet")
    with pytest.raises(catalog.CollectionError, match="not a cogflight Collection"):
        catalog.load(tmp_path / "plain.parquet")
    md = dict(coll.table.schema.metadata)
    meta = json.loads(md[b"cogflight"])
    meta["schema_version"] = 99
    md[b"cogflight"] = json.dumps(meta).encode()
    pq.write_table(coll.table.replace_schema_metadata(md), tmp_path / "future.parquet")
    with pytest.raises(catalog.SchemaVersionError, match="version 99"):
        catalog.load(tmp_path / "future.parquet")
    broken = coll.table.drop_columns(["bbox"])
    pq.write_table(broken, tmp_path / "nobbox.parquet")
    with pytest.raises(catalog.CollectionError, match="bbox"):
        catalog.load(tmp_path / "nobbox.parquet")


def test_save_and_load_on_s3(coll: catalog.Collection, moto_s3) -> None:
    endpoint, s3 = moto_s3
    s3.create_bucket(Bucket="collections")
    opts = s3_options(endpoint)
    coll.save("s3://collections/root/eight.parquet", store_options=opts)
    loaded = catalog.load("s3://collections/root/eight.parquet", store_options=opts)
    assert loaded.table.equals(coll.table)
    with pytest.raises(catalog.CollectionError, match="not found"):
        catalog.load("s3://collections/root/absent.parquet", store_options=opts)


def test_describe(coll: catalog.Collection) -> None:
    d = coll.describe()
    assert d["scenes"] == 8 and d["crs"] == {"EPSG:32633": 4, "EPSG:32634": 4}
    assert d["datetime"][0].startswith("2024-01-15") and d["datetime"][1].startswith("2024-08-15")
    assert "label" in d["columns"] and "asset:red" not in d["columns"]
    json.dumps(d)  # JSON-able
