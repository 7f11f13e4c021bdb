"""Every store scheme against a real protocol peer on loopback, and the store registry."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import catalog
from catalog import StoreRegistry, read_header
from catalog.testing import synthetic_scene, write_cog
from tests.support.servers import RangeServer


@pytest.fixture(scope="module")
def objects(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RangeServer, Path]]:
    """One COG laid out under bucket-like prefixes, served over HTTP."""
    root = tmp_path_factory.mktemp("objects")
    for sub in ("bkt/k", "acct/cont/dir", "gbkt/x", "plain"):
        (root / sub).mkdir(parents=True)
        write_cog(root / sub / "a.tif", synthetic_scene(300, 300, 2, 1), epsg=32633,
                  geotransform=(500000, 10, 0, 4000000, 0, -10), nodata=0)
    with RangeServer(root) as server:
        yield server, root


class _SasHandler(BaseHTTPRequestHandler):
    calls: list[str]

    def do_GET(self) -> None:
        self.calls.append(self.path)
        body = json.dumps({"token": "sv=2024-01-01&sp=r&sig=c2lnbmF0dXJl",
                           "msft:expiry": "2099-01-01T00:00:00Z"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def sas_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """A Planetary Computer SAS token API on loopback; yields the paths it was asked for."""
    calls: list[str] = []
    handler = type("H", (_SasHandler,), {"calls": calls})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("PC_SDK_SAS_URL", f"http://127.0.0.1:{server.server_address[1]}/sas/token")
    try:
        yield calls
    finally:
        server.shutdown()
        server.server_close()


def _expected(root: Path) -> catalog.HeaderRecord:
    return read_header(str(root / "plain" / "a.tif"))


def _same(h: catalog.HeaderRecord, ref: catalog.HeaderRecord) -> None:
    from dataclasses import replace

    assert replace(h, href=ref.href) == ref


def test_s3_requester_pays_sends_the_header(objects: tuple[RangeServer, Path]) -> None:
    server, root = objects
    registry = StoreRegistry({"endpoint": server.url, "allow_http": True, "region": "us-west-2",
                              "requester_pays": True,
                              "config": {"access_key_id": "AK", "secret_access_key": "SK"}})
    server.reset()
    _same(read_header("s3://bkt/k/a.tif", registry=registry), _expected(root))
    (rec,) = server.records
    assert rec.path == "/bkt/k/a.tif"
    assert rec.headers.get("x-amz-request-payer") == "requester"
    assert rec.headers["authorization"].startswith("AWS4-HMAC-SHA256")


def test_s3_anonymous_is_unsigned(objects: tuple[RangeServer, Path]) -> None:
    server, root = objects
    registry = StoreRegistry({"endpoint": server.url, "allow_http": True, "anonymous": True})
    server.reset()
    _same(read_header("s3://bkt/k/a.tif", registry=registry), _expected(root))
    assert "authorization" not in server.records[0].headers
    assert "x-amz-request-payer" not in server.records[0].headers


def test_planetary_computer_sas_signing(objects: tuple[RangeServer, Path],
                                        sas_endpoint: list[str]) -> None:
    server, root = objects
    registry = StoreRegistry({"endpoint": server.url + "/acct", "allow_http": True,
                              "planetary_computer": True})
    server.reset()
    href = "https://acct.blob.core.windows.net/cont/dir/a.tif"
    _same(read_header(href, registry=registry), _expected(root))
    assert sas_endpoint == ["/sas/token/acct/cont"]  # one token per account/container
    (rec,) = server.records
    assert rec.path == "/acct/cont/dir/a.tif"
    assert "sig=c2lnbmF0dXJl" in rec.query and "sp=r" in rec.query
    # A Collection built this way records that it needs signing, never the token.
    c = catalog.build_from_files([href], store_options={"endpoint": server.url + "/acct",
                                                         "allow_http": True,
                                                         "planetary_computer": True},
                                 progress=False)
    assert c.store_options["planetary_computer"] is True
    assert "sig=" not in json.dumps(c.metadata)


def test_signed_urls_are_refused_with_advice() -> None:
    with pytest.raises(catalog.InvalidArgumentError, match="SAS token"):
        StoreRegistry().resolve("https://acct.blob.core.windows.net/cont/a.tif?sv=1&sig=x")
    with pytest.raises(catalog.InvalidArgumentError, match="query string"):
        StoreRegistry().resolve("https://example.com/a.tif?X-Amz-Signature=abc")


def test_gcs_and_azure_urls(objects: tuple[RangeServer, Path]) -> None:
    server, root = objects
    gs = StoreRegistry({"endpoint": server.url, "allow_http": True, "anonymous": True})
    _same(read_header("gs://gbkt/x/a.tif", registry=gs), _expected(root))
    az = StoreRegistry({"endpoint": server.url + "/acct", "allow_http": True,
                        "azure_account": "acct", "anonymous": True})
    _same(read_header("az://cont/dir/a.tif", registry=az), _expected(root))
    with pytest.raises(catalog.InvalidArgumentError, match="storage account"):
        StoreRegistry().resolve("az://cont/dir/a.tif")


def test_stores_are_shared_per_bucket_and_options() -> None:
    registry = StoreRegistry({"anonymous": True, "region": "us-west-2"})
    a, pa_ = registry.resolve("s3://bucket-a/x/1.tif")
    b, pb = registry.resolve("s3://bucket-a/y/2.tif")
    c, _ = registry.resolve("s3://bucket-b/x/1.tif")
    assert a is b and a is not c
    assert (pa_, pb) == ("x/1.tif", "y/2.tif")
    h1, _ = registry.resolve("https://host.example/a/1.tif")
    h2, p2 = registry.resolve("https://host.example/b/2.tif")
    assert h1 is h2 and p2 == "b/2.tif"
    local1, lp = registry.resolve("/tmp/x.tif")
    local2, _ = registry.resolve("relative/y.tif")
    assert local1 is local2 and lp == "tmp/x.tif"


def test_overrides_by_prefix() -> None:
    registry = StoreRegistry(
        {"anonymous": True, "region": "us-west-2"},
        overrides={"s3://usgs-landsat": {"requester_pays": True, "anonymous": False}},
    )
    assert registry.options_for("s3://usgs-landsat/c2/x.tif") == {
        "anonymous": False, "region": "us-west-2", "requester_pays": True}
    assert registry.options_for("s3://sentinel-cogs/x.tif") == {"anonymous": True,
                                                                "region": "us-west-2"}
    a, _ = registry.resolve("s3://usgs-landsat/c2/x.tif")
    b, _ = registry.resolve("s3://sentinel-cogs/x.tif")
    assert a is not b


def test_stores_are_not_reused_after_fork(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    registry = StoreRegistry({"anonymous": True})
    a, _ = registry.resolve("s3://bucket/x.tif")
    real_pid = os.getpid()
    monkeypatch.setattr("catalog._stores.os.getpid", lambda: real_pid + 1)
    b, _ = registry.resolve("s3://bucket/x.tif")
    assert a is not b


@pytest.mark.parametrize(
    ("href", "match"),
    [
        ("ftp://host/x.tif", "unsupported URL scheme"),
        ("s3://bucket-only", "malformed S3 URL"),
        ("gs://", "malformed GCS URL"),
        ("", "expected a path or URL"),
    ],
)
def test_bad_hrefs(href: str, match: str) -> None:
    with pytest.raises(catalog.InvalidArgumentError, match=match):
        StoreRegistry().resolve(href)


def test_http_errors_are_typed(objects: tuple[RangeServer, Path]) -> None:
    server, _ = objects
    registry = StoreRegistry({"allow_http": True})
    with pytest.raises(catalog.ObjectNotFoundError):
        read_header(server.url + "/plain/missing.tif", registry=registry)
    server.fail_paths["plain/a.tif"] = 403
    try:
        with pytest.raises(catalog.AccessDeniedError, match="access denied"):
            read_header(server.url + "/plain/a.tif", registry=registry)
    finally:
        server.fail_paths.clear()
