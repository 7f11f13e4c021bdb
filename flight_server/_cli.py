"""``cogflight serve``: run the Flight service (registered into the catalog CLI)."""

from __future__ import annotations

import argparse
import logging
from typing import Any

__all__ = ["register"]

logger = logging.getLogger("cogflight.server")


def _cmd_serve(args: argparse.Namespace) -> int:
    from catalog import parse_bytes

    from ._serve import serve

    opts: dict[str, Any] = {}
    if args.anonymous:
        opts["anonymous"] = True
    if args.region:
        opts["region"] = args.region
    if args.endpoint:
        opts["endpoint"] = args.endpoint
        opts["allow_http"] = args.endpoint.startswith("http://")
    serve(
        args.root,
        host=args.host,
        port=args.port,
        workers=args.workers,
        cache_bytes=parse_bytes(args.cache_bytes) if args.cache_bytes else None,
        advertise=args.advertise or [],
        token_file=args.token_file,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        shards=args.shards,
        max_streams=args.max_streams,
        store_options=opts or None,
    )
    return 0


def register(sub: Any) -> None:
    """Add ``serve`` to the ``cogflight`` command line."""
    p = sub.add_parser(
        "serve",
        help="serve the Collections under a root over Arrow Flight",
        description="Serve every NAME.parquet Collection under ROOT as the flight NAME. "
        "Query and ticket format: docs/wire-contract.md.",
    )
    p.add_argument("--root", required=True, help="directory or s3://, gs://, az:// prefix")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=8815, help="first port (0: any free port)")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes, on consecutive ports (the GIL binds one process)",
    )
    p.add_argument("--cache-bytes", help="decoded-tile cache per worker, e.g. 2GiB")
    p.add_argument(
        "--advertise",
        action="append",
        metavar="LOCATION",
        help="location clients should use for chip endpoints (repeat per replica)",
    )
    p.add_argument("--shards", type=int, help="endpoints per query by default")
    p.add_argument("--max-streams", type=int, default=16, help="concurrent chip streams")
    p.add_argument("--token-file", help="bearer tokens: one 'TOKEN [collection,...]' per line")
    p.add_argument("--tls-cert", help="PEM certificate (enables TLS)")
    p.add_argument("--tls-key", help="PEM private key")
    p.add_argument("--tls-client-ca", help="PEM CA of client certificates (mutual TLS)")
    g = p.add_argument_group("storage of the root and the imagery")
    g.add_argument("--anonymous", action="store_true")
    g.add_argument("--region")
    g.add_argument("--endpoint")
    p.set_defaults(func=_cmd_serve)
