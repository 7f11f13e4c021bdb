"""Configuration: one model (storage, engine, server), one table of environment variables.

Every setting is a field of :class:`StorageSettings`, :class:`EngineSettings` or
:class:`ServerSettings`, with its variable (``COGFLIGHT_<NAME>``), parser, bounds
and help in the field's metadata. :meth:`Config.from_env` reads them all once;
``cogflight serve`` builds one command-line flag per engine and server field from
the same metadata, and ``docs/configuration.md`` holds the table
:func:`environment_table` generates. Explicit arguments always win over the
environment. Dependency-free (standard library only).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from functools import lru_cache
from typing import Any

from ._errors import InvalidArgumentError

__all__ = [
    "Config",
    "EngineSettings",
    "ServerSettings",
    "Setting",
    "StorageSettings",
    "config",
    "environment_table",
    "parse_bytes",
    "settings_fields",
]

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "t": 1000**4,
    "tb": 1000**4,
    "tib": 1024**4,
}


def parse_bytes(value: str | int) -> int:
    """Parse ``"64KiB"``, ``"1.5GB"`` or ``65536`` into a byte count."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise InvalidArgumentError(f"byte size must be >= 0, got {value}")
        return value
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", str(value))
    if not match or match.group(2).lower() not in _UNITS:
        raise InvalidArgumentError(
            f"cannot read {value!r} as a byte size; use e.g. 65536, '64KiB' or '2GB'"
        )
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def _text(value: str) -> str:
    return value


def _csv(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _log_format(value: str) -> str:
    if value.strip().lower() not in ("text", "json"):
        raise InvalidArgumentError(f"log format {value!r}: use 'text' or 'json'")
    return value.strip().lower()


@dataclass(frozen=True, slots=True)
class Setting:
    """What one field's metadata says: how to read it and what it means."""

    env: str
    help: str
    parse: Callable[[str], Any]
    minimum: float | None = None
    shown: str | None = None  # the default as the docs print it, when not the raw value


def _setting(
    default: Any,
    help: str,
    parse: Callable[[str], Any] = int,
    *,
    minimum: float | None = None,
    shown: str | None = None,
    factory: Callable[[], Any] | None = None,
    env: str | None = None,
) -> Any:
    meta = {"setting": (help, parse, minimum, shown, env)}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True, slots=True)
class StorageSettings:
    """Reading headers and bytes from object storage (used by ``catalog`` and the engine)."""

    read_ahead: int = _setting(
        64 * 1024,
        "bytes of the first (usually only) header request",
        parse_bytes,
        minimum=16,
        shown="64 KiB",
    )
    header_concurrency: int = _setting(64, "headers parsed at once while building", minimum=1)
    max_ifds: int = _setting(256, "IFDs followed per file before it is refused", minimum=1)
    max_tag_bytes: int = _setting(
        64 * 1024 * 1024,
        "largest tag value read from a header",
        parse_bytes,
        minimum=1,
        shown="64 MiB",
    )
    request_timeout_s: float = _setting(
        30.0,
        "timeout of one request to object storage (seconds)",
        float,
        minimum=0.001,
        env="COGFLIGHT_REQUEST_TIMEOUT",
    )
    max_retries: int = _setting(3, "retries of a failed or short read, with backoff", minimum=0)
    max_samples: int = _setting(
        1024, "samples (bands) one file may declare before it is refused", minimum=1
    )
    max_tile_bytes: int = _setting(
        256 * 1024 * 1024,
        "decoded bytes of one tile; larger tiles are refused when indexing and before decoding",
        parse_bytes,
        minimum=1,
        shown="256 MiB",
    )


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """The chip engine: cache, concurrency and request limits (one engine per process)."""

    cache_bytes: int = _setting(
        1024**3, "decoded-tile cache budget", parse_bytes, minimum=0, shown="1 GiB"
    )
    max_requests: int = _setting(64, "concurrent range requests to object storage", minimum=1)
    decode_threads: int = _setting(
        max(1, os.cpu_count() or 1), "threads decoding tiles", minimum=1, shown="cores"
    )
    coalesce_bytes: int = _setting(
        64 * 1024,
        "ranges of one file closer than this are fetched together",
        parse_bytes,
        minimum=0,
        shown="64 KiB",
    )
    max_run_bytes: int = _setting(
        4 * 1024 * 1024, "largest coalesced request", parse_bytes, minimum=1, shown="4 MiB"
    )
    max_chip_pixels: int = _setting(
        4096 * 4096,
        "largest chip (height x width) a request may ask for",
        minimum=1,
        shown="4096 x 4096",
    )
    max_chips: int = _setting(100_000, "most chips one request may produce", minimum=1)
    max_batch_bytes: int = _setting(
        256 * 1024 * 1024,
        "pixel bytes of one batch: batch_rows is lowered to fit; a larger single chip is refused",
        parse_bytes,
        minimum=1,
        shown="256 MiB",
    )
    max_endpoints: int = _setting(1024, "endpoints (shards) one plan may ask for", minimum=1)
    allocator_retain_bytes: int = _setting(
        1024**3,
        "freed memory the C allocator (glibc) keeps for reuse instead of returning it to the "
        "OS: fresh memory costs a page fault per 4 KiB; 0 leaves the allocator as it is",
        parse_bytes,
        minimum=0,
        shown="1 GiB",
    )


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """The Flight service of ``cogflight serve``."""

    host: str = _setting("127.0.0.1", "address to bind (0.0.0.0 for every interface)", _text)
    port: int = _setting(8815, "first port (0: any free port)", minimum=0)
    workers: int = _setting(1, "processes on consecutive ports (the GIL binds one)", minimum=1)
    max_streams: int = _setting(16, "concurrent chip streams before UNAVAILABLE", minimum=1)
    shards: int | None = _setting(
        None, "endpoints per query by default (default: one per worker)", minimum=1
    )
    advertise: tuple[str, ...] = _setting(
        (),
        "locations clients use for endpoints, comma-separated (one per replica)",
        _csv,
        factory=tuple,
    )
    allow: tuple[str, ...] = _setting(
        (),
        "prefixes the server may read besides the root's own store, comma-separated (local "
        "directories, s3://bucket/prefix, https://host/path, https://*.domain/)",
        _csv,
        factory=tuple,
    )
    stream_timeout_s: float = _setting(
        3600.0, "longest a chip stream may run before the server cancels it", float, minimum=0.1
    )
    max_streams_per_token: int | None = _setting(
        None, "concurrent chip streams one token may hold (default: max_streams)", minimum=1
    )
    drain_s: float = _setting(
        30.0,
        "on shutdown (SIGTERM): seconds to let streams finish before cancelling them",
        float,
        minimum=0,
    )
    token_file: str | None = _setting(
        None, "bearer tokens: one 'TOKEN [collection,...]' per line", _text
    )
    tls_cert: str | None = _setting(None, "PEM certificate (enables TLS)", _text)
    tls_key: str | None = _setting(None, "PEM private key", _text)
    tls_client_ca: str | None = _setting(None, "PEM CA of client certificates (mutual TLS)", _text)
    http_port: int = _setting(
        0,
        "HTTP port of /healthz, /readyz and /metrics (0: off); worker k listens on http_port + k",
        minimum=0,
    )
    usage_log: str | None = _setting(
        None,
        "append one JSON line per finished chip stream to this file (per-token usage); "
        "worker k > 0 writes PATH.wK",
        _text,
    )
    log_format: str = _setting(
        "text", "log lines: text, or json (one object per line)", _log_format
    )


_SECTIONS = (("storage", StorageSettings), ("engine", EngineSettings), ("server", ServerSettings))


def settings_fields(cls: type) -> Iterator[tuple[dataclasses.Field[Any], Setting]]:
    """Each field of a settings class with its :class:`Setting`."""
    for f in fields(cls):
        help_, parse, minimum, shown, env = f.metadata["setting"]
        yield f, Setting(env or f"COGFLIGHT_{f.name.upper()}", help_, parse, minimum, shown)


def _check(cls: type, name: str, value: Any, source: str) -> Any:
    spec = dict((f.name, s) for f, s in settings_fields(cls))[name]
    if spec.minimum is not None and isinstance(value, int | float) and value < spec.minimum:
        raise InvalidArgumentError(f"{source}: must be >= {spec.minimum:g}, got {value}")
    return value


def _from_file_section(cls: type, table: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Checked values of one ``[section]`` of a configuration file."""
    specs = dict(settings_fields(cls))
    by_name = {f.name: (f, s) for f, s in specs.items()}
    out: dict[str, Any] = {}
    for name, raw in table.items():
        if name not in by_name:
            raise InvalidArgumentError(
                f"{source}: unknown setting {name!r}; known: {', '.join(sorted(by_name))}"
            )
        _, spec = by_name[name]
        where = f"{source}: {name}"
        try:
            if isinstance(raw, str):
                value = spec.parse(raw)
            elif isinstance(raw, list):
                value = tuple(str(v) for v in raw)
            else:
                value = raw
        except (ValueError, InvalidArgumentError) as exc:
            raise InvalidArgumentError(f"{where}: {exc}") from exc
        out[name] = _check(cls, name, value, where)
    return out


def _from_env(cls: type, env: Mapping[str, str], base: Any = None) -> Any:
    updates: dict[str, Any] = {}
    for f, spec in settings_fields(cls):
        raw = env.get(spec.env)
        if raw is None or raw == "":
            continue
        source = f"environment variable {spec.env}={raw!r}"
        try:
            value = spec.parse(raw)
        except (ValueError, InvalidArgumentError) as exc:
            raise InvalidArgumentError(f"{source}: {exc}") from exc
        updates[f.name] = _check(cls, f.name, value, source)
    return replace(base, **updates) if base is not None else cls(**updates)


def with_updates(settings: Any, source: str = "argument", **updates: Any) -> Any:
    """``settings`` with some fields replaced, each checked (None leaves a field as it is).

    A string value is read by the field's parser (``cache_bytes="2GiB"``).
    """
    cls = type(settings)
    specs = {f.name: spec for f, spec in settings_fields(cls)}
    clean: dict[str, Any] = {}
    for name, value in updates.items():
        if name not in specs:
            raise InvalidArgumentError(f"{name}: not a setting of {cls.__name__}")
        if value is None:
            continue
        where = f"{source} {name}"
        parsed = value
        if isinstance(value, str) and specs[name].parse is not _text:
            try:
                parsed = specs[name].parse(value)
            except (ValueError, InvalidArgumentError) as exc:
                raise InvalidArgumentError(f"{where}: {exc}") from exc
        clean[name] = _check(cls, name, parsed, where)
    return replace(settings, **clean)


@dataclass(frozen=True, slots=True)
class Config:
    """Every setting of a cogflight process, by section."""

    storage: StorageSettings = field(default_factory=StorageSettings)
    engine: EngineSettings = field(default_factory=EngineSettings)
    server: ServerSettings = field(default_factory=ServerSettings)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, file: str | os.PathLike[str] | None = None
    ) -> Config:
        """Defaults, then a TOML file (``file`` or ``COGFLIGHT_CONFIG``), then the variables.

        The file has a table per section (``[storage]``, ``[engine]``, ``[server]``) whose
        keys are the setting names (``cache_bytes = "2GiB"``, ``allow = ["s3://b/"]``).

        Raises:
            InvalidArgumentError: a variable or file value cannot be read or is out of range,
                or the file names an unknown section or setting.
        """
        env = os.environ if environ is None else environ
        path = file if file is not None else env.get("COGFLIGHT_CONFIG") or None
        base = cls.from_file(path) if path else cls()
        return cls(**{n: _from_env(s, env, getattr(base, n)) for n, s in _SECTIONS})

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Config:
        """A configuration from a TOML file (unset settings keep their defaults)."""
        import tomllib

        source = f"configuration file {os.fspath(path)}"
        try:
            with open(path, "rb") as fh:
                doc = tomllib.load(fh)
        except OSError as exc:
            raise InvalidArgumentError(f"{source}: cannot read it ({exc.strerror})") from exc
        except tomllib.TOMLDecodeError as exc:
            raise InvalidArgumentError(f"{source}: not valid TOML ({exc})") from exc
        sections = dict(_SECTIONS)
        unknown = sorted(set(doc) - set(sections))
        if unknown:
            raise InvalidArgumentError(
                f"{source}: unknown section [{unknown[0]}]; use {', '.join(sections)}"
            )
        parts: dict[str, Any] = {
            name: section(**_from_file_section(section, doc.get(name, {}), source))
            for name, section in _SECTIONS
        }
        return cls(**parts)


@lru_cache(maxsize=1)
def config() -> Config:
    """The configuration of this process, read from the environment on first use."""
    return Config.from_env()


def environment_table() -> str:
    """The table of every environment variable (markdown), for ``docs/configuration.md``."""
    rows = ["| variable | section | default | meaning |", "|---|---|---|---|"]
    for name, section in _SECTIONS:
        for f, spec in settings_fields(section):
            factory: Any = f.default_factory
            default = f.default if f.default is not dataclasses.MISSING else factory()
            shown = spec.shown or ("none" if default in (None, ()) else str(default))
            rows.append(f"| `{spec.env}` | {name} | {shown} | {spec.help} |")
    return "\n".join(rows)
