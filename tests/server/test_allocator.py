"""The engine's allocator policy: applied once per process, glibc only, settable off."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cogflight_core import EngineSettings, InvalidArgumentError
from cogflight_core._config import Config


def _run(code: str, **env: str) -> str:
    import os

    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
        check=True,
    )
    return proc.stdout.strip()


PROBE = """
from flight_server import ChipEngine
from flight_server.engine import _allocator
with ChipEngine():
    pass
with ChipEngine(settings=None):
    pass
print(_allocator._applied, _allocator._glibc() is not None)
"""


def test_the_first_engine_tunes_the_allocator_once() -> None:
    applied, glibc = _run(PROBE).rsplit(" ", 1)
    if glibc == "False":
        pytest.skip("not glibc: the allocator is left as it is")
    assert applied == f"[{2**30}]"


def test_zero_leaves_the_allocator_alone() -> None:
    applied, _ = _run(PROBE, COGFLIGHT_ALLOCATOR_RETAIN_BYTES="0").rsplit(" ", 1)
    assert applied == "[0]"


def test_the_setting_is_a_byte_size() -> None:
    assert EngineSettings().allocator_retain_bytes == 2**30
    cfg = Config.from_env({"COGFLIGHT_ALLOCATOR_RETAIN_BYTES": "256MiB"})
    assert cfg.engine.allocator_retain_bytes == 256 * 2**20
    with pytest.raises(InvalidArgumentError):
        Config.from_env({"COGFLIGHT_ALLOCATOR_RETAIN_BYTES": "lots"})
