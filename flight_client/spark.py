"""Spark over cogflight: a PySpark Python Data Source, one partition per FlightInfo endpoint.

``spark.read.format("cogflight")`` (after :func:`register`) plans the query once, on the
driver, when the DataFrame is created (``GetFlightInfo``: a bad query, band or token fails
there, with the server's one-line message inside Spark's error). The plan travels in the
pickled data source; each endpoint becomes one :class:`EndpointPartition` carrying its
ticket and its locations. A Spark task connects from its Python worker with
:func:`flight_client.connect` (address and token travel with the task, never a channel)
and reads with :meth:`Client.read_endpoint`, so a stream broken at one location resumes at
the endpoint's others, every chip once. Only the public wire contract is used, so it works
against any server or replica.

Spark carries no Arrow extension types, so a row holds its pixels as ``chip``: binary, the
chip's raw little-endian bytes in row-major order, with ``shape`` (``array<int>``, ``[C, H,
W]`` or ``[T, C, H, W]``) and ``dtype`` (a numpy name: ``uint16``, ``float32``...) beside
it; ``valid`` likewise (uint8 bytes, shaped as ``shape`` without its band axis). Metadata
columns keep their names in Spark types: unsigned integers widen to the next signed type,
``float16`` becomes ``float``, fixed-size lists become arrays. :func:`chips_from_arrow` (numpy)
and :func:`to_chip_batch` (the wire form, for :func:`flight_client.to_torch`) turn the Arrow
batches of ``mapInArrow`` back into arrays; see the README's "Spark" section for the recipe.

Read batches go to Spark as Arrow RecordBatches (Spark 4's Python data sources take them
from ``read``): the pixel bytes are not copied on the way (the binary column views the
received buffer). Importing this module imports PySpark; ``flight_client`` itself never does.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
from pyarrow import flight

from cogflight_core import (
    CogflightError,
    InvalidArgumentError,
    MissingDependencyError,
    chip_fields,
)

from ._client import connect
from ._query import split_query
from ._retry import DEFAULT_RETRY
from ._spark_arrow import (
    DTYPE,
    SHAPE,
    TENSORS,
    chips_from_arrow,
    fit_binary,
    numpy_dtype,
    spark_arrow_type,
    to_chip_batch,
    to_spark_batch,
)

try:
    from pyspark.sql import SparkSession
    from pyspark.sql.datasource import DataSource, DataSourceReader, InputPartition
    from pyspark.sql.pandas.types import from_arrow_type, to_arrow_schema
    from pyspark.sql.types import (
        ArrayType,
        BinaryType,
        IntegerType,
        StringType,
        StructField,
        StructType,
    )
except ImportError as exc:  # pragma: no cover - the dev environment installs PySpark
    raise MissingDependencyError(
        "flight_client.spark needs PySpark 4 (Python data sources): pip install 'cogflight[spark]'"
    ) from exc

__all__ = [
    "ChipDataSource",
    "ChipReader",
    "EndpointPartition",
    "chips_from_arrow",
    "register",
    "spark_arrow_schema",
    "spark_schema",
    "to_chip_batch",
    "to_spark_batch",
]

logger = logging.getLogger("cogflight.client")

_TLS = ("tls_root_certs", "cert_chain", "private_key")
_OPTIONS: tuple[str, ...] = ("location", "path", "collection", "query", "shards", "token")
_OPTIONS += ("retries", "retry_wait_s", *_TLS)


# -- Arrow: the chip stream's schema -> what Spark carries -------------------------------------
def _tensor_type(schema: pa.Schema, name: str) -> pa.FixedShapeTensorType:
    t = schema.field(name).type
    if not isinstance(t, pa.FixedShapeTensorType):
        raise CogflightError(f"{name}: expected arrow.fixed_shape_tensor, got {t}")
    return t


def _chip_metadata(f: pa.Field) -> dict[str, Any]:
    """The chip field's metadata for Spark, plus its shape, dtype and dim_names.

    The stream's keys stay JSON text, as on the wire: Spark's metadata holds no nulls,
    which ``scale`` and ``offset`` have.
    """
    t = f.type
    out: dict[str, Any] = {
        k.decode(): v.decode(errors="replace") for k, v in (f.metadata or {}).items()
    }
    out.update(shape=list(t.shape), dtype=numpy_dtype(t.value_type), dim_names=list(t.dim_names))
    return out


def spark_schema(schema: pa.Schema) -> StructType:
    """The Spark schema of a chip stream's schema (``GetFlightInfo``'s ``schema``).

    Columns keep the stream's order; ``chip`` and ``valid`` become binary, with ``shape``
    and ``dtype`` after ``chip``. ``chip``'s Spark metadata holds the stream's field metadata
    (``bands``, ``nodata``, ``scale``, ``offset``: JSON text, as on the wire) and its
    ``shape``, ``dtype`` and ``dim_names``.
    """
    clash = sorted({SHAPE, DTYPE} & set(schema.names))
    if clash:
        raise InvalidArgumentError(
            f"columns: {clash[0]!r} clashes with the Spark column of that name; "
            "pass that Collection column through under another name"
        )
    fields: list[StructField] = []
    for f in schema:
        if f.name in TENSORS:
            _tensor_type(schema, f.name)
            meta = _chip_metadata(f) if f.name == "chip" else {}
            fields.append(StructField(f.name, BinaryType(), nullable=False, metadata=meta))
            if f.name == "chip":
                fields.append(StructField(SHAPE, ArrayType(IntegerType(), False), False))
                fields.append(StructField(DTYPE, StringType(), nullable=False))
            continue
        fields.append(StructField(f.name, from_arrow_type(spark_arrow_type(f.type)), True))
    return StructType(fields)


def spark_arrow_schema(schema: StructType) -> pa.Schema:
    """The Arrow schema Spark expects from a data source's read for ``schema``."""
    try:
        return to_arrow_schema(schema, timezone="UTC")
    except TypeError:  # pragma: no cover - PySpark 4.0's signature
        return to_arrow_schema(schema)


# -- options -> what to plan and how to connect ------------------------------------------------
@dataclass(frozen=True)
class _Address:
    """How a task reaches the server: what :func:`connect` takes (pickled to the workers)."""

    location: str
    token: str | None = field(default=None, repr=False)
    tls: dict[str, bytes] = field(default_factory=dict, repr=False)
    retries: int = DEFAULT_RETRY.retries
    retry_wait_s: float = DEFAULT_RETRY.wait_s

    def connect(self) -> Any:
        """A client of this address (a new connection, in the calling process)."""
        return connect(
            self.location,
            token=self.token,
            retries=self.retries,
            retry_wait_s=self.retry_wait_s,
            tls_root_certs=self.tls.get("tls_root_certs"),
            cert_chain=self.tls.get("cert_chain"),
            private_key=self.tls.get("private_key"),
        )


def _option_value(name: str, text: str) -> Any:
    """An option's string as the field's value: JSON when it parses, else the text itself.

    A list of strings may be comma-separated (``bands=red,nir``).
    """
    try:
        return json.loads(text)
    except ValueError:
        spec = chip_fields().get(name)
        if spec is not None and spec.json_type == "[string]":
            return [part.strip() for part in text.split(",") if part.strip()]
        return text


def _pem(name: str, text: str) -> bytes:
    """PEM text, or the path of a PEM file (read on the driver: executors get the bytes)."""
    if text.lstrip().startswith("-----BEGIN"):
        return text.encode()
    try:
        return Path(text).read_bytes()
    except OSError as exc:
        raise InvalidArgumentError(
            f"{name}: not PEM text and no readable file at {text!r} ({exc.strerror or exc})"
        ) from exc


def _number(options: Mapping[str, str], name: str, kind: type, default: Any) -> Any:
    if name not in options or options[name] in ("", None):
        return default
    try:
        return kind(options[name])
    except ValueError as exc:
        raise InvalidArgumentError(f"{name}: expected a number, got {options[name]!r}") from exc


def _request(options: Mapping[str, str]) -> tuple[_Address, str, dict[str, Any], int | None]:
    """(address, collection, query fields, shards) from the data source's options."""
    fields = chip_fields()
    unknown = sorted(set(options) - set(_OPTIONS) - set(fields))
    if unknown:
        raise InvalidArgumentError(
            f"{unknown[0]}: unknown option of the cogflight data source; use "
            f"{', '.join(_OPTIONS)} or the query's fields ({', '.join(fields)})"
        )
    location = options.get("location") or options.get("path")
    if not location:
        raise InvalidArgumentError(
            "location: missing; .option('location', 'grpc://host:8815') or .load('grpc://...')"
        )
    tls = {k: _pem(k, options[k]) for k in _TLS if options.get(k)}
    retries = _number(options, "retries", int, DEFAULT_RETRY.retries)
    wait = _number(options, "retry_wait_s", float, DEFAULT_RETRY.wait_s)
    address = _Address(str(location), options.get("token") or None, tls, retries, wait)
    shards = _number(options, "shards", int, None)
    given = {k: _option_value(k, options[k]) for k in fields if k in options}
    collection = options.get("collection")
    if options.get("query"):
        try:
            doc = json.loads(options["query"])
        except ValueError as exc:
            raise InvalidArgumentError(f"query: not JSON ({exc})") from exc
        if not isinstance(doc, dict):
            raise InvalidArgumentError("query: expected a JSON object (docs/wire-contract.md)")
        named, given = split_query(doc, given, reader="the cogflight data source")
        if named is not None and collection is not None and named != collection:
            raise InvalidArgumentError(
                f"collection: option {collection!r} and query {named!r} differ; give one"
            )
        collection = collection or named
    if not isinstance(collection, str) or not collection:
        raise InvalidArgumentError("collection: missing; .option('collection', NAME)")
    if shards is not None and "shard" in given:
        raise InvalidArgumentError("give the shards option (endpoints to plan) or shard, not both")
    return address, collection, given, shards


# -- the data source -----------------------------------------------------------------------------
class EndpointPartition(InputPartition):
    """One FlightInfo endpoint: its ticket and its locations, in the order to try them."""

    def __init__(self, index: int, ticket: bytes, locations: tuple[str, ...]) -> None:
        super().__init__(index)
        self.ticket = ticket
        self.locations = locations

    def endpoint(self) -> flight.FlightEndpoint:
        """The endpoint, for :meth:`Client.read_endpoint`."""
        return flight.FlightEndpoint(self.ticket, list(self.locations))

    def __repr__(self) -> str:
        return f"EndpointPartition({self.value}, locations={list(self.locations)})"


@dataclass(frozen=True)
class _Plan:
    """A planned query in plain values (pickled with the data source to the planner)."""

    schema: bytes  # the chip stream's Arrow schema, serialized
    partitions: tuple[tuple[bytes, tuple[str, ...]], ...]
    chips: int

    @classmethod
    def of(cls, info: flight.FlightInfo) -> _Plan:
        parts = tuple(
            (ep.ticket.ticket, tuple(loc.uri.decode() for loc in ep.locations))
            for ep in info.endpoints
        )
        return cls(info.schema.serialize().to_pybytes(), parts, max(int(info.total_records), 0))

    def arrow_schema(self) -> pa.Schema:
        return pa.ipc.read_schema(pa.py_buffer(self.schema))


class ChipDataSource(DataSource):
    """``spark.read.format("cogflight")``: a chip query, one partition per endpoint.

    Options (strings, as Spark passes them):

    - ``location`` (or ``load(location)``): the server, ``grpc://host:8815``.
    - ``collection`` and the query's fields (``bands``, ``chip_size``, ``geometries``,
      ``filter``, ``dtype``...; JSON values, or plain text: ``bands=red,nir``), or
      ``query``: a whole v1 query document (JSON; docs/wire-contract.md).
    - ``shards``: endpoints (partitions) to ask for; default: the server's.
    - ``token``: bearer token; ``tls_root_certs``, ``cert_chain``, ``private_key``: PEM
      text or files (read on the driver); ``retries``, ``retry_wait_s``: see
      :func:`flight_client.connect`.

    The plan is made once, when ``schema()`` runs on the driver (at ``load()``), and kept
    in this object, which Spark pickles to the reader's planner: every action on the
    DataFrame reads the same endpoints (the same query always makes the same shards);
    ``load()`` again plans again.
    """

    def __init__(self, options: dict[str, str]) -> None:
        super().__init__(options)
        self._plan: _Plan | None = None

    @classmethod
    def name(cls) -> str:
        """The format name: ``spark.read.format("cogflight")``."""
        return "cogflight"

    def plan(self) -> _Plan:
        """The query's plan (``GetFlightInfo``), made on first use."""
        if self._plan is None:
            address, collection, fields, shards = _request(self.options)
            with address.connect() as client:
                info = client.plan(collection, shards=shards, **fields)
            self._plan = _Plan.of(info)
            logger.info(
                "spark: %s planned as %d partitions, %d chips",
                collection,
                len(self._plan.partitions),
                self._plan.chips,
            )
        return self._plan

    def schema(self) -> StructType:
        """The Spark schema of the query's chip stream (see :func:`spark_schema`)."""
        return spark_schema(self.plan().arrow_schema())

    def reader(self, schema: StructType) -> ChipReader:
        """The reader of the planned endpoints, producing ``schema``'s Arrow form."""
        address = _request(self.options)[0]
        return ChipReader(address, self.plan(), schema)


class ChipReader(DataSourceReader):
    """Partitions from the plan; ``read`` streams one endpoint as Spark Arrow batches."""

    def __init__(self, address: _Address, plan: _Plan, schema: StructType) -> None:
        self._address = address
        self._plan = plan
        self._arrow = spark_arrow_schema(schema)

    def partitions(self) -> list[InputPartition]:
        """One partition per endpoint, in plan order (its chips' ordinal order)."""
        return [
            EndpointPartition(k, ticket, locations)
            for k, (ticket, locations) in enumerate(self._plan.partitions)
        ]

    def read(self, partition: InputPartition) -> Iterator[pa.RecordBatch]:
        """Every chip of one endpoint, batch by batch (resumed at its other locations)."""
        if not isinstance(partition, EndpointPartition):  # a plan without endpoints
            return
        with self._address.connect() as client:
            for batch in client.read_endpoint(partition.endpoint()):
                for part in fit_binary(batch):
                    yield to_spark_batch(part, self._arrow)


def register(spark: SparkSession) -> None:
    """Register the data source: ``spark.read.format("cogflight")`` works in ``spark``."""
    spark.dataSource.register(ChipDataSource)
