"""User mistakes on the command line: one line on stderr, a non-zero exit, no traceback.

Each case runs the real CLI in a fresh interpreter (``python -m cogflight``) with the
default logging, so a log line or a traceback printed on the failure path fails the test.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.flight_fixtures import lonlat_box, make_root

BBOX = ",".join(map(str, lonlat_box(110, 10, 64, 64)))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding ``collections/`` (Collections 'alpha' and 'beta')."""
    base = tmp_path_factory.mktemp("cli-errors")
    make_root(base / "collections", base / "data", scenes=2)
    return base


def _fails_in_one_line(cwd: Path, *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "cogflight", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), proc.stderr
    assert proc.stdout == ""
    return lines[0]


def test_preview_of_a_missing_collection(workdir: Path) -> None:
    line = _fails_in_one_line(workdir, "preview", "NOPE", "--root", "collections",
                              "--bbox", BBOX)
    assert "'NOPE'" in line and "alpha" in line  # names what is served instead
    # The command as written (no --bbox) is a usage error: one line too.
    line = _fails_in_one_line(workdir, "preview", "NOPE", "--root", "collections")
    assert "--bbox" in line and "cogflight preview --help" in line


def test_serve_a_missing_root(workdir: Path) -> None:
    line = _fails_in_one_line(workdir, "serve", "--root", "/nonexistent", "--port", "0")
    assert "/nonexistent" in line


def test_preview_band_typo(workdir: Path) -> None:
    line = _fails_in_one_line(workdir, "preview", "alpha", "--root", "collections",
                              "--bands", "nope", "--bbox", BBOX)
    assert "'nope'" in line and "red" in line  # names the bands there are


@pytest.mark.parametrize("bbox", ["1,2,3", "a,b,c,d", "1,2,3,4,5", "1;2;3;4"])
def test_bad_bbox(workdir: Path, bbox: str) -> None:
    line = _fails_in_one_line(workdir, "preview", "alpha", "--root", "collections",
                              "--bbox", bbox)
    assert f"--bbox {bbox!r}" in line and "xmin,ymin,xmax,ymax" in line


def test_serve_missing_token_file(workdir: Path) -> None:
    line = _fails_in_one_line(workdir, "serve", "--root", "collections", "--port", "0",
                              "--token-file", "no-such-tokens")
    assert "no-such-tokens" in line and "--token-file" in line


def test_serve_port_in_use(workdir: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = _fails_in_one_line(workdir, "serve", "--root", "collections", "--port",
                                  str(port))
    assert f"port {port}" in line and "in use" in line


@pytest.mark.parametrize(("flag", "value", "expect"), [
    ("--max-chips", "0", "at least 1"),
    ("--cache-bytes", "2XB", "byte size"),
    ("--port", "http", "whole number"),
])
def test_serve_bad_setting(workdir: Path, flag: str, value: str, expect: str) -> None:
    line = _fails_in_one_line(workdir, "serve", "--root", "collections", flag, value)
    assert flag in line and expect in line


def test_bad_environment_variable(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COGFLIGHT_MAX_STREAMS", "many")
    line = _fails_in_one_line(workdir, "serve", "--root", "collections", "--port", "0")
    assert "COGFLIGHT_MAX_STREAMS" in line


def test_usage_errors_are_one_line(workdir: Path) -> None:
    line = _fails_in_one_line(workdir, "serve")
    assert "--root" in line
    line = _fails_in_one_line(workdir, "nosuchcommand")
    assert "nosuchcommand" in line
