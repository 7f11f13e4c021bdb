"""Chip-stream slots: every stream holds one and gives it back on every path.

A ``DoGet`` takes a :class:`Lease` from :class:`StreamSlots` before it plans, so
a busy or draining server refuses before spending CPU, and the lease bounds the
stream: ``max_streams`` in the process, ``max_streams_per_token`` per token, and
a deadline (``stream_timeout_s``) from the moment the slot was taken. The lease
is released exactly once (:meth:`Lease.release` is idempotent) by whichever
comes first:

- the stream's generator ends: done, failed, or stopped for a client that went
  away (its ``finally``);
- the generator is dropped without ever having started: pyarrow drops the
  stream of a call whose client left (deadline, cancel, disconnect) while the
  server was still planning, and closing an unstarted generator runs none of its
  body, so a :func:`weakref.finalize` on the generator releases the lease;
- planning failed, or the client was gone when planning ended.

Releasing closes the engine stream too (its producer task, the chip tasks and
the reads they wait for are cancelled; queued batches are dropped).

Shutdown: :meth:`StreamSlots.start_draining` refuses new streams,
:meth:`StreamSlots.wait_idle` lets running ones finish, and
:meth:`StreamSlots.cancel_all` cancels the rest (each ends with UNAVAILABLE, so a
client knows it was cut short and can resume elsewhere).

Concurrency policy: any thread may call any method. One reentrant lock guards
the counters (reentrant because a finalizer may run during a garbage collection
on a thread that already holds it); engine streams are closed outside it.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
import weakref
from collections import Counter
from typing import Any, Protocol, TypeVar

from cogflight_core import DeadlineExceededError, UnavailableError

__all__ = [
    "DRAINING",
    "GONE",
    "SHUTDOWN",
    "Lease",
    "StreamLimitError",
    "StreamSlots",
    "next_batch",
]

DRAINING = (
    "server is draining (shutting down) and takes no new streams; retry at another "
    "replica or after the restart"
)
SHUTDOWN = (
    "the server is shutting down and cut this stream short; resume it at another replica "
    "or after the restart"
)
GONE = object()  # what next_batch returns when the client of a stream went away
POLL_S = 0.25  # how often a stream waiting for its next batch checks its client and deadline
G = TypeVar("G")


class _Closable(Protocol):
    def close(self) -> None: ...


class _Batches(Protocol):
    def next_batch(self, timeout: float | None = None) -> Any: ...


class _Context(Protocol):
    def is_cancelled(self) -> bool: ...


class StreamLimitError(UnavailableError):
    """A stream refused because the server or the token is at its limit, or draining."""


class Lease:
    """One stream's slot; :meth:`release` gives it back (once, from any path)."""

    def __init__(self, slots: StreamSlots, principal: str, timeout_s: float) -> None:
        self.principal = principal
        self.started = time.monotonic()
        self.deadline = self.started + timeout_s
        self.timeout_s = timeout_s
        self.cancelled: str | None = None  # why the server cut the stream short
        self._slots = slots
        self._stream: _Closable | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._released = False

    @property
    def released(self) -> bool:
        """Whether the slot was given back."""
        return self._released

    def attach(self, stream: _Closable) -> None:
        """The engine stream this lease closes when released (now, if already released)."""
        self._stream = stream
        if self._released or self.cancelled is not None:
            stream.close()

    def watch(self, generator: G) -> G:
        """Release when ``generator`` is collected, even if it never started."""
        self._finalizer = weakref.finalize(generator, self.release)
        return generator

    def cancel(self, reason: str) -> None:
        """Cut the stream short (shutdown): its next wait ends with ``reason``."""
        self.cancelled = reason
        stream = self._stream
        if stream is not None:
            stream.close()

    def release(self) -> bool:
        """Give the slot back and close the engine stream; False if already done."""
        if not self._slots._release(self):
            return False
        finalizer, self._finalizer = self._finalizer, None
        if finalizer is not None:
            finalizer.detach()
        stream = self._stream
        if stream is not None:
            stream.close()
        return True


class StreamSlots:
    """Concurrent chip streams of one service: limits, leases and draining.

    Args:
        max_streams: streams in the process before new ones are refused.
        max_per_token: streams one token may hold (None: ``max_streams``); clients
            without a token share the principal ``anonymous``.
        timeout_s: longest a stream may run (its lease's deadline).
    """

    def __init__(self, max_streams: int, max_per_token: int | None, timeout_s: float) -> None:
        self.max_streams = max_streams
        self.max_per_token = max_per_token
        self.timeout_s = timeout_s
        self._cond = threading.Condition(threading.RLock())
        self._by_token: Counter[str] = Counter()
        self._leases: set[Lease] = set()
        self._draining = False

    @property
    def active(self) -> int:
        """Streams holding a slot now."""
        with self._cond:
            return len(self._leases)

    @property
    def draining(self) -> bool:
        """Whether new streams are refused (shutdown began)."""
        return self._draining

    def by_token(self) -> dict[str, int]:
        """Streams held per principal (tokens appear as their hash, never in clear)."""
        with self._cond:
            return {k: v for k, v in self._by_token.items() if v}

    def acquire(self, principal: str) -> Lease:
        """A slot for a new stream of ``principal``.

        Raises:
            StreamLimitError: draining, at ``max_streams``, or the token at its limit.
        """
        with self._cond:
            if self._draining:
                raise StreamLimitError(DRAINING)
            active = len(self._leases)
            if active >= self.max_streams:
                raise StreamLimitError(
                    f"server busy: {active} streams in progress, at the limit of "
                    f"{self.max_streams} (max_streams); retry later or use another replica"
                )
            held = self._by_token[principal]
            if self.max_per_token is not None and held >= self.max_per_token:
                raise StreamLimitError(
                    f"server busy for this token: it holds {held} streams, at the limit of "
                    f"{self.max_per_token} (max_streams_per_token); retry when one has finished"
                )
            lease = Lease(self, principal, self.timeout_s)
            self._leases.add(lease)
            self._by_token[principal] += 1
            return lease

    def _release(self, lease: Lease) -> bool:
        with self._cond:
            if lease._released:
                return False
            lease._released = True
            self._leases.discard(lease)
            self._by_token[lease.principal] -= 1
            if not self._by_token[lease.principal]:
                del self._by_token[lease.principal]
            self._cond.notify_all()
            return True

    def start_draining(self) -> None:
        """Refuse every new stream from now on."""
        with self._cond:
            self._draining = True

    def wait_idle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every stream to end; True if none is left."""
        end = time.monotonic() + max(0.0, timeout)
        with self._cond:
            while self._leases:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def cancel_all(self, reason: str) -> int:
        """Cancel every running stream with ``reason``; returns how many."""
        with self._cond:
            leases = list(self._leases)
        for lease in leases:
            lease.cancel(reason)
        return len(leases)


def next_batch(context: _Context, lease: Lease, stream: _Batches) -> Any:
    """The stream's next batch, None at its end, or :data:`GONE` when the client left.

    Waits in short slices so that a client that went away, the lease's deadline and
    shutdown are noticed while the engine is still producing.

    Raises:
        UnavailableError: the server cut the stream short (shutdown).
        DeadlineExceededError: the stream ran past ``stream_timeout_s``.
    """
    while True:
        if context.is_cancelled():
            return GONE
        if lease.cancelled is not None:
            raise UnavailableError(lease.cancelled)
        left = lease.deadline - time.monotonic()
        if left <= 0:
            raise DeadlineExceededError(
                f"the stream ran past the limit of {lease.timeout_s:g} s (stream_timeout_s); "
                "ask for fewer chips per stream (more shards)"
            )
        try:
            return stream.next_batch(timeout=min(POLL_S, left))
        except TimeoutError:
            continue
        except concurrent.futures.CancelledError:  # closed under us: shutdown or gone
            if lease.cancelled is not None:
                raise UnavailableError(lease.cancelled) from None
            return GONE
