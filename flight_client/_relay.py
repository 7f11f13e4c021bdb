"""Flight calls through helper processes, for a process that cannot use gRPC.

A process forked after gRPC started hangs on its first gRPC call. Its
:class:`RelayTransport` starts a fresh interpreter running :func:`main` (so a
fresh gRPC) for each call in progress, reusing idle ones: nested calls (a
``stats()`` inside a stream) each get their own helper, and never deadlock.

The protocol is two pipes. The caller writes pickles: first ``(location, token,
tls)``, then one request tuple per call (``("action", kind, body)``,
``("info", descriptor)``, ``("get", ticket, location)``). The helper answers
each with frames ``tag (1 byte) | length (8 bytes, little endian) | payload``:
``D`` data (action bodies; a serialized FlightInfo; a stream's schema, then its
record batches as Arrow IPC messages), then ``E`` end, or ``X`` an error as JSON
``{"code", "message"}`` (the status code travels, so the caller raises the same
class a direct call would). Payloads are read into 64-byte aligned buffers, so
tensors still share memory with what was received. The helper ends when its
stdin closes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import struct
import subprocess
import sys
import threading
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
from pyarrow import flight

from cogflight_core import UnavailableError, error_for, from_flight, status_code

from ._counters import count

__all__ = ["RelayTransport", "main"]

logger = logging.getLogger("cogflight.client")

_HEADER = struct.Struct("<cQ")
_DATA, _END, _ERROR = b"D", b"E", b"X"


class _Helper:
    """One helper process, started on first use; one call at a time (not thread-safe)."""

    def __init__(self, hello: tuple[str, str | None, dict[str, bytes]]) -> None:
        self._hello = hello
        self._proc: subprocess.Popen[bytes] | None = None

    def _start(self) -> subprocess.Popen[bytes]:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        self.abandon()  # it died on its own: close its pipes before a new one
        env = dict(os.environ)
        here = str(Path(__file__).resolve().parents[1])  # flight_client's parent directory
        env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
        proc = subprocess.Popen(
            [sys.executable, "-c", "from flight_client._relay import main; main()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        assert proc.stdin is not None
        pickle.dump(self._hello, proc.stdin)
        logger.info(
            "process %d was forked after gRPC started: its Flight calls go through helper %d",
            os.getpid(),
            proc.pid,
        )
        self._proc = proc
        return proc

    def close(self) -> None:
        """Stop the helper (it also stops by itself when this process ends)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def abandon(self) -> None:
        """Kill the helper mid-answer (the consumer stopped early); the next call restarts it."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            proc.wait()
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()

    def _read_exact(self, stream: IO[bytes], view: memoryview) -> None:
        pos = 0
        while pos < len(view):
            n = stream.readinto(view[pos:])  # type: ignore[attr-defined]
            if not n:
                self.abandon()
                raise UnavailableError(
                    "the Flight helper process ended unexpectedly (see its log above)"
                )
            pos += n

    def call(self, *request: Any) -> Generator[pa.Buffer, None, None]:
        """Send one request; yield its answer's data payloads (the error frame raises)."""
        count("relayed_requests")
        proc = self._start()
        assert proc.stdin is not None and proc.stdout is not None
        try:
            pickle.dump(request, proc.stdin)
            proc.stdin.flush()
        except OSError as exc:
            self.abandon()
            raise UnavailableError(f"the Flight helper process ended: {exc}") from exc
        done = False
        try:
            head = bytearray(_HEADER.size)
            while True:
                self._read_exact(proc.stdout, memoryview(head))
                tag, size = _HEADER.unpack(head)
                payload = pa.allocate_buffer(size)  # 64-byte aligned
                self._read_exact(proc.stdout, memoryview(payload))
                if tag == _END:
                    done = True
                    return
                if tag == _ERROR:
                    done = True  # an error frame ends the answer: the helper is ready again
                    error = json.loads(payload.to_pybytes())
                    raise error_for(error["code"], error["message"])
                yield payload
        finally:
            if not done:  # stopped mid-answer: what is left in the pipe is unread
                self.abandon()


class RelayTransport:
    """The :class:`~._transport.Transport` of a process forked after gRPC started."""

    def __init__(self, location: str, token: str | None, tls: dict[str, bytes]) -> None:
        self._hello = (location, token, tls)
        self._lock = threading.Lock()
        self._idle: list[_Helper] = []
        self._closed = False

    @contextlib.contextmanager
    def _helper(self) -> Iterator[_Helper]:
        """An idle helper for one call (a new one when all are busy, as in nested calls)."""
        with self._lock:
            helper = self._idle.pop() if self._idle else _Helper(self._hello)
        try:
            yield helper
        finally:
            with self._lock:
                keep = not self._closed
                if keep:
                    self._idle.append(helper)
            if not keep:
                helper.close()

    def action(self, kind: str, body: bytes) -> list[bytes]:
        """The result bodies of a ``DoAction``."""
        with self._helper() as helper:
            return [p.to_pybytes() for p in helper.call("action", kind, body)]

    def flight_info(self, descriptor: flight.FlightDescriptor) -> flight.FlightInfo:
        """``GetFlightInfo``."""
        with self._helper() as helper:
            (payload,) = list(helper.call("info", descriptor.serialize()))
        return flight.FlightInfo.deserialize(payload.to_pybytes())

    def stream(self, ticket: bytes, location: str | None) -> Iterator[pa.RecordBatch]:
        """``DoGet``: the batches, each in its own aligned buffer."""
        # Closed before the helper goes back to the pool: a stream stopped early kills it.
        with (
            self._helper() as helper,
            contextlib.closing(helper.call("get", ticket, location)) as payloads,
        ):
            schema = pa.ipc.read_schema(next(payloads))
            for payload in payloads:
                yield pa.ipc.read_record_batch(payload, schema)

    def read_all(self, ticket: bytes, location: str | None) -> pa.Table:
        """``DoGet`` as one table."""
        with self._helper() as helper:
            payloads = list(helper.call("get", ticket, location))
        schema = pa.ipc.read_schema(payloads[0])
        batches = [pa.ipc.read_record_batch(p, schema) for p in payloads[1:]]
        return pa.Table.from_batches(batches, schema=schema)

    def reconnect(self, location: str | None) -> None:
        """Fresh connections on the next calls: the idle helpers (and their channels) stop."""
        with self._lock:
            helpers, self._idle = self._idle, []
        for helper in helpers:
            helper.close()

    def close(self) -> None:
        """Stop the idle helpers; busy ones stop when their call ends."""
        with self._lock:
            self._closed = True
            helpers, self._idle = self._idle, []
        for helper in helpers:
            helper.close()


# -- the helper process ----------------------------------------------------------------------
def _write(out: IO[bytes], tag: bytes, payload: Any = b"") -> None:
    out.write(_HEADER.pack(tag, memoryview(payload).nbytes))
    out.write(payload)


def _answer(request: tuple[Any, ...], conn: Any, options: Any, out: IO[bytes]) -> None:
    """Make one call, writing its data frames as they come."""
    op, *args = request
    if op == "action":
        for result in conn(None).do_action(flight.Action(*args), options=options):
            _write(out, _DATA, result.body)
    elif op == "info":
        descriptor = flight.FlightDescriptor.deserialize(args[0])
        info = conn(None).get_flight_info(descriptor, options=options)
        _write(out, _DATA, info.serialize())
    else:  # "get"
        ticket, location = args
        reader = conn(location).do_get(flight.Ticket(ticket), options=options)
        _write(out, _DATA, reader.schema.serialize())
        out.flush()
        while True:
            try:
                chunk = reader.read_chunk()
            except StopIteration:
                break
            _write(out, _DATA, chunk.data.serialize())
            out.flush()  # each batch goes on at once, small ones too


def main() -> None:
    """Entry point of the helper process: the hello, then requests until stdin closes."""
    requests, out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but frames may reach the pipe
    try:
        location, token, tls = pickle.load(requests)
    except EOFError:
        return
    headers = [(b"authorization", f"Bearer {token}".encode())] if token else []
    options = flight.FlightCallOptions(headers=headers)
    clients: dict[str, flight.FlightClient] = {}

    def conn(where: str | None) -> flight.FlightClient:
        where = where or location
        if where not in clients:
            clients[where] = flight.connect(where, **tls)
        return clients[where]

    with contextlib.suppress(BrokenPipeError, KeyboardInterrupt):  # the caller went away
        while True:
            try:
                request = pickle.load(requests)
            except EOFError:
                return
            try:
                _answer(request, conn, options, out)
                _write(out, _END)
            except Exception as exc:  # every failure goes back to the caller, with its code
                err = from_flight(exc)
                doc = {"code": status_code(err), "message": str(err)}
                _write(out, _ERROR, json.dumps(doc).encode())
            out.flush()
