"""The wire contract from another language: the C++ example client against a live server."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from pyarrow import flight

from flight_server import Server
from tests.support.flight_fixtures import lonlat_box, make_root, query, ticket

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "flight_client.cc"


@pytest.fixture(scope="module")
def client_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    compiler = shutil.which("g++")
    assert compiler, "g++ is needed to build the C++ example client (apt-get install g++)"
    out = tmp_path_factory.mktemp("cpp") / "flight_client"
    lib = pa.get_library_dirs()[0]
    libs = sorted(Path(lib).glob("libarrow_flight.so.*")) + sorted(Path(lib).glob("libarrow.so.*"))
    names = [f"-l:{p.name}" for p in libs if p.name.count(".so.") == 1]
    cmd = [compiler, "-std=c++20", "-O1", str(EXAMPLE), f"-I{pa.get_include()}", f"-L{lib}",
           *names, f"-Wl,-rpath,{lib}", "-o", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_cpp_client_reads_what_python_reads(client_binary: Path, tmp_path: Path) -> None:
    make_root(tmp_path / "root", tmp_path / "data", scenes=3)
    q = query(bands=["red"], geometries={"bbox": [lonlat_box(110, 10, 60, 60),
                                                  lonlat_box(300, 300, 40, 40)]})
    with Server(str(tmp_path / "root"), port=0, shards=2) as srv:
        proc = subprocess.run([str(client_binary), srv.location, json.dumps(q)],
                              capture_output=True, text=True, timeout=120, check=False)
        assert proc.returncode == 0, proc.stderr
        table = flight.connect(srv.location).do_get(ticket(q)).read_all()
    lines = dict(line.split(": ", 1) for line in proc.stdout.strip().splitlines())
    assert "arrow.fixed_shape_tensor" in lines["chip type"] and "shape=[1,64,64]" in lines[
        "chip type"]
    assert lines["endpoints"].startswith("2")
    assert int(lines["chips received"]) == table.num_rows > 0
    first = table.column("chip").combine_chunks().to_numpy_ndarray()[0]
    assert int(lines["first chip pixel sum"]) == int(first.astype(np.int64).sum())


def test_cpp_client_reports_invalid_argument(client_binary: Path, tmp_path: Path) -> None:
    make_root(tmp_path / "root", tmp_path / "data", scenes=1)
    with Server(str(tmp_path / "root"), port=0) as srv:
        proc = subprocess.run([str(client_binary), srv.location,
                               json.dumps(query(bands=["blue"]))],
                              capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 1
    assert "Invalid" in proc.stderr and "bands: 'blue' not in" in proc.stderr
