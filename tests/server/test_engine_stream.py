"""The chip stream from both sides: sync iteration, async iteration, skips, cancellation."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import shapely

import catalog
from catalog.testing import synthetic_scene, write_cog
from flight_server import ChipEngine, ChipRequest, DecodeError

GT = (500000.0, 10.0, 0.0, 4100000.0, 0.0, -10.0)


def _box(c0: int, r0: int, w: int, h: int) -> shapely.Polygon:
    x0, y0 = GT[0] + c0 * GT[1], GT[3] + r0 * GT[5]
    return shapely.box(x0 + 2.5, y0 + h * GT[5] + 2.5, x0 + w * GT[1] - 2.5, y0 - 2.5)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("stream")
    paths = []
    for i in range(3):
        p = root / f"s{i}.tif"
        write_cog(p, synthetic_scene(256, 256, 2, i), geotransform=GT, epsg=32633, nodata=0,
                  tile=64, overviews=1)
        paths.append(p)
    return paths


@pytest.fixture(scope="module")
def collection(scenes: list[Path]) -> catalog.Collection:
    return catalog.build_from_files(scenes, progress=False)


def _request(**kw: object) -> ChipRequest:
    geoms = [_box(i * 40, i * 30, 50, 40) for i in range(4)]
    return ChipRequest.create(geometries=geoms, geometry_crs="EPSG:32633", batch_rows=3,
                              **kw)  # type: ignore[arg-type]


def test_async_iteration_matches_sync(collection: catalog.Collection) -> None:
    req = _request()
    with ChipEngine() as engine:
        expected = [b.chips.copy() for b in engine.stream(collection, req)]

        async def consume() -> list[np.ndarray]:
            return [b.chips async for b in engine.stream_async(collection, req)]

        got = asyncio.run(consume())
        whole = asyncio.run(engine.read_async(collection, req))
    assert [len(b) for b in got] == [1, 2, 3, 3, 3]  # the first batch ramps up
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(whole.chips, np.concatenate(expected))
    assert whole.meta.num_rows == 12


def test_async_reads_block_no_thread(collection: catalog.Collection) -> None:
    """With the caller loop's only worker thread held, async reads still complete."""
    req = _request()
    gate = threading.Event()

    async def main(engine: ChipEngine) -> list[int]:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(1))
        held = loop.run_in_executor(None, gate.wait)  # the only default worker is busy
        try:
            results = await asyncio.wait_for(
                asyncio.gather(*(engine.read_async(collection, req) for _ in range(4))), 120)
            batches = [b async for b in engine.stream_async(collection, req)]
        finally:
            gate.set()
            await held
        return [len(r) for r in results] + [len(batches)]

    with ChipEngine() as engine:
        assert asyncio.run(main(engine)) == [12, 12, 12, 12, 5]


def test_leaving_an_async_stream_early_closes_it(collection: catalog.Collection) -> None:
    req = _request()

    async def first_only(engine: ChipEngine) -> int:
        batches = engine.stream_async(collection, req, prefetch=1)
        async for batch in batches:
            n = len(batch)
            break
        await batches.aclose()  # type: ignore[attr-defined]
        return n

    async def cancelled(engine: ChipEngine) -> bool:
        task = asyncio.ensure_future(engine.read_async(collection, req))
        await asyncio.sleep(0)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return True
        return False  # it finished first: also fine for the engine

    with ChipEngine() as engine:
        assert asyncio.run(first_only(engine)) == 1
        asyncio.run(cancelled(engine))
        assert len(engine.read(collection, req)) == 12  # the engine carries on


def test_skipped_chips_are_reported_on_both_sides(scenes: list[Path], tmp_path: Path) -> None:
    bad = tmp_path / "bad.tif"
    bad.write_bytes(scenes[0].read_bytes())
    col = catalog.build_from_files([scenes[1], bad], progress=False)
    h = col.header(1, "b1")
    off, n = int(h.levels[0].tile_offsets[0]), int(h.levels[0].tile_byte_counts[0])
    data = bytearray(bad.read_bytes())
    data[off + 10 : off + n - 10] = b"\xff" * (n - 20)
    st = bad.stat()
    bad.write_bytes(bytes(data))
    os.utime(bad, ns=(st.st_atime_ns, st.st_mtime_ns))  # bit rot: same size and time
    req = ChipRequest.create(geometries=[_box(0, 0, 20, 20)], geometry_crs="EPSG:32633",
                             on_error="skip", batch_rows=1)
    with ChipEngine() as engine:
        stream = engine.stream(col, req)
        assert [len(b) for b in stream] == [1]
        assert len(stream.failures) == 1 and isinstance(stream.failures[0], DecodeError)
        result = asyncio.run(engine.read_async(col, req))
        assert len(result) == 1 and [f.href for f in result.failures] == [str(bad)]
        with pytest.raises(DecodeError):
            asyncio.run(engine.read_async(col, ChipRequest.create(
                geometries=[_box(0, 0, 20, 20)], geometry_crs="EPSG:32633")))


def test_a_stream_after_close_and_restart(collection: catalog.Collection) -> None:
    engine = ChipEngine()
    first = engine.read(collection, _request())
    engine.close()
    again = engine.read(collection, _request())  # the runtime starts again
    engine.close()
    np.testing.assert_array_equal(first.chips, again.chips)
    assert engine.stats().cache.entries > 0


def _read_in_child(engine: ChipEngine, collection: catalog.Collection, queue: object) -> None:
    try:
        result = engine.read(collection, _request())
        out: tuple[object, ...] = ("ok", result.chips.sum().item(), result.chips.shape)
    except Exception as exc:
        out = ("error", type(exc).__name__, str(exc))
    queue.put(out)  # type: ignore[attr-defined]
    engine.close()


def _in_child(engine: ChipEngine, collection: catalog.Collection) -> tuple[object, ...]:
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_read_in_child, args=(engine, collection, queue))
    child.start()
    out = queue.get(timeout=120)
    child.join(timeout=60)
    assert child.exitcode == 0
    return out  # type: ignore[no-any-return]


def test_an_engine_made_before_fork_works_in_the_child(collection: catalog.Collection) -> None:
    """The child starts its own loop thread and decode pool (the parent's do not exist there).

    Its tiles come from the cache it inherited: obstore itself cannot read in a child
    forked after it ran, and says so instead of hanging (next test).
    """
    with ChipEngine() as engine:
        expected = engine.read(collection, _request()).chips  # the runtime is running here
        assert _in_child(engine, collection) == ("ok", expected.sum().item(), expected.shape)
        assert len(engine.read(collection, _request())) == 12  # the parent carries on


def test_a_forked_child_that_must_fetch_fails_with_what_to_do(
    collection: catalog.Collection,
) -> None:
    with ChipEngine(cache_bytes=0) as engine:
        engine.read(collection, _request())  # obstore has run in this process
        status, kind, message = _in_child(engine, collection)
        assert (status, kind) == ("error", "UpstreamError")
        assert "forked" in str(message) and "forkserver" in str(message)
        assert len(engine.read(collection, _request())) == 12


def test_batches_ramp_up_from_one_chip_to_batch_rows() -> None:
    from flight_server.engine._produce import batch_sizes

    assert list(batch_sizes(300, 64)) == [1, 2, 4, 8, 16, 32, 64, 64, 64, 45]
    assert list(batch_sizes(5, 64)) == [1, 2, 2]
    assert list(batch_sizes(4, 1)) == [1, 1, 1, 1]
    assert list(batch_sizes(0, 8)) == []
    for total in range(0, 200, 7):
        assert sum(batch_sizes(total, 16)) == total


def test_every_stream_starts_with_a_one_chip_batch(collection: catalog.Collection) -> None:
    """The first chip comes out alone, then batches double to batch_rows; pixels unchanged."""
    geoms = [_box(i * 10, i * 8, 30, 20) for i in range(20)]
    ramped = ChipRequest.create(geometries=geoms, geometry_crs="EPSG:32633", batch_rows=8)
    whole = ChipRequest.create(geometries=geoms, geometry_crs="EPSG:32633", batch_rows=1000)
    with ChipEngine() as engine:
        batches = list(engine.stream(collection, ramped))
        reference = engine.read(collection, whole)
        sharded = [len(b) for b in engine.stream(collection, ChipRequest.create(
            geometries=geoms, geometry_crs="EPSG:32633", batch_rows=8, shard=(1, 2)))]
    n = len(reference)
    assert [len(b) for b in batches] == list(_sizes(n, 8))
    assert sharded[:2] == [1, 2]  # each endpoint's stream ramps too
    np.testing.assert_array_equal(np.concatenate([b.chips for b in batches]), reference.chips)


def _sizes(total: int, rows: int) -> list[int]:
    out, size = [], 1
    while total > 0:
        out.append(min(size, rows, total))
        total -= out[-1]
        size *= 2
    return out


def test_the_first_chip_is_fetched_alone(scenes: list[Path], monkeypatch) -> None:
    """Until the first chip is delivered, only its own ranges were requested; then the rest."""
    from flight_server.engine import _produce
    from tests.support.servers import RangeServer

    monkeypatch.setattr(_produce, "LEAD_S", 60.0)  # deterministic on a loaded machine
    geoms = [_box(i * 20, i * 20, 40, 40) for i in range(8)]
    with RangeServer(scenes[0].parent, latency=0.02) as http:
        col = catalog.build_from_files({"a": {"b": http.url_for(scenes[0])}}, progress=False)
        req = ChipRequest.create(geometries=geoms, geometry_crs="EPSG:32633", batch_rows=4,
                                 bands=["b"])
        alone = ChipRequest.create(geometries=geoms[:1], geometry_crs="EPSG:32633",
                                   bands=["b"])
        with ChipEngine() as engine:
            http.reset()
            engine.read(col, alone)
            first_chip_requests = http.requests
        with ChipEngine() as engine:
            http.reset()
            stream = engine.stream(col, req)
            first = next(stream)
            at_first = http.requests
            rest = list(stream)
    assert len(first) == 1 and first_chip_requests >= 1
    assert at_first == first_chip_requests
    assert sum(len(b) for b in rest) == 7 and http.requests > at_first


def test_ramp_false_gives_full_batches_from_the_start(collection: catalog.Collection) -> None:
    geoms = [_box(i * 10, i * 8, 30, 20) for i in range(20)]
    with ChipEngine() as engine:
        full = list(engine.stream(collection, ChipRequest.create(
            geometries=geoms, geometry_crs="EPSG:32633", batch_rows=8, ramp=False)))
        ramped = engine.read(collection, ChipRequest.create(
            geometries=geoms, geometry_crs="EPSG:32633", batch_rows=8))
    n = len(ramped)
    assert [len(b) for b in full] == [8] * (n // 8) + ([n % 8] if n % 8 else [])
    np.testing.assert_array_equal(np.concatenate([b.chips for b in full]), ramped.chips)
