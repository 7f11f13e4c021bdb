"""A helper process that makes Flight calls for a process that cannot.

A process forked after gRPC started (a DataLoader worker of a script that used
the client, or that runs an embedded server) cannot use gRPC. Its client starts
a fresh interpreter running :func:`main` (so a fresh gRPC),
sends it one request per line and reads the answers back as frames:
``tag (1 byte) | length (8 bytes, little endian) | payload``. Record batches
cross as Arrow IPC messages read into 64-byte aligned buffers, so tensors still
share memory with what was received. The helper ends when its stdin closes.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
from pyarrow import flight

from cogflight_core import error_for, from_flight, status_code

from ._counters import count
from ._errors import CogflightError, UnavailableError

__all__ = ["Relay"]

logger = logging.getLogger("cogflight.client")

_HEADER = struct.Struct("<cQ")
_RESULT, _INFO, _SCHEMA, _BATCH, _END, _ERROR = b"R", b"I", b"S", b"B", b"E", b"X"


def _b64(data: bytes | None) -> str | None:
    return base64.b64encode(data).decode() if data is not None else None


def _unb64(text: str | None) -> bytes | None:
    return base64.b64decode(text) if text is not None else None


class Relay:
    """The calling side: one helper process, started on first use, one call at a time.

    Not thread-safe by itself: the client lends each relay to one call at a time.
    """

    def __init__(self, location: str, token: str | None, tls: dict[str, bytes]) -> None:
        self._hello = {
            "location": location,
            "token": token,
            "tls": {k: _b64(v) for k, v in tls.items()},
        }
        self._proc: subprocess.Popen[bytes] | None = None

    # -- process -------------------------------------------------------------------------
    def _start(self) -> subprocess.Popen[bytes]:
        if self._proc is not None:
            if self._proc.poll() is None:
                return self._proc
            self._abandon()  # it died on its own: close its pipes before a new one
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
        proc.stdin.write(json.dumps(self._hello).encode() + b"\n")
        proc.stdin.flush()
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
            proc.stdin.close()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def _abandon(self) -> None:
        """Kill the helper mid-answer (the consumer stopped early); the next call restarts it."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            proc.wait()
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    pipe.close()

    # -- frames --------------------------------------------------------------------------
    def _send(self, request: dict[str, Any]) -> IO[bytes]:
        count("relayed_requests")
        proc = self._start()
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(json.dumps(request).encode() + b"\n")
            proc.stdin.flush()
        except OSError as exc:
            self._abandon()
            raise UnavailableError(f"the Flight helper process ended: {exc}") from exc
        return proc.stdout

    def _read_exact(self, stream: IO[bytes], view: memoryview) -> None:
        pos = 0
        while pos < len(view):
            n = stream.readinto(view[pos:])  # type: ignore[attr-defined]
            if not n:
                self._abandon()
                raise UnavailableError(
                    "the Flight helper process ended unexpectedly (see its log above)"
                )
            pos += n

    def _frame(self, stream: IO[bytes]) -> tuple[bytes, pa.Buffer]:
        head = bytearray(_HEADER.size)
        self._read_exact(stream, memoryview(head))
        tag, size = _HEADER.unpack(head)
        payload = pa.allocate_buffer(size)  # 64-byte aligned
        self._read_exact(stream, memoryview(payload))
        if tag == _ERROR:
            error = json.loads(payload.to_pybytes())
            raise error_for(error["code"], error["message"])
        return tag, payload

    # -- calls ---------------------------------------------------------------------------
    def action(self, kind: str, body: bytes) -> list[bytes]:
        """Bodies of the results of a DoAction."""
        stream = self._send({"op": "action", "type": kind, "body": _b64(body)})
        out: list[bytes] = []
        while True:
            tag, payload = self._frame(stream)
            if tag == _END:
                return out
            out.append(payload.to_pybytes())

    def flight_info(self, descriptor: flight.FlightDescriptor) -> flight.FlightInfo:
        """GetFlightInfo."""
        stream = self._send({"op": "info", "descriptor": _b64(descriptor.serialize())})
        _, payload = self._frame(stream)
        info = flight.FlightInfo.deserialize(payload.to_pybytes())
        self._frame(stream)  # END
        return info

    def stream(self, ticket: bytes, location: str | None) -> Iterator[pa.RecordBatch]:
        """DoGet: the batches, each in its own aligned buffer."""
        for item in self._get(ticket, location):
            if isinstance(item, pa.RecordBatch):
                yield item

    def read_all(self, ticket: bytes, location: str | None) -> pa.Table:
        """DoGet as one table (its schema even when it has no rows)."""
        items = list(self._get(ticket, location))
        return pa.Table.from_batches(items[1:], schema=items[0])

    def _get(self, ticket: bytes, location: str | None) -> Iterator[pa.Schema | pa.RecordBatch]:
        stream = self._send({"op": "get", "ticket": _b64(ticket), "location": location})
        done = False
        try:
            _, payload = self._frame(stream)
            schema = pa.ipc.read_schema(payload)
            yield schema
            while True:
                tag, payload = self._frame(stream)
                if tag == _END:
                    done = True
                    return
                yield pa.ipc.read_record_batch(payload, schema)
        except CogflightError:
            done = True  # an error frame ends the answer: the helper is ready again
            raise
        finally:
            if not done:
                self._abandon()


# -- the helper process ----------------------------------------------------------------------
def _write(out: IO[bytes], tag: bytes, payload: Any = b"") -> None:
    out.write(_HEADER.pack(tag, memoryview(payload).nbytes))
    out.write(payload)


def _serve(hello: dict[str, Any], requests: IO[bytes], out: IO[bytes]) -> None:
    tls = {k: _unb64(v) for k, v in hello["tls"].items()}
    token = hello["token"]
    headers = [(b"authorization", f"Bearer {token}".encode())] if token else []
    options = flight.FlightCallOptions(headers=headers)
    clients: dict[str, flight.FlightClient] = {}

    def conn(location: str | None) -> flight.FlightClient:
        where = location or hello["location"]
        if where not in clients:
            clients[where] = flight.connect(where, **tls)
        return clients[where]

    for line in requests:
        req = json.loads(line)
        try:
            if req["op"] == "action":
                action = flight.Action(req["type"], _unb64(req["body"]) or b"")
                for result in conn(None).do_action(action, options=options):
                    _write(out, _RESULT, result.body)
            elif req["op"] == "info":
                desc = flight.FlightDescriptor.deserialize(_unb64(req["descriptor"]))
                _write(out, _INFO, conn(None).get_flight_info(desc, options=options).serialize())
            elif req["op"] == "get":
                reader = conn(req["location"]).do_get(
                    flight.Ticket(_unb64(req["ticket"])), options=options
                )
                _write(out, _SCHEMA, reader.schema.serialize())
                out.flush()
                while True:
                    try:
                        chunk = reader.read_chunk()
                    except StopIteration:
                        break
                    _write(out, _BATCH, chunk.data.serialize())
                    out.flush()  # each batch goes on at once, small ones too
            else:
                raise CogflightError(f"relay: unknown request {req['op']!r}")
            _write(out, _END)
        except Exception as exc:  # every failure goes back to the caller, typed
            err = from_flight(exc)
            doc = {"code": status_code(err), "message": str(err)}
            _write(out, _ERROR, json.dumps(doc).encode())
        out.flush()


def main() -> None:
    """Entry point of the helper process (reads the hello line, then requests)."""
    requests, out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but frames may reach the pipe
    hello = json.loads(requests.readline() or b"{}")
    if "location" not in hello:
        return
    with contextlib.suppress(BrokenPipeError, KeyboardInterrupt):  # the caller went away
        _serve(hello, requests, out)
