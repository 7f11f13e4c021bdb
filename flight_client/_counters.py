"""Per-process counters of the client: what was copied, realigned or relayed."""

from __future__ import annotations

import threading

__all__ = ["count", "stats"]

_counters = {
    "batches": 0,
    "zero_copy": 0,
    "realigned": 0,
    "received_in_place": 0,
    "aligned_on_read": 0,
    "cast_copies": 0,
    "relayed_requests": 0,
    "stream_retries": 0,
}
_lock = threading.Lock()


def stats() -> dict[str, int]:
    """Counters of this process.

    ``batches`` converted by :func:`to_torch`, ``zero_copy`` tensors that share the
    received buffer, ``realigned`` and ``cast_copies`` (copies made, and why);
    ``received_in_place`` batches read straight from the message gRPC received and
    ``aligned_on_read`` batches whose buffers the IPC reader copied once into aligned
    memory because gRPC delivered their message at an unaligned address; and
    ``relayed_requests``: calls served through a helper process because this process
    was forked from one that had already started gRPC; ``stream_retries``: broken chip
    streams opened again (and resumed after their last chip).
    """
    with _lock:
        return dict(_counters)


def count(key: str, n: int = 1) -> None:
    with _lock:
        _counters[key] += n
