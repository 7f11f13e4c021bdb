"""Spark over the wire contract: flight_client.spark on a local Spark (``local[2]``) against
a real server, checked against the Python client chip for chip."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import torch
from pyspark import cloudpickle
from pyspark.errors import PySparkException
from pyspark.sql import DataFrame, SparkSession

import flight_client as fc
from cogflight_core import InvalidArgumentError
from flight_client.spark import (
    ChipDataSource,
    EndpointPartition,
    chips_from_arrow,
    register,
    spark_arrow_schema,
    spark_schema,
    to_chip_batch,
    to_spark_batch,
)
from tests.support.flight_fixtures import lonlat_box, make_root

# 9 boxes over both scene footprints: up to 4 scenes each, 2 x 64 x 64 chips.
BOXES = [lonlat_box(10 + 80 * c, 10 + 80 * r, 60, 60) for r in range(3) for c in range(3)]
FIELDS: dict[str, Any] = {"geometries": BOXES, "chip_size": 64, "batch_rows": 5}
TOKEN = "s" * 32
REQUEST_ID = r" \(request [0-9a-f]{8}\)"

pytestmark = pytest.mark.filterwarnings(
    "ignore:PySpark does not yet fully support pandas:FutureWarning"
)


@pytest.fixture(scope="module")
def spark() -> Iterator[SparkSession]:
    """One local Spark for the module (2 cores, small heap, no UI, loopback), stopped after."""
    saved = {k: os.environ.get(k) for k in ("PYSPARK_PYTHON", "SPARK_LOCAL_IP")}
    os.environ["PYSPARK_PYTHON"] = sys.executable  # the workers run this venv's Python
    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
    # The mapInArrow functions below travel by value: workers need not import the tests.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    session = (
        SparkSession.builder.master("local[2]")
        .appName("cogflight-tests")
        .config("spark.driver.memory", "1g")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", "16")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    register(session)
    try:
        yield session
    finally:
        session.stop()
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def server(flight_root: Any, start_server: Any) -> Any:
    return start_server(flight_root.path)


def python_chips(location: str, token: str | None = None, **fields: Any) -> dict[str, Any]:
    """The single-client result: one unsharded stream, columns as numpy."""
    with fc.connect(location, token=token) as client:
        table = pa.Table.from_batches(list(client.chips("alpha", **fields)))
    return {
        "ordinal": table.column("ordinal").to_numpy(),
        "id": table.column("id").to_pylist(),
        "geometry_index": table.column("geometry_index").to_numpy(),
        "chip": np.concatenate([c.to_numpy_ndarray() for c in table.column("chip").chunks]),
        "valid": np.concatenate([c.to_numpy_ndarray() for c in table.column("valid").chunks]),
    }


def reader(spark: SparkSession, location: str, **options: Any) -> Any:
    """``spark.read.format("cogflight")`` with these options (JSON for non-strings)."""
    read = spark.read.format("cogflight").option("location", location)
    for key, value in options.items():
        read = read.option(key, value if isinstance(value, str | int) else json.dumps(value))
    return read


def spark_chips(df: DataFrame) -> dict[str, Any]:
    """Every row of the DataFrame, pixels decoded from their bytes, in ordinal order."""
    rows = sorted(df.collect(), key=lambda r: r["ordinal"])
    dtype, shape = np.dtype(rows[0]["dtype"]), tuple(rows[0]["shape"])
    return {
        "ordinal": np.array([r["ordinal"] for r in rows]),
        "id": [r["id"] for r in rows],
        "geometry_index": np.array([r["geometry_index"] for r in rows], np.int32),
        "dtype": {r["dtype"] for r in rows},
        "shape": {tuple(r["shape"]) for r in rows},
        "chip": np.stack([np.frombuffer(r["chip"], dtype).reshape(shape) for r in rows]),
        "valid": np.stack(
            [np.frombuffer(r["valid"], np.uint8).reshape(shape[:-3] + shape[-2:]) for r in rows]
        ),
    }


def assert_same_chips(got: dict[str, Any], want: dict[str, Any]) -> None:
    n = len(want["ordinal"])
    assert n >= 9
    assert got["ordinal"].tolist() == want["ordinal"].tolist() == list(range(n))
    assert got["id"] == want["id"]
    assert got["geometry_index"].tolist() == want["geometry_index"].tolist()
    for name in ("chip", "valid"):
        assert got[name].dtype == want[name].dtype
        assert got[name].shape == want[name].shape
        np.testing.assert_array_equal(got[name], want[name])


@pytest.mark.parametrize(
    ("fields", "shards", "as_query"),
    [
        ({"bands": ["red", "nir"]}, 4, False),
        ({"bands": ["nir"], "dtype": "float32", "mask": True}, 5, True),
        ({"time_series": True}, 4, False),
    ],
    ids=["uint16-fields", "float32-masked-query", "time-series"],
)
def test_sharded_read_matches_the_single_client(
    spark: SparkSession, server: Any, fields: dict[str, Any], shards: int, as_query: bool
) -> None:
    fields = {**FIELDS, **fields}
    if as_query:  # the whole wire document as one option
        doc = fc.connect(server.location).query("alpha", **fields)
        df = reader(spark, server.location, query=doc, shards=shards).load()
    else:  # the query's fields as options
        df = reader(spark, server.location, collection="alpha", shards=shards, **fields).load()
    assert df.rdd.getNumPartitions() == shards
    want = python_chips(server.location, **fields)
    got = spark_chips(df)
    assert_same_chips(got, want)
    assert got["dtype"] == {want["chip"].dtype.name}
    assert got["shape"] == {want["chip"].shape[1:]}
    meta = df.schema["chip"].metadata
    assert meta["shape"] == list(want["chip"].shape[1:]) and meta["dtype"] == got["dtype"].pop()
    assert json.loads(meta["bands"]) == fields.get("bands", ["red", "nir"])


def test_metadata_columns_in_spark_types(spark: SparkSession, server: Any) -> None:
    df = (
        spark.read.format("cogflight")
        .options(
            collection="alpha", geometries=json.dumps(BOXES[:2]), chip_size="64", bands="red,nir"
        )
        .load(server.location)
    )  # the location as load()'s path
    types = {f.name: f.dataType.simpleString() for f in df.schema.fields}
    assert types == {
        "id": "string",
        "datetime": "timestamp",
        "geometry_index": "int",
        "crs": "string",
        "transform": "array<double>",
        "bounds": "array<double>",
        "ordinal": "bigint",
        "chip": "binary",
        "shape": "array<int>",
        "dtype": "string",
        "valid": "binary",
    }
    with fc.connect(server.location) as client:
        want = pa.Table.from_batches(
            list(client.chips("alpha", geometries=BOXES[:2], chip_size=64, bands=["red", "nir"]))
        )
    rows = sorted(df.drop("chip", "valid").collect(), key=lambda r: r["ordinal"])
    assert [r["crs"] for r in rows] == want.column("crs").to_pylist()
    assert [r["transform"] for r in rows] == want.column("transform").to_pylist()
    assert [r["bounds"] for r in rows] == want.column("bounds").to_pylist()
    stamps = [
        r.datetime.replace(tzinfo=None)
        for r in df.selectExpr(
            "ordinal", "to_utc_timestamp(datetime, current_timezone()) AS datetime"
        )
        .orderBy("ordinal")
        .collect()
    ]
    assert stamps == [t.replace(tzinfo=None) for t in want.column("datetime").to_pylist()]


RECIPE = pa.schema(
    [
        ("ordinal", pa.int64()),
        ("shape", pa.list_(pa.int32())),
        ("dtype", pa.string()),
        ("pixels", pa.binary()),
        ("valid", pa.binary()),
        ("torch", pa.bool_()),
        ("bounds", pa.list_(pa.float64())),
    ]
)


def _recipe(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """The README's mapInArrow recipe: numpy and torch from each batch, one row per chip."""
    for batch in batches:
        arrays = chips_from_arrow(batch)
        tensors = fc.to_torch(to_chip_batch(batch))
        chip, valid = arrays["chip"], arrays["valid"]
        same = torch.equal(tensors["chip"], torch.from_numpy(chip.copy())) and torch.equal(
            tensors["valid"], torch.from_numpy(valid.copy())
        )
        yield pa.RecordBatch.from_pydict(
            {
                "ordinal": arrays["ordinal"],
                "shape": [list(chip.shape[1:])] * len(chip),
                "dtype": [chip.dtype.name] * len(chip),
                "pixels": [c.tobytes() for c in chip],
                "valid": [v.astype(np.uint8).tobytes() for v in valid],
                "torch": [bool(same)] * len(chip),
                "bounds": [list(b) for b in arrays["bounds"]],
            },
            schema=RECIPE,
        )


def test_map_in_arrow_recipe_gives_back_the_arrays(spark: SparkSession, server: Any) -> None:
    fields = {**FIELDS, "bands": ["red", "nir"], "time_series": True}
    df = reader(spark, server.location, collection="alpha", shards=4, **fields).load()
    schema = (
        "ordinal long, shape array<int>, dtype string, pixels binary, valid binary, "
        "torch boolean, bounds array<double>"
    )
    rows = sorted(df.mapInArrow(_recipe, schema).collect(), key=lambda r: r["ordinal"])
    want = python_chips(server.location, **fields)
    assert [r["ordinal"] for r in rows] == want["ordinal"].tolist()
    assert all(r["torch"] for r in rows), "to_torch(to_chip_batch(batch)) differs from numpy"
    assert {tuple(r["shape"]) for r in rows} == {want["chip"].shape[1:]}
    assert {r["dtype"] for r in rows} == {want["chip"].dtype.name}
    for row, chip, valid in zip(rows, want["chip"], want["valid"], strict=True):
        assert row["pixels"] == chip.tobytes()
        assert row["valid"] == valid.astype(np.uint8).tobytes()
    assert len(rows[0]["bounds"]) == 4


def test_arrow_round_trip_without_spark(server: Any) -> None:
    """to_spark_batch, then chips_from_arrow / to_chip_batch: the same arrays, no copies."""
    with fc.connect(server.location) as client:
        info = client.plan("alpha", shards=1, **FIELDS)
        batch = next(iter(client.read_endpoint(info.endpoints[0])))
    target = spark_arrow_schema(spark_schema(info.schema))
    converted = to_spark_batch(batch, target)
    assert converted.schema.equals(target)
    pixels = batch.column("chip").to_numpy_ndarray()
    arrays = chips_from_arrow(converted)
    np.testing.assert_array_equal(arrays["chip"], pixels)
    assert np.shares_memory(arrays["chip"], pixels), "the binary column should view the pixels"
    assert arrays["valid"].dtype == np.bool_
    np.testing.assert_array_equal(arrays["valid"], batch.column("valid").to_numpy_ndarray() == 1)
    back = to_chip_batch(converted)
    assert back.schema.field("chip").type == batch.schema.field("chip").type
    np.testing.assert_array_equal(back.column("chip").to_numpy_ndarray(), pixels)
    with pytest.raises(InvalidArgumentError, match="one query"):
        mixed = pa.concat_tables(
            [pa.Table.from_batches([converted]), pa.Table.from_batches([converted.slice(0, 1)])]
        ).combine_chunks()
        chips_from_arrow(
            mixed.set_column(
                mixed.schema.get_field_index("shape"),
                "shape",
                pa.array([[1, 2, 3]] * mixed.num_rows, pa.list_(pa.int32())),
            )
        )


def test_partitions_carry_tickets_and_locations(server: Any) -> None:
    source = ChipDataSource(
        {
            "location": server.location,
            "collection": "alpha",
            "shards": "6",
            "geometries": json.dumps(BOXES),
            "chip_size": "64",
        }
    )
    schema = source.schema()
    parts = source.reader(schema).partitions()
    with fc.connect(server.location) as client:
        info = client.plan("alpha", shards=6, geometries=BOXES, chip_size=64)
    assert len(parts) == len(info.endpoints) == 6
    assert all(isinstance(p, EndpointPartition) for p in parts)
    assert [p.ticket for p in parts] == [ep.ticket.ticket for ep in info.endpoints]
    assert [list(p.locations) for p in parts] == [
        [loc.uri.decode() for loc in ep.locations] for ep in info.endpoints
    ]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"collection": "alpha", "chipsize": "64"}, "chipsize: unknown option"),
        ({"geometries": "[]"}, "collection: missing"),
        ({"collection": "alpha", "query": "{nope"}, "query: not JSON"),
        ({"collection": "alpha", "shards": "four"}, "shards: expected a number"),
    ],
)
def test_bad_options_are_named(server: Any, options: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        ChipDataSource({"location": server.location, **options}).schema()


def test_server_errors_surface_as_spark_errors(spark: SparkSession, server: Any) -> None:
    with fc.connect(server.location) as client, pytest.raises(InvalidArgumentError) as python:
        client.plan("alpha", **{**FIELDS, "bands": ["blue"]})
    with pytest.raises(PySparkException) as caught:
        reader(spark, server.location, collection="alpha", **{**FIELDS, "bands": ["blue"]}).load()
    message = re.sub(REQUEST_ID, "", str(python.value))
    assert message.startswith("bands: 'blue' not in Collection 'alpha'; it has red, nir")
    assert message in re.sub(REQUEST_ID, "", str(caught.value))
    with pytest.raises(PySparkException, match="no Collection 'nope'"):
        reader(spark, server.location, collection="nope", **FIELDS).load()


def test_read_errors_surface_from_the_tasks(
    spark: SparkSession, start_server: Any, tmp_path: Path
) -> None:
    """A file gone after planning: the task fails with the server's message naming it."""
    make_root(tmp_path / "root", tmp_path / "data", scenes=2)
    srv = start_server(tmp_path / "root")
    df = reader(spark, srv.location, collection="alpha", shards=2, **FIELDS).load()
    (tmp_path / "data" / "s1_nir.tif").unlink()
    with pytest.raises(PySparkException) as caught:
        df.collect()
    assert "s1_nir.tif" in str(caught.value)


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("spark-tokens") / "tokens"
    path.write_text(f"# the Spark test\n{TOKEN}\n")
    return path


def test_bearer_token(
    spark: SparkSession, flight_root: Any, start_server: Any, tokens: Path
) -> None:
    srv = start_server(flight_root.path, token_file=str(tokens))
    fields = {**FIELDS, "bands": ["red"]}
    df = reader(spark, srv.location, collection="alpha", shards=4, token=TOKEN, **fields).load()
    assert_same_chips(spark_chips(df), python_chips(srv.location, token=TOKEN, **fields))
    with pytest.raises(PySparkException, match="AuthenticationError: missing credentials"):
        reader(spark, srv.location, collection="alpha", **fields).load()
    with pytest.raises(PySparkException, match="AuthenticationError: invalid token"):
        reader(spark, srv.location, collection="alpha", token="x" * 32, **fields).load()


def _dead_location() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"grpc://127.0.0.1:{s.getsockname()[1]}"


def test_partitions_fail_over_to_an_endpoints_other_locations(
    spark: SparkSession, server: Any, flight_root: Any, start_server: Any
) -> None:
    # A planner advertising a dead replica and the live server: the endpoints placed on the
    # dead one first are read at the live one by their Spark tasks.
    dead = _dead_location()
    planner = start_server(flight_root.path, advertise=[dead, server.location])
    fields = {**FIELDS, "bands": ["red"]}
    with fc.connect(planner.location) as client:
        info = client.plan("alpha", shards=4, **fields)
    assert sum(ep.locations[0].uri.decode() == dead for ep in info.endpoints) == 2
    df = reader(spark, planner.location, collection="alpha", shards=4, retry_wait_s=0.05,
                **fields).load()
    assert_same_chips(spark_chips(df), python_chips(server.location, **fields))


def test_tls(spark: SparkSession, flight_root: Any, start_server: Any, tmp_path: Path) -> None:
    from tests.support.flight_fixtures import tls_material

    tls = tls_material(tmp_path)
    srv = start_server(
        flight_root.path, tls_cert=str(tls["server_cert"]), tls_key=str(tls["server_key"])
    )
    assert srv.location.startswith("grpc+tls://")
    fields = {**FIELDS, "bands": ["red"]}
    df = reader(spark, srv.location, collection="alpha", shards=4,
                tls_root_certs=str(tls["ca_cert"]), **fields).load()
    ca = tls["ca_cert"].read_bytes()
    with fc.connect(srv.location, tls_root_certs=ca) as client:
        want = pa.Table.from_batches(list(client.chips("alpha", **fields)))
    got = spark_chips(df)
    assert got["ordinal"].tolist() == want.column("ordinal").to_pylist()
    np.testing.assert_array_equal(
        got["chip"], np.concatenate([c.to_numpy_ndarray() for c in want.column("chip").chunks]))
