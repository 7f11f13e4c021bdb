"""How a process makes its Flight calls: one transport, chosen once per process.

:class:`Transport` is the five calls the client needs. :class:`DirectTransport`
makes them over this process's own gRPC channels; :class:`~._relay.RelayTransport`
sends them to helper processes, for a process forked after gRPC started (a
DataLoader worker of a script that had used the client or runs an embedded
server), where gRPC would hang. :func:`open_transport` picks one from the
fact :mod:`cogflight_core._fork` records; a ``Client`` asks for it once per
process and never branches per call.

Both raise cogflight errors (the status code's class), never pyarrow's. Both
are thread-safe: the direct one shares its channels, the relay lends each call
its own helper.
"""

from __future__ import annotations

import json
import threading
import warnings
from collections.abc import Iterator
from typing import Protocol

import pyarrow as pa
from pyarrow import flight

from cogflight_core import EmptyResultWarning
from cogflight_core._fork import grpc_inherited, mark_grpc_started

from ._counters import count
from ._errors import call, translated

__all__ = ["DirectTransport", "Transport", "keep_inherited", "open_transport"]

# Transports a forked process inherited: closing or freeing their gRPC channels runs gRPC
# teardown on threads that stayed in the parent, which hangs. Kept until the process ends.
_INHERITED: list[Transport] = []

# Every column buffer of a received batch aligned for its type. gRPC hands over a message
# that arrived in one network read as that read's memory, at whatever address the message
# had there (messages spread over several reads it copies into fresh, aligned memory, where
# the server's padding aligns the body); the IPC reader copies the buffers of such a
# message into aligned memory once, in C++, so that tensors never need to.
_READ_OPTIONS = pa.ipc.IpcReadOptions(ensure_alignment=pa.ipc.Alignment.DataTypeSpecific)


def warn_empty(app_metadata: pa.Buffer | bytes | None) -> bool:
    """Raise the server's empty-result note as an :class:`EmptyResultWarning`; False if none."""
    raw = bytes(app_metadata) if app_metadata is not None else b""
    if not raw.startswith(b"{"):  # alignment padding is zero bytes
        return False
    try:
        text = json.loads(raw)["warning"]
    except (ValueError, KeyError, TypeError):
        return False
    warnings.warn(EmptyResultWarning(str(text)), stacklevel=4)
    return True


def _count_alignment(batch: pa.RecordBatch) -> None:
    """Count a batch whose buffers the reader copied to align them (they have no parent)."""
    for column in batch.columns:
        array = column.storage if isinstance(column, pa.ExtensionArray) else column
        for buf in array.buffers():
            if buf is not None and buf.size:
                count("aligned_on_read" if buf.parent is None else "received_in_place")
                return


class Transport(Protocol):
    """The Flight calls of a client; ``location`` None means the client's server."""

    def action(self, kind: str, body: bytes) -> list[bytes]:
        """The result bodies of a ``DoAction``."""
        ...

    def flight_info(self, descriptor: flight.FlightDescriptor) -> flight.FlightInfo:
        """``GetFlightInfo``."""
        ...

    def stream(self, ticket: bytes, location: str | None) -> Iterator[pa.RecordBatch]:
        """``DoGet``, batch by batch; closing the iterator early cancels the stream."""
        ...

    def read_all(self, ticket: bytes, location: str | None) -> pa.Table:
        """``DoGet`` as one table (with its schema even when it has no rows)."""
        ...

    def reconnect(self, location: str | None) -> None:
        """Open a fresh connection to ``location`` on the next call (after it failed)."""
        ...

    def close(self) -> None:
        """Release channels or helpers (only in the process that opened them)."""
        ...


def open_transport(location: str, token: str | None, tls: dict[str, bytes]) -> Transport:
    """The transport for a client in this process: relayed when gRPC was inherited."""
    if grpc_inherited():
        from ._relay import RelayTransport

        return RelayTransport(location, token, tls)
    return DirectTransport(location, token, tls)


def keep_inherited(transport: Transport) -> None:
    """Keep a parent's transport alive, unclosed, until this process ends."""
    _INHERITED.append(transport)


class DirectTransport:
    """Flight calls over this process's gRPC channels, one per location, opened on first use."""

    def __init__(self, location: str, token: str | None, tls: dict[str, bytes]) -> None:
        self._location = location
        self._tls = tls
        self._headers = [(b"authorization", f"Bearer {token}".encode())] if token else []
        self._lock = threading.Lock()
        self._clients: dict[str, flight.FlightClient] = {}
        # Replaced after a failure, closed with the transport: other threads may still
        # be reading through them, and a channel in reconnect backoff (up to minutes
        # after a long outage) would fail calls that a fresh one serves.
        self._replaced: list[flight.FlightClient] = []

    def _options(self) -> flight.FlightCallOptions:
        return flight.FlightCallOptions(headers=self._headers, read_options=_READ_OPTIONS)

    def connection(self, location: str | None = None) -> flight.FlightClient:
        """The FlightClient for ``location`` (default: the client's server)."""
        where = location or self._location
        with self._lock:
            fc = self._clients.get(where)
            if fc is None:
                mark_grpc_started()
                fc = self._clients[where] = call(flight.connect, where, **self._tls)
            return fc

    def action(self, kind: str, body: bytes) -> list[bytes]:
        """The result bodies of a ``DoAction``."""
        with translated():
            results = self.connection().do_action(
                flight.Action(kind, body), options=self._options()
            )
            return [r.body.to_pybytes() for r in results]

    def flight_info(self, descriptor: flight.FlightDescriptor) -> flight.FlightInfo:
        """``GetFlightInfo``."""
        with translated():
            return self.connection().get_flight_info(descriptor, options=self._options())

    def stream(self, ticket: bytes, location: str | None) -> Iterator[pa.RecordBatch]:
        """``DoGet``, batch by batch; closing the iterator early cancels the stream."""
        with translated():
            reader = self.connection(location).do_get(
                flight.Ticket(ticket), options=self._options()
            )
        try:
            while True:
                with translated():
                    try:
                        chunk = reader.read_chunk()
                    except StopIteration:
                        return
                if chunk.data.num_rows == 0 and warn_empty(chunk.app_metadata):
                    continue  # the server's in-band note: the query makes no chip
                _count_alignment(chunk.data)
                yield chunk.data
        finally:
            reader.cancel()  # stops the server's work when the consumer stops early

    def read_all(self, ticket: bytes, location: str | None) -> pa.Table:
        """``DoGet`` as one table."""
        with translated():
            reader = self.connection(location).do_get(
                flight.Ticket(ticket), options=self._options()
            )
            return reader.read_all()

    def reconnect(self, location: str | None) -> None:
        """Open a fresh channel to ``location`` on the next call (the old one closes later)."""
        where = location or self._location
        with self._lock:
            old = self._clients.pop(where, None)
            if old is not None:
                self._replaced.append(old)

    def close(self) -> None:
        """Close every channel."""
        with self._lock:
            clients, self._clients = self._clients, {}
            replaced, self._replaced = self._replaced, []
        for fc in [*clients.values(), *replaced]:
            fc.close()
