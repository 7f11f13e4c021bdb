"""Whether gRPC can run in this process: one fact, recorded where gRPC starts.

gRPC keeps threads and locks that ``fork`` does not copy: a child of a process
that had started gRPC (a Flight client or server) hangs on its first call.
cogflight records the start itself, just before it creates a Flight client or
server (:func:`mark_grpc_started`); one ``os.register_at_fork`` hook hands the
fact to every child, which then knows it inherited a started gRPC
(:func:`grpc_inherited`). Nothing is scanned and nothing is asked of gRPC.

A process started fresh (``spawn``, ``forkserver``, ``subprocess``) inherits
nothing: its gRPC is its own. The flags are plain booleans, written under the
GIL; a fork copies them as they are.
"""

from __future__ import annotations

import os

__all__ = ["grpc_inherited", "mark_grpc_started"]

# [this process started gRPC, this process was forked from one that had]
_state = [False, False]


def mark_grpc_started() -> None:
    """Record that this process starts gRPC (call it just before creating a Flight object)."""
    _state[0] = True


def grpc_inherited() -> bool:
    """Whether this process was forked, directly or not, from one that had started gRPC."""
    return _state[1]


def _after_fork_in_child() -> None:
    _state[1] = _state[1] or _state[0]
    _state[0] = False


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)
