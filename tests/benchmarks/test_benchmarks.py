"""The benchmark suite runs end to end, and every contender returns the same pixels."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_suite_runs_and_contenders_agree(tmp_path: Path) -> None:
    """Small files and 5 ms latency: this checks the harness, not the speed."""
    cmd = [sys.executable, "-m", "benchmarks.suite", "--quick", "--tile-px", "2048",
           "--latency-ms", "5", "--workers", "2", "--cache-mib", "512",
           "--scenarios", "single_aoi,epoch",
           "--contenders", "torchgeo_gdal,engine,flight_1,torchgeo_flight",
           "--results", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "suite.json").read_text())
    assert (tmp_path / "suite.png").stat().st_size > 10_000
    assert "| training epoch" in (tmp_path / "suite.md").read_text()
    for name, scenario in result["scenarios"].items():
        assert set(scenario["contenders"]) == {"torchgeo_gdal", "engine", "flight_1",
                                               "torchgeo_flight"}
        for who, row in scenario["contenders"].items():
            same = row["pixels_vs_engine"]
            assert same["missing"] == same["extra"] == 0, (name, who, same)
            assert same["equal_fraction"] == 1.0, (name, who, same)
            assert row["requests"] > 0 and row["first_batch_s"] > 0
            assert len(row["epochs"]) == (2 if name == "epoch" else 1)
            assert all(e["duplicates"] == 0 for e in row["epochs"]), (name, who)
        assert scenario["decode_limit"]["tiles"] > 0
    assert result["loopback_limit"]["mb_per_s"] > 0
