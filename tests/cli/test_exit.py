"""A failed build exits with its own status every time, never SIGABRT or SIGBUS (issue 10, 6).

After an async obstore call settles, its tokio thread still needs the interpreter for
a moment; an interpreter that finalised then aborted the process (7 of 30 CLI runs).
``catalog`` waits at exit until those calls are quiet (``catalog._quiesce``). Each
case runs 30 fresh interpreters, a few at a time: the CLI must exit 2, a plain script
that catches the error must exit 0. An embedded server (``connect(root=...)``) whose
read failed, left open at exit, must not abort the process either (1 of 20 runs did).
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

pytestmark = pytest.mark.timeout(300)

RUNS = 30
PARALLEL = 4
SCRIPT = """
import sys
import catalog
try:
    catalog.build_from_files([sys.argv[1]], name="x", progress=False)
except catalog.BuildError as exc:
    print("caught", type(exc).__name__)
    sys.exit(0)
sys.exit(1)
"""
EMBEDDED = """
import sys
import flight_client as fc
client = fc.connect(root=sys.argv[1])  # never closed: the atexit hooks stop it
try:
    list(client.chips("alpha", geometries=[tuple(float(v) for v in sys.argv[2:6])],
                      chip_size=16))
except fc.CogflightError as exc:
    print("caught", type(exc).__name__)
    sys.exit(0)
sys.exit(1)
"""


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One file per failure: not a TIFF, missing, a striped (untiled) GeoTIFF."""
    base = tmp_path_factory.mktemp("exit")
    not_tiff = base / "not_a_tiff.tif"
    not_tiff.write_text("hello, not a TIFF\n")
    striped = base / "striped.tif"
    with rasterio.open(striped, "w", driver="GTiff", width=64, height=64, count=1,
                       dtype="uint8", crs="EPSG:32633", tiled=False,
                       transform=Affine(10, 0, 500000, 0, -10, 4100000)) as ds:
        ds.write(np.zeros((1, 64, 64), np.uint8))
    return {"not_a_tiff": not_tiff, "missing": base / "missing.tif", "striped": striped}


def _codes(argv: list[str], cwd: Path) -> Counter[int]:
    def one(_: int) -> int:
        proc = subprocess.run(argv, cwd=cwd, capture_output=True, timeout=120, check=False)
        return proc.returncode

    with ThreadPoolExecutor(PARALLEL) as pool:
        return Counter(pool.map(one, range(RUNS)))


@pytest.mark.parametrize("case", ["not_a_tiff", "missing", "striped"])
def test_cli_failed_build_exits_2_every_time(bad_files: dict[str, Path], case: str,
                                             tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "cogflight", "build", "files", str(bad_files[case]),
            "-o", str(tmp_path / "out.parquet")]
    assert _codes(argv, tmp_path) == Counter({2: RUNS})


@pytest.mark.parametrize("case", ["not_a_tiff", "missing", "striped"])
def test_script_failed_build_exits_0_every_time(bad_files: dict[str, Path], case: str,
                                                tmp_path: Path) -> None:
    argv = [sys.executable, "-c", SCRIPT, str(bad_files[case])]
    assert _codes(argv, tmp_path) == Counter({0: RUNS})


def test_embedded_server_left_open_exits_cleanly(tmp_path_factory: pytest.TempPathFactory
                                                 ) -> None:
    from tests.support.flight_fixtures import lonlat_box, make_root

    base = tmp_path_factory.mktemp("exit-embedded")
    make_root(base / "root", base / "data", scenes=1)
    (base / "data" / "s0_red.tif").unlink()  # every read of it fails in the engine
    box = [str(v) for v in lonlat_box(0, 0, 64, 64)]
    argv = [sys.executable, "-c", EMBEDDED, str(base / "root"), *box]
    assert _codes(argv, base) == Counter({0: RUNS})
