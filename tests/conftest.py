from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.corpus import Case, generate

# Keep the test run hermetic: no AWS config lookups, no instance metadata probes.
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
os.environ.setdefault("AWS_CONFIG_FILE", os.devnull)
os.environ.setdefault("AWS_SHARED_CREDENTIALS_FILE", os.devnull)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Case, Path]]:
    """Every corpus file, written once per session."""
    return generate(tmp_path_factory.mktemp("corpus"))


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
