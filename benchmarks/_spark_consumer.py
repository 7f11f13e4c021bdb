"""The Spark consumer of ``benchmarks.consumers``: a chip query read through flight_client.spark.

:func:`run_spark` reads every chip of a query with ``spark.read.format("cogflight")``
(one partition per endpoint) on a local Spark of one core per machine core. Two ways:

- ``"arrow"`` (the default, what a Python trainer on Spark does): ``mapInArrow`` with the
  README's recipe, every batch's pixels as numpy (:func:`flight_client.spark.
  chips_from_arrow`) in a Python worker, rows and pixel bytes counted there and summed;
- ``"jvm"``: ``sum(length(chip))`` in Spark itself, so the pixels only reach the JVM.

The SparkSession is started once per process and its start-up (about 10 s: the JVM,
py4j) is not counted; the clock runs from ``load()`` (planning) to the aggregate's
result. Run alone (``python -m benchmarks._spark_consumer [--quick]``) it serves the
consumers benchmark's dataset and prints both ways beside the plain Python client.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

__all__ = ["run_spark", "spark_session"]

_SESSION: dict[str, Any] = {}
_COUNTS = pa.schema([("chips", pa.int64()), ("bytes", pa.int64())])


def spark_session() -> tuple[Any, float]:
    """The process's local Spark (``local[cores]``, loopback, no UI); its start-up seconds."""
    if "spark" not in _SESSION:
        started = time.perf_counter()
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        from pyspark import cloudpickle
        from pyspark.sql import SparkSession

        from flight_client.spark import register

        # The mapInArrow function travels by value: workers need not import benchmarks/.
        cloudpickle.register_pickle_by_value(sys.modules[__name__])
        cores = os.cpu_count() or 2
        spark = (
            SparkSession.builder.master(f"local[{cores}]")
            .appName("cogflight-bench")
            .config("spark.driver.memory", "2g")
            .config("spark.ui.enabled", "false")
            .config("spark.driver.host", "127.0.0.1")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .config("spark.sql.shuffle.partitions", str(cores))
            # mapInArrow batches of the server's size (64 chips), not 10000 rows: the
            # Python side starts on a partition's first chips while the rest arrive.
            .config("spark.sql.execution.arrow.maxRecordsPerBatch", "64")
            .getOrCreate()
        )
        spark.sparkContext.setLogLevel("ERROR")
        register(spark)
        _SESSION.update(spark=spark, start_s=time.perf_counter() - started)
    return _SESSION["spark"], _SESSION["start_s"]


def _count(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """The recipe's consumer: each batch's pixels as numpy; rows and bytes counted."""
    from flight_client.spark import chips_from_arrow

    for batch in batches:
        if batch.num_rows == 0:
            continue
        arrays = chips_from_arrow(batch)
        chips = arrays["chip"]
        yield pa.RecordBatch.from_pylist(
            [{"chips": len(chips), "bytes": int(chips.nbytes + arrays["valid"].nbytes)}],
            schema=_COUNTS,
        )


def run_spark(
    location: str, query: dict[str, Any], shards: int, *, mode: str = "arrow"
) -> dict[str, Any]:
    """Every chip of ``query`` through the Spark data source: chips, seconds, chips/s, note."""
    if mode not in ("arrow", "jvm"):
        raise ValueError(f"mode: 'arrow' or 'jvm', not {mode!r}")
    spark, start_s = spark_session()
    from pyspark.sql import functions as F  # noqa: N812 - the usual name

    started = time.perf_counter()
    df = (
        spark.read.format("cogflight")
        .option("location", location)
        .option("query", json.dumps(query))
        .option("shards", shards)
        .load()
    )
    if mode == "arrow":
        counted = df.mapInArrow(_count, "chips long, bytes long")
        row = counted.agg(F.sum("chips").alias("chips"), F.sum("bytes").alias("b")).first()
    else:
        row = df.agg(F.count("*").alias("chips"), F.sum(F.length("chip")).alias("b")).first()
    seconds = time.perf_counter() - started
    chips = int(row["chips"] or 0) if row is not None else 0
    how = (
        "mapInArrow, pixels as numpy in Python workers"
        if mode == "arrow"
        else "sum(length(chip)) in the JVM"
    )
    cores = spark.sparkContext.defaultParallelism
    return {
        "chips": chips,
        "seconds": round(seconds, 4),
        "chips_per_s": round(chips / seconds, 1) if seconds > 0 else 0.0,
        "note": (
            f"{how}; local[{cores}], one partition per endpoint; "
            f"SparkSession start-up {start_s:.1f} s not counted"
        ),
    }


def main(argv: list[str] | None = None) -> int:
    """Command line: the consumers benchmark's server and query, Spark beside Python."""
    from benchmarks import consumers

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="128 px chips from 1024 px files")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--positions", type=int, default=None, help="chip places (x 4 scenes)")
    args = parser.parse_args(argv)
    size, chip, positions = (1024, 128, 64) if args.quick else (2048, 256, 96)
    positions = args.positions or positions
    query = consumers.query_doc(size, chip, positions)
    runs: dict[str, list[dict[str, Any]]] = {"python": [], "spark": [], "spark_jvm": []}
    with tempfile.TemporaryDirectory(prefix="cogflight-spark-") as tmp:
        root, data = consumers.prepare(Path(tmp), size)
        proc, location = consumers._serve(root, data, Path(tmp) / "server.log")
        try:
            consumers.run_python(location, query, args.shards)  # warms the server's cache
            run_spark(location, query, args.shards)  # untimed: Spark's Python workers start
            for _ in range(args.reps):
                runs["python"].append(consumers.run_python(location, query, args.shards))
                runs["spark"].append(run_spark(location, query, args.shards))
                runs["spark_jvm"].append(run_spark(location, query, args.shards, mode="jvm"))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    base = statistics.median(r["chips_per_s"] for r in runs["python"])
    for name, rows in runs.items():
        median = statistics.median(r["chips_per_s"] for r in rows)
        print(
            f"{name:>10} {rows[0]['chips']:>5} chips {median:>8.1f} chips/s "
            f"{median / base:>5.0%} of python  runs {[r['chips_per_s'] for r in rows]}  "
            f"{rows[0]['note']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
