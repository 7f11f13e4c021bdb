"""A clean interpreter exit after obstore's async calls: wait until their runtime is quiet.

obstore's ``*_async`` calls run on a tokio thread (pyo3-async-runtimes). When a
call settles, that thread still does a little work that needs the interpreter
after the Python future already holds its result or error. If the interpreter
has begun finalising by then, taking the GIL ends the thread from under Rust and
the whole process aborts (SIGABRT, sometimes SIGBUS) instead of exiting with its
own status: seen after failed header reads, when a script or the CLI exits right
after the error.

:func:`tracked` notes each async call while it is in flight, and when it
settled; an :mod:`atexit` hook, registered when ``catalog`` is imported (so it
runs after the hooks of the engine and the embedded server, which stop their
loops and cancel their calls first), waits until no call is in flight, bounded
by :data:`MAX_WAIT_S`, plus :data:`GRACE_S` after the last one settled. Exits
long after the last call (the common case) do not wait at all.

Concurrency policy: the counters are guarded by one lock; :func:`tracked` may be
called from any event loop thread, the settle callbacks run on those loops. A
forked child starts with no calls in flight (its parent's are not its own).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from typing import Any, TypeVar

__all__ = ["GRACE_S", "MAX_WAIT_S", "in_flight", "quiesce", "tracked"]

logger = logging.getLogger("cogflight.catalog")

T = TypeVar("T")

GRACE_S = 0.1
"""Seconds after the last call settled before the interpreter may finalise."""
MAX_WAIT_S = 2.0
"""Longest wait at exit for calls still in flight (a call cancelled elsewhere settles fast)."""


class _Calls:
    """The process's async obstore calls: how many are in flight, when the last settled."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget every call (a new lock too: the old one may have been held at fork time)."""
        self.lock = threading.Lock()
        self.in_flight = 0
        self.last = -1e9


_calls = _Calls()


def _settled(_future: Any = None) -> None:
    with _calls.lock:
        _calls.in_flight = max(0, _calls.in_flight - 1)
        _calls.last = time.monotonic()


def tracked(future: T) -> T:
    """Note an obstore async call's future as in flight until it settles; returns it.

    Use it where the call is made: ``await tracked(obstore.get_range_async(...))``.
    """
    add_done_callback = getattr(future, "add_done_callback", None)
    if add_done_callback is None:  # not a future: nothing to follow, only note the time
        _touch()
        return future
    with _calls.lock:
        _calls.in_flight += 1
    add_done_callback(_settled)
    return future


def _touch() -> None:
    with _calls.lock:
        _calls.last = time.monotonic()


def in_flight() -> int:
    """Async obstore calls not yet settled in this process."""
    with _calls.lock:
        return _calls.in_flight


def quiesce(max_wait: float = MAX_WAIT_S, grace: float = GRACE_S) -> bool:
    """Wait until no obstore async call is in flight and ``grace`` passed since the last.

    Returns False when calls were still in flight after ``max_wait`` seconds.
    """
    deadline = time.monotonic() + max_wait
    while True:
        with _calls.lock:
            pending, last = _calls.in_flight, _calls.last
        now = time.monotonic()
        quiet_at = last + grace
        if not pending and now >= quiet_at:
            return True
        if now >= deadline:
            if pending:
                logger.warning("exiting with %d object-store calls still in flight", pending)
                return False
            return True
        time.sleep(max(0.001, min(0.01, (quiet_at - now) if not pending else 0.01)))


def _reset_after_fork() -> None:
    _calls.reset()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_reset_after_fork)
atexit.register(quiesce)
