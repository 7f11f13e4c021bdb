"""Chip batches in the Arrow form Spark carries, and back (pure pyarrow and numpy).

Spark has no Arrow extension types and no unsigned integers, so :func:`to_spark_batch`
turns each ``arrow.fixed_shape_tensor`` column into binary rows (the pixels' raw
little-endian bytes, row-major) that view the received buffer, adds ``shape`` and
``dtype``, and casts metadata columns to types Spark holds (:func:`spark_arrow_type`).
:func:`chips_from_arrow` and :func:`to_chip_batch` undo it for the Arrow batches a
``mapInArrow`` function receives, viewing Spark's buffer where it is aligned. No PySpark
import here: the recipe's functions run in any Python worker. Pure functions.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cogflight_core import CogflightError, InvalidArgumentError

__all__ = [
    "DTYPE",
    "SHAPE",
    "TENSORS",
    "chips_from_arrow",
    "fit_binary",
    "numpy_dtype",
    "spark_arrow_type",
    "to_chip_batch",
    "to_spark_batch",
]

TENSORS = ("chip", "valid")
SHAPE, DTYPE = "shape", "dtype"
# A Spark binary column has 32-bit offsets: a batch's pixels are sent in slices below this.
_MAX_BINARY = 2**31 - 1


def spark_arrow_type(t: pa.DataType) -> pa.DataType:
    """The Arrow type Spark can hold for a metadata column of type ``t``."""
    if isinstance(t, pa.ExtensionType):
        return spark_arrow_type(t.storage_type)
    if pa.types.is_dictionary(t):
        return spark_arrow_type(t.value_type)
    if pa.types.is_unsigned_integer(t):  # Spark has no unsigned types: widen, exactly
        widened = {8: pa.int16(), 16: pa.int32(), 32: pa.int64()}
        return widened.get(t.bit_width, pa.decimal128(20, 0))
    if pa.types.is_float16(t):
        return pa.float32()
    if pa.types.is_large_string(t):
        return pa.string()
    if pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return pa.binary()
    if pa.types.is_timestamp(t):
        return pa.timestamp("us", tz="UTC" if t.tz is not None else None)
    if pa.types.is_date64(t):
        return pa.date32()
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return pa.list_(spark_arrow_type(t.value_type))
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, spark_arrow_type(f.type)) for f in t])
    return t


def numpy_dtype(t: pa.DataType) -> str:
    return str(np.dtype(t.to_pandas_dtype()).name)


def _binary(column: pa.Array) -> pa.Array:
    """A fixed_shape_tensor column as binary rows over the same pixel buffer (no copy)."""
    storage = column.storage
    if storage.null_count:
        raise CogflightError(f"{column.type}: null rows; the wire contract has none")
    values = storage.flatten()  # the rows' values, a view
    n, size = len(storage), storage.type.list_size
    item = values.type.bit_width // 8
    row = size * item
    data = values.buffers()[1]
    if data is None or n == 0:
        return pa.array([b""] * n, pa.binary())
    data = data.slice(values.offset * item, n * row)
    offsets = np.arange(0, (n + 1) * row, row, dtype=np.int32)
    return pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets), data])


def _constant(value: Any, n: int, t: pa.DataType) -> pa.Array:
    return pa.repeat(pa.scalar(value, t), n) if n else pa.array([], t)


def to_spark_batch(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """A chip batch in the Arrow form of its Spark schema (:func:`spark_arrow_schema`).

    ``chip`` and ``valid`` become binary views of the pixel buffers; every other column is
    cast to its Spark type. The batch must fit 32-bit binary offsets (2 GiB of pixels).
    """
    n = batch.num_rows
    arrays = []
    for f in schema:
        if f.name in TENSORS:
            arrays.append(_binary(batch.column(f.name)))
        elif f.name == SHAPE:
            arrays.append(_constant(list(batch.schema.field("chip").type.shape), n, f.type))
        elif f.name == DTYPE:
            value = numpy_dtype(batch.schema.field("chip").type.value_type)
            arrays.append(_constant(value, n, f.type))
        else:
            column = batch.column(f.name)
            if isinstance(column.type, pa.ExtensionType):
                column = column.storage
            arrays.append(column if column.type == f.type else column.cast(f.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


# -- the recipe: Spark's Arrow batches back to arrays ------------------------------------------
def _rows(column: pa.Array, dtype: np.dtype[Any], shape: tuple[int, ...]) -> np.ndarray:
    """Binary rows of equal length as one ``[N, *shape]`` array (a view when contiguous)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    n = len(column)
    row = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if column.null_count:
        raise InvalidArgumentError("chip: null rows; read every chip of the query")
    width = 8 if pa.types.is_large_binary(column.type) else 4
    _, offsets_buf, data = column.buffers()
    if n == 0 or data is None or offsets_buf is None:
        return np.zeros((n, *shape), dtype)
    offsets = np.frombuffer(
        offsets_buf, np.int64 if width == 8 else np.int32, n + 1, column.offset * width
    )
    if not np.all(np.diff(offsets) == row):
        raise InvalidArgumentError(
            f"chip: rows of {sorted(set(np.diff(offsets).tolist()))[:3]} bytes, expected {row} "
            f"({dtype.name} {list(shape)}); a batch must hold chips of one query"
        )
    start = int(offsets[0])
    out = np.frombuffer(data, dtype, n * row // dtype.itemsize, start).reshape(n, *shape)
    if (data.address + start) % dtype.itemsize:  # unaligned for its dtype: copy once
        out = out.copy()
    return out


def _layout(batch: pa.RecordBatch | pa.Table) -> tuple[np.dtype[Any], tuple[int, ...]]:
    """The (dtype, shape) of a Spark chip batch's rows, checked to be one for all rows."""
    if batch.num_rows == 0:
        raise InvalidArgumentError("chip: an empty batch has no shape")
    dtypes = set(batch.column(DTYPE).unique().to_pylist())
    shapes = {tuple(s) for s in batch.column(SHAPE).to_pylist()}
    if len(dtypes) != 1 or len(shapes) != 1:
        raise InvalidArgumentError(
            f"chip: rows of several dtypes or shapes ({sorted(dtypes)}, {sorted(shapes)}) in one "
            "batch; read one query per DataFrame"
        )
    return np.dtype(dtypes.pop()), shapes.pop()


def chips_from_arrow(batch: pa.RecordBatch | pa.Table) -> dict[str, Any]:
    """A batch of the Spark DataFrame (as ``mapInArrow`` gives it) as numpy arrays.

    Returns:
        ``chip`` ``[N, C, H, W]`` (``[N, T, C, H, W]``) of the chips' dtype, viewing the
        batch's buffer (read-only) when it is aligned; ``valid`` (bool, the same without
        the band axis); numeric columns as arrays, list columns of numbers (``transform``,
        ``bounds``) as ``[N, k]`` arrays, every other column as a list.
    """
    out: dict[str, Any] = {}
    if batch.num_rows == 0:
        return {name: [] for name in batch.schema.names if name not in (SHAPE, DTYPE)}
    dtype, shape = _layout(batch)
    for name in batch.schema.names:
        col = batch.column(name)
        if isinstance(col, pa.ChunkedArray):
            col = col.combine_chunks()
        t = col.type
        if name == "chip":
            out[name] = _rows(col, dtype, shape)
        elif name == "valid":
            out[name] = _rows(col, np.dtype(np.uint8), shape[:-3] + shape[-2:]).view(np.bool_)
        elif name in (SHAPE, DTYPE):
            continue
        elif (pa.types.is_integer(t) or pa.types.is_floating(t)) and col.null_count == 0:
            out[name] = col.to_numpy(zero_copy_only=False)
        elif pa.types.is_list(t) and pa.types.is_floating(t.value_type) and col.null_count == 0:
            if len(set(pc.list_value_length(col).to_pylist())) == 1:
                out[name] = col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), -1)
            else:
                out[name] = col.to_pylist()
        else:
            out[name] = col.to_pylist()
    return out


def to_chip_batch(batch: pa.RecordBatch | pa.Table) -> pa.RecordBatch:
    """A batch of the Spark DataFrame back in the wire contract's form (no pixel copy).

    ``chip`` and ``valid`` become ``arrow.fixed_shape_tensor`` columns again (``shape``
    and ``dtype`` dropped), so :func:`flight_client.to_torch` turns it into tensors.
    """
    if isinstance(batch, pa.Table):
        batch = batch.combine_chunks().to_batches()[0] if batch.num_rows else batch.to_batches()[0]
    dtype, shape = _layout(batch)
    names = ("time", "band", "y", "x")[-len(shape) :]
    arrays: list[pa.Array] = []
    fields: list[pa.Field] = []
    for f in batch.schema:
        if f.name in (SHAPE, DTYPE):
            continue
        if f.name in TENSORS:
            d = dtype if f.name == "chip" else np.dtype(np.uint8)
            s = shape if f.name == "chip" else shape[:-3] + shape[-2:]
            dims = list(names) if f.name == "chip" else [x for x in names if x != "band"]
            pixels = _rows(batch.column(f.name), d, s)
            t = pa.fixed_shape_tensor(pa.from_numpy_dtype(d), list(s), dim_names=dims)
            values = pa.array(pixels.reshape(-1))  # zero-copy over the numpy view
            storage = pa.FixedSizeListArray.from_arrays(values, int(np.prod(s)))
            arrays.append(pa.ExtensionArray.from_storage(t, storage))
            fields.append(pa.field(f.name, t, nullable=False))
        else:
            arrays.append(batch.column(f.name))
            fields.append(f)
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


def fit_binary(batch: pa.RecordBatch) -> Iterator[pa.RecordBatch]:
    """``batch`` in slices whose pixels fit one Spark binary column (32-bit offsets)."""
    row = 1
    for name in TENSORS:
        if name in batch.schema.names:
            t = batch.schema.field(name).type
            row = max(row, int(np.prod(t.shape, dtype=np.int64)) * (t.value_type.bit_width // 8))
    step = max(1, _MAX_BINARY // row)
    if batch.num_rows <= step:
        yield batch
        return
    for start in range(0, batch.num_rows, step):
        yield batch.slice(start, step)
