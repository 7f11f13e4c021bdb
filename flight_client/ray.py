"""Ray Data over cogflight: a chip query as a ``ray.data.Dataset``, one read task per shard.

:func:`read_chips` plans the query once, on the driver (``GetFlightInfo``: bad queries
fail there, with the server's message), and builds a :class:`ChipDatasource` holding
the plan's endpoints. Each endpoint is one Ray read task: it opens its own connection
from the :class:`Client`'s address (a Client pickles as its address, token, TLS and
retry settings, never a channel) and reads its endpoint with
:meth:`Client.read_endpoint`, so a stream broken at one location resumes at the
endpoint's others, every chip once. Only the public wire contract is used, so it works
against any server or replica.

Blocks are pyarrow tables: the ``arrow.fixed_shape_tensor`` columns (``chip``,
``valid``) become Ray's tensor extension type (:func:`ray.data.extensions.
create_arrow_fixed_shape_tensor_type`, ``ArrowTensorTypeV2`` by default) with their
dtype and shape; the pixel buffer is shared, not copied (only a list-offsets buffer is
added). Every other column is kept as the server sent it.

Importing this module imports Ray; ``flight_client`` itself never does.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Iterator, Mapping
from typing import Any, Unpack

import numpy as np
import pyarrow as pa
from pyarrow import flight

from cogflight_core import (
    ChipQuery,
    CogflightError,
    InvalidArgumentError,
    MissingDependencyError,
)

from ._client import Client, connect
from ._query import split_query
from ._retry import DEFAULT_RETRY
from ._torch import to_torch

try:
    import ray.data
    from ray.data.block import BlockMetadata
    from ray.data.collate_fn import ArrowBatchCollateFn
    from ray.data.datasource import Datasource, ReadTask
    from ray.data.extensions import create_arrow_fixed_shape_tensor_type
except ImportError as exc:  # pragma: no cover - the dev environment installs Ray
    raise MissingDependencyError(
        "flight_client.ray needs Ray Data: pip install 'cogflight[ray]'"
    ) from exc

__all__ = ["ChipCollateFn", "ChipDatasource", "read_chips", "to_ray_block", "to_ray_schema"]


# -- Arrow: fixed_shape_tensor -> Ray's tensor type ---------------------------------------------
def _ray_tensor_type(t: pa.FixedShapeTensorType) -> pa.DataType:
    """Ray's tensor type for ``t`` (the format the current DataContext asks for)."""
    return create_arrow_fixed_shape_tensor_type(tuple(t.shape), t.value_type)


def _ray_tensor(column: pa.Array) -> pa.Array:
    """A ``fixed_shape_tensor`` array as Ray's tensor array, sharing the pixel buffer."""
    t = column.type
    target = _ray_tensor_type(t)
    if isinstance(target, pa.FixedShapeTensorType):  # Ray is set to Arrow's own tensors
        return column
    storage = column.storage
    if storage.null_count:
        raise CogflightError(f"tensor column of {t}: null rows; the wire contract has none")
    size = int(np.prod(t.shape))
    n = len(storage)
    values = storage.values.slice(storage.offset * size, n * size)  # a view, no copy
    offsets = np.arange(0, (n + 1) * size, size, dtype=target.OFFSET_DTYPE.to_pandas_dtype())
    list_storage = pa.Array.from_buffers(
        target.storage_type, n, [None, pa.py_buffer(offsets)], children=[values]
    )
    return target.wrap_array(list_storage)


def _ray_field(f: pa.Field) -> pa.Field:
    if isinstance(f.type, pa.FixedShapeTensorType):
        target = _ray_tensor_type(f.type)
        if not isinstance(target, pa.FixedShapeTensorType):
            return pa.field(f.name, target, f.nullable, f.metadata)
    return f


def to_ray_schema(schema: pa.Schema) -> pa.Schema:
    """A chip stream's schema with its tensor columns in Ray's tensor type."""
    return pa.schema([_ray_field(f) for f in schema], metadata=schema.metadata)


def to_ray_block(batch: pa.RecordBatch) -> pa.Table:
    """A chip batch as a Ray block: tensor columns converted (zero-copy), the rest kept."""
    fields, columns = [], []
    for f, column in zip(batch.schema, batch.columns, strict=True):
        tensor = isinstance(f.type, pa.FixedShapeTensorType)
        fields.append(_ray_field(f))
        columns.append(_ray_tensor(column) if tensor else column)
    return pa.Table.from_arrays(columns, schema=pa.schema(fields, metadata=batch.schema.metadata))


def _native_tensor(column: pa.Array) -> pa.Array:
    """A Ray tensor array as ``arrow.fixed_shape_tensor`` again, sharing the pixel buffer."""
    t = column.type
    if isinstance(t, pa.FixedShapeTensorType):
        return column
    shape = tuple(t.shape)
    size = int(np.prod(shape))
    storage = column.storage
    start = int(storage.offsets[0].as_py()) if len(storage) else 0
    values = storage.values.slice(start, len(storage) * size)
    fixed = pa.FixedSizeListArray.from_arrays(values, size)
    return pa.ExtensionArray.from_storage(pa.fixed_shape_tensor(t.value_type, shape), fixed)


def _is_ray_tensor(t: pa.DataType) -> bool:
    return isinstance(t, pa.ExtensionType) and t.extension_name.startswith("ray.data.arrow_tensor")


class ChipCollateFn(ArrowBatchCollateFn):
    """``iter_torch_batches(collate_fn=ChipCollateFn())``: every column, as :func:`to_torch`.

    Ray's default collate turns every column into a tensor and so refuses the string and
    timestamp columns (``id``, ``crs``, ``datetime``): select the numeric ones first, or
    use this, which gives what :func:`flight_client.to_torch` gives for a batch (``chip``
    zero-copy, ``valid`` as bool, metadata tensors, strings as lists).

    Args:
        unsigned: ``"keep"``, ``"widen"`` or ``"float32"`` (see :func:`to_torch`).
        device: move ``chip`` and ``valid`` there (Ray moves only all-tensor batches).
    """

    def __init__(self, *, unsigned: str = "keep", device: Any = None) -> None:
        super().__init__()
        self.unsigned = unsigned
        self.device = device

    def __call__(self, batch: pa.Table) -> Any:
        """A Ray batch (pyarrow) as a dict of tensors and lists."""
        columns, fields = [], []
        for f, column in zip(batch.schema, batch.columns, strict=True):
            chunk = column.combine_chunks()  # one chunk: no copy
            if _is_ray_tensor(f.type):
                chunk = _native_tensor(chunk)
            fields.append(pa.field(f.name, chunk.type, f.nullable, f.metadata))
            columns.append(chunk)
        rb = pa.RecordBatch.from_arrays(columns, schema=pa.schema(fields))
        return to_torch(rb, unsigned=self.unsigned, device=self.device)


# -- the datasource ---------------------------------------------------------------------------
def _read_endpoint(client: Client, endpoint: bytes) -> Iterator[pa.Table]:
    """One read task: every chip of one endpoint, batch by batch, as Ray blocks."""
    # A Client copies (and pickles) as its address: this task's own connection, closed
    # at its end, whatever process it runs in.
    with copy.copy(client) as own:
        for batch in own.read_endpoint(flight.FlightEndpoint.deserialize(endpoint)):
            yield to_ray_block(batch)


def _valid_bytes(schema: pa.Schema) -> int:
    """Bytes of one chip's ``valid`` mask (the part of a row ``total_bytes`` leaves out)."""
    if "valid" not in schema.names:
        return 0
    t = schema.field("valid").type
    return int(np.prod(t.shape)) * int(t.value_type.bit_width // 8)


def _fields(query: str | Mapping[str, Any], fields: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(collection, fields) from a Collection name and fields, or a wire query document."""
    if isinstance(query, str) and query.lstrip().startswith("{"):
        try:
            query = json.loads(query)
        except ValueError as exc:
            raise InvalidArgumentError(f"query: not JSON ({exc})") from exc
    if isinstance(query, str):
        return query, fields
    if not isinstance(query, Mapping):
        raise InvalidArgumentError(
            f"query: expected a Collection name or a query document, got {type(query).__name__}"
        )
    collection, merged = split_query(query, fields, reader="read_chips")
    if not isinstance(collection, str):
        raise InvalidArgumentError("collection: missing from the query document")
    return collection, merged


class ChipDatasource(Datasource):
    """A chip query planned through ``client``: one Ray read task per FlightInfo endpoint.

    :func:`read_chips` builds one; build it yourself to pass Ray's other read options to
    ``ray.data.read_datasource`` (give ``override_num_blocks=source.num_endpoints``, or
    Ray splits each endpoint's output to reach its default block count). ``query`` and
    ``fields`` as for :func:`read_chips`. Planned here, on the driver: the read tasks read
    one plan's shards. Each task's row count and size are estimated from the plan
    (``total_records`` chips, ``total_bytes`` pixel bytes plus ``valid``, split evenly:
    shards hold about N/n chips each).
    """

    def __init__(
        self,
        client: Client,
        query: str | Mapping[str, Any],
        *,
        shards: int | None = None,
        **fields: Unpack[ChipQuery],
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        collection, all_fields = _fields(query, dict(fields))
        info = client.plan(collection, shards=shards, **all_fields)
        self._client = client  # pickled to the read tasks as its address (and token)
        self._endpoints = [ep.serialize() for ep in info.endpoints]
        self.schema = to_ray_schema(info.schema)
        """The blocks' schema: the chip stream's, tensors in Ray's type."""
        self.total_records = max(int(info.total_records), 0)
        """Chips of the whole query."""
        self._bytes = max(int(info.total_bytes), 0) + self.total_records * _valid_bytes(info.schema)

    @property
    def num_endpoints(self) -> int:
        """Read tasks: the plan's endpoints."""
        return len(self._endpoints)

    def get_name(self) -> str:
        """The read operator's name in Ray's progress and stats."""
        return "Cogflight"

    def estimate_inmemory_data_size(self) -> int | None:
        """Pixel and validity bytes of the whole query, from the plan."""
        return self._bytes

    def get_read_tasks(
        self,
        parallelism: int,
        per_task_row_limit: int | None = None,
        data_context: Any = None,
    ) -> list[ReadTask]:
        """One task per endpoint, whatever ``parallelism`` asks (the plan fixed the shards)."""
        n, rows_all = len(self._endpoints), self.total_records
        tasks = []
        for k, endpoint in enumerate(self._endpoints):
            rows = rows_all // n + (1 if k < rows_all % n else 0)
            meta = BlockMetadata(
                num_rows=rows,
                size_bytes=self._bytes * rows // max(rows_all, 1),
                input_files=None,
                exec_stats=None,
            )
            read = functools.partial(_read_endpoint, self._client, endpoint)
            tasks.append(
                ReadTask(read, meta, schema=self.schema, per_task_row_limit=per_task_row_limit)
            )
        return tasks


# -- the entry point --------------------------------------------------------------------------
def read_chips(
    location: str | Client,
    query: str | Mapping[str, Any],
    *,
    shards: int | None = None,
    token: str | None = None,
    tls_root_certs: bytes | None = None,
    cert_chain: bytes | None = None,
    private_key: bytes | None = None,
    retries: int = DEFAULT_RETRY.retries,
    retry_wait_s: float = DEFAULT_RETRY.wait_s,
    override_num_blocks: int | None = None,
    num_cpus: float | None = None,
    concurrency: int | None = None,
    **fields: Unpack[ChipQuery],
) -> ray.data.Dataset:
    """Chips of a query as a Ray Dataset: one read task (and block) per endpoint.

    ``read_chips(loc, "s2", geometries=boxes, bands=["red"], chip_size=256, shards=8)``
    or ``read_chips(loc, {"v": 1, "collection": "s2", ...}, shards=8)``.

    Args:
        location: the server, e.g. ``grpc://host:8815`` (``grpc+tls://`` with TLS), or a
            :class:`Client` (then it carries the token, TLS and retry settings).
        query: a Collection name (then the query's fields are keyword arguments, as for
            :meth:`Client.chips`), or a v1 query document (a dict or its JSON text;
            docs/wire-contract.md), which keyword fields may complete.
        shards: endpoints to ask the server for (the read tasks); default: the server's
            (its ``--shards``, else one per worker).
        token: bearer token; every read task sends it (it travels with the tasks).
        tls_root_certs, cert_chain, private_key: TLS trust and client certificate (PEM).
        retries, retry_wait_s: how a read task retries a broken stream (see :func:`connect`).
        override_num_blocks: output blocks; default: one per endpoint. More makes Ray split
            each endpoint's output.
        num_cpus: CPUs Ray reserves per read task (default 1). A task mostly waits for
            the server (which does the decoding): a fraction lets more endpoints stream at
            once on a small cluster.
        concurrency: the most read tasks at once (default: as resources allow).
        **fields: the query's fields (:class:`cogflight_core.ChipQuery`).

    Returns:
        A lazy Dataset of the chip stream's columns; ``chip`` and ``valid`` in Ray's
        tensor type (``iter_torch_batches`` gives ``[N, C, H, W]`` tensors).

    Raises:
        InvalidArgumentError, CollectionNotFoundError, AuthenticationError, ...: the
            server refused the plan (raised here, with its one-line message). A read
            task's error reaches the consumer as Ray's ``RayTaskError`` of the same class
            (``except UnavailableError`` catches it; its ``cause`` is ours).
    """
    if isinstance(location, Client):
        if token is not None or tls_root_certs or cert_chain or private_key:
            raise InvalidArgumentError("token and TLS options come with the Client given")
        source = ChipDatasource(location, query, shards=shards, **fields)
    else:
        with connect(
            location,
            token=token,
            tls_root_certs=tls_root_certs,
            cert_chain=cert_chain,
            private_key=private_key,
            retries=retries,
            retry_wait_s=retry_wait_s,
        ) as client:  # closed after planning; the read tasks open their own
            source = ChipDatasource(client, query, shards=shards, **fields)
    dataset: ray.data.Dataset = ray.data.read_datasource(
        source,
        override_num_blocks=override_num_blocks or max(source.num_endpoints, 1),
        num_cpus=num_cpus,
        concurrency=concurrency,
    )
    return dataset
