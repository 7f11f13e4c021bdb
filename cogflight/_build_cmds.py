"""``cogflight build ...``, ``datasets`` and ``info``: make and describe Collections.

These commands need only ``catalog``, imported when a command runs so that
``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from cogflight_core import InvalidArgumentError

from ._args import (
    add_storage_flags,
    bbox_help,
    parse_bbox,
    parse_json,
    parse_pairs,
    parse_size,
    split_csv,
    store_options,
)

__all__ = ["register"]


def _common_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "name": args.name or Path(args.out.rstrip("/")).name.removesuffix(".parquet"),
        "concurrency": args.concurrency,
        "read_ahead": parse_size(args.read_ahead, "--read-ahead"),
        "strict": args.strict,
        "store_options": store_options(args),
        "progress": None if not args.quiet else False,
    }


def _finish(collection: Any, out: str, started: float) -> int:
    target = collection.save(out, store_options=collection.store_options or None)
    build = collection.metadata.get("build", {})
    print(
        f"saved {collection.name!r}: {len(collection)} scenes, bands "
        f"{', '.join(collection.band_names)} -> {target}"
    )
    print(
        f"headers: {build.get('files')} files, requests per file median "
        f"{build.get('requests_median')} max {build.get('requests_max')}, "
        f"{time.perf_counter() - started:.2f} s in all"
    )
    if collection.failures:
        print(f"{len(collection.failures)} scenes failed:", file=sys.stderr)
        for f in collection.failures[:50]:
            print(f"  - {f}", file=sys.stderr)
        if len(collection.failures) > 50:
            print(f"  ... and {len(collection.failures) - 50} more", file=sys.stderr)
    return 0


def _cmd_build_files(args: argparse.Namespace) -> int:
    from catalog import build_from_files

    started = time.perf_counter()
    sources: Any = args.files
    if args.scenes:
        sources = parse_json(Path(args.scenes).read_text(), f"--scenes {args.scenes}")
    elif not args.files:
        raise InvalidArgumentError("no files given; pass paths or URLs, or --scenes FILE")
    c = build_from_files(
        sources, bands=split_csv(args.bands), datetime=args.datetime, **_common_kwargs(args)
    )
    return _finish(c, args.out, started)


def _cmd_build_table(args: argparse.Namespace) -> int:
    from catalog import build_from_table

    started = time.perf_counter()
    bands: dict[str, Any] = {}
    for name, target in parse_pairs(args.band, "--band").items():
        column, _, sample = target.partition(":")
        if sample and not sample.isdigit():
            raise InvalidArgumentError(
                f"--band {name}={target}: the sample after ':' must be a number, e.g. {column}:1"
            )
        bands[name] = (column, int(sample)) if sample else column
    c = build_from_table(
        args.table,
        bands=bands or None,
        id_column=args.id_column,
        datetime_column=args.datetime_column,
        geometry_column=args.geometry_column,
        **_common_kwargs(args),
    )
    return _finish(c, args.out, started)


def _cmd_build_stac(args: argparse.Namespace) -> int:
    from catalog import build_from_stac

    started = time.perf_counter()
    band_map: dict[str, Any] = {}
    for asset, names in parse_pairs(args.band, "--band").items():
        parts = names.split(",")
        band_map[asset] = parts[0] if len(parts) == 1 else parts
    c = build_from_stac(
        args.api,
        args.collection,
        bbox=parse_bbox(args.bbox),
        date_range=args.date_range,
        query=parse_json(args.query, "--query"),
        max_items=args.max_items,
        band_map=band_map or None,
        href_key=split_csv(args.href_key) or "href",
        **_common_kwargs(args),
    )
    return _finish(c, args.out, started)


def _cmd_build_dataset(args: argparse.Namespace) -> int:
    from catalog import build

    started = time.perf_counter()
    c = build(
        args.dataset,
        bbox=parse_bbox(args.bbox),
        date_range=args.date_range,
        query=parse_json(args.query, "--query"),
        bands=split_csv(args.bands),
        max_items=args.max_items,
        stac_api=args.stac_api,
        **_common_kwargs(args),
    )
    return _finish(c, args.out, started)


def _cmd_datasets(args: argparse.Namespace) -> int:
    from catalog import list_datasets

    for e in list_datasets():
        where = f"{e.stac_api} [{e.collection}]" if e.kind == "stac" else e.table_url
        print(f"{e.id:32s} {e.title}")
        print(f"{'':32s} {where}")
        print(f"{'':32s} bands: {', '.join(e.bands[:16])}{' ...' if len(e.bands) > 16 else ''}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from catalog import load

    c = load(args.path, store_options=store_options(args))
    d = c.describe()
    if args.json:
        print(json.dumps(d, indent=2, default=str))
        return 0
    print(f"Collection {d['name']!r} (schema v{d['schema_version']}) at {args.path}")
    print(f"  scenes:   {d['scenes']}")
    print(f"  time:     {d['datetime'][0]} .. {d['datetime'][1]}")
    print(f"  extent:   {d['bbox']}")
    print(f"  crs:      {', '.join(f'{k} ({v})' for k, v in d['crs'].items())}")
    print("  bands:")
    for b in d["bands"]:
        extra = ", ".join(f"{k}={b[k]}" for k in ("nodata", "scale", "offset") if k in b)
        print(
            f"    {b['name']:12s} {b.get('dtype', '?'):8s} asset {b['asset']}"
            f"[{b['sample']}]{'  ' + extra if extra else ''}"
        )
    print(f"  columns:  {', '.join(d['columns'])}")
    if d.get("store_options"):
        print(f"  storage:  {d['store_options']}")
    return 0


def _add_build_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-o",
        "--out",
        required=True,
        help="where to save the Collection (.parquet, local path or s3://, gs://, az:// URL)",
    )
    p.add_argument("--name", help="Collection name (default: the output file name)")
    p.add_argument("--concurrency", type=int, help="headers read at once (default 64)")
    p.add_argument("--read-ahead", help="bytes of the first header request (default 64KiB)")
    p.add_argument("--strict", action="store_true", help="fail if any scene fails")
    add_storage_flags(p, build=True)


def _add_search_flags(p: argparse.ArgumentParser) -> None:
    """What selects the STAC items of ``build stac`` and ``build dataset``."""
    p.add_argument("--bbox", help=bbox_help("EPSG:4326"))
    p.add_argument("--date-range", help="START/END, e.g. 2024-06 or 2024-01-01/2024-06-30")
    p.add_argument("--query", help='STAC query JSON, e.g. \'{"eo:cloud_cover": {"lt": 20}}\'')
    p.add_argument("--max-items", type=int, help="stop after this many items")


def register(sub: Any) -> None:
    """Add ``build``, ``datasets`` and ``info`` to the command line."""
    build = sub.add_parser(
        "build",
        help="build a Collection (index of COG headers)",
        description="Build a Collection and save it as GeoParquet.",
    )
    bsub = build.add_subparsers(dest="source", metavar="SOURCE", required=True)

    p = bsub.add_parser(
        "files",
        help="from GeoTIFF paths or URLs",
        description="One scene per file (bands b1..bN), or a JSON "
        "{scene: {band: href}} mapping with --scenes.",
    )
    p.add_argument("files", nargs="*", help="paths or URLs (local, s3://, gs://, az://, http)")
    p.add_argument("--scenes", help="JSON file mapping scene ids to {band: href}")
    p.add_argument("--bands", help="comma-separated names for the samples of each file")
    p.add_argument("--datetime", help="one date for every scene (ISO 8601)")
    _add_build_common(p)
    p.set_defaults(func=_cmd_build_files)

    p = bsub.add_parser(
        "table",
        help="from a Parquet/GeoParquet table of hrefs",
        description="Rows that already carry asset hrefs (stac-geoparquet "
        "exports, DuckDB results).",
    )
    p.add_argument("table", help="Parquet path or URL")
    p.add_argument(
        "--band",
        action="append",
        metavar="NAME=COLUMN[:SAMPLE]",
        help="band from an href column (repeat); default: stac-geoparquet assets",
    )
    p.add_argument("--id-column", default="id", help="column of scene ids (default: id)")
    p.add_argument(
        "--datetime-column", default="datetime", help="column of scene times (default: datetime)"
    )
    p.add_argument(
        "--geometry-column", help="WKB footprint column to keep (default: geometry, when present)"
    )
    _add_build_common(p)
    p.set_defaults(func=_cmd_build_table)

    p = bsub.add_parser(
        "stac",
        help="from a STAC API item search",
        description="Search a STAC API and index the matching items' assets.",
    )
    p.add_argument("api", help="STAC API root URL")
    p.add_argument("collection", help="STAC collection id")
    _add_search_flags(p)
    p.add_argument(
        "--band",
        action="append",
        metavar="ASSET=NAME[,NAME...]",
        help="asset to band name(s) (repeat); default: every GeoTIFF data asset",
    )
    p.add_argument("--href-key", help="where each asset's href is, e.g. alternate.s3.href")
    _add_build_common(p)
    p.set_defaults(func=_cmd_build_stac)

    p = bsub.add_parser(
        "dataset",
        help="a built-in dataset (see `cogflight datasets`)",
        description="Build a Collection of a registered public dataset.",
    )
    p.add_argument("dataset", help="dataset id, e.g. earthsearch/sentinel-2-l2a")
    _add_search_flags(p)
    p.add_argument("--bands", help="comma-separated subset of the dataset's bands")
    p.add_argument("--stac-api", help="use a mirror of the dataset's STAC API")
    _add_build_common(p)
    p.set_defaults(func=_cmd_build_dataset)

    p = sub.add_parser(
        "datasets",
        help="list the built-in datasets",
        description="List registered datasets with their sources and bands.",
    )
    p.set_defaults(func=_cmd_datasets)

    p = sub.add_parser(
        "info",
        help="describe a saved Collection",
        description="Print a Collection's size, bands, CRSs, time span and extent.",
    )
    p.add_argument("path", help="Collection file or URL")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    add_storage_flags(p)
    p.set_defaults(func=_cmd_info)
