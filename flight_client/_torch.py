"""Arrow chip batches as PyTorch tensors, without copying the pixels.

The chip column (``arrow.fixed_shape_tensor``) becomes a tensor through DLPack
(pyarrow ``Tensor.__dlpack__`` -> ``torch.from_dlpack``), sharing memory with
the received Arrow buffer. A buffer that is not aligned to its element size is
copied once to an aligned one (and counted in :func:`stats`). Tensors share
memory with the batch: treat them as read-only, or clone before writing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from cogflight_core import InvalidArgumentError, MissingDependencyError

from ._counters import count, stats

__all__ = ["UNSIGNED_CASTS", "collate", "move", "stats", "to_torch"]

#: ``unsigned=`` options: keep torch's uint16/32/64 (few ops support them), widen to the
#: next signed integer (exact, one copy), or convert to float32 (one copy).
UNSIGNED_CASTS = ("keep", "widen", "float32")
_WIDEN = {np.dtype("uint16"): np.int32, np.dtype("uint32"): np.int64}


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise MissingDependencyError(
            "to_torch needs PyTorch: pip install 'cogflight[torch]'"
        ) from exc
    return torch


def _single_batch(table: pa.Table) -> pa.RecordBatch:
    """One RecordBatch for a table (a copy only when it is split in several chunks)."""
    batches = table.to_batches()
    if len(batches) == 1:
        return batches[0]
    if table.num_rows == 0:
        return pa.RecordBatch.from_pylist([], schema=table.schema)
    return table.combine_chunks().to_batches()[0]


def _tensor_column(column: pa.Array) -> pa.Array:
    if not isinstance(column, pa.FixedShapeTensorArray):
        raise InvalidArgumentError(
            f"expected an arrow.fixed_shape_tensor column, got {column.type}"
        )
    return column


def _to_tensor(column: pa.FixedShapeTensorArray, torch: Any) -> Any:
    """A tensor over the column's values (zero-copy when the buffer is aligned)."""
    values = column.storage.values
    item = values.type.bit_width // 8
    buf = values.buffers()[1]
    address = buf.address + values.offset * item if buf is not None else 0
    if item and address % item:
        count("realigned")
        return torch.from_numpy(column.to_numpy_ndarray().copy())  # numpy aligns it
    count("zero_copy")
    return torch.from_dlpack(column.to_tensor())


def to_torch(
    batch: pa.RecordBatch | pa.Table,
    *,
    unsigned: str = "keep",
    device: Any = None,
    pin_memory: bool = False,
    non_blocking: bool = True,
) -> dict[str, Any]:
    """A chip batch as tensors: ``chip``, ``valid`` and the metadata columns.

    Args:
        batch: a RecordBatch (or single-batch Table) from a chip stream.
        unsigned: what to do with uint16/32/64 pixels, which torch stores but few ops
            support: ``"keep"`` (zero-copy), ``"widen"`` (uint16 -> int32, uint32 ->
            int64: exact, one copy) or ``"float32"`` (one copy).
        device: move ``chip`` and ``valid`` there (e.g. ``"cuda"``).
        pin_memory: copy into page-locked memory first, for fast asynchronous transfer.
        non_blocking: transfer asynchronously when pinned.

    Returns:
        ``chip`` ``[N, C, H, W]`` (``[N, T, C, H, W]``) sharing memory with the batch,
        ``valid`` (bool, same leading shape, no band axis), ``geometry_index``,
        ``transform`` ``[N, 6]`` and ``bounds`` ``[N, 4]`` tensors, numeric pass-through
        columns as tensors, and ``id``, ``crs`` (and others) as lists; timestamps
        become ISO 8601 strings so that samples collate without custom code.
    """
    torch = _torch()
    if unsigned not in UNSIGNED_CASTS:
        raise InvalidArgumentError(f"unsigned: expected one of {', '.join(UNSIGNED_CASTS)}")
    if isinstance(batch, pa.Table):
        batch = _single_batch(batch)
    out: dict[str, Any] = {}
    chip = _to_tensor(_tensor_column(batch.column("chip")), torch)
    np_dtype = np.dtype(str(chip.dtype).replace("torch.", ""))
    if np_dtype.kind == "u" and np_dtype.itemsize > 1 and unsigned != "keep":
        count("cast_copies")
        chip = (
            chip.to(torch.float32)
            if unsigned == "float32"
            else chip.to(getattr(torch, np.dtype(_WIDEN.get(np_dtype, np.int64)).name))
        )
    valid = _to_tensor(_tensor_column(batch.column("valid")), torch).view(torch.bool)
    if pin_memory or device is not None:
        if pin_memory and torch.cuda.is_available():
            chip, valid = chip.pin_memory(), valid.pin_memory()
        if device is not None:
            chip = chip.to(device, non_blocking=non_blocking and pin_memory)
            valid = valid.to(device, non_blocking=non_blocking and pin_memory)
    out["chip"], out["valid"] = chip, valid
    for name in batch.schema.names:
        if name in ("chip", "valid"):
            continue
        col = batch.column(name)
        t = col.type
        # Metadata is small: copy it into ordinary, writable tensors.
        if pa.types.is_fixed_size_list(t) and pa.types.is_floating(t.value_type):
            values = col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), t.list_size)
            out[name] = torch.from_numpy(np.array(values, copy=True))
        elif (pa.types.is_integer(t) or pa.types.is_floating(t)) and col.null_count == 0:
            out[name] = torch.from_numpy(np.array(col.to_numpy(zero_copy_only=False), copy=True))
        elif pa.types.is_timestamp(t) or (
            pa.types.is_list(t) and pa.types.is_timestamp(t.value_type)
        ):
            out[name] = [_iso(v) for v in col.to_pylist()]
        else:
            out[name] = col.to_pylist()
    count("batches")
    return out


def _iso(value: Any) -> Any:
    if isinstance(value, list):
        return [_iso(v) for v in value]
    return value.isoformat() if value is not None else None


def collate(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Stack the tensors of samples; keep every other value as a list.

    Use as ``DataLoader(..., collate_fn=collate)`` when samples hold values
    ``default_collate`` refuses (``None`` in padded time series, nested lists).
    """
    torch = _torch()
    if not samples:
        return {}
    out: dict[str, Any] = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        out[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else values
    return out


def move(sample: Mapping[str, Any], device: Any, *, non_blocking: bool = True) -> dict[str, Any]:
    """Move every tensor of a sample to ``device`` (lists stay as they are)."""
    torch = _torch()
    return {
        k: (v.to(device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v)
        for k, v in sample.items()
    }
