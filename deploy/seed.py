"""Seed the local fleet's object store (compose.yaml): sample COGs and a Collection over them.

Writes the demo's Sentinel-2-like scenes (``catalog.testing``) to
``s3://BUCKET/cogs/``, indexes them there, and saves the Collection ``demo`` as
``s3://BUCKET/collections/demo.parquet``: what the replicas serve. Credentials come
from the ``AWS_*`` environment, as for the server. Idempotent: a second run writes the
same objects again.

    python deploy/seed.py --endpoint http://localhost:9000 --bucket cogflight
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import obstore
from obstore.store import S3Store

import catalog
from catalog.testing import write_sample_scenes

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Upload the sample scenes, build and save the Collection; print where it is."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--endpoint", required=True, help="S3 endpoint URL (http:// allowed)")
    p.add_argument("--bucket", default="cogflight")
    p.add_argument("--region", default="us-east-1")
    p.add_argument("--scenes", type=int, default=6, help="sample scenes (4 bands each)")
    p.add_argument("--size", type=int, default=1024, help="pixels across each scene")
    args = p.parse_args(argv)

    http = args.endpoint.startswith("http://")
    store = S3Store(
        args.bucket,
        endpoint=args.endpoint,
        region=args.region,
        client_options={"allow_http": http},
    )
    options: catalog.StoreOptions = {"endpoint": args.endpoint, "region": args.region}
    if http:
        options["allow_http"] = True
    with tempfile.TemporaryDirectory() as tmp:
        scenes = write_sample_scenes(Path(tmp), scenes=args.scenes, size=args.size)
        hrefs: dict[str, dict[str, str]] = {}
        for scene in scenes:
            hrefs[scene.id] = {}
            for band, path in scene.files.items():
                key = f"cogs/{Path(path).name}"
                obstore.put(store, key, Path(path).read_bytes())
                hrefs[scene.id][band] = f"s3://{args.bucket}/{key}"
        collection = catalog.build_from_files(
            hrefs,
            name="demo",
            datetime={s.id: s.datetime for s in scenes},
            store_options=options,
            progress=False,
        )
    target = collection.save(f"s3://{args.bucket}/collections/demo.parquet", store_options=options)
    print(f"seeded {len(collection)} scenes; Collection at {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
