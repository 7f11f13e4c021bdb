"""A fault-injecting HTTP object server on loopback, for the integrity and retry tests.

:class:`FaultServer` serves the files under a directory by range requests, as
:class:`~tests.support.servers.RangeServer` does, with a content ETag (so a
replaced object has a new one), ``If-Match`` honoured (412), and per-path
*fault plans*: the next requests for a path get the planned faults in order,
then normal answers (or one fault forever, with :meth:`FaultServer.always`).

Faults (:class:`Fault`):

- ``status``: an error status (5xx, 429 with ``Retry-After``), empty body;
- ``reset``: the connection is reset (RST) before any answer;
- ``truncate``: headers promise the whole range, half the body comes, then EOF;
- ``ignore_range``: ``200`` with the whole object (the ``Range`` header ignored);
- ``wrong_range``: ``206`` for another range (shifted by ``shift`` bytes), with an
  honest ``Content-Range`` saying so;
- ``short``: ``206`` for a range ``cut`` bytes shorter, with an honest ``Content-Range``;
- ``lie_range``: ``206`` whose ``Content-Range`` is the range asked for but whose
  bytes are shifted by ``shift``: only the content can tell;
- ``flip``: the right headers, with the body's byte at ``at`` (default: its middle)
  inverted: only the content can tell;
- ``stall``: no answer for ``seconds``, then a normal one (for timeouts).

A replaced object (new content and ETag) is :meth:`FaultServer.replace`; a redirect
of a path elsewhere is :meth:`FaultServer.redirect`. Every request is recorded.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import struct
import time
from collections import deque
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from tests.support.servers import _RANGE, RangeServer, RequestRecord

__all__ = ["FAULT_KINDS", "Fault", "FaultServer"]

FAULT_KINDS = (
    "status",
    "reset",
    "truncate",
    "ignore_range",
    "wrong_range",
    "short",
    "lie_range",
    "flip",
    "stall",
)


@dataclass(frozen=True)
class Fault:
    """One faulty answer (see the module docstring for the kinds)."""

    kind: str
    status: int = 503
    retry_after: str | None = None
    shift: int = 16
    cut: int = 7
    at: int | None = None
    seconds: float = 1.0
    start: int | None = None
    """Only for a request whose range starts here (others pass it by); None: the next one."""

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {self.kind!r}; one of {FAULT_KINDS}")

    def __str__(self) -> str:
        return f"{self.kind}({self.status})" if self.kind == "status" else self.kind


class _FaultHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    owner: FaultServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def handle(self) -> None:
        with contextlib.suppress(ConnectionError):  # a client that gave up (a timeout test)
            super().handle()

    def do_GET(self) -> None:
        self._serve(body=True)

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def _record(self, status: int, rng: str | None, sent: int, fault: str | None) -> None:
        parts = urlsplit(self.path)
        headers = {k.lower(): v for k, v in self.headers.items()}
        if fault:
            headers["x-fault"] = fault
        self.owner._record(
            RequestRecord(self.command, parts.path, parts.query, rng, status, sent, headers)
        )

    def _empty(
        self,
        status: int,
        rng: str | None,
        extra: dict[str, str] | None = None,
        fault: str | None = None,
    ) -> None:
        self._record(status, rng, 0, fault)
        self.send_response(status)
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _reset(self) -> None:
        """Close with RST: the client sees 'connection reset', no answer."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.close()

    def _serve(self, body: bool) -> None:
        owner = self.owner
        rel = unquote(urlsplit(self.path).path).lstrip("/")
        rng = self.headers.get("Range")
        target = (owner.root / rel).resolve()
        redirect = owner.redirects.get(rel)
        if redirect is not None:
            self._empty(redirect[1], rng, {"Location": redirect[0]})
            return
        if owner.root not in target.parents or not target.is_file():
            self._empty(HTTPStatus.NOT_FOUND, rng)
            return
        m = _RANGE.match((rng or "").strip())
        fault = owner._next_fault(rel, int(m.group(1)) if m and m.group(1) else None)
        if fault is not None and fault.kind == "stall":
            time.sleep(fault.seconds)
        if fault is not None and fault.kind == "reset":
            self._record(0, rng, 0, "reset")
            self._reset()
            return
        if fault is not None and fault.kind == "status":
            extra = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            self._empty(fault.status, rng, extra, str(fault))
            return
        data, etag = owner._content(target)
        if_match = self.headers.get("If-Match")
        if (
            if_match
            and if_match.strip() != "*"
            and etag not in [t.strip() for t in if_match.split(",")]
        ):
            self._empty(HTTPStatus.PRECONDITION_FAILED, rng, {"ETag": etag})
            return
        size = len(data)
        start, end, status = 0, size, HTTPStatus.OK
        if rng and not (fault is not None and fault.kind == "ignore_range"):
            m = _RANGE.match(rng.strip())
            if not m or (not m.group(1) and not m.group(2)):
                self._empty(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, rng)
                return
            if m.group(1):
                start = int(m.group(1))
                end = min(int(m.group(2)) + 1, size) if m.group(2) else size
            else:
                start, end = max(0, size - int(m.group(2))), size
            if start >= size:
                self._empty(
                    HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE,
                    rng,
                    {"Content-Range": f"bytes */{size}"},
                )
                return
            status = HTTPStatus.PARTIAL_CONTENT
        claimed = (start, end)  # what Content-Range says
        sent = (start, end)  # which bytes go out
        kind = fault.kind if fault is not None else None
        if status == HTTPStatus.PARTIAL_CONTENT and kind == "wrong_range":
            a = min(start + fault.shift, size - 1)  # type: ignore[union-attr]
            claimed = sent = (a, min(size, a + (end - start)))
        elif status == HTTPStatus.PARTIAL_CONTENT and kind == "short":
            claimed = sent = (start, max(start + 1, end - fault.cut))  # type: ignore[union-attr]
        elif status == HTTPStatus.PARTIAL_CONTENT and kind == "lie_range":
            shift = fault.shift  # type: ignore[union-attr]
            a = start + shift if end + shift <= size else max(0, start - shift)
            sent = (a, a + (end - start))
        payload = bytearray(data[sent[0] : sent[1]])
        if kind == "flip" and payload:
            at = fault.at if fault.at is not None else len(payload) // 2  # type: ignore[union-attr]
            payload[min(at, len(payload) - 1)] ^= 0xFF
        self.send_response(status)
        self.send_header("Content-Type", "image/tiff")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", owner._modified(target))
        if status == HTTPStatus.PARTIAL_CONTENT:
            self.send_header("Content-Range", f"bytes {claimed[0]}-{claimed[1] - 1}/{size}")
        # Recorded before the headers go out: a client may act on them at once.
        self._record(int(status), rng, len(payload) if body else 0, str(fault) if fault else None)
        self.end_headers()
        if not body:
            return
        try:
            if kind == "truncate":
                self.wfile.write(bytes(payload[: len(payload) // 2]))
                self.wfile.flush()
                self._reset()
                return
            self.wfile.write(bytes(payload))
        except OSError:
            self.close_connection = True


class FaultServer(RangeServer):
    """A loopback object server with per-path fault plans (see the module docstring)."""

    handler = _FaultHandler

    def __init__(self, root: str | Path) -> None:
        super().__init__(root)
        self.plans: dict[str, deque[Fault]] = {}
        self.forever: dict[str, Fault] = {}
        self.redirects: dict[str, tuple[str, int]] = {}
        self._etags: dict[tuple[str, int, int], tuple[bytes, str]] = {}

    def _rel(self, path: str | Path) -> str:
        p = Path(path)
        return p.resolve().relative_to(self.root).as_posix() if p.is_absolute() else p.as_posix()

    def inject(self, path: str | Path, *faults: Fault) -> None:
        """The next requests for ``path`` get ``faults``, one each, in order."""
        with self._lock:
            self.plans.setdefault(self._rel(path), deque()).extend(faults)

    def always(self, path: str | Path, fault: Fault | None) -> None:
        """Every request for ``path`` gets ``fault`` (None: stop)."""
        with self._lock:
            if fault is None:
                self.forever.pop(self._rel(path), None)
            else:
                self.forever[self._rel(path)] = fault

    def clear(self) -> None:
        """No more faults or redirects."""
        with self._lock:
            self.plans.clear()
            self.forever.clear()
            self.redirects.clear()

    def redirect(self, path: str, location: str, status: int = 302) -> None:
        """Answer requests for ``path`` with a redirect to ``location``."""
        with self._lock:
            self.redirects[path.lstrip("/")] = (location, status)

    def replace(self, path: str | Path, data: bytes) -> None:
        """Replace the object: new content, hence a new ETag."""
        target = self.root / self._rel(path)
        target.write_bytes(data)
        later = time.time() + 10  # a new modification time even within one second
        os.utime(target, (later, later))

    def etag(self, path: str | Path) -> str:
        """The ETag the server gives ``path`` now."""
        return self._content(self.root / self._rel(path))[1]

    def faulted(self) -> int:
        """Requests answered with a fault so far."""
        with self._lock:
            return sum(1 for r in self.records if "x-fault" in r.headers)

    def _next_fault(self, rel: str, start: int | None) -> Fault | None:
        with self._lock:
            plan = self.plans.get(rel)
            if plan and (plan[0].start is None or plan[0].start == start):
                return plan.popleft()
            fault = self.forever.get(rel)
            return fault if fault is None or fault.start in (None, start) else None

    def _content(self, target: Path) -> tuple[bytes, str]:
        st = target.stat()
        key = (str(target), st.st_size, st.st_mtime_ns)
        with self._lock:
            hit = self._etags.get(key)
        if hit is None:
            data = target.read_bytes()
            hit = (data, '"' + hashlib.sha256(data).hexdigest()[:32] + '"')
            with self._lock:
                self._etags[key] = hit
        return hit

    def _modified(self, target: Path) -> str:
        from email.utils import formatdate

        return formatdate(target.stat().st_mtime, usegmt=True)
