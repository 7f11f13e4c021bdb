"""Running the Flight service: one process or several, in the foreground or embedded.

With ``workers=N`` the service runs in N processes on N consecutive ports (the
first in this process); every worker advertises all N locations, so a query's
shard endpoints spread round-robin over them and a client reading endpoints in
parallel uses every process (one Python process is bound by its GIL). Workers
are started with ``spawn``: gRPC and obstore are not fork-safe.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import signal
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from catalog import parse_bytes

from ._engine import ChipEngine
from ._errors import InvalidArgumentError, UnavailableError
from ._roots import CollectionRoot
from ._service import FlightService, load_tokens

__all__ = ["Server", "ServerConfig", "serve"]

logger = logging.getLogger("cogflight.server")


@dataclass
class ServerConfig:
    """Everything a worker needs to start (picklable, for spawned workers)."""

    root: str
    host: str = "127.0.0.1"
    port: int = 8815
    workers: int = 1
    cache_bytes: int | None = None
    advertise: list[str] = field(default_factory=list)
    token_file: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    shards: int | None = None
    max_streams: int = 16
    store_options: dict[str, Any] | None = None
    unix_socket: str | None = None

    def scheme(self) -> str:
        return "grpc+tls" if self.tls_cert else "grpc"

    def location(self, port: int) -> str:
        if self.unix_socket:
            return f"grpc+unix://{self.unix_socket}"
        return f"{self.scheme()}://{self.host}:{port}"


def _service(
    config: ServerConfig, port: int, worker: int, locations: Sequence[str] | None
) -> FlightService:
    if config.workers > 1 and config.unix_socket:
        raise InvalidArgumentError("workers > 1 needs TCP ports, not a unix socket")
    tokens = load_tokens(config.token_file) if config.token_file else None
    tls = None
    if config.tls_cert or config.tls_key:
        if not (config.tls_cert and config.tls_key):
            raise InvalidArgumentError("TLS needs both --tls-cert and --tls-key")
        tls = [(Path(config.tls_cert).read_bytes(), Path(config.tls_key).read_bytes())]
    ca = Path(config.tls_client_ca).read_bytes() if config.tls_client_ca else None
    if ca and not tls:
        raise InvalidArgumentError("--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key")
    root = CollectionRoot(config.root, store_options=config.store_options)  # type: ignore[arg-type]
    engine = ChipEngine(cache_bytes=config.cache_bytes)
    return FlightService(
        config.location(port),
        root=root,
        engine=engine,
        locations=list(config.advertise) or (list(locations) if locations else None),
        default_shards=config.shards,
        max_streams=config.max_streams,
        tokens=tokens,
        tls_certificates=tls,
        verify_client=ca is not None,
        root_certificates=ca,
        worker=worker,
    )


def _worker_main(config: ServerConfig, worker: int, conn: Any) -> None:
    """Entry point of a spawned worker: bind, report the port, wait for peers, serve."""
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s %(levelname)s worker{worker} %(name)s: %(message)s"
    )
    try:
        svc = _service(config, config.port + worker if config.port else 0, worker, None)
    except BaseException as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        raise
    conn.send(("port", svc.port))
    locations = conn.recv()
    if not config.advertise:
        svc.locations = list(locations)
    # SIGTERM keeps its default action: a worker holds no state worth a graceful exit,
    # and serve() blocks in C++ where a Python handler would never run.
    logger.info("worker %d serving %s on %s", worker, config.root, svc.location)
    svc.serve()
    svc.close()
    svc.engine.close()


class Server:
    """The Flight service in this process (plus spawned workers), as a context manager.

    ``Server(root="collections", port=0).start()`` binds free ports; ``location``
    is the first worker's, ``locations`` all of them. ``serve_forever()`` blocks
    until SIGINT/SIGTERM; ``shutdown()`` stops every worker.
    """

    def __init__(self, root: str, **options: Any) -> None:
        if "cache_bytes" in options and isinstance(options["cache_bytes"], str):
            options["cache_bytes"] = parse_bytes(options["cache_bytes"])
        self.config = ServerConfig(root=str(root), **options)
        if self.config.workers < 1:
            raise InvalidArgumentError("workers must be >= 1")
        self._service: FlightService | None = None
        self._thread: threading.Thread | None = None
        self._children: list[tuple[mp.process.BaseProcess, Any]] = []
        self.locations: list[str] = []

    @property
    def location(self) -> str:
        """Where clients connect (the first worker)."""
        assert self._service is not None, "call start() first"
        return self._service.location

    @property
    def service(self) -> FlightService:
        """The in-process service (worker 0)."""
        assert self._service is not None, "call start() first"
        return self._service

    def start(self) -> Server:
        """Bind every worker and start serving in background threads/processes."""
        cfg = self.config
        svc = _service(cfg, cfg.port, 0, None)
        self._service = svc
        ports = [svc.port]
        ctx = mp.get_context("spawn")
        try:
            for w in range(1, cfg.workers):
                parent, child = ctx.Pipe()
                proc = ctx.Process(
                    target=_worker_main,
                    args=(cfg, w, child),
                    daemon=True,
                    name=f"cogflight-worker-{w}",
                )
                proc.start()
                kind, value = parent.recv()
                if kind == "error":
                    raise UnavailableError(f"worker {w} failed to start: {value}")
                ports.append(int(value))
                self._children.append((proc, parent))
        except BaseException:
            self.shutdown()
            raise
        self.locations = [cfg.location(p) for p in ports]
        if not cfg.advertise:
            svc.locations = list(self.locations)
        for _, conn in self._children:
            conn.send(self.locations)
        self._thread = threading.Thread(target=svc.serve, name="cogflight-flight", daemon=True)
        self._thread.start()
        logger.info(
            "serving %s at %s (%d worker%s)",
            cfg.root,
            ", ".join(self.locations),
            cfg.workers,
            "s" if cfg.workers > 1 else "",
        )
        return self

    def serve_forever(self) -> None:
        """Block until SIGINT or SIGTERM, then shut down."""
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        stop.wait()
        self.shutdown()

    def shutdown(self) -> None:
        """Stop every worker and free their engines."""
        for proc, _ in self._children:
            if proc.is_alive():
                proc.terminate()
        for proc, _ in self._children:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
        self._children.clear()
        if self._service is not None:
            self._service.shutdown()
            if self._thread is not None:
                self._thread.join(timeout=10)
            self._service.close()
            self._service.engine.close()
            self._service = None

    def __enter__(self) -> Server:
        return self.start() if self._service is None else self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def serve(root: str, *, block: bool = True, **options: Any) -> Server:
    """Serve every Collection under ``root``; blocks until interrupted unless ``block=False``.

    Options: ``host``, ``port``, ``workers``, ``cache_bytes``, ``advertise``,
    ``token_file``, ``tls_cert``, ``tls_key``, ``tls_client_ca``, ``shards``,
    ``max_streams``, ``store_options``, ``unix_socket`` (see :class:`ServerConfig`).
    """
    server = Server(root, **options).start()
    if block:
        server.serve_forever()
    return server


def config_dict(config: ServerConfig) -> dict[str, Any]:
    """The configuration as JSON-able data (for logs)."""
    return {k: v for k, v in asdict(config).items() if k not in ("store_options",)}
