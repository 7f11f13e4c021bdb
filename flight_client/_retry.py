"""Streams that survive a lost server: retry elsewhere or later, resume after the last chip.

A chip stream broken by ``UNAVAILABLE`` because the server went away (killed or
restarted: connection refused, reset or closed, streams removed, GOAWAY), was busy
or draining, or a relay helper ended, is opened again at the endpoint's
next advertised location; once every location was tried, after a wait that
doubles from :attr:`RetryPolicy.wait_s` up to :attr:`RetryPolicy.max_wait_s`, at
the first one again (a restarted server). The new request carries the wire
contract's ``skip`` = chips already delivered, and rows whose ``ordinal`` was
already delivered are dropped (only possible when ``on_error="skip"`` left chips
out before the break), so every chip reaches the consumer exactly once.

Each failure without a new chip since the last one spends one retry of the
budget; a chip delivered refills it. Other errors (bad query, permission,
deadline) are raised at once, and so is ``UNAVAILABLE`` that a live server reports
about the data (a storage read that failed after the server's own retries: the
same read at once again would fail the same way). A ticket that is not a JSON query is retried only
before its first chip (re-reading it from the start loses nothing).

Concurrency policy: one generator per stream, used by one consumer; nothing shared.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from cogflight_core import InvalidArgumentError, UnavailableError

from ._counters import count

__all__ = ["DEFAULT_RETRY", "TRANSIENT", "RetryPolicy", "resumable", "transient"]

logger = logging.getLogger("cogflight.client")

ORDINAL = "ordinal"
# What gRPC (and the relay) say when the connection, not the server's answer, failed; plus
# the server's own "come back later" answers. Matched case-insensitively in the message.
TRANSIENT = (
    "failed to connect",
    "connection refused",
    "connection reset",
    "connection closed",
    "socket closed",
    "stream removed",
    "broken pipe",
    "goaway",
    "rst_stream",
    "transport closed",
    "endpoint read failed",
    "keepalive",
    "network is unreachable",
    "dns resolution failed",
    "server busy",
    "shutting down",
    "draining",
    "helper process ended",
)


def transient(exc: BaseException) -> bool:
    """Whether an ``UNAVAILABLE`` error is worth a retry (the connection or a busy server)."""
    text = str(exc).lower()
    return isinstance(exc, UnavailableError) and any(m in text for m in TRANSIENT)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a broken chip stream is retried (see the module docs)."""

    retries: int = 6
    """Failed attempts in a row (without a chip between them) before the error is raised."""
    wait_s: float = 0.5
    """First wait before trying the same locations again; doubles each round."""
    max_wait_s: float = 5.0
    """Longest wait between rounds."""

    def __post_init__(self) -> None:
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise InvalidArgumentError(f"retries: expected an integer >= 0, got {self.retries!r}")
        for name in ("wait_s", "max_wait_s"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0 <= value < float("inf"):
                raise InvalidArgumentError(f"{name}: expected seconds >= 0, got {value!r}")

    def wait(self, round_no: int) -> float:
        """Seconds to wait before round ``round_no`` (1, 2, ...) over the locations."""
        return float(min(self.wait_s * 2 ** max(0, round_no - 1), self.max_wait_s))


DEFAULT_RETRY = RetryPolicy()

OpenStream = Callable[[bytes, "str | None"], Iterator[pa.RecordBatch]]


def _query_of(ticket: bytes) -> dict[str, Any] | None:
    """The ticket's query document, or None when it is not one (it cannot be resumed)."""
    try:
        doc = json.loads(ticket)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(doc, dict) or doc.get("index"):
        return None
    skip = doc.get("skip", 0)
    if isinstance(skip, bool) or not isinstance(skip, int) or skip < 0:
        return None  # the server will refuse it; nothing to resume
    return doc


def _resumed(doc: dict[str, Any], skip: int) -> bytes:
    return json.dumps({**doc, "skip": skip}, separators=(",", ":"), sort_keys=True).encode()


def _after(batch: pa.RecordBatch, last: int) -> pa.RecordBatch:
    """The rows of ``batch`` after ordinal ``last`` (ordinals rise within a stream)."""
    ordinals = batch.column(ORDINAL).to_numpy(zero_copy_only=False)
    start = int(np.searchsorted(ordinals, last, side="right"))
    return batch if start == 0 else batch.slice(start)


def resumable(
    open_stream: OpenStream,
    ticket: bytes,
    locations: Sequence[str | None],
    policy: RetryPolicy,
    *,
    reconnect: Callable[[str | None], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[pa.RecordBatch]:
    """The batches of ``ticket``, each chip once, across broken streams (see module docs).

    ``locations`` are the endpoint's, in order (None: the client's server);
    ``reconnect(location)`` is called after a failure there, so the next attempt
    opens a fresh connection.
    """
    where_all = list(locations) or [None]
    doc = _query_of(ticket)
    base = int(doc.get("skip", 0)) if doc is not None else 0
    delivered = 0
    last: int | None = None
    failures = 0
    attempt = 0
    while True:
        where = where_all[attempt % len(where_all)]
        current = ticket if delivered == 0 or doc is None else _resumed(doc, base + delivered)
        stream = open_stream(current, where)
        try:
            for received in stream:
                batch = received
                if last is not None and ORDINAL in batch.schema.names:
                    batch = _after(received, last)
                    if batch.num_rows == 0:
                        continue
                delivered += batch.num_rows
                if batch.num_rows and ORDINAL in batch.schema.names:
                    last = int(batch.column(ORDINAL)[batch.num_rows - 1].as_py())
                failures = 0
                yield batch
            return
        except UnavailableError as exc:
            failures += 1
            if not transient(exc) or failures > policy.retries or (delivered and doc is None):
                raise
            if reconnect is not None:
                reconnect(where)
            attempt += 1
            count("stream_retries")
            nxt = where_all[attempt % len(where_all)]
            wait = policy.wait(attempt // len(where_all)) if attempt % len(where_all) == 0 else 0.0
            logger.warning(
                "stream broken after %d chips (%s); retry %d of %d at %s in %.1f s, resuming",
                delivered,
                str(exc).split("\n", 1)[0].split(". gRPC client debug", 1)[0][:200],
                failures,
                policy.retries,
                nxt or "the server",
                wait,
            )
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()  # a consumer that stops early cancels the server's work at once
        if wait:
            sleep(wait)
