"""``cogflight serve``: run the Flight service, every engine and server setting a flag.

The flags are generated from the one configuration model: one per field of
``EngineSettings`` and ``ServerSettings`` (``cache_bytes`` -> ``--cache-bytes``),
with the field's help, bounds and ``COGFLIGHT_*`` variable. The environment
gives the defaults; a flag wins over its variable. The settings reach
``flight_server.Server``, which hands the engine section to the ``ChipEngine``
of every worker.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from cogflight_core import Config, EngineSettings, InvalidArgumentError, ServerSettings
from cogflight_core._config import Setting, settings_fields, with_updates

from ._args import add_storage_flags, store_options

__all__ = ["SETTINGS_SECTIONS", "register", "server_from_args", "settings_from_args"]

# The sections ``serve`` exposes as flags, with the title of their help group.
SETTINGS_SECTIONS: tuple[tuple[str, type], ...] = (
    ("engine (per worker)", EngineSettings),
    ("server", ServerSettings),
)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    factory: Any = f.default_factory
    return factory()


def _repeatable(f: dataclasses.Field[Any]) -> bool:
    return isinstance(_default(f), tuple)


def _metavar(f: dataclasses.Field[Any], spec: Setting) -> str:
    from cogflight_core import parse_bytes

    if spec.parse is parse_bytes:
        return "SIZE"
    if f.name == "allow":
        return "PREFIX"
    if _repeatable(f):
        return "LOCATION"
    if spec.parse is int:
        return "N"
    if f.name.endswith(("_file", "_log")) or f.name.startswith("tls_"):
        return "PATH"
    if f.name == "log_format":
        return "{text,json}"
    return f.name.upper()


def _help(f: dataclasses.Field[Any], spec: Setting) -> str:
    default = _default(f)
    shown = spec.shown or ("none" if default in (None, ()) else str(default))
    parts = [spec.help]
    if _repeatable(f):
        parts.append("repeatable")
    if "default" not in spec.help:
        parts.append(f"default {shown}")
    parts.append(f"${spec.env}")
    return "; ".join(parts).replace("%", "%%")


def add_settings_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per engine and server setting, grouped by section."""
    for title, cls in SETTINGS_SECTIONS:
        group = parser.add_argument_group(f"{title} settings")
        for f, spec in settings_fields(cls):
            group.add_argument(
                _flag(f.name),
                dest=f.name,
                action="append" if _repeatable(f) else "store",
                metavar=_metavar(f, spec),
                default=None,
                help=_help(f, spec),
            )


def _parse(f: dataclasses.Field[Any], spec: Setting, raw: Any) -> Any:
    flag = _flag(f.name)
    if _repeatable(f):
        return tuple(v for item in raw for v in spec.parse(item))
    try:
        value = spec.parse(raw)
    except ValueError as exc:
        if spec.parse is int:
            example = _default(f) if isinstance(_default(f), int) else 4
            raise InvalidArgumentError(
                f"{flag} {raw!r} is not a whole number; write e.g. {flag} {example}"
            ) from exc
        raise InvalidArgumentError(f"{flag}: {exc}") from exc
    if spec.minimum is not None and value < spec.minimum:
        raise InvalidArgumentError(
            f"{flag} {raw} is too small; it must be at least {spec.minimum:g}"
        )
    return value


def settings_from_args(
    args: argparse.Namespace, base: Config | None = None
) -> tuple[EngineSettings, ServerSettings]:
    """The engine and server sections: ``base`` (default: the environment), flags on top."""
    base = base if base is not None else Config.from_env()
    out: list[Any] = []
    for current, cls in ((base.engine, EngineSettings), (base.server, ServerSettings)):
        updates = {
            f.name: _parse(f, spec, getattr(args, f.name))
            for f, spec in settings_fields(cls)
            if getattr(args, f.name, None) is not None
        }
        out.append(with_updates(current, source="command line", **updates))
    return out[0], out[1]


def server_from_args(args: argparse.Namespace) -> Any:
    """The ``flight_server.Server`` that ``cogflight serve`` runs (not started yet).

    ``--config FILE`` becomes ``COGFLIGHT_CONFIG`` for this process and its workers, so the
    storage section of the file reaches the catalog too.
    """
    import os

    from flight_server import Server

    if getattr(args, "config", None):
        Config.from_file(args.config)  # a bad file fails here, in one line
        os.environ["COGFLIGHT_CONFIG"] = args.config
    engine, server = settings_from_args(args, Config.from_env())
    return Server(args.root, engine=engine, server=server, store_options=store_options(args))


def _cmd_serve(args: argparse.Namespace) -> int:
    from cogflight_core._logging import configure_logging

    server = server_from_args(args)
    configure_logging(None, server.config.server.log_format)  # workers follow it too
    server.start()
    server.serve_forever()
    return 0


def register(sub: Any) -> None:
    """Add ``serve`` to the command line."""
    p = sub.add_parser(
        "serve",
        help="serve the Collections under a root over Arrow Flight",
        description="Serve every NAME.parquet Collection under ROOT as the flight NAME. "
        "Every setting below also reads from its COGFLIGHT_* environment variable "
        "(docs/configuration.md); a flag wins. Query and ticket format: "
        "docs/wire-contract.md.",
    )
    p.add_argument("--root", required=True, help="directory or s3://, gs://, az:// prefix")
    p.add_argument(
        "--config",
        metavar="FILE",
        help="TOML file with [storage], [engine] and [server] settings (below the environment "
        "and the flags); $COGFLIGHT_CONFIG",
    )
    add_settings_flags(p)
    add_storage_flags(p)
    p.set_defaults(func=_cmd_serve, default_log="INFO")
