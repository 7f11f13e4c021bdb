"""Shared fixtures: the GeoTIFF corpus, a standard served root, a server factory, moto S3."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.corpus import Case, generate

# Keep the test run hermetic: no AWS config lookups, no instance metadata probes.
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
os.environ.setdefault("AWS_CONFIG_FILE", os.devnull)
os.environ.setdefault("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
# The operator of every test server allows the temporary directory where tests keep their
# imagery (beside, not under, each served root), as `cogflight serve --allow DIR` would.
# Tests of the data access policy itself pass `allow=()` (the root's own store only).
os.environ.setdefault("COGFLIGHT_ALLOW", os.path.realpath(tempfile.gettempdir()))


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Case, Path]]:
    """Every corpus file, written once per session."""
    return generate(tmp_path_factory.mktemp("corpus"))


@dataclass(frozen=True)
class FlightRoot:
    """A served root: its directory and the Collections saved in it."""

    path: Path
    collections: dict[str, Any]


@pytest.fixture(scope="session")
def flight_root(tmp_path_factory: pytest.TempPathFactory) -> FlightRoot:
    """The standard root, built once per session and read-only: 'alpha' (4 scenes x 2
    bands, tests.support.flight_fixtures.make_root) and 'beta' (1 scene)."""
    from tests.support.flight_fixtures import make_root

    base = tmp_path_factory.mktemp("flight-root")
    collections = make_root(base / "root", base / "data", scenes=4)
    return FlightRoot(base / "root", collections)


@pytest.fixture(scope="module")
def start_server() -> Iterator[Callable[..., Any]]:
    """A factory: ``start_server(root, **options)`` starts a ``flight_server.Server`` on a
    free port; every server it started is shut down when the module's tests are done."""
    from flight_server import Server

    started: list[Any] = []

    def start(root: str | Path, **options: Any) -> Any:
        server = Server(str(root), port=0, **options).start()
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        server.shutdown()


@pytest.fixture(scope="session")
def moto_s3():
    """A real S3 API (moto) on a free loopback port; yields (endpoint, boto3 client)."""
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{server._server.server_port}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    try:
        yield endpoint, client
    finally:
        server.stop()


def s3_options(endpoint: str) -> dict:
    """Store options for the moto server with its test credentials."""
    return {
        "endpoint": endpoint,
        "allow_http": True,
        "region": "us-east-1",
        "config": {"access_key_id": "testing", "secret_access_key": "testing"},
    }
