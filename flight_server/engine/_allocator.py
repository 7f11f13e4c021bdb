"""The C allocator's policy for the engine's memory: keep freed blocks for reuse.

Fetched byte runs, decoded tiles and batch buffers are megabytes each, and most
live briefly. glibc hands blocks that large to the kernel on free (``munmap`` or
heap trimming), so the next one is fresh memory again, page-faulted and zeroed
4 KiB at a time: on these 2-core machines a cold read of 150 chips took 2.3-2.5 s
that way against 1.8 s with freed memory kept (``benchmarks.engine_throughput``),
and a warm read 0.16 s against 0.07-0.11 s. :func:`tune_allocator` raises the
allocator's mmap and trim thresholds so those blocks stay in the process and are
reused; the resident size may then stay up to ``retain_bytes`` above what is in
use after a burst (freed memory is reused, not returned).

Concurrency policy: process-wide and applied once (the first engine's setting
wins); glibc only: elsewhere nothing changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading

__all__ = ["tune_allocator"]

logger = logging.getLogger("cogflight.server")

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_INT_MAX = 2**31 - 1  # mallopt takes a C int
_MMAP_CAP = 256 * 1024**2  # blocks larger than this still come from the kernel directly
_lock = threading.Lock()
_applied: list[int] = []


def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it
    except (OSError, AttributeError):
        return None
    return libc


def tune_allocator(retain_bytes: int) -> bool:
    """Keep up to ``retain_bytes`` of freed memory for reuse (0: leave the allocator be).

    Returns whether the allocator was tuned (now or by an earlier engine).
    """
    with _lock:
        if _applied:
            return _applied[0] > 0
        _applied.append(0)
        if retain_bytes <= 0:
            return False
        libc = _glibc()
        if libc is None:
            logger.debug("not glibc: the C allocator keeps its own policy")
            return False
        retain = min(retain_bytes, _INT_MAX)
        ok = all(
            libc.mallopt(option, value) == 1
            for option, value in (
                (_M_MMAP_THRESHOLD, min(retain, _MMAP_CAP)),
                (_M_TRIM_THRESHOLD, retain),
                (_M_TOP_PAD, min(retain // 4, _MMAP_CAP)),
            )
        )
        if ok:
            _applied[0] = retain
            logger.debug("C allocator keeps up to %d bytes of freed memory for reuse", retain)
        return ok
