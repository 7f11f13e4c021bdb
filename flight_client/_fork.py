"""Knowing whether gRPC can run in this process.

gRPC keeps threads and locks that ``fork`` does not copy: a child of a process
that had started gRPC (an in-process or embedded server, or any Flight client)
hangs on its first call. DataLoader workers are forked by default on Linux, so
the client checks, just before every fork, whether gRPC's threads exist, and a
child that inherited a started gRPC sends its calls through a helper process.
"""

from __future__ import annotations

import glob
import os

__all__ = ["grpc_inherited", "mark_grpc_started"]

# Names gRPC gives its threads (event engine pool, timer manager, lifeguard).
_GRPC_THREADS = ("event_engine", "grpc_global_tim", "lifeguard", "grpcpp_sync_ser")
_started_in: set[int] = set()
# [gRPC running in the parent at the last fork, this process inherited a started gRPC]
_state = [False, False]


def mark_grpc_started() -> None:
    """Record that this process started gRPC (also where /proc cannot tell)."""
    _started_in.add(os.getpid())


def _grpc_running() -> bool:
    if os.getpid() in _started_in:
        return True
    for path in glob.glob("/proc/self/task/*/comm"):  # no /proc: rely on the marks
        try:
            with open(path) as f:
                if f.read().strip().startswith(_GRPC_THREADS):
                    return True
        except OSError:  # that thread ended meanwhile
            continue
    return False


def _before_fork() -> None:
    _state[0] = _state[1] or _grpc_running()


def _after_fork_in_child() -> None:
    _state[1] = _state[0]


def grpc_inherited() -> bool:
    """Whether this process was forked from one that had started gRPC."""
    return _state[1] or any(pid != os.getpid() for pid in _started_in)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
