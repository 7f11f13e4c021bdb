"""Running the Flight service: one process or several, in the foreground or embedded.

With ``workers=N`` the service runs in N processes on N consecutive ports (the
first in this process); every worker advertises all N locations, so a query's
shard endpoints are placed over them by tile locality (each tile fetched and decoded
by one worker; ``engine._locality``) and a client reading endpoints in parallel uses
every process (one Python process is bound by its GIL). Workers
are started with ``spawn``: gRPC and obstore are not fork-safe. With ``http_port``
set, worker k also serves ``/healthz``, ``/readyz`` and ``/metrics`` on
``http_port + k`` (:mod:`._probes`), and writes its usage log to its own file
(:func:`usage_log_path`).

A :class:`ServerConfig` carries the server and engine sections of the one
configuration model (``cogflight_core.Config``), so every engine limit given to
:class:`Server` (or to ``cogflight serve``) reaches the :class:`ChipEngine` of
every worker; what is not given comes from the ``COGFLIGHT_*`` environment.
A :class:`Server` is driven from one thread (start, then shutdown); the service
itself serves concurrently.
"""

from __future__ import annotations

import errno
import logging
import multiprocessing as mp
import signal
import socket
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import pyarrow as pa

from catalog import AccessPolicy
from cogflight_core import (
    CogflightError,
    EngineSettings,
    InvalidArgumentError,
    ServerSettings,
    UnavailableError,
    config,
    parse_bytes,
)
from cogflight_core._config import settings_fields, with_updates
from cogflight_core._logging import configure_logging

from ._probes import ProbeServer, probe_server
from ._roots import CollectionRoot
from ._service import FlightService, load_tokens
from .engine import ChipEngine

__all__ = ["Server", "ServerConfig", "serve"]

logger = logging.getLogger("cogflight.server")

_SERVER_FIELDS = frozenset(f.name for f in fields(ServerSettings))
_ENGINE_FIELDS = frozenset(f.name for f in fields(EngineSettings))
_BYTE_FIELDS = frozenset(
    f.name for f, spec in settings_fields(EngineSettings) if spec.parse is parse_bytes
)


class ServerConfig:
    """Everything a worker needs to start (picklable, for spawned workers).

    Args:
        root: directory or object-store prefix holding ``NAME.parquet`` Collections.
        server: the server section (default: the environment's).
        engine: the engine section (default: the environment's).
        store_options: storage options of the root and the imagery.
        unix_socket: serve on this local socket instead of TCP (one worker).
        policy: the data access policy (default: the root's own store plus the
            ``allow`` prefixes of the server section, ``AccessPolicy.for_root``).
            The embedded server of ``flight_client.connect(root=...)``, which reads
            its user's own files in their own process, passes ``AccessPolicy.open()``.
        **settings: fields of either section by name (``port=0``,
            ``cache_bytes="2GiB"``, ``max_chips=5``); they win over ``server``
            and ``engine``, and each is checked against its bounds.

    The fields of both sections also read as attributes (``config.port``,
    ``config.cache_bytes``), as the flat configuration of earlier releases did.
    """

    def __init__(
        self,
        root: str,
        *,
        server: ServerSettings | None = None,
        engine: EngineSettings | None = None,
        store_options: Mapping[str, Any] | None = None,
        unix_socket: str | None = None,
        policy: AccessPolicy | None = None,
        **settings: Any,
    ) -> None:
        unknown = sorted(set(settings) - _SERVER_FIELDS - _ENGINE_FIELDS)
        if unknown:
            raise TypeError(f"ServerConfig got unexpected keyword argument(s) {unknown}")
        for name in _BYTE_FIELDS:  # sizes also as text: "2GiB"
            if isinstance(settings.get(name), str):
                settings[name] = parse_bytes(settings[name])
        if settings.get("advertise") is not None:
            settings["advertise"] = tuple(settings["advertise"])
        pick = {"server": _SERVER_FIELDS, "engine": _ENGINE_FIELDS}
        by_section = {
            k: {n: v for n, v in settings.items() if n in names} for k, names in pick.items()
        }
        self.root = str(root)
        self.server: ServerSettings = with_updates(
            server if server is not None else config().server, **by_section["server"]
        )
        self.engine: EngineSettings = with_updates(
            engine if engine is not None else config().engine, **by_section["engine"]
        )
        self.store_options = dict(store_options) if store_options else None
        self.unix_socket = unix_socket
        endpoint = (self.store_options or {}).get("endpoint")
        # Built here, so a bad --allow prefix fails before anything binds.
        self.policy: AccessPolicy = (
            policy
            if policy is not None
            else AccessPolicy.for_root(
                self.root, self.server.allow, endpoints=[endpoint] if endpoint else ()
            )
        )

    def __getattr__(self, name: str) -> Any:
        """The flat names of earlier releases: ``config.port``, ``config.cache_bytes``."""
        section = (
            "server" if name in _SERVER_FIELDS else "engine" if name in _ENGINE_FIELDS else None
        )
        if section is None or section not in self.__dict__:  # also while unpickling
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(self.__dict__[section], name)

    def __repr__(self) -> str:
        return (
            f"ServerConfig(root={self.root!r}, server={self.server!r}, engine={self.engine!r}, "
            f"unix_socket={self.unix_socket!r})"
        )

    def scheme(self) -> str:
        """``grpc+tls`` when a certificate is configured, else ``grpc``."""
        return "grpc+tls" if self.server.tls_cert else "grpc"

    def location(self, port: int) -> str:
        """Where a worker on ``port`` listens."""
        if self.unix_socket:
            return f"grpc+unix://{self.unix_socket}"
        return f"{self.scheme()}://{self.server.host}:{port}"


def _engine(settings: EngineSettings, policy: AccessPolicy | None = None) -> ChipEngine:
    """One engine per worker, with every engine setting and the data access policy."""
    return ChipEngine(settings, policy=policy)


def _read_file(path: str, what: str, flag: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InvalidArgumentError(
            f"cannot read the {what} {path} ({exc.strerror or exc}); pass a readable file to {flag}"
        ) from exc


def _tokens(path: str) -> dict[str, frozenset[str] | None]:
    try:
        return load_tokens(path)
    except CogflightError:
        raise
    except OSError as exc:
        raise InvalidArgumentError(
            f"cannot read the token file {path} ({exc.strerror or exc}); pass a readable "
            "file to --token-file"
        ) from exc
    except ValueError as exc:
        raise InvalidArgumentError(f"{exc}; fix the token file") from exc


def _check_port(host: str, port: int) -> None:
    """Fail with the port's number before gRPC writes its own bind error to stderr."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise InvalidArgumentError(
            f"cannot resolve --host {host!r} ({exc.strerror}); pass an address of this machine"
        ) from exc
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC binds
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UnavailableError(
                    f"port {port} on {host} is already in use; stop what listens there or "
                    "choose another --port (0: any free port)"
                ) from exc
            raise UnavailableError(
                f"cannot bind {host}:{port} ({exc.strerror or exc}); choose another --port "
                "or --host"
            ) from exc


def _service(
    config: ServerConfig, port: int, worker: int, locations: Sequence[str] | None
) -> FlightService:
    s = config.server
    if s.workers > 1 and config.unix_socket:
        raise InvalidArgumentError("workers > 1 needs TCP ports, not a unix socket")
    tokens = _tokens(s.token_file) if s.token_file else None
    tls = None
    if s.tls_cert or s.tls_key:
        if not (s.tls_cert and s.tls_key):
            raise InvalidArgumentError("TLS needs both --tls-cert and --tls-key")
        cert = _read_file(s.tls_cert, "TLS certificate", "--tls-cert")
        tls = [(cert, _read_file(s.tls_key, "TLS key", "--tls-key"))]
    ca = _read_file(s.tls_client_ca, "client CA", "--tls-client-ca") if s.tls_client_ca else None
    if ca and not tls:
        raise InvalidArgumentError("--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key")
    root = CollectionRoot(
        config.root,
        store_options=config.store_options,  # type: ignore[arg-type]
        policy=config.policy,
    )
    if not config.unix_socket and port:
        _check_port(s.host, port)
    engine = _engine(config.engine, config.policy)
    location = config.location(port)
    try:
        return FlightService(
            location,
            root=root,
            engine=engine,
            locations=list(s.advertise) or (list(locations) if locations else None),
            default_shards=s.shards,
            max_streams=s.max_streams,
            stream_timeout_s=s.stream_timeout_s,
            max_streams_per_token=s.max_streams_per_token,
            tokens=tokens,
            tls_certificates=tls,
            verify_client=ca is not None,
            root_certificates=ca,
            worker=worker,
            usage_log=usage_log_path(s.usage_log, worker) if s.usage_log else None,
        )
    except pa.ArrowException as exc:
        engine.close()
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UnavailableError(
            f"cannot serve at {location} ({reason}); check --host and --port"
        ) from exc


def usage_log_path(path: str, worker: int) -> str:
    """The usage log of ``worker``: ``path`` for worker 0, ``path.wK`` for worker K.

    One file per process, so appends never interleave and need no lock shared
    between processes; every record names its worker, and ``cat PATH PATH.w*``
    is the whole log.
    """
    return path if worker == 0 else f"{path}.w{worker}"


def _start(
    config: ServerConfig, port: int, worker: int
) -> tuple[FlightService, ProbeServer | None]:
    """A worker's Flight service, and its HTTP probes on ``http_port + worker`` when set."""
    svc = _service(config, port, worker, None)
    s = config.server
    if not s.http_port:
        return svc, None
    try:
        return svc, probe_server(svc, s.host, s.http_port + worker)
    except BaseException:
        _stop_service(svc, 0.0)
        raise


def _worker_main(config: ServerConfig, worker: int, conn: Any, log_level: int) -> None:
    """Entry point of a spawned worker: bind, report the port, wait for peers, serve."""
    configure_logging(log_level, config.server.log_format, worker=worker)
    try:
        svc, probes = _start(
            config, config.server.port + worker if config.server.port else 0, worker
        )
    except CogflightError as exc:  # the parent reports it; no traceback for a user mistake
        conn.send(("error", str(exc).splitlines()[0]))
        sys.exit(2)
    except BaseException as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        raise
    conn.send(("port", svc.port))
    locations = conn.recv()
    if not config.server.advertise:
        svc.locations = list(locations)
    # SIGTERM drains: new streams are refused, running ones get drain_s to finish.
    # SIGINT (a terminal's Ctrl-C reaches the whole group) is the parent's to handle:
    # it answers with SIGTERM.
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logger.info("worker %d serving %s on %s", worker, config.root, svc.location)
    stop.wait()
    _stop_service(svc, config.server.drain_s, probes)


def _stop_service(svc: FlightService, drain_s: float, probes: ProbeServer | None = None) -> None:
    """Drain, stop serving and free the engine of one service, then close its probes.

    The probes answer until the end: ``/readyz`` says 503 from the moment draining
    starts, so a load balancer stops sending new clients while streams finish.

    pyarrow's ``shutdown()`` waits for every call in progress, and a client that
    stops reading without disconnecting holds its call open (gRPC's write waits for
    it), so the wait is bounded here and the server left to its daemon threads.
    """
    svc.drain(drain_s)
    stopper = threading.Thread(target=svc.shutdown, name="cogflight-shutdown", daemon=True)
    stopper.start()
    stopper.join(timeout=10)
    if stopper.is_alive():
        logger.warning(
            "shutdown: a call is still open after 10 s (a client that stopped "
            "reading); leaving it behind"
        )
    svc.close()
    svc.engine.close()
    if probes is not None:
        probes.close()


class Server:
    """The Flight service in this process (plus spawned workers), as a context manager.

    ``Server(root="collections", port=0).start()`` binds free ports; ``location``
    is the first worker's, ``locations`` all of them. ``serve_forever()`` blocks
    until SIGINT/SIGTERM; ``shutdown()`` stops every worker. Keywords are those
    of :class:`ServerConfig`: ``server=``/``engine=`` sections and any of their
    fields by name (``workers=2``, ``cache_bytes="2GiB"``, ``max_chips=1000``).
    """

    def __init__(self, root: str, **options: Any) -> None:
        self.config = ServerConfig(str(root), **options)
        if self.config.server.workers < 1:
            raise InvalidArgumentError("workers must be >= 1")
        self._service: FlightService | None = None
        self._probes: ProbeServer | None = None
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
        svc, self._probes = _start(cfg, cfg.server.port, 0)
        self._service = svc
        ports = [svc.port]
        ctx = mp.get_context("spawn")
        level = logging.getLogger("cogflight.server").getEffectiveLevel()
        try:
            for w in range(1, cfg.server.workers):
                parent, child = ctx.Pipe()
                proc = ctx.Process(
                    target=_worker_main,
                    args=(cfg, w, child, level),
                    daemon=True,
                    name=f"cogflight-worker-{w}",
                )
                proc.start()
                self._children.append((proc, parent))
                try:
                    kind, value = parent.recv()
                except EOFError:
                    proc.join(timeout=10)
                    kind, value = "error", f"it exited with code {proc.exitcode}"
                if kind == "error":
                    raise UnavailableError(f"worker {w} failed to start: {value}")
                ports.append(int(value))
        except BaseException:
            self.shutdown()
            raise
        self.locations = [cfg.location(p) for p in ports]
        if not cfg.server.advertise:
            svc.locations = list(self.locations)
        for _, conn in self._children:
            conn.send(self.locations)
        # wait(), not serve(): serve() would install gRPC's own SIGINT/SIGTERM handlers,
        # which stop at once instead of draining (the server already runs).
        self._thread = threading.Thread(target=svc.wait, name="cogflight-flight", daemon=True)
        self._thread.start()
        logger.info(
            "serving %s at %s (%d worker%s)",
            cfg.root,
            ", ".join(self.locations),
            cfg.server.workers,
            "s" if cfg.server.workers > 1 else "",
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
        """Drain and stop every worker, then free their engines.

        New streams get UNAVAILABLE ("server is draining"); running ones get
        ``drain_s`` seconds to finish, then are cancelled (UNAVAILABLE).
        """
        drain_s = self.config.server.drain_s
        for proc, _ in self._children:
            if proc.is_alive():
                proc.terminate()  # SIGTERM: the worker drains too
        if self._service is not None:
            _stop_service(self._service, drain_s, self._probes)
            self._probes = None
            if self._thread is not None:
                self._thread.join(timeout=10)
            self._service = None
        for proc, _ in self._children:
            proc.join(timeout=drain_s + 20)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
        self._children.clear()

    def __enter__(self) -> Server:
        return self.start() if self._service is None else self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def serve(root: str, *, block: bool = True, **options: Any) -> Server:
    """Serve every Collection under ``root``; blocks until interrupted unless ``block=False``.

    Options: those of :class:`ServerConfig` (``server=``, ``engine=``, any field of
    either section by name, ``store_options``, ``unix_socket``).
    """
    server = Server(root, **options).start()
    if block:
        server.serve_forever()
    return server


def config_dict(config: ServerConfig) -> dict[str, Any]:
    """The configuration as JSON-able data (for logs)."""
    return {
        "root": config.root,
        "server": asdict(config.server),
        "engine": asdict(config.engine),
        "unix_socket": config.unix_socket,
        "policy": config.policy.describe(),
    }
