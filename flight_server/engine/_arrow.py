"""Chip batches as Arrow: pixels in ``arrow.fixed_shape_tensor``, without copying them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from catalog import Band

if TYPE_CHECKING:
    from ._types import ChipBatch

__all__ = ["batch_to_arrow", "chip_schema"]


def _tensor_type(dtype: np.dtype, shape: tuple[int, ...], dims: list[str]) -> pa.DataType:
    return pa.fixed_shape_tensor(pa.from_numpy_dtype(dtype), list(shape), dim_names=dims)


def _tensor_array(arr: np.ndarray, dims: list[str]) -> pa.ExtensionArray:
    """A fixed_shape_tensor column over ``arr`` (``[N, ...]``), sharing its memory."""
    arr = np.ascontiguousarray(arr)
    n = arr.shape[0]
    per = int(np.prod(arr.shape[1:], dtype=np.int64))
    values = pa.array(arr.reshape(-1)) if arr.size else pa.array([], pa.from_numpy_dtype(arr.dtype))
    storage = pa.FixedSizeListArray.from_arrays(values, per)
    ttype = _tensor_type(arr.dtype, arr.shape[1:], dims)
    assert len(storage) == n
    return pa.ExtensionArray.from_storage(ttype, storage)


def band_metadata(bands: Sequence[Band]) -> dict[bytes, bytes]:
    """Field metadata of the chip column: band names, nodata, scale and offset."""
    return {
        b"bands": json.dumps([b.name for b in bands]).encode(),
        b"nodata": json.dumps([b.nodata for b in bands]).encode(),
        b"scale": json.dumps([b.scale for b in bands]).encode(),
        b"offset": json.dumps([b.offset for b in bands]).encode(),
    }


def chip_schema(
    meta_schema: pa.Schema,
    dtype: np.dtype,
    chip_shape: tuple[int, ...],
    time_series: bool,
    field_metadata: dict[bytes, bytes],
) -> pa.Schema:
    """The schema of a chip stream (metadata columns, then ``chip`` and ``valid``)."""
    dims = ["time", "band", "y", "x"] if time_series else ["band", "y", "x"]
    valid_shape = (chip_shape[0], *chip_shape[2:]) if time_series else chip_shape[1:]
    valid_dims = ["time", "y", "x"] if time_series else ["y", "x"]
    fields = list(meta_schema)
    fields.append(
        pa.field(
            "chip", _tensor_type(dtype, chip_shape, dims), nullable=False, metadata=field_metadata
        )
    )
    fields.append(
        pa.field("valid", _tensor_type(np.dtype(np.uint8), valid_shape, valid_dims), nullable=False)
    )
    return pa.schema(fields)


def batch_to_arrow(batch: ChipBatch) -> pa.RecordBatch:
    """A RecordBatch with the metadata columns, ``chip`` and ``valid`` (1 = valid)."""
    dims = ["time", "band", "y", "x"] if batch.time_series else ["band", "y", "x"]
    valid_dims = ["time", "y", "x"] if batch.time_series else ["y", "x"]
    schema = chip_schema(
        batch.meta.schema,
        batch.chips.dtype,
        batch.chips.shape[1:],
        batch.time_series,
        band_metadata(batch.bands),
    )
    columns = [c.combine_chunks() for c in batch.meta.columns]
    columns.append(_tensor_array(batch.chips, dims))
    columns.append(_tensor_array(batch.valid.view(np.uint8), valid_dims))
    return pa.RecordBatch.from_arrays(columns, schema=schema)
