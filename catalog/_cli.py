"""The ``cogflight`` command line: build and describe Collections, run the demo.

Subcommands of the other packages (``serve``, ``preview``) register through
:data:`_COMMAND_MODULES`, imported only when present, so this package never
depends on them.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._errors import CogflightError, InvalidArgumentError
from ._stores import StoreOptions

__all__ = ["main"]

logger = logging.getLogger("cogflight.catalog")

# Modules that may add subcommands: each defines ``register(subparsers)``.
_COMMAND_MODULES = ("flight_server._cli", "flight_client._cli")


def _store_options(args: argparse.Namespace) -> StoreOptions:
    opts = StoreOptions()
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
    return opts


def _bbox(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError as exc:
        raise InvalidArgumentError(f"--bbox: expected xmin,ymin,xmax,ymax, got {text!r}") from exc
    if len(values) != 4:
        raise InvalidArgumentError(f"--bbox: expected 4 numbers, got {len(values)}")
    return values


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
    g = p.add_argument_group("storage")
    g.add_argument("--anonymous", action="store_true", help="unsigned requests (public data)")
    g.add_argument("--requester-pays", action="store_true", help="S3 requester-pays buckets")
    g.add_argument("--region", help="S3 region, e.g. us-west-2")
    g.add_argument("--endpoint", help="custom S3/Azure/GCS endpoint URL")
    g.add_argument(
        "--planetary-computer",
        action="store_true",
        help="sign Azure blob reads with Planetary Computer SAS tokens",
    )


def _common_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    from ._settings import parse_bytes

    return {
        "name": args.name or Path(args.out.rstrip("/")).name.removesuffix(".parquet"),
        "concurrency": args.concurrency,
        "read_ahead": parse_bytes(args.read_ahead) if args.read_ahead else None,
        "strict": args.strict,
        "store_options": _store_options(args) or None,
        "progress": None if not args.quiet else False,
    }


def _finish(collection: Any, out: str, started: float) -> int:
    from ._collection import Collection

    assert isinstance(collection, Collection)
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
    from ._build_files import build_from_files

    started = time.perf_counter()
    sources: Any = args.files
    if args.scenes:
        sources = json.loads(Path(args.scenes).read_text())
    c = build_from_files(
        sources,
        bands=args.bands.split(",") if args.bands else None,
        datetime=args.datetime,
        **_common_kwargs(args),
    )
    return _finish(c, args.out, started)


def _pairs(items: Sequence[str] | None, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        if "=" not in item:
            raise InvalidArgumentError(f"{what}: expected NAME=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out[k] = v
    return out


def _cmd_build_table(args: argparse.Namespace) -> int:
    from ._build_table import build_from_table

    started = time.perf_counter()
    bands: dict[str, Any] = {}
    for name, target in _pairs(args.band, "--band").items():
        column, _, sample = target.partition(":")
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
    from ._stac import build_from_stac

    started = time.perf_counter()
    band_map: dict[str, Any] = {}
    for asset, names in _pairs(args.band, "--band").items():
        parts = names.split(",")
        band_map[asset] = parts[0] if len(parts) == 1 else parts
    c = build_from_stac(
        args.api,
        args.collection,
        bbox=_bbox(args.bbox),
        date_range=args.date_range,
        query=json.loads(args.query) if args.query else None,
        max_items=args.max_items,
        band_map=band_map or None,
        href_key=args.href_key.split(",") if args.href_key else "href",
        **_common_kwargs(args),
    )
    return _finish(c, args.out, started)


def _cmd_build_dataset(args: argparse.Namespace) -> int:
    from ._registry import build

    started = time.perf_counter()
    kw = _common_kwargs(args)
    c = build(
        args.dataset,
        bbox=_bbox(args.bbox),
        date_range=args.date_range,
        query=json.loads(args.query) if args.query else None,
        bands=args.bands.split(",") if args.bands else None,
        max_items=args.max_items,
        stac_api=args.stac_api,
        **kw,
    )
    return _finish(c, args.out, started)


def _cmd_datasets(args: argparse.Namespace) -> int:
    from ._registry import list_datasets

    for e in list_datasets():
        where = f"{e.stac_api} [{e.collection}]" if e.kind == "stac" else e.table_url
        print(f"{e.id:32s} {e.title}")
        print(f"{'':32s} {where}")
        print(f"{'':32s} bands: {', '.join(e.bands[:16])}{' ...' if len(e.bands) > 16 else ''}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from ._collection import load

    c = load(args.path, store_options=_store_options(args) or None)
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


def _cmd_demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    return run_demo(workdir=Path(args.workdir), collections=Path(args.collections))


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (used by ``main`` and the docs)."""
    parser = argparse.ArgumentParser(
        prog="cogflight",
        description="Serve cloud-optimized GeoTIFFs to machine learning as Arrow Flight "
        "streams of tensors.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

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
    p.add_argument("--id-column", default="id")
    p.add_argument("--datetime-column", default="datetime")
    p.add_argument("--geometry-column")
    _add_build_common(p)
    p.set_defaults(func=_cmd_build_table)

    p = bsub.add_parser(
        "stac",
        help="from a STAC API item search",
        description="Search a STAC API and index the matching items' assets.",
    )
    p.add_argument("api", help="STAC API root URL")
    p.add_argument("collection", help="STAC collection id")
    p.add_argument("--bbox", help="xmin,ymin,xmax,ymax (EPSG:4326)")
    p.add_argument("--date-range", help="START/END, e.g. 2024-01-01/2024-06-30")
    p.add_argument("--query", help='STAC query JSON, e.g. \'{"eo:cloud_cover": {"lt": 20}}\'')
    p.add_argument("--max-items", type=int)
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
    p.add_argument("--bbox", help="xmin,ymin,xmax,ymax (EPSG:4326)")
    p.add_argument("--date-range", help="START/END")
    p.add_argument("--query", help="STAC query JSON")
    p.add_argument("--bands", help="comma-separated subset of the dataset's bands")
    p.add_argument("--max-items", type=int)
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
    p.add_argument("--anonymous", action="store_true")
    p.add_argument("--region")
    p.add_argument("--endpoint")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser(
        "demo",
        help="run the main job on generated sample COGs",
        description="Generate sample COGs, index them, and show the result. "
        "Needs no server and no internet.",
    )
    p.add_argument("--workdir", default="demo-data", help="where sample COGs go")
    p.add_argument("--collections", default="collections", help="where Collections go")
    p.set_defaults(func=_cmd_demo)

    for module_name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cogflight`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING if args.quiet else (logging.DEBUG if args.verbose > 1 else logging.INFO)
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    try:
        return int(args.func(args))
    except CogflightError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
