"""Framing of chip batches on the wire: padding that keeps column buffers aligned.

Concurrency policy: pure functions.
"""

from __future__ import annotations

import pyarrow as pa

__all__ = ["alignment_padding", "ipc_header_length"]


def _varint_len(n: int) -> int:
    size = 1
    while n >= 128:
        n >>= 7
        size += 1
    return size


def ipc_header_length(batch: pa.RecordBatch) -> int:
    """Length of a batch's IPC metadata (the same for any row count of one schema)."""
    data = batch.slice(0, min(1, batch.num_rows)).serialize()
    return int.from_bytes(data.to_pybytes()[4:8], "little")


def alignment_padding(batch: pa.RecordBatch, header_len: int) -> pa.Buffer:
    """app_metadata that puts the message body at a 64-byte offset of the Flight message.

    A FlightData message is [data_header][app_metadata][data_body] in protobuf
    framing; a client that receives it in one aligned allocation then sees every
    column buffer aligned, so tensors can use them without a copy (pixels of
    uint16 and wider need aligned memory).
    """
    body_len = pa.ipc.get_record_batch_size(batch) - 8 - header_len
    fixed = 1 + _varint_len(header_len) + header_len + 2 + _varint_len(body_len)
    pad = 1
    while (fixed + 1 + _varint_len(pad) + pad) % 64:
        pad += 1
    return pa.py_buffer(bytes(pad))
