"""Arguments several commands share: bounding boxes, lists, pairs, JSON, storage flags.

Every parser here raises :class:`~cogflight_core.InvalidArgumentError` naming the
flag, so the command line reports a bad value in one line instead of a traceback.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cogflight_core import InvalidArgumentError, parse_bytes

if TYPE_CHECKING:
    from catalog import StoreOptions

__all__ = [
    "add_storage_flags",
    "bbox_help",
    "parse_bbox",
    "parse_json",
    "parse_pairs",
    "parse_size",
    "split_csv",
    "store_options",
]


def bbox_help(crs: str) -> str:
    """The help of a ``--bbox`` flag in ``crs``."""
    return f"xmin,ymin,xmax,ymax in {crs} (write --bbox=-10,40,-9,41 if the first is negative)"


def parse_bbox(text: str | None, flag: str = "--bbox") -> list[float] | None:
    """Four comma-separated numbers, or None when the flag was not given."""
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 4:
        raise InvalidArgumentError(
            f"{flag} {text!r} is not four numbers; write xmin,ymin,xmax,ymax, "
            f"e.g. {flag} 11,46,11.2,46.2"
        )
    return values


def split_csv(text: str | None) -> list[str] | None:
    """``"a,b"`` -> ``["a", "b"]``; None stays None."""
    return [v.strip() for v in text.split(",") if v.strip()] if text else None


def parse_pairs(items: Sequence[str] | None, flag: str) -> dict[str, str]:
    """Repeated ``NAME=VALUE`` flags as a dict."""
    out: dict[str, str] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise InvalidArgumentError(f"{flag} {item!r} is not NAME=VALUE; write e.g. {flag} a=b")
        out[name] = value
    return out


def parse_json(text: str | None, flag: str) -> Any:
    """A JSON flag value, or None when the flag was not given."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidArgumentError(
            f"{flag} is not valid JSON ({exc.msg} at character {exc.pos}); quote it for the "
            """shell, e.g. '{"eo:cloud_cover": {"lt": 20}}'"""
        ) from exc


def parse_size(text: str | None, flag: str) -> int | None:
    """A byte size such as ``64KiB``, or None when the flag was not given."""
    if text is None:
        return None
    try:
        return parse_bytes(text)
    except InvalidArgumentError as exc:
        raise InvalidArgumentError(f"{flag}: {exc}") from exc


def add_storage_flags(parser: argparse.ArgumentParser, *, build: bool = False) -> None:
    """The object-storage flags, in their own group; ``build`` adds the builders' extras."""
    g = parser.add_argument_group("storage")
    g.add_argument("--anonymous", action="store_true", help="unsigned requests (public data)")
    if build:
        g.add_argument("--requester-pays", action="store_true", help="S3 requester-pays buckets")
    g.add_argument("--region", help="S3 region, e.g. us-west-2")
    g.add_argument("--endpoint", help="custom S3/Azure/GCS endpoint URL (http:// allows HTTP)")
    if build:
        g.add_argument(
            "--planetary-computer",
            action="store_true",
            help="sign Azure blob reads with Planetary Computer SAS tokens",
        )


def store_options(args: argparse.Namespace) -> StoreOptions | None:
    """The storage flags as ``catalog.StoreOptions`` (None when none was given)."""
    opts: StoreOptions = {}
    if getattr(args, "anonymous", False):
        opts["anonymous"] = True
    if getattr(args, "requester_pays", False):
        opts["requester_pays"] = True
    if getattr(args, "region", None):
        opts["region"] = args.region
    if getattr(args, "endpoint", None):
        opts["endpoint"] = args.endpoint
        if args.endpoint.startswith("http://"):
            opts["allow_http"] = True
    if getattr(args, "planetary_computer", False):
        opts["planetary_computer"] = True
    return opts or None
