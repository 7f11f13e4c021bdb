"""Prometheus metrics of one server process, and the per-token usage log.

One :class:`Metrics` per :class:`~flight_server.FlightService`, on its own
``CollectorRegistry`` (several servers in one process never share counters). The
service reports events: a call answered (:meth:`Metrics.answered`), a call refused
(:meth:`Metrics.refused`), and each chip stream through a :class:`StreamTally`
(started, each batch sent, finished). Engine and cache figures, the streams in
progress and draining are read at scrape time, so they cost nothing between
scrapes. ``docs/metrics.md`` lists every metric.

Labels stay bounded whatever clients send: ``collection`` is a Collection the
root served (``""`` for a call refused before one was found), ``method`` a Flight
method, ``code`` a status code, ``principal`` a token of the token file as
:func:`~._auth.principal` names it (``sha256:`` and 12 hex digits; never the
token) or ``anonymous``.

Per-token usage: chips and bytes per principal and Collection, as counters and
as an append-only JSON-lines log (:class:`UsageLog`, one line per finished
stream) that an operator can bill or audit from.

Concurrency policy: every method may be called from any thread; prometheus-client
metrics are thread-safe, a tally is driven by its stream's one generator, and the
usage log appends one line per write under a lock.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cogflight_core._logging import rfc3339

from .engine import EngineStats

__all__ = ["CONTENT_TYPE", "CallRecord", "Metrics", "StreamTally", "UsageLog"]

logger = logging.getLogger("cogflight.server")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_STREAM_BUCKETS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0)


class UsageLog:
    """Append-only JSON lines, one per finished chip stream (who read what, how much).

    The file is opened for each record, so rotating it by renaming (logrotate without
    ``copytruncate``) starts a new file at the next record.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def write(self, record: dict[str, Any]) -> None:
        """Append one record (one line of JSON, flushed at once)."""
        line = json.dumps(record, separators=(",", ":"), default=str) + "\n"
        with self._lock, self.path.open("a", encoding="utf-8") as fh:
            fh.write(line)

    def records(self) -> Iterator[dict[str, Any]]:
        """Every record in the file (for audits and tests)."""
        if not self.path.exists():
            return
        with self.path.open(encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    yield json.loads(line)


def _family(kind: str, name: str, doc: str, value: float) -> Metric:
    family = (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(name, doc)
    family.add_metric([], float(value))
    return family


class _EngineCollector(Collector):
    """Engine and cache figures, read from ``stats()`` at scrape time."""

    def __init__(self, stats: Callable[[], EngineStats]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        s = self._stats()
        c = s.cache
        yield from (
            _family("counter", "cogflight_store_requests", "Range requests sent.", s.requests),
            _family("counter", "cogflight_store_fetched_bytes", "Bytes fetched.", s.bytes_fetched),
            _family("counter", "cogflight_store_retries", "Range requests retried.", s.retries),
            _family("counter", "cogflight_engine_errors", "Failed reads and decodes.", s.errors),
            _family("counter", "cogflight_tiles_decoded", "Tiles decoded.", s.tiles_decoded),
            _family(
                "counter",
                "cogflight_decode_seconds",
                "Seconds spent decoding tiles (all threads).",
                s.decode_seconds,
            ),
            _family("counter", "cogflight_engine_chips", "Chips assembled.", s.chips),
            _family("gauge", "cogflight_cache_bytes", "Decoded-tile cache size.", c.bytes),
            _family("gauge", "cogflight_cache_max_bytes", "Cache budget.", c.max_bytes),
            _family("gauge", "cogflight_cache_entries", "Tiles in the cache.", c.entries),
            _family("counter", "cogflight_cache_hits", "Cache lookups that hit.", c.hits),
            _family("counter", "cogflight_cache_misses", "Cache lookups that missed.", c.misses),
            _family("counter", "cogflight_cache_evictions", "Tiles evicted.", c.evictions),
            _family("gauge", "cogflight_cache_hit_ratio", "Hits over lookups so far.", c.hit_rate),
        )


class _Service(Protocol):
    """What the scrape-time gauges and the usage records read from the service."""

    @property
    def active_streams(self) -> int: ...
    @property
    def draining(self) -> bool: ...
    @property
    def worker(self) -> int: ...


@dataclass
class CallRecord:
    """One Flight call as metrics see it: its method, request id, start and Collection."""

    method: str
    request_id: str
    collection: str = ""  # set once the call found a Collection the root serves
    started: float = field(default_factory=time.monotonic)


class Metrics:
    """The counters, gauges and histograms of one Flight service (see ``docs/metrics.md``).

    Args:
        engine_stats: returns the engine's :class:`~flight_server.EngineStats` (at scrape).
        service: the service whose streams in progress, draining and worker number are
            read when needed (None: 0, not draining, worker 0).
        usage_log: where to append one JSON line per finished stream (None: no log).
    """

    def __init__(
        self,
        engine_stats: Callable[[], EngineStats],
        service: _Service | None = None,
        *,
        usage_log: str | os.PathLike[str] | None = None,
    ) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self._service = service
        by_collection = ["collection"]
        self.streams_started = Counter(
            "cogflight_streams_started", "Chip streams started.", by_collection, registry=r
        )
        self.streams_finished = Counter(
            "cogflight_streams_finished",
            "Chip streams ended, by outcome (done, cancelled, failed).",
            ["collection", "outcome"],
            registry=r,
        )
        Gauge("cogflight_streams_active", "Chip streams in progress.", registry=r).set_function(
            lambda: float(service.active_streams if service is not None else 0)
        )
        Gauge(
            "cogflight_draining", "1 while the server refuses new streams.", registry=r
        ).set_function(lambda: float(service is not None and service.draining))
        self.chips = Counter("cogflight_chips_sent", "Chips sent.", by_collection, registry=r)
        self.bytes_sent = Counter(
            "cogflight_sent_bytes", "Arrow bytes of the batches sent.", by_collection, registry=r
        )
        self.batches = Counter(
            "cogflight_batches_sent", "Record batches sent.", by_collection, registry=r
        )
        self.calls = Counter(
            "cogflight_calls",
            "Flight calls answered, by method and status code (OK or the error's).",
            ["method", "code"],
            registry=r,
        )
        self.rejections = Counter(
            "cogflight_rejections",
            "Calls and streams refused for the client's cause or a busy server, by code.",
            ["method", "collection", "code"],
            registry=r,
        )
        self.errors = Counter(
            "cogflight_errors",
            "Calls and streams failed on the server's side (storage, deadline, bug), by code.",
            ["method", "collection", "code"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "cogflight_request_seconds",
            "Time to answer a Flight call (DoGet: until its stream is planned).",
            ["method"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.first_batch_seconds = Histogram(
            "cogflight_first_batch_seconds",
            "Time from a DoGet call to its first batch sent.",
            by_collection,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.stream_seconds = Histogram(
            "cogflight_stream_seconds",
            "Time from a DoGet call to the end of its stream (any outcome).",
            by_collection,
            buckets=_STREAM_BUCKETS,
            registry=r,
        )
        per_token = ["principal", "collection"]
        self.token_streams = Counter(
            "cogflight_token_streams", "Chip streams per token.", per_token, registry=r
        )
        self.token_chips = Counter(
            "cogflight_token_chips", "Chips sent per token.", per_token, registry=r
        )
        self.token_bytes = Counter(
            "cogflight_token_sent_bytes", "Arrow bytes sent per token.", per_token, registry=r
        )
        r.register(_EngineCollector(engine_stats))
        ProcessCollector(registry=r)  # memory, CPU and file descriptors of this process
        self.usage = UsageLog(usage_log) if usage_log else None

    @property
    def worker(self) -> int:
        """The worker number of the service (in usage records)."""
        return self._service.worker if self._service is not None else 0

    def answered(self, call: CallRecord, code: str) -> None:
        """A call was answered (``code``: ``OK`` or the status code of its error)."""
        self.calls.labels(call.method, code).inc()
        self.request_seconds.labels(call.method).observe(time.monotonic() - call.started)

    def refused(self, call: CallRecord, code: str, kind: str) -> None:
        """A call or stream refused: ``kind`` is ``rejected`` or ``error``."""
        counter = self.rejections if kind == "rejected" else self.errors
        counter.labels(call.method, call.collection, code).inc()

    def unauthenticated(self, method: str) -> None:
        """A call the auth middleware refused before any handler ran."""
        self.calls.labels(method, "UNAUTHENTICATED").inc()
        self.rejections.labels(method, "", "UNAUTHENTICATED").inc()

    def stream(
        self, call: CallRecord, principal: str, peer: str, shard: tuple[int, int] | None
    ) -> StreamTally:
        """A chip stream of ``call`` begins sending (its generator started)."""
        return StreamTally(self, call, principal, peer, shard)

    def exposition(self) -> bytes:
        """Every metric in the Prometheus text format."""
        return bytes(generate_latest(self.registry))


class StreamTally:
    """One chip stream's accounting: each batch sent, then one finish (metrics, usage line)."""

    def __init__(
        self,
        metrics: Metrics,
        call: CallRecord,
        principal: str,
        peer: str,
        shard: tuple[int, int] | None,
    ) -> None:
        self.metrics, self.call, self.principal, self.peer = metrics, call, principal, peer
        self.shard = shard
        self.chips = self.bytes = self.batches = 0
        self.first_batch_s: float | None = None
        self._finished = False
        metrics.streams_started.labels(call.collection).inc()
        metrics.token_streams.labels(principal, call.collection).inc()

    def sent(self, chips: int, nbytes: int) -> None:
        """One batch of ``chips`` rows and ``nbytes`` Arrow bytes went out."""
        m, name = self.metrics, self.call.collection
        if self.first_batch_s is None:
            self.first_batch_s = time.monotonic() - self.call.started
            m.first_batch_seconds.labels(name).observe(self.first_batch_s)
        self.chips += chips
        self.bytes += nbytes
        self.batches += 1
        m.chips.labels(name).inc(chips)
        m.bytes_sent.labels(name).inc(nbytes)
        m.batches.labels(name).inc()
        m.token_chips.labels(self.principal, name).inc(chips)
        m.token_bytes.labels(self.principal, name).inc(nbytes)

    def finish(self, outcome: str, code: str) -> None:
        """The stream ended (``done``, ``cancelled`` or ``failed`` with ``code``); once."""
        if self._finished:
            return
        self._finished = True
        m, call = self.metrics, self.call
        seconds = time.monotonic() - call.started
        m.streams_finished.labels(call.collection, outcome).inc()
        m.stream_seconds.labels(call.collection).observe(seconds)
        logger.info(
            "request %s: stream %r %s: %d chips, %d bytes in %.2f s",
            call.request_id,
            call.collection,
            outcome,
            self.chips,
            self.bytes,
            seconds,
            extra={"request_id": call.request_id},
        )
        if m.usage is None:
            return
        record = {
            "time": rfc3339(time.time()),
            "request_id": call.request_id,
            "worker": m.worker,
            "principal": self.principal,
            "collection": call.collection,
            "shard": list(self.shard) if self.shard is not None else None,
            "outcome": outcome,
            "code": code,
            "chips": self.chips,
            "bytes": self.bytes,
            "batches": self.batches,
            "seconds": round(seconds, 6),
            "first_batch_seconds": (
                round(self.first_batch_s, 6) if self.first_batch_s is not None else None
            ),
            "peer": self.peer,
        }
        try:
            m.usage.write(record)
        except OSError as exc:  # the log must never break serving
            logger.error("cannot append to the usage log %s: %s", m.usage.path, exc)
