"""The bounded load test in its short mode: no errors, clean refusals, nothing leaked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import load

pytestmark = pytest.mark.network


def test_load_holds_below_the_limit_and_refuses_cleanly_above(tmp_path: Path) -> None:
    result = load.run(quick=True, results=tmp_path, levels=(8, 32), seconds=2.0)
    below, above = result["levels"]
    limit = result["config"]["max_streams"]
    assert below["clients"] < limit < above["clients"]
    # Below the stream limit every stream succeeds; no refusals, no errors.
    assert below["errors"] == 0 and below["refused"] == 0 and below["streams"] > 0, below
    # Above it: only "server busy" (UNAVAILABLE) refusals, never another error.
    assert above["errors"] == 0, above["error_samples"]
    assert above["streams"] > 0
    for message in above["refusal_samples"]:
        assert "max_streams" in message and "Traceback" not in message
    server = result["server"]
    # Nothing leaked: no stream holds a slot, descriptors and threads back to the baseline.
    assert server["stats"]["streams_active"] == 0 and server["stats"]["errors"] == 0
    assert server["after"]["fds"] <= server["baseline"]["fds"]
    assert server["after"]["threads"] <= server["baseline"]["threads"]
    assert server["after"]["rss_peak_mib"] <= server["rss_bound_mib"], server
    assert json.loads((tmp_path / "load.json").read_text())["levels"] == result["levels"]
    assert (tmp_path / "load.png").stat().st_size > 0
