"""Connecting to a cogflight server, or starting one inside this process.

Remote use needs only pyarrow. ``connect()`` without a location starts the
Flight service in this process on a local (unix) socket over ``root``, so a
training job needs no server started by hand; the server package is imported
only then. A client is thread-safe. gRPC is not fork-safe: after ``fork``
(DataLoader workers) a client opens a fresh connection on first use, and when
the parent had already started gRPC, it makes its calls through helper
processes (see ``_relay``), one per call in progress.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
from pyarrow import flight

from cogflight_core import parse_query

from ._errors import CogflightError, InvalidArgumentError, MissingDependencyError, call, translated
from ._fork import grpc_inherited, mark_grpc_started
from ._query import build_query
from ._relay import Relay

__all__ = ["Client", "connect"]

logger = logging.getLogger("cogflight.client")

# FlightClients a forked process inherited: freeing them runs gRPC teardown on channels
# whose threads stayed in the parent, which hangs. They are kept until the process ends.
_INHERITED: list[Any] = []


def _keep_inherited(clients: Mapping[str, Any]) -> None:
    _INHERITED.extend(clients.values())


class Client:
    """A connection to a cogflight Flight server (see :func:`connect`)."""

    def __init__(
        self,
        location: str,
        *,
        token: str | None = None,
        tls_root_certs: bytes | None = None,
        cert_chain: bytes | None = None,
        private_key: bytes | None = None,
        embedded: Any = None,
    ) -> None:
        self.location = location
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
        self._owner = os.getpid()  # the process that may stop the embedded server
        self._pid = os.getpid()  # the process whose channels ``_clients`` holds
        self._lock = threading.Lock()
        self._clients: dict[str, flight.FlightClient] = {}
        self._relays: list[Relay] = []  # idle helpers of this process
        self._relays_pid = os.getpid()
        self._closed = False

    # -- connection management ------------------------------------------------------------
    @property
    def embedded(self) -> bool:
        """Whether this client started the server it talks to."""
        return self._embedded is not None

    def __getstate__(self) -> dict[str, Any]:
        """Pickle as an address: the receiving process connects on first use."""
        return {"location": self.location, "token": self._token, "tls": self._tls}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["location"], token=state["token"], **state["tls"])  # type: ignore[misc]

    def _options(self) -> flight.FlightCallOptions:
        if self._token is None:
            return flight.FlightCallOptions()
        return flight.FlightCallOptions(
            headers=[(b"authorization", f"Bearer {self._token}".encode())]
        )

    def connection(self, location: str | None = None) -> flight.FlightClient:
        """The FlightClient for ``location`` (default: the server's), one per process."""
        if self._closed:
            raise CogflightError("the client is closed")
        where = location or self.location
        with self._lock:
            if os.getpid() != self._pid:  # forked: the parent's channels are unusable here
                _keep_inherited(self._clients)
                self._clients = {}
                self._pid = os.getpid()
            fc = self._clients.get(where)
            if fc is None:
                mark_grpc_started()
                fc = self._clients[where] = call(flight.connect, where, **self._tls)
            return fc

    def _relayed(self) -> bool:
        """Whether this process must call through helper processes (gRPC inherited)."""
        if self._closed:
            raise CogflightError("the client is closed")
        return grpc_inherited()

    @contextmanager
    def _relay(self) -> Iterator[Relay]:
        """An idle helper for one call (a new one when all are busy, as in nested calls)."""
        with self._lock:
            if self._relays_pid != os.getpid():  # a helper belongs to the process that made it
                self._relays, self._relays_pid = [], os.getpid()
            relay = self._relays.pop() if self._relays else None
        if relay is None:
            relay = Relay(self.location, self._token, self._tls)
        try:
            yield relay
        finally:
            with self._lock:
                if self._closed or self._relays_pid != os.getpid():
                    relay.close()
                else:
                    self._relays.append(relay)

    def close(self) -> None:
        """Close connections (and stop the embedded server, if this client started one)."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            clients, self._clients = self._clients, {}
            relays = self._relays if self._relays_pid == os.getpid() else []
            self._relays = []
        for relay in relays:
            relay.close()
        if os.getpid() == self._pid:
            for fc in clients.values():
                fc.close()
        else:  # a parent's channels: closing or freeing them here would hang
            _keep_inherited(clients)
        if os.getpid() == self._owner and self._embedded is not None:
            self._embedded.shutdown()
            self._embedded = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.location!r}{', embedded' if self.embedded else ''})"

    # -- metadata -----------------------------------------------------------------------------
    def _action(self, kind: str, body: bytes = b"") -> Any:
        if self._relayed():
            with self._relay() as relay:
                bodies = relay.action(kind, body)
            return json.loads(bodies[0]) if bodies else None
        with translated():
            results = list(
                self.connection().do_action(flight.Action(kind, body), options=self._options())
            )
        return json.loads(results[0].body.to_pybytes()) if results else None

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

    def index(self, name: str) -> pa.Table:
        """A Collection's index as an Arrow table (GeoParquet metadata included)."""
        if self._relayed():
            with self._relay() as relay:
                info = relay.flight_info(flight.FlightDescriptor.for_path(name))
                return relay.read_all(info.endpoints[0].ticket.ticket, None)
        with translated():
            fc = self.connection()
            info = fc.get_flight_info(
                flight.FlightDescriptor.for_path(name), options=self._options()
            )
            return fc.do_get(info.endpoints[0].ticket, options=self._options()).read_all()

    # -- chips -----------------------------------------------------------------------------------
    def query(self, collection: str, **kwargs: Any) -> dict[str, Any]:
        """The v1 query document for these arguments (see :meth:`chips`).

        Checked against the wire contract here, without a call; what needs geometry
        or the Collection (CRSs, band names, columns) is checked by the server.
        """
        doc = build_query(collection, **kwargs)
        parse_query(doc)
        return doc

    def plan(
        self, collection: str, *, shards: int | None = None, **kwargs: Any
    ) -> flight.FlightInfo:
        """Plan a query: the FlightInfo with its schema and shard endpoints."""
        doc = build_query(collection, **kwargs)
        if shards is not None:
            if "shard" in doc:
                raise InvalidArgumentError("give shards= (endpoints to plan) or shard=, not both")
            doc["shard"] = {"count": int(shards)}
        descriptor = flight.FlightDescriptor.for_command(json.dumps(doc))
        if self._relayed():
            with self._relay() as relay:
                return relay.flight_info(descriptor)
        with translated():
            return self.connection().get_flight_info(descriptor, options=self._options())

    def read_endpoint(self, endpoint: flight.FlightEndpoint) -> Iterator[pa.RecordBatch]:
        """Stream one endpoint's batches, from its advertised location when it has one."""
        where = endpoint.locations[0].uri.decode() if endpoint.locations else None
        if where and where.startswith("arrow-flight-reuse-connection"):
            where = None
        yield from self._stream(endpoint.ticket, where)

    def _stream(self, ticket: flight.Ticket, where: str | None) -> Iterator[pa.RecordBatch]:
        if self._relayed():
            with self._relay() as relay:
                yield from relay.stream(ticket.ticket, where)
            return
        with translated():
            reader = self.connection(where).do_get(ticket, options=self._options())
        try:
            while True:
                with translated():
                    try:
                        chunk = reader.read_chunk()
                    except StopIteration:
                        return
                yield chunk.data
        finally:
            reader.cancel()  # stops the server's work when the consumer stops early

    def chips(
        self,
        collection: str,
        *,
        geometries: Any,
        geometry_crs: str = "EPSG:4326",
        bands: Sequence[str] | None = None,
        filter: Mapping[str, Any] | None = None,
        chip_size: int | Sequence[int] | None = None,
        resolution: float | Sequence[float] | None = None,
        crs: str | None = None,
        resampling: str | None = None,
        time_series: bool | None = None,
        mask: bool | None = None,
        all_touched: bool | None = None,
        dtype: str | None = None,
        scale_offset: bool | None = None,
        batch_rows: int | None = None,
        columns: Sequence[str] | None = None,
        shard: Mapping[str, int] | None = None,
        on_error: str | None = None,
    ) -> Iterator[pa.RecordBatch]:
        """Chips as RecordBatches, streamed as the server produces them.

        Arguments are the wire contract's fields (docs/wire-contract.md);
        ``geometries`` may be bbox tuples, (x, y) points (with ``chip_size``), shapely
        geometries, WKB or GeoJSON.
        """
        fields = dict(locals())  # exactly the parameters above: build_query's own
        del fields["self"]
        doc = build_query(**fields)
        yield from self._stream(flight.Ticket(json.dumps(doc).encode()), None)


def connect(
    location: str | None = None,
    *,
    root: str | os.PathLike[str] | None = None,
    token: str | None = None,
    tls_root_certs: bytes | None = None,
    cert_chain: bytes | None = None,
    private_key: bytes | None = None,
    cache_bytes: int | str | None = None,
) -> Client:
    """Connect to a server, or start one in this process when ``location`` is None.

    Args:
        location: e.g. ``grpc://host:8815`` or ``grpc+tls://host:8815``.
        root: Collections to serve in embedded mode (default ``./collections``).
        token: bearer token for servers started with ``--token-file``.
        tls_root_certs, cert_chain, private_key: TLS trust and client certificate (PEM).
        cache_bytes: decoded-tile cache of the embedded server.
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
        )
    try:
        from flight_server import Server
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
    server = Server(str(root_path), unix_socket=str(sock), cache_bytes=cache_bytes).start()
    logger.info("embedded cogflight server over %s at %s", root_path, server.location)
    return Client(server.location, embedded=server)
