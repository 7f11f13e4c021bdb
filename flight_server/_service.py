"""The Arrow Flight service: Collections as flights, tickets as queries, chips as tensors.

A thin layer over :class:`ChipEngine` and :class:`CollectionRoot`: it parses the
wire contract, authorizes, maps errors to Flight status codes and streams
RecordBatches as soon as the engine produces them.

Status codes: INVALID_ARGUMENT for bad queries, NOT_FOUND for unknown
Collections, UNAUTHENTICATED / PERMISSION_DENIED for auth, UNAVAILABLE for
upstream storage and for a server at its stream limit, INTERNAL only for bugs.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
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
    ChipReadError,
    CogflightError,
    InvalidArgumentError,
    status_code,
    to_flight,
)
from cogflight_core._fork import mark_grpc_started

from ._query import Query, parse_query
from ._roots import CollectionRoot
from .engine import ChipEngine, ChipRequest

__all__ = ["FlightService", "load_tokens"]

logger = logging.getLogger("cogflight.server")

ACTIONS = {
    "health": "Liveness: status, Collections served, uptime, process id.",
    "collections": "Every Collection served: name, scenes, bands.",
    "describe": "One Collection's summary; body: the Collection name.",
    "stats": "Streams, chips, requests, bytes fetched, cache hit rate, errors.",
}


def load_tokens(path: str | os.PathLike[str]) -> dict[str, frozenset[str] | None]:
    """Read a token file: one ``TOKEN`` (all Collections) or ``TOKEN name,name`` per line."""
    tokens: dict[str, frozenset[str] | None] = {}
    for n, raw in enumerate(Path(path).read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) > 2 or len(parts[0]) < 16:
            raise ValueError(
                f"{path}:{n}: expected 'TOKEN [collection,...]' with a token of "
                "at least 16 characters"
            )
        tokens[parts[0]] = frozenset(parts[1].split(",")) if len(parts) == 2 else None
    if not tokens:
        raise ValueError(f"{path}: no tokens")
    return tokens


class _AuthMiddleware(flight.ServerMiddleware):  # type: ignore[misc]
    def __init__(self, allowed: frozenset[str] | None) -> None:
        self.allowed = allowed


class _AuthFactory(flight.ServerMiddlewareFactory):  # type: ignore[misc]
    """Bearer tokens: ``authorization: Bearer <token>`` on every call."""

    def __init__(self, tokens: Mapping[str, frozenset[str] | None]) -> None:
        self._tokens = [(t.encode(), allowed) for t, allowed in tokens.items()]

    def start_call(self, info: flight.CallInfo, headers: dict[str, list[str]]) -> _AuthMiddleware:
        values = headers.get("authorization") or headers.get("Authorization") or []
        if not values:
            raise flight.FlightUnauthenticatedError(
                "missing credentials: send the header 'authorization: Bearer <token>'"
            )
        scheme, _, token = str(values[0]).partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise flight.FlightUnauthenticatedError("expected 'authorization: Bearer <token>'")
        given = token.strip().encode()
        match = None
        for known, allowed in self._tokens:  # compare with every token, in constant time
            if hmac.compare_digest(known, given):
                match = (known, allowed)
        if match is None:
            raise flight.FlightUnauthenticatedError("invalid token")
        return _AuthMiddleware(match[1])


def _varint_len(n: int) -> int:
    size = 1
    while n >= 128:
        n >>= 7
        size += 1
    return size


def _ipc_header_length(batch: pa.RecordBatch) -> int:
    """Length of a batch's IPC metadata (the same for any row count of one schema)."""
    data = batch.slice(0, min(1, batch.num_rows)).serialize()
    return int.from_bytes(data.to_pybytes()[4:8], "little")


def _alignment_padding(batch: pa.RecordBatch, header_len: int) -> pa.Buffer:
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


def _to_flight(exc: BaseException) -> BaseException:
    """The Flight exception a client should see for ``exc`` (the one status table)."""
    if isinstance(exc, flight.FlightError):
        return exc  # type: ignore[no-any-return]
    code = status_code(exc)
    if code == "INTERNAL":
        logger.error("internal error", exc_info=exc)
        return to_flight(exc, f"internal error ({type(exc).__name__}); see server logs")
    if isinstance(exc, ChipReadError):
        return to_flight(exc, f"upstream storage: {exc}")
    return to_flight(exc)


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
        locations: advertised locations for chip endpoints, spread round-robin
            (default: this server's own location).
        default_shards: endpoints per query when the query names no shard count.
        max_streams: concurrent chip streams before new ones get UNAVAILABLE.
        tokens: bearer tokens (see :func:`load_tokens`); None disables auth.
        tls_certificates, verify_client, root_certificates: TLS and mutual TLS.
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
        tokens: Mapping[str, frozenset[str] | None] | None = None,
        tls_certificates: list[tuple[bytes, bytes]] | None = None,
        verify_client: bool = False,
        root_certificates: bytes | None = None,
        worker: int = 0,
    ) -> None:
        middleware = {"auth": _AuthFactory(tokens)} if tokens else None
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
        self._max_streams = max_streams
        self._active = 0
        self._lock = threading.Lock()
        self._started = time.time()
        self._pool = ThreadPoolExecutor(
            max_workers=max(4, max_streams), thread_name_prefix="cogflight-flight"
        )
        self._counters = {
            "streams": 0,
            "chips_sent": 0,
            "batches_sent": 0,
            "rejected": 0,
            "errors": 0,
            "cancelled": 0,
        }

    # -- helpers ----------------------------------------------------------------------------
    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counters[key] += n

    def _authorize(self, context: flight.ServerCallContext, name: str) -> None:
        auth = context.get_middleware("auth")
        if auth is not None and auth.allowed is not None and name not in auth.allowed:
            raise flight.FlightUnauthorizedError(f"this token may not read Collection {name!r}")

    def _guard(self, fn: Any, *args: Any) -> Any:
        """Run a handler body on the service's own threads and map its errors.

        gRPC calls handlers on threads it owns; Python gives each call a fresh thread
        state there, and pyproj ties its PROJ context to the thread state in a way
        that leaves a dangling context behind between calls (a crash on the second
        call). Planning uses pyproj, so handler bodies run on stable Python threads.
        """
        try:
            return self._pool.submit(fn, *args).result()
        except BaseException as exc:
            rejected = status_code(exc) in ("INVALID_ARGUMENT", "NOT_FOUND")
            self._count("rejected" if rejected else "errors")
            raise _to_flight(exc) from exc

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

        yield from self._guard(infos)

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
        return self._guard(self._flight_info, context, descriptor)

    def _flight_info(
        self, context: flight.ServerCallContext, descriptor: flight.FlightDescriptor
    ) -> flight.FlightInfo:
        if descriptor.descriptor_type == flight.DescriptorType.PATH:
            if len(descriptor.path) != 1:
                raise InvalidArgumentError("descriptor path: expected [collection name]")
            name = descriptor.path[0].decode("utf-8", "replace")
            parse_query({"v": 1, "collection": name, "index": True})  # validates the name
            self._authorize(context, name)
            return self._index_info(name)
        query = parse_query(descriptor.command)
        self._authorize(context, query.collection)
        collection = self.root.get(query.collection)
        if query.index:
            return self._index_info(query.collection, query.filter)
        plan = self.engine.plan(collection, self._request(collection, query, query.shard))
        if query.shard is not None:
            shards = [query.shard]
        else:
            count = query.shard_count or self.default_shards or len(self.locations)
            shards = [(i, count) for i in range(count)]
        endpoints = [
            flight.FlightEndpoint(query.ticket(s), [self.locations[k % len(self.locations)]])
            for k, s in enumerate(shards)
        ]
        chips = plan.total_chips if query.shard is None else plan.chips
        logger.info(
            "planned %r: %d chips of %s in %d endpoints",
            query.collection,
            chips,
            list(plan.shape),
            len(endpoints),
        )
        return flight.FlightInfo(plan.schema, descriptor, endpoints, chips, chips * plan.chip_bytes)

    def get_schema(
        self, context: flight.ServerCallContext, descriptor: flight.FlightDescriptor
    ) -> flight.SchemaResult:
        """The schema get_flight_info would report."""
        info = self.get_flight_info(context, descriptor)
        return flight.SchemaResult(info.schema)

    def do_get(
        self, context: flight.ServerCallContext, ticket: flight.Ticket
    ) -> flight.FlightDataStream:
        """Stream a ticket: a server-issued one or a query JSON; batches as soon as ready."""
        return self._guard(self._do_get, context, ticket)

    def _do_get(
        self, context: flight.ServerCallContext, ticket: flight.Ticket
    ) -> flight.FlightDataStream:
        query = parse_query(ticket.ticket)
        self._authorize(context, query.collection)
        collection = self.root.get(query.collection)
        if query.index:
            table = collection.table
            if query.filter:
                table = table.take(pa.array(_rows(collection, query.filter), pa.int64()))
            return flight.RecordBatchStream(table)
        request = self._request(collection, query, query.shard)
        with self._lock:
            if self._active >= self._max_streams:
                raise flight.FlightUnavailableError(
                    f"server busy: {self._active} streams in progress (limit "
                    f"{self._max_streams}); retry later or add replicas"
                )
            self._active += 1
            self._counters["streams"] += 1
        try:
            stream = self.engine.stream(collection, request)
        except BaseException:
            with self._lock:
                self._active -= 1
            raise
        peer = context.peer()
        logger.info(
            "stream %r to %s: %d chips of %s, shard %s",
            query.collection,
            peer,
            stream.chip_count,
            list(stream.shape),
            query.shard,
        )
        return flight.GeneratorStream(
            stream.plan.schema, self._batches(context, stream, query, time.perf_counter())
        )

    def _batches(
        self, context: flight.ServerCallContext, stream: Any, query: Query, started: float
    ) -> Iterator[pa.RecordBatch]:
        sent = 0
        finished = False
        header_len: int | None = None
        try:
            for batch in stream:
                if context.is_cancelled():  # the client went away: stop, free the work
                    break
                rb = batch.to_record_batch()
                if header_len is None:
                    header_len = _ipc_header_length(rb)
                sent += rb.num_rows
                self._count("batches_sent")
                yield rb, _alignment_padding(rb, header_len)
            else:
                finished = True
        except GeneratorExit:
            raise
        except BaseException as exc:
            self._count("errors")
            raise _to_flight(exc) from exc
        finally:
            stream.close()
            with self._lock:
                self._active -= 1
                self._counters["chips_sent"] += sent
                if not finished:
                    self._counters["cancelled"] += 1
            logger.info(
                "stream %r %s: %d chips in %.2f s",
                query.collection,
                "done" if finished else "stopped",
                sent,
                time.perf_counter() - started,
            )

    def close(self) -> None:
        """Release the handler threads (after ``shutdown()``)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def list_actions(self, context: flight.ServerCallContext) -> list[tuple[str, str]]:
        """health, collections, describe, stats."""
        return list(ACTIONS.items())

    def do_action(
        self, context: flight.ServerCallContext, action: flight.Action
    ) -> Iterator[flight.Result]:
        """Run an action; each returns one JSON document."""
        doc = self._guard(self._action, context, action)
        yield flight.Result(json.dumps(doc, default=str).encode())

    def _action(self, context: flight.ServerCallContext, action: flight.Action) -> Any:
        kind = action.type
        body = action.body.to_pybytes() if action.body is not None else b""
        if kind == "health":
            return {
                "status": "ok",
                "collections": len(self.root.names()),
                "uptime_s": round(time.time() - self._started, 1),
                "pid": os.getpid(),
                "worker": self.worker,
                "location": self.location,
            }
        if kind == "collections":
            auth = context.get_middleware("auth")
            out = []
            for name in self.root.names():
                if auth is not None and auth.allowed is not None and name not in auth.allowed:
                    continue
                c = self.root.get(name)
                out.append({"name": name, "scenes": len(c), "bands": list(c.band_names)})
            return out
        if kind == "describe":
            name = body.decode("utf-8", "replace").strip()
            parse_query({"v": 1, "collection": name, "index": True})
            self._authorize(context, name)
            return self.root.get(name).describe()
        if kind == "stats":
            s = self.engine.stats()
            with self._lock:
                counters = dict(self._counters)
                active = self._active
            return {
                **counters,
                "streams_active": active,
                "worker": self.worker,
                "requests": s.requests,
                "bytes_fetched": s.bytes_fetched,
                "tiles_decoded": s.tiles_decoded,
                "chips": s.chips,
                "engine_errors": s.errors,
                "retries": s.retries,
                "cache_hit_rate": round(s.cache.hit_rate, 4),
                "cache_bytes": s.cache.bytes,
                "cache_entries": s.cache.entries,
            }
        raise InvalidArgumentError(
            f"action: unknown action {kind!r}; available: {', '.join(ACTIONS)}"
        )
