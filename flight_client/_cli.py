"""``cogflight preview``: a contact sheet of chips (registered into the catalog CLI)."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register"]


def _cmd_preview(args: argparse.Namespace) -> int:
    from ._client import connect
    from ._preview import preview

    bbox = [float(v) for v in args.bbox.split(",")]
    if len(bbox) != 4:
        from ._errors import InvalidArgumentError

        raise InvalidArgumentError("--bbox: expected xmin,ymin,xmax,ymax")
    with connect(
        args.location, root=None if args.location else args.root, token=args.token
    ) as client:
        path, n = preview(
            client,
            args.collection,
            out=args.out,
            limit=args.limit,
            geometries=[bbox],
            geometry_crs=args.crs,
            bands=args.bands.split(",") if args.bands else None,
            chip_size=args.chip_size,
            filter={"date_range": args.date_range} if args.date_range else None,
        )
    print(f"wrote {n} chips to {path}")
    return 0


def register(sub: Any) -> None:
    """Add ``preview`` to the ``cogflight`` command line."""
    p = sub.add_parser(
        "preview",
        help="write a contact sheet (PNG) of chips",
        description="Stream chips of a query and lay them out in one PNG: 3 bands as RGB "
        "(2-98%% stretch), 1 band with a colour map, invalid pixels black.",
    )
    p.add_argument("collection", help="Collection name")
    p.add_argument("--bbox", required=True, help="xmin,ymin,xmax,ymax in --crs")
    p.add_argument("--crs", default="EPSG:4326", help="CRS of --bbox (default EPSG:4326)")
    p.add_argument("--bands", help="comma-separated: 3 for RGB or 1 for a colour map")
    p.add_argument("--chip-size", type=int, help="pixels (default: the bbox's window)")
    p.add_argument("--date-range", help="START/END")
    p.add_argument("--limit", type=int, default=16, help="chips on the sheet")
    p.add_argument("--out", default="chips.png", help="PNG to write")
    p.add_argument("--location", help="server, e.g. grpc://host:8815 (default: embedded)")
    p.add_argument("--root", default="collections", help="Collections for the embedded server")
    p.add_argument("--token", help="bearer token")
    p.set_defaults(func=_cmd_preview)
