"""Plain HTTP beside the Flight port: ``/metrics``, ``/healthz`` and ``/readyz``.

Kubernetes probes and Prometheus speak HTTP, not gRPC, so each server process
can also listen on a small HTTP port (``--http-port``):

- ``GET /healthz``: 200 while the process serves at all, draining included
  (liveness: a draining process must not be restarted before its streams end);
- ``GET /readyz``: 200 when it takes new streams, 503 while it drains or cannot
  list its root (readiness: take it out of the Service's endpoints);
- ``GET /metrics``: the Prometheus exposition of :class:`~._metrics.Metrics`.

Bodies of the probes are one JSON document; a root that cannot be listed is
reported without its address or the storage error (those go to the log), since
the HTTP port may be reachable by more than the operator. :func:`probe_server`
serves these for a :class:`~._service.FlightService`.

Concurrency policy: one thread per request (``ThreadingHTTPServer``), each
calling the service's thread-safe ``health``/``ready`` callables; the server
thread is a daemon and :meth:`ProbeServer.close` stops it.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from cogflight_core import CogflightError, UnavailableError

from ._metrics import CONTENT_TYPE

if TYPE_CHECKING:
    from ._service import FlightService

__all__ = ["ProbeServer", "probe_server"]

logger = logging.getLogger("cogflight.server")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class ProbeServer:
    """The HTTP side of one server process (start with :meth:`start`).

    Args:
        host, port: where to listen (port 0: any free port).
        health: the liveness document.
        ready: ``(ready, document)`` for the readiness probe.
        metrics: the Prometheus exposition (bytes).
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        health: Callable[[], dict[str, Any]],
        ready: Callable[[], tuple[bool, dict[str, Any]]],
        metrics: Callable[[], bytes],
    ) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                logger.debug("probe %s", format % args)

            def do_GET(self) -> None:
                owner._answer(self)

        self._health, self._ready, self._metrics = health, ready, metrics
        self._httpd = _Server((host, port), Handler)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self._httpd.server_address[1])

    def start(self) -> ProbeServer:
        """Serve in a daemon thread."""
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="cogflight-probes",
            daemon=True,
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and release the port."""
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        path = handler.path.split("?", 1)[0]
        try:
            if path == "/metrics":
                self._send(handler, 200, self._metrics(), CONTENT_TYPE)
            elif path == "/healthz":
                self._send_json(handler, 200, self._health())
            elif path == "/readyz":
                ok, doc = self._ready()
                self._send_json(handler, 200 if ok else 503, doc)
            else:
                self._send_json(
                    handler, 404, {"error": f"no {path}; try /healthz, /readyz or /metrics"}
                )
        except Exception:  # a probe must answer, whatever happened
            logger.exception("probe %s failed", path)
            self._send_json(handler, 500, {"status": "error"})

    def _send_json(self, handler: BaseHTTPRequestHandler, status: int, doc: Any) -> None:
        body = json.dumps(doc, default=str).encode()
        self._send(handler, status, body, "application/json")

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, body: bytes, ctype: str) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", ctype)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)


def _health(service: FlightService) -> dict[str, Any]:
    return {
        "status": "draining" if service.draining else "ok",
        "worker": service.worker,
        "location": service.location,
        "pid": os.getpid(),
        "uptime_s": round(service.uptime_s, 1),
        "streams_active": service.active_streams,
    }


def _ready(service: FlightService) -> tuple[bool, dict[str, Any]]:
    doc = {"worker": service.worker, "location": service.location}
    if service.draining:
        return False, {**doc, "ready": False, "reason": "draining"}
    try:
        names = service.root.names()
    except CogflightError as exc:
        logger.warning("readiness: cannot list the root: %s", exc)
        return False, {**doc, "ready": False, "reason": "the root cannot be listed"}
    return True, {**doc, "ready": True, "collections": len(names)}


def probe_server(service: FlightService, host: str, port: int) -> ProbeServer:
    """Start the HTTP probes and metrics of ``service`` on ``host:port``.

    Raises:
        UnavailableError: the port cannot be bound (in use, or not allowed).
    """
    try:
        server = ProbeServer(
            host,
            port,
            health=lambda: _health(service),
            ready=lambda: _ready(service),
            metrics=service.metrics.exposition,
        )
    except OSError as exc:
        why = "is already in use" if exc.errno == errno.EADDRINUSE else f"({exc.strerror})"
        raise UnavailableError(
            f"cannot serve HTTP probes: port {port} on {host} {why}; choose another "
            "--http-port (worker k uses http_port + k)"
        ) from exc
    logger.info(
        "worker %d: /healthz, /readyz, /metrics on http://%s:%d", service.worker, host, server.port
    )
    return server.start()
