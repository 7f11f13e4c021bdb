"""``cogflight preview``: a contact sheet (PNG) of the chips of one query.

Talks to a server through ``flight_client`` only (an embedded one over
``--root`` when no ``--location`` is given).
"""

from __future__ import annotations

import argparse
from typing import Any

from cogflight_core import CogflightError, InvalidArgumentError

from ._args import bbox_help, parse_bbox, split_csv

__all__ = ["register"]


def _cmd_preview(args: argparse.Namespace) -> int:
    bbox = parse_bbox(args.bbox)  # before connecting: a typo fails at once
    from flight_client import connect
    from flight_client._preview import preview

    with connect(
        args.location, root=None if args.location else args.root, token=args.token
    ) as client:
        try:
            path, n = preview(
                client,
                args.collection,
                out=args.out,
                limit=args.limit,
                geometries=[bbox],
                geometry_crs=args.crs,
                bands=split_csv(args.bands),
                chip_size=args.chip_size,
                filter={"date_range": args.date_range} if args.date_range else None,
            )
        except CogflightError:
            raise
        except ValueError as exc:  # "the query returned no chips"
            raise InvalidArgumentError(
                f"{exc}; check --bbox, --crs and --date-range against `cogflight info`"
            ) from exc
    print(f"wrote {n} chips to {path}")
    return 0


def register(sub: Any) -> None:
    """Add ``preview`` to the command line."""
    p = sub.add_parser(
        "preview",
        help="write a contact sheet (PNG) of chips",
        description="Stream chips of a query and lay them out in one PNG: 3 bands as RGB "
        "(2-98% stretch), 1 band with a colour map, invalid pixels black.",
    )
    p.add_argument("collection", help="Collection name")
    p.add_argument("--bbox", required=True, help=bbox_help("--crs"))
    p.add_argument("--crs", default="EPSG:4326", help="CRS of --bbox (default EPSG:4326)")
    p.add_argument("--bands", help="comma-separated: 3 for RGB or 1 for a colour map")
    p.add_argument("--chip-size", type=int, help="pixels (default: the bbox's window)")
    p.add_argument("--date-range", help="START/END, e.g. 2024-06-01/2024-08-31")
    p.add_argument("--limit", type=int, default=16, help="chips on the sheet (default 16)")
    p.add_argument("--out", default="chips.png", help="PNG to write (default chips.png)")
    p.add_argument("--location", help="server, e.g. grpc://host:8815 (default: embedded)")
    p.add_argument(
        "--root",
        default="collections",
        help="Collections for the embedded server (default collections)",
    )
    p.add_argument("--token", help="bearer token of a server started with --token-file")
    p.set_defaults(func=_cmd_preview)
