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
