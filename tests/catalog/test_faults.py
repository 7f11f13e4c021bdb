"""The range fetcher against a fault-injecting object server: retried, counted, or refused.

Each fault of :mod:`tests.support.faults` is injected into real requests on loopback,
through both HTTP paths of the fetcher: the policy-checked reader (aiohttp, the
engine's) and obstore's HTTP store (with its own retries off). What is guaranteed:

- a fault another request cures (5xx, 429, reset, cut body, Range ignored, a shifted
  or short range) gives exactly the bytes asked for after one retry, counted in
  ``stats.retries``; the same fault on every request ends, after ``max_retries``
  retries, in a :class:`~catalog.StorageError` naming the object and the fault;
- a replaced object (new content and ETag) is an :class:`~catalog.ObjectChangedError`
  at once, never its new bytes;
- a body whose headers are right but whose bytes are not (``lie_range``, ``flip``)
  cannot be told from the right one by the transport: those bytes come back, and only
  the codec's own check (or none) stands between them and the pixels. The engine's
  tests (``tests/server/test_faults.py``) hold what each codec then guarantees.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from catalog import (
    AccessPolicy,
    HttpReader,
    ObjectChangedError,
    ObjectReader,
    RangeFetcher,
    StorageError,
    StoreRegistry,
)
from cogflight_core import PermissionDeniedError
from tests.support.faults import Fault, FaultServer

PATHS = ("reader", "obstore")
START, END = 70_000, 90_000
CURABLE = [
    Fault("status", 500),
    Fault("status", 502),
    Fault("status", 503),
    Fault("status", 504),
    Fault("status", 429, retry_after="0"),
    Fault("reset"),
    Fault("truncate"),
    Fault("ignore_range"),
    Fault("wrong_range"),
    Fault("short"),
]
UNDETECTABLE = [Fault("lie_range"), Fault("flip")]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("faults")
    data = np.random.default_rng(7).integers(0, 256, 200_000, dtype=np.uint8).tobytes()
    (base / "blob.bin").write_bytes(data)
    with FaultServer(base) as server:
        yield server, data


@pytest.fixture
def server(served):
    server, data = served
    server.clear()
    server.reset()
    (server.root / "blob.bin").write_bytes(data)
    return server, data


def _fetch(server: FaultServer, path: str, *, max_retries: int = 3, timeout_s: float = 30.0,
           identity=None, policy: AccessPolicy | None = None) -> tuple[bytes, RangeFetcher]:
    url = f"{server.url}/blob.bin"
    policy = policy or AccessPolicy([f"{server.url}/"])
    http = HttpReader(policy, timeout_s=timeout_s) if path == "reader" else None
    fetcher = RangeFetcher(gap=0, max_retries=max_retries, backoff_s=0.001,
                           policy=policy if path == "reader" else None, http=http)
    store, key = StoreRegistry({"allow_http": True}).resolve(url)

    async def go() -> bytes:
        try:
            view = await fetcher.get(store, key, url, START, END, exact=True, identity=identity)
            return bytes(view)
        finally:
            if http is not None:
                await http.aclose()

    return asyncio.run(go()), fetcher


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("fault", CURABLE, ids=str)
def test_a_curable_fault_is_retried_once_and_counted(server, path: str, fault: Fault) -> None:
    server, data = server
    server.inject("blob.bin", fault)
    got, fetcher = _fetch(server, path)
    assert got == data[START:END]
    assert (fetcher.stats.retries, fetcher.stats.requests, fetcher.stats.errors) == (1, 2, 0)
    assert server.faulted() == 1


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("fault", CURABLE, ids=str)
def test_a_lasting_fault_ends_in_a_clear_error(server, path: str, fault: Fault) -> None:
    server, _ = server
    server.always("blob.bin", fault)
    with pytest.raises(StorageError) as info:
        _fetch(server, path, max_retries=2)
    err = info.value
    assert not isinstance(err, ObjectChangedError)
    assert err.href == f"{server.url}/blob.bin" and "(3 attempts)" in str(err), str(err)
    assert server.faulted() == 3  # one request and two retries, no more


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("fault", UNDETECTABLE, ids=str)
def test_right_headers_over_wrong_bytes_cannot_be_told_by_the_transport(
    server, path: str, fault: Fault
) -> None:
    server, data = server
    server.inject("blob.bin", fault)
    got, fetcher = _fetch(server, path)
    assert len(got) == END - START and got != data[START:END]  # the codec's job, or nobody's
    assert fetcher.stats.retries == 0


@pytest.mark.parametrize("path", PATHS)
def test_a_replaced_object_is_an_error_not_its_new_bytes(server, path: str) -> None:
    server, data = server
    reader = ObjectReader(*StoreRegistry({"allow_http": True}).resolve(f"{server.url}/blob.bin"),
                          f"{server.url}/blob.bin")
    asyncio.run(reader.read_ranges([(0, 16)]))  # the index's header read
    identity = reader.identity
    assert identity is not None and identity.size == len(data)
    assert identity.etag == server.etag("blob.bin")
    server.replace("blob.bin", data[::-1])  # same size, new content, new ETag
    server.reset()
    with pytest.raises(ObjectChangedError, match="changed since the Collection was built"):
        _fetch(server, path, identity=identity)
    assert server.records[0].headers.get("if-match") == identity.etag  # sent, and refused
    assert server.records[0].status == 412


def test_a_replaced_object_is_caught_without_if_match(server) -> None:
    """A store that ignores If-Match still reports the object's new size or ETag."""
    server, data = server
    reader = ObjectReader(*StoreRegistry({"allow_http": True}).resolve(f"{server.url}/blob.bin"),
                          f"{server.url}/blob.bin")
    asyncio.run(reader.read_ranges([(0, 16)]))
    weak = type(reader.identity)(size=reader.identity.size, etag="W/" + reader.identity.etag)
    server.replace("blob.bin", data + b"more")  # If-Match is not sent for a weak ETag
    with pytest.raises(ObjectChangedError, match=r"now 200004 bytes, the index says 200000"):
        _fetch(server, "reader", identity=weak)


def test_a_stalled_answer_times_out_and_is_retried(server) -> None:
    server, data = server
    server.inject("blob.bin", Fault("stall", seconds=1.0))
    got, fetcher = _fetch(server, "reader", timeout_s=0.3)
    assert got == data[START:END] and fetcher.stats.retries == 1


def test_the_policy_is_checked_before_every_request(server) -> None:
    server, _ = server
    with pytest.raises(PermissionDeniedError, match="outside the server's data access policy"):
        _fetch(server, "reader", policy=AccessPolicy(["https://elsewhere.example/"]))
    assert server.requests == 0


def test_header_reads_learn_the_objects_identity(tmp_path: Path, server) -> None:
    server, data = server
    reader = ObjectReader(*StoreRegistry({"allow_http": True}).resolve(f"{server.url}/blob.bin"),
                          f"{server.url}/blob.bin")
    asyncio.run(reader.read_ranges([(0, 100), (150_000, 150_100)]))
    assert reader.requests == 2 and reader.identity is not None
    assert reader.identity.size == len(data) and reader.identity.etag == server.etag("blob.bin")
    assert reader.identity.last_modified is not None
    local = tmp_path / "a.bin"
    local.write_bytes(b"x" * 1000)
    lr = ObjectReader(*StoreRegistry().resolve(str(local)), str(local))
    asyncio.run(lr.read_ranges([(0, 10)]))
    assert lr.identity is not None and lr.identity.size == 1000
    assert lr.identity.etag is None and lr.identity.last_modified is not None  # no inode
