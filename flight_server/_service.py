"""The Arrow Flight service: Collections as flights, tickets as queries, chips as tensors.

A thin layer over :class:`ChipEngine` and :class:`CollectionRoot`: it parses the
wire contract, authorizes, maps errors to Flight status codes and streams
RecordBatches as soon as the engine produces them.

Status codes: INVALID_ARGUMENT for bad queries and requests over a limit,
NOT_FOUND for unknown Collections, UNAUTHENTICATED / PERMISSION_DENIED for
auth, UNAVAILABLE for upstream storage and for a server at its stream limit or
draining, DEADLINE_EXCEEDED for a stream past ``stream_timeout_s``, INTERNAL only
for bugs. Every status message is one line that ends with the request id under
which the server logged the details (:mod:`._messages`).

Streams: each chip stream holds a slot (:mod:`._streams`) that is given back on
every path (done, error, client cancel or disconnect, a client gone while the
server planned, the server's deadline, shutdown). :meth:`FlightService.drain`
refuses new streams, lets running ones finish, then cancels the rest.

Concurrency policy: gRPC calls the handlers on its own threads; their bodies run
on the service's pool (see :meth:`FlightService._guard`), and the counters and
slots are guarded by locks.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa
from pyarrow import flight

from catalog import Collection, select_rows
from cogflight_core import (
    CogflightError,
    DeadlineExceededError,
    InvalidArgumentError,
    LimitExceededError,
    PermissionDeniedError,
)
from cogflight_core._fork import mark_grpc_started

from ._actions import ACTIONS, run_action
from ._auth import AuthFactory, load_tokens
from ._framing import alignment_padding, ipc_header_length
from ._messages import Redactor, code_of, install_traceback_filter, new_request_id, wire_error
from ._metrics import CallRecord, Metrics
from ._query import Query, parse_query
from ._roots import CollectionRoot
from ._streams import GONE, SHUTDOWN, Lease, StreamLimitError, StreamSlots, next_batch
from .engine import ChipEngine, ChipRequest, ChipStream, explain_empty

__all__ = ["FlightService", "load_tokens"]

logger = logging.getLogger("cogflight.server")

_CLIENT_ERRORS = frozenset(
    ("INVALID_ARGUMENT", "NOT_FOUND", "PERMISSION_DENIED", "UNAUTHENTICATED")
)


def _peer(context: flight.ServerCallContext) -> str:
    try:
        return str(context.peer())
    except Exception:  # a call context that is already gone
        return "?"


def _rows(collection: Collection, flt: Mapping[str, Any]) -> list[int]:
    """The index rows of the scenes a query's ``filter`` selects."""
    try:
        return [int(r) for r in select_rows(collection.table, **flt)]
    except CogflightError as exc:
        raise InvalidArgumentError(f"filter: {exc}") from exc


class FlightService(flight.FlightServerBase):  # type: ignore[misc]
    """Serves every Collection under ``root`` (see ``docs/wire-contract.md``).

    Args:
        location: where to listen, e.g. ``grpc://0.0.0.0:8815``.
        root: the Collections served.
        engine: the chip engine (one per process).
        locations: advertised locations for chip endpoints, placed by tile locality
            (default: this server's own location).
        default_shards: endpoints per query when the query names no shard count.
        max_streams: concurrent chip streams before new ones get UNAVAILABLE.
        stream_timeout_s: longest a chip stream may run (then DEADLINE_EXCEEDED).
        max_streams_per_token: concurrent chip streams one token may hold (None:
            ``max_streams``); clients without a token share one principal.
        tokens: bearer tokens (see :func:`load_tokens`); None disables auth.
        tls_certificates, verify_client, root_certificates: TLS and mutual TLS.
        usage_log: append one JSON line per finished chip stream there (``Metrics``).
    """

    def __init__(
        self,
        location: str,
        *,
        root: CollectionRoot,
        engine: ChipEngine,
        locations: Sequence[str] | None = None,
        default_shards: int | None = None,
        max_streams: int = 16,
        stream_timeout_s: float = 3600.0,
        max_streams_per_token: int | None = None,
        tokens: Mapping[str, frozenset[str] | None] | None = None,
        tls_certificates: list[tuple[bytes, bytes]] | None = None,
        verify_client: bool = False,
        root_certificates: bytes | None = None,
        worker: int = 0,
        usage_log: str | None = None,
    ) -> None:
        self.metrics = Metrics(engine.stats, self, usage_log=usage_log)
        auth = AuthFactory(tokens, refused=self.metrics.unauthenticated) if tokens else None
        middleware = {"auth": auth} if auth else None
        certs = [flight.CertKeyPair(c, k) for c, k in (tls_certificates or [])]
        mark_grpc_started()  # a process forked from here on cannot use gRPC
        super().__init__(
            location,
            middleware=middleware,
            tls_certificates=certs or None,
            verify_client=verify_client,
            root_certificates=root_certificates,
        )
        scheme, _, rest = location.partition("://")
        if scheme == "grpc+unix":  # a local socket: the path is the whole address
            self.location = location
        else:
            host = rest.rsplit(":", 1)[0] if ":" in rest else rest
            if host in ("0.0.0.0", "[::]", ""):
                host = "127.0.0.1"
            self.location = f"{scheme}://{host}:{self.port}"
        self.root = root
        self.engine = engine
        self.locations = list(locations) if locations else [self.location]
        self.default_shards = default_shards
        self.worker = worker
        self._slots = StreamSlots(max_streams, max_streams_per_token, stream_timeout_s)
        local_root = None if "://" in root.root else str(Path(root.root).resolve())
        self._redact = Redactor(p for p in (root.root, local_root) if p)
        install_traceback_filter()
        self._lock = threading.Lock()
        self._started = time.time()
        self._pool = ThreadPoolExecutor(
            max_workers=max(4, max_streams), thread_name_prefix="cogflight-flight"
        )
        # Actions (health, stats) on their own threads: never queued behind planning.
        self._control = ThreadPoolExecutor(max_workers=2, thread_name_prefix="cogflight-control")
        self._counters = {
            "streams": 0,
            "chips_sent": 0,
            "batches_sent": 0,
            "rejected": 0,
            "errors": 0,
            "cancelled": 0,
            "timed_out": 0,
        }

    # -- helpers ----------------------------------------------------------------------------
    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counters[key] += n

    def authorize(self, context: flight.ServerCallContext, name: str) -> None:
        """PERMISSION_DENIED unless the call's token may read Collection ``name``."""
        auth = context.get_middleware("auth")
        if auth is not None and auth.allowed is not None and name not in auth.allowed:
            raise PermissionDeniedError(
                f"this token may not read Collection {name!r}; use a token that lists it"
            )

    def _principal(self, context: flight.ServerCallContext) -> str:
        auth = context.get_middleware("auth")
        return auth.principal if auth is not None else "anonymous"

    def _refuse(
        self,
        exc: BaseException,
        request_id: str,
        call: str,
        context: flight.ServerCallContext,
        record: CallRecord,
    ) -> BaseException:
        """Count and log ``exc`` under ``request_id``; the clean exception the client gets."""
        code = code_of(exc)
        client = code in _CLIENT_ERRORS or isinstance(exc, StreamLimitError)
        kind = "rejected" if client else "errors"
        if code != "CANCELLED":  # else the client is gone; already counted as cancelled
            self._count(kind)
            self.metrics.refused(record, code, kind)
        if isinstance(exc, DeadlineExceededError):
            self._count("timed_out")
        peer, log = _peer(context), logging.LoggerAdapter(logger, {"request_id": request_id})
        if code == "INTERNAL":
            log.error(
                "request %s (%s from %s): internal error", request_id, call, peer, exc_info=exc
            )
        else:
            # Upstream and deadline trouble is the operator's; busy refusals are expected
            # under load (counted as rejected) and would flood the log at warning level.
            busy = isinstance(exc, StreamLimitError)
            trouble = code in ("UNAVAILABLE", "DEADLINE_EXCEEDED") and not busy
            emit = log.warning if trouble else log.info
            emit("request %s (%s from %s): %s: %s", request_id, call, peer, code, exc)
        return wire_error(exc, request_id, self._redact)

    def _guard(
        self,
        context: flight.ServerCallContext,
        call: str,
        fn: Any,
        *args: Any,
        request_id: str | None = None,
        record: CallRecord | None = None,
    ) -> Any:
        """Run a handler body on the service's own threads and map its errors.

        gRPC calls handlers on threads it owns; Python gives each call a fresh thread
        state there, and pyproj ties its PROJ context to the thread state in a way
        that leaves a dangling context behind between calls (a crash on the second
        call). Planning uses pyproj, so handler bodies run on stable Python threads;
        actions run on a pool of their own, so health checks never wait for planning.
        """
        record = record or CallRecord(call.partition(" ")[0], request_id or new_request_id())
        request_id = record.request_id
        pool = self._control if call.startswith("DoAction") else self._pool
        try:
            result = pool.submit(fn, *args).result()
        except BaseException as exc:
            self.metrics.answered(record, code_of(exc))
            raise self._refuse(exc, request_id, call, context, record) from exc
        self.metrics.answered(record, "OK")
        return result

    def _request(
        self, collection: Collection, query: Query, shard: tuple[int, int] | None
    ) -> ChipRequest:
        rows = _rows(collection, query.filter) if query.filter else None
        return ChipRequest.create(**query.request, rows=rows, shard=shard)

    # -- Flight methods -----------------------------------------------------------------------
    def list_flights(
        self, context: flight.ServerCallContext, criteria: bytes
    ) -> Iterator[flight.FlightInfo]:
        """One FlightInfo per Collection (descriptor path ``[NAME]``)."""
        auth = context.get_middleware("auth")
        allowed = auth.allowed if auth is not None else None

        def infos() -> list[flight.FlightInfo]:
            names = [n for n in self.root.names() if allowed is None or n in allowed]
            return [self._index_info(n) for n in names]

        yield from self._guard(context, "ListFlights", infos)

    def _index_info(self, name: str, flt: Mapping[str, Any] | None = None) -> flight.FlightInfo:
        collection = self.root.get(name)
        doc: dict[str, Any] = {"v": 1, "collection": name, "index": True}
        records = len(collection)
        if flt:  # only the rows of the scenes the filter selects
            doc["filter"] = dict(flt)
            records = len(_rows(collection, flt))
        endpoint = flight.FlightEndpoint(json.dumps(doc).encode(), [self.location])
        return flight.FlightInfo(
            collection.table.schema,
            flight.FlightDescriptor.for_path(name),
            [endpoint],
            records,
            -1,
        )

    def get_flight_info(
        self, context: flight.ServerCallContext, descriptor: flight.FlightDescriptor
    ) -> flight.FlightInfo:
        """Path ``[NAME]``: the index table. Command: a query, planned into shards."""
        return self._guard(context, "GetFlightInfo", self._flight_info, context, descriptor)

    def _flight_info(
        self, context: flight.ServerCallContext, descriptor: flight.FlightDescriptor
    ) -> flight.FlightInfo:
        if descriptor.descriptor_type == flight.DescriptorType.PATH:
            if len(descriptor.path) != 1:
                raise InvalidArgumentError("descriptor path: expected [collection name]")
            name = descriptor.path[0].decode("utf-8", "replace")
            parse_query({"v": 1, "collection": name, "index": True})  # validates the name
            self.authorize(context, name)
            return self._index_info(name)
        query = parse_query(descriptor.command)
        self.authorize(context, query.collection)
        collection = self.root.get(query.collection)
        if query.index:
            return self._index_info(query.collection, query.filter)
        count = query.shard_count or self.default_shards or len(self.locations)
        self._check_endpoints(query.shard[1] if query.shard is not None else count)
        # Placement sees every chip of the query (shards are cut before skip applies).
        request = dataclasses.replace(self._request(collection, query, None), skip=0)
        plan = self.engine.plan(collection, request)
        n = query.shard[1] if query.shard is not None else count
        places, sizes = self.engine.place(collection, plan, n, self.locations, request)
        picked = [query.shard[0]] if query.shard is not None else list(range(n))
        endpoints = [flight.FlightEndpoint(query.ticket((i, n)), places[i]) for i in picked]
        skip = int(query.request.get("skip") or 0)
        chips = sum(max(0, sizes[i] - skip) for i in picked)
        logger.info(
            "planned %r: %d chips of %s in %d endpoints",
            query.collection,
            chips,
            list(plan.shape),
            len(endpoints),
        )
        meta = b""
        if plan.total_chips == 0:
            meta = self._empty_warning(collection, request, "GetFlightInfo")
        return flight.FlightInfo(
            plan.schema, descriptor, endpoints, chips, chips * plan.chip_bytes, app_metadata=meta
        )

    def _empty_warning(
        self, collection: Collection, request: ChipRequest, method: str, request_id: str = "-"
    ) -> bytes:
        """The wire's empty-result warning (``{"warning": ...}``), also logged."""
        text = explain_empty(collection, request)
        logger.warning("%s %s: %s", method, request_id, text, extra={"request_id": request_id})
        return json.dumps({"warning": text}).encode()

    def get_schema(
        self, context: flight.ServerCallContext, descriptor: flight.FlightDescriptor
    ) -> flight.SchemaResult:
        """The schema get_flight_info would report."""
        info = self.get_flight_info(context, descriptor)
        return flight.SchemaResult(info.schema)

    def _check_endpoints(self, count: int) -> None:
        """Refuse a plan of more endpoints than the limit, before building any of them."""
        limit = self.engine.settings.max_endpoints
        if count > limit:
            raise LimitExceededError(
                f"shard: {count} endpoints asked, over the limit of {limit} (max_endpoints); "
                "ask for fewer shards"
            )

    def do_get(
        self, context: flight.ServerCallContext, ticket: flight.Ticket
    ) -> flight.FlightDataStream:
        """Stream a ticket: a server-issued one or a query JSON; batches as soon as ready."""
        rec = CallRecord("DoGet", new_request_id())
        return self._guard(context, "DoGet", self._do_get, context, ticket, rec, record=rec)

    def _do_get(
        self, context: flight.ServerCallContext, ticket: flight.Ticket, record: CallRecord
    ) -> flight.FlightDataStream:
        request_id = record.request_id
        query = parse_query(ticket.ticket)
        self.authorize(context, query.collection)
        collection = self.root.get(query.collection)
        record.collection = query.collection  # served: a bounded metric label from here on
        if query.index:
            table = collection.table
            if query.filter:
                table = table.take(pa.array(_rows(collection, query.filter), pa.int64()))
            return flight.RecordBatchStream(table)
        if query.shard is not None:
            self._check_endpoints(query.shard[1])
        request = self._request(collection, query, query.shard)
        if context.is_cancelled():  # the client left while this call waited for a thread
            self._count("cancelled")
            raise flight.FlightCancelledError("the client went away")
        lease = self._slots.acquire(self._principal(context))  # before planning: cheap refusals
        self._count("streams")
        try:
            stream = self.engine.stream(collection, request)
            lease.attach(stream)
        except BaseException:
            lease.release()
            raise
        if context.is_cancelled():  # the client left while the server planned
            lease.release()
            self._count("cancelled")
            raise flight.FlightCancelledError("the client went away")
        logger.info(
            "request %s: stream %r to %s: %d chips of %s, shard %s",
            request_id,
            query.collection,
            _peer(context),
            stream.chip_count,
            list(stream.shape),
            query.shard,
            extra={"request_id": request_id},
        )
        warning = None
        if stream.plan.total_chips == 0:
            warning = self._empty_warning(collection, request, "DoGet", request_id)
        batches = self._batches(context, lease, stream, query, record, warning)
        return flight.GeneratorStream(stream.plan.schema, lease.watch(batches))

    def _batches(
        self,
        context: flight.ServerCallContext,
        lease: Lease,
        stream: ChipStream,
        query: Query,
        record: CallRecord,
        warning: bytes | None = None,
    ) -> Iterator[tuple[pa.RecordBatch, pa.Buffer]]:
        sent = 0
        outcome, code = "cancelled", "CANCELLED"
        header_len: int | None = None
        tally = self.metrics.stream(record, lease.principal, _peer(context), query.shard)
        try:
            while True:
                batch = next_batch(context, lease, stream)
                if batch is GONE:
                    break
                if batch is None:
                    outcome, code = "done", "OK"
                    if warning is not None:  # the query makes no chip: say why, in-band
                        empty = pa.RecordBatch.from_pylist([], schema=stream.plan.schema)
                        yield empty, pa.py_buffer(warning)
                    break
                rb = batch.to_record_batch()
                if header_len is None:
                    header_len = ipc_header_length(rb)
                sent += rb.num_rows
                self._count("batches_sent")
                yield rb, alignment_padding(rb, header_len)
                tally.sent(rb.num_rows, rb.nbytes)  # gRPC took it: pyarrow asks for the next
        except GeneratorExit:  # pyarrow dropped the stream: the client went away
            raise
        except BaseException as exc:
            outcome, code = "failed", code_of(exc)
            raise self._refuse(exc, record.request_id, "DoGet", context, record) from exc
        finally:
            lease.release()
            with self._lock:
                self._counters["chips_sent"] += sent
                if outcome == "cancelled":
                    self._counters["cancelled"] += 1
            tally.finish(outcome, code)  # metrics, the usage record and the log line

    @property
    def uptime_s(self) -> float:
        """Seconds since the service started."""
        return time.time() - self._started

    def counters(self) -> dict[str, int]:
        """A snapshot of the stream counters (streams, chips_sent, rejected, errors, ...)."""
        with self._lock:
            return dict(self._counters)

    @property
    def active_streams(self) -> int:
        """Chip streams holding a slot now."""
        return self._slots.active

    @property
    def draining(self) -> bool:
        """Whether the service refuses new streams (shutdown began)."""
        return self._slots.draining

    def drain(self, timeout_s: float) -> int:
        """Refuse new streams, let running ones finish for ``timeout_s``, cancel the rest.

        Returns how many streams were cancelled. Call it before ``shutdown()``, from a
        thread that is not serving a call.
        """
        self._slots.start_draining()
        if self._slots.wait_idle(timeout_s):
            return 0
        cancelled = self._slots.cancel_all(SHUTDOWN)
        logger.warning(
            "drain: %d streams still running after %.1f s, cancelled", cancelled, timeout_s
        )
        self._slots.wait_idle(5.0)
        return cancelled

    def close(self) -> None:
        """Release the handler threads and any stream left (after ``shutdown()``)."""
        self._slots.start_draining()
        self._slots.cancel_all(SHUTDOWN)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._control.shutdown(wait=False, cancel_futures=True)

    def list_actions(self, context: flight.ServerCallContext) -> list[tuple[str, str]]:
        """health, collections, describe, stats."""
        return list(ACTIONS.items())

    def do_action(
        self, context: flight.ServerCallContext, action: flight.Action
    ) -> Iterator[flight.Result]:
        """Run an action; each returns one JSON document."""
        doc = self._guard(context, f"DoAction {action.type}", run_action, self, context, action)
        yield flight.Result(json.dumps(doc, default=str).encode())
