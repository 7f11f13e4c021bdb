"""Connecting to a cogflight server, or starting one inside this process.

Remote use needs only pyarrow (and cogflight_core). ``connect()`` without a
location starts the Flight service in this process on a local (unix) socket
over ``root``, so a training job needs no server started by hand; the server
package is imported only then.

A client is thread-safe and pickles as its address. Its calls go through the
transport of the process it is used in (see ``_transport``), chosen on first
use there: direct gRPC channels, or, in a process forked after gRPC started (a
DataLoader worker forked by default on Linux), helper processes (``_relay``).
A forked child never touches the parent's channels, and never shuts down a
server the parent started.

Chip streams (:meth:`Client.chips`, :meth:`Client.read_endpoint`) survive a lost
server: a stream broken by ``UNAVAILABLE`` is opened again at the endpoint's
next location, or after a wait at the same one, and resumes after the last chip
delivered (``_retry``; budget: ``retries`` and ``retry_wait_s``). Metadata calls
are not retried. An embedded server still running at interpreter exit is shut
down first (an :mod:`atexit` hook), so its engine's threads are gone before the
interpreter finalises.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import tempfile
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Unpack

import pyarrow as pa
from pyarrow import flight

from cogflight_core import (
    ChipQuery,
    CogflightError,
    InvalidArgumentError,
    MissingDependencyError,
    UnavailableError,
)
from cogflight_core._fork import mark_grpc_started

from ._query import build_index_query, build_query
from ._retry import DEFAULT_RETRY, RetryPolicy, resumable
from ._transport import DirectTransport, Transport, keep_inherited, open_transport, warn_empty

__all__ = ["Client", "connect"]

logger = logging.getLogger("cogflight.client")


class Client:
    """A connection to a cogflight Flight server (see :func:`connect`).

    ``retries`` (default 6) broken-stream attempts in a row, waiting ``retry_wait_s``
    (default 0.5 s, doubling up to 5 s) between rounds over an endpoint's locations.
    """

    def __init__(
        self,
        location: str,
        *,
        token: str | None = None,
        tls_root_certs: bytes | None = None,
        cert_chain: bytes | None = None,
        private_key: bytes | None = None,
        embedded: Any = None,
        retries: int = DEFAULT_RETRY.retries,
        retry_wait_s: float = DEFAULT_RETRY.wait_s,
    ) -> None:
        self.location = location
        self.retry = RetryPolicy(retries, retry_wait_s, max(DEFAULT_RETRY.max_wait_s, retry_wait_s))
        self._peer_list: list[str] | None = None
        self._token = token
        self._tls = {
            k: v
            for k, v in (
                ("tls_root_certs", tls_root_certs),
                ("cert_chain", cert_chain),
                ("private_key", private_key),
            )
            if v is not None
        }
        self._embedded = embedded
        self._owner = os.getpid()  # the process that started the embedded server
        self._lock = threading.Lock()
        self._pid = os.getpid()  # the process ``_current`` belongs to
        self._current: Transport | None = None
        self._closed = False

    # -- connection management ------------------------------------------------------------
    @property
    def embedded(self) -> bool:
        """Whether this client started the server it talks to."""
        return self._embedded is not None

    def __getstate__(self) -> dict[str, Any]:
        """Pickle as an address: the receiving process connects on first use."""
        return {
            "location": self.location,
            "token": self._token,
            "tls": self._tls,
            "retry": (self.retry.retries, self.retry.wait_s),
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        retries, wait = state.get("retry", (DEFAULT_RETRY.retries, DEFAULT_RETRY.wait_s))
        self.__init__(  # type: ignore[misc]
            state["location"],
            token=state["token"],
            retries=retries,
            retry_wait_s=wait,
            **state["tls"],
        )

    def _transport(self) -> Transport:
        """This process's transport, chosen on first use in it."""
        with self._lock:
            if self._closed:
                raise CogflightError("the client is closed")
            if self._pid != os.getpid():  # forked: what the parent opened stays the parent's
                if self._current is not None:
                    keep_inherited(self._current)
                self._pid, self._current = os.getpid(), None
            if self._current is None:
                self._current = open_transport(self.location, self._token, self._tls)
            return self._current

    def connection(self, location: str | None = None) -> flight.FlightClient:
        """This process's pyarrow FlightClient for ``location`` (default: the server's)."""
        transport = self._transport()
        if not isinstance(transport, DirectTransport):
            raise UnavailableError(
                "this process was forked after gRPC started and cannot hold a FlightClient; "
                "use the Client's methods (they go through a helper process)"
            )
        return transport.connection(location)

    def close(self) -> None:
        """Close connections (and stop the embedded server, if this client started one)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            transport, self._current = self._current, None
            mine = self._pid == os.getpid()
        if transport is not None:
            if mine:
                transport.close()
            else:  # a parent's channels: closing or freeing them here would hang
                keep_inherited(transport)
        if self._embedded is not None and os.getpid() == self._owner:
            server, self._embedded = self._embedded, None
            _EMBEDDED.discard(self)
            server.shutdown()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.location!r}{', embedded' if self.embedded else ''})"

    # -- metadata -----------------------------------------------------------------------------
    def _action(self, kind: str, body: bytes = b"") -> Any:
        results = self._transport().action(kind, body)
        return json.loads(results[0]) if results else None

    def health(self) -> dict[str, Any]:
        """The server's health document."""
        return self._action("health")  # type: ignore[no-any-return]

    def stats(self) -> dict[str, Any]:
        """The server's counters: streams, chips, requests, bytes, cache hit rate, errors."""
        return self._action("stats")  # type: ignore[no-any-return]

    def collections(self) -> list[dict[str, Any]]:
        """Every Collection this client may read: name, scenes, bands."""
        return self._action("collections")  # type: ignore[no-any-return]

    def describe(self, name: str) -> dict[str, Any]:
        """One Collection's summary (scenes, bands, CRSs, time span, extent, columns)."""
        return self._action("describe", name.encode())  # type: ignore[no-any-return]

    def index(self, name: str, *, filter: Mapping[str, Any] | None = None) -> pa.Table:
        """A Collection's index as an Arrow table (GeoParquet metadata included).

        Args:
            name: the Collection.
            filter: the wire contract's scene filter (date range, cloud cover, bbox,
                ids, where): only the rows of the scenes it selects, chosen by the server.
        """
        if filter is None:
            descriptor = flight.FlightDescriptor.for_path(name)
        else:
            descriptor = flight.FlightDescriptor.for_command(
                json.dumps(build_index_query(name, filter))
            )
        transport = self._transport()
        info = transport.flight_info(descriptor)
        return transport.read_all(info.endpoints[0].ticket.ticket, None)

    # -- chips -----------------------------------------------------------------------------------
    def query(self, collection: str, **fields: Unpack[ChipQuery]) -> dict[str, Any]:
        """The v1 query document for these fields (see :meth:`chips`), without a call.

        Checked against the wire contract here; what needs geometry or the Collection
        (CRSs, band names, columns) is checked by the server.
        """
        return build_query(collection, **fields)

    def plan(
        self, collection: str, *, shards: int | None = None, **fields: Unpack[ChipQuery]
    ) -> flight.FlightInfo:
        """Plan a query: the FlightInfo with its schema and ``shards`` endpoints."""
        doc = build_query(collection, **fields)
        if shards is not None:
            if "shard" in doc:
                raise InvalidArgumentError("give shards= (endpoints to plan) or shard=, not both")
            doc["shard"] = {"count": int(shards)}
        descriptor = flight.FlightDescriptor.for_command(json.dumps(doc))
        info = self._transport().flight_info(descriptor)
        if info.total_records == 0:
            warn_empty(info.app_metadata)
        return info

    def read_endpoint(self, endpoint: flight.FlightEndpoint) -> Iterator[pa.RecordBatch]:
        """Stream one endpoint's batches from its advertised locations, in order.

        A broken stream is retried at the next location (then, after a wait, the first
        again) and resumed after the last chip delivered: every chip arrives once.
        """
        locations: list[str | None] = []
        for loc in endpoint.locations:
            uri = loc.uri.decode()
            locations.append(None if uri.startswith("arrow-flight-reuse-connection") else uri)
        yield from self._stream(endpoint.ticket.ticket, locations or [None])

    def _stream(self, ticket: bytes, locations: list[str | None]) -> Iterator[pa.RecordBatch]:
        transport = self._transport()
        yield from resumable(
            transport.stream, ticket, locations, self.retry, reconnect=transport.reconnect
        )

    def chips(self, collection: str, **fields: Unpack[ChipQuery]) -> Iterator[pa.RecordBatch]:
        """Chips as RecordBatches, streamed as the server produces them.

        The fields are the wire contract's (:class:`cogflight_core.ChipQuery`,
        docs/wire-contract.md); ``geometries`` may be bbox tuples, (x, y) points (with
        ``chip_size``), shapely geometries, WKB, GeoJSON, a pyarrow WKB array or numpy
        arrays of boxes or points.
        """
        ticket = json.dumps(build_query(collection, **fields)).encode()
        yield from self._stream(ticket, [None, *self._peers()])

    def _peers(self) -> list[str]:
        """The other locations the server advertises (its workers or replicas), once asked.

        A stream of :meth:`chips` broken because this server went away resumes at them.
        """
        if self._peer_list is None:
            try:
                doc = self.health()
            except CogflightError:  # an old server or none: no failover, nothing else changes
                return []
            own = doc.get("location")
            self._peer_list = [str(x) for x in doc.get("locations", []) if x != own]
        return self._peer_list


def connect(
    location: str | None = None,
    *,
    root: str | os.PathLike[str] | None = None,
    token: str | None = None,
    tls_root_certs: bytes | None = None,
    cert_chain: bytes | None = None,
    private_key: bytes | None = None,
    cache_bytes: int | str | None = None,
    allow: Sequence[str] | None = None,
    retries: int = DEFAULT_RETRY.retries,
    retry_wait_s: float = DEFAULT_RETRY.wait_s,
) -> Client:
    """Connect to a server, or start one in this process when ``location`` is None.

    Args:
        location: e.g. ``grpc://host:8815`` or ``grpc+tls://host:8815``.
        root: Collections to serve in embedded mode (default ``./collections``).
        token: bearer token for servers started with ``--token-file``.
        tls_root_certs, cert_chain, private_key: TLS trust and client certificate (PEM).
        cache_bytes: decoded-tile cache of the embedded server.
        allow: what the embedded server may read. By default it reads any href its
            Collections name: it runs in your process, over your Collections, with your
            permissions, like any library you call. Give prefixes (local directories,
            ``s3://bucket/prefix``, ``https://host/path``) to restrict it, as a shared
            server is (``cogflight serve --allow``): then only ``root`` and these.
        retries: attempts in a row to reopen a broken chip stream (default 6).
        retry_wait_s: first wait between rounds over an endpoint's locations (default
            0.5 s, doubling up to 5 s).
    """
    if location is not None:
        if root is not None:
            raise CogflightError("give either a location (remote) or a root (embedded), not both")
        return Client(
            location,
            token=token,
            tls_root_certs=tls_root_certs,
            cert_chain=cert_chain,
            private_key=private_key,
            retries=retries,
            retry_wait_s=retry_wait_s,
        )
    try:
        from flight_server import AccessPolicy, Server
    except ImportError as exc:  # pragma: no cover - both ship in the cogflight distribution
        raise MissingDependencyError(
            "embedded mode needs the cogflight server package: pip install cogflight"
        ) from exc
    root_path = Path(root if root is not None else "collections")
    if not root_path.is_dir() and "://" not in str(root_path):
        raise CogflightError(
            f"no Collections directory at {root_path.resolve()}; save a "
            "Collection there or pass root=..."
        )
    sock = Path(tempfile.gettempdir()) / f"cogflight-{os.getpid()}-{uuid.uuid4().hex[:8]}.sock"
    mark_grpc_started()
    policy = (
        AccessPolicy.open()
        if allow is None
        else AccessPolicy.for_root(str(root_path), [str(a) for a in allow])
    )
    server = Server(
        str(root_path), unix_socket=str(sock), cache_bytes=cache_bytes, workers=1, policy=policy
    ).start()
    logger.info("embedded cogflight server over %s at %s", root_path, server.location)
    client = Client(server.location, embedded=server, retries=retries, retry_wait_s=retry_wait_s)
    if not _EMBEDDED_HOOK:  # registered after flight_server's own hooks: runs before them
        atexit.register(_close_embedded_at_exit)
        _EMBEDDED_HOOK.append(True)
    _EMBEDDED.add(client)
    return client


# Clients that started an embedded server not yet shut down (held: the server runs on).
_EMBEDDED: set[Client] = set()
_EMBEDDED_HOOK: list[bool] = []


def _close_embedded_at_exit() -> None:
    """Shut down embedded servers still running (their engines too) before finalisation."""
    for client in list(_EMBEDDED):
        if client._owner == os.getpid():
            try:
                client.close()
            except Exception:  # exiting anyway: the next server still gets its turn
                logger.debug("closing an embedded server at exit failed", exc_info=True)
    _EMBEDDED.clear()
