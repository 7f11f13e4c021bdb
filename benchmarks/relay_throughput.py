"""Direct gRPC vs the relay of a forked DataLoader worker, on the same warm query.

A process forked after gRPC started makes its Flight calls through a helper process
(``flight_client._relay``). This measures what that costs: the same query, served from
the tile cache of an embedded server, read by the main process (direct) and by a child
forked from it (relayed), alternating, best of ``--repeats``. Writes
``results/relay_throughput.json``.

    python -m benchmarks.relay_throughput [--chips 256] [--repeats 5]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._common import write_result


def _read(client: Any, name: str, query: dict[str, Any]) -> tuple[float, int]:
    t = time.perf_counter()
    nbytes = 0
    for batch in client.chips(name, **query):
        nbytes += batch.column("chip").storage.values.buffers()[1].size
    return time.perf_counter() - t, nbytes


def _child(client: Any, name: str, query: dict[str, Any], out: Any) -> None:
    import flight_client as fc

    first, nbytes = _read(client, name, query)  # starts the helper interpreter
    again, _ = _read(client, name, query)  # the helper is warm
    out.send((first, again, nbytes, fc.stats()["relayed_requests"]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chips", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import catalog
    import flight_client as fc
    from catalog.testing import write_sample_scenes

    work = Path(tempfile.mkdtemp(prefix="cogflight-relay-"))
    scenes = write_sample_scenes(work / "data")
    built = catalog.build_from_files(
        {s.id: s.files for s in scenes}, name="demo", progress=False,
        datetime={s.id: s.datetime for s in scenes},
    )
    built.save(work / "collections" / "demo.parquet")
    ctx = mp.get_context("fork")
    with fc.connect(root=work / "collections") as client:
        index = client.index("demo")
        centres = fc.random_points(index, size=256, count=args.chips // len(scenes), seed=0)
        query: dict[str, Any] = {"geometries": centres, "chip_size": 256, "batch_rows": 16}
        _read(client, "demo", query)  # warm the tile cache
        direct, relayed, relayed_cold, relayed_calls = [], [], [], 0
        nbytes = 0
        for _ in range(args.repeats):
            seconds, nbytes = _read(client, "demo", query)
            direct.append(seconds)
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_child, args=(client, "demo", query, child))
            proc.start()
            cold, seconds, _, relayed_calls = parent.recv()
            proc.join()
            relayed_cold.append(cold)
            relayed.append(seconds)
    best_direct, best_relayed = min(direct), min(relayed)
    result = {
        "chips_query": args.chips,
        "bytes": nbytes,
        "direct_s": direct,
        "relayed_s": relayed,
        "relayed_first_read_s": relayed_cold,
        "direct_mb_s": nbytes / best_direct / 1e6,
        "relayed_mb_s": nbytes / best_relayed / 1e6,
        "relayed_over_direct": best_direct / best_relayed,
        "relayed_requests_in_child": relayed_calls,
        "relayed_first_read_mb_s": nbytes / min(relayed_cold) / 1e6,
        "note": "relayed_s: a second read in the child (helper warm); the first read also "
        "starts the helper interpreter",
    }
    path = write_result("relay_throughput", result)
    print(
        f"direct {result['direct_mb_s']:.0f} MB/s, relayed {result['relayed_mb_s']:.0f} MB/s "
        f"(first read in a child, helper start included: "
        f"{result['relayed_first_read_mb_s']:.0f} MB/s) "
        f"({result['relayed_over_direct']:.2f} of direct) over {nbytes / 1e6:.0f} MB -> {path}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
