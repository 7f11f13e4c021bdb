"""The `cogflight` command line: every command has --help; build, info, datasets, demo work."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import cogflight
from catalog.testing import synthetic_scene, write_cog
from cogflight._cli import build_parser, main

COMMANDS = [[], ["build"], ["build", "files"], ["build", "table"], ["build", "stac"],
            ["build", "dataset"], ["datasets"], ["info"], ["demo"], ["serve"], ["preview"]]


def _parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """Every parser of the command line with its command path."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _parsers(child, (*path, name))


def test_commands_cover_the_parser() -> None:
    assert sorted(" ".join(p) for p, _ in _parsers(build_parser())) == sorted(
        " ".join(c) for c in COMMANDS)


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda a: " ".join(a) or "cogflight")
def test_every_command_has_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([*argv, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: cogflight")
    assert "%%" not in out and "%(" not in out


def test_every_option_has_help() -> None:
    missing = [f"{' '.join(path) or 'cogflight'} {'/'.join(a.option_strings) or a.dest}"
               for path, parser in _parsers(build_parser()) for a in parser._actions
               if not isinstance(a, argparse._SubParsersAction) and not a.help]
    assert not missing


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"cogflight {cogflight.__version__}"
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", cogflight.__version__)


def test_python_dash_m_runs_the_cli() -> None:
    proc = subprocess.run([sys.executable, "-m", "cogflight", "--version"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0 and proc.stdout.startswith("cogflight "), proc.stderr


def test_parser_lists_all_commands() -> None:
    text = build_parser().format_help()
    for cmd in ("build", "datasets", "info", "demo", "serve", "preview"):
        assert cmd in text


def test_build_files_then_info(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = []
    for i in range(3):
        p = tmp_path / f"f{i}.tif"
        write_cog(p, synthetic_scene(100, 120, 2, i), geotransform=(0, 10, 0, 0, 0, -10),
                  epsg=32631)
        files.append(str(p))
    (tmp_path / "bad.tif").write_text("nope")
    out = tmp_path / "out" / "mine.parquet"
    code = main(["-q", "build", "files", "-o", str(out), "--bands", "red,nir",
                 "--datetime", "2024-02-03", *files, str(tmp_path / "bad.tif")])
    captured = capsys.readouterr()
    assert code == 0
    assert "saved 'mine': 3 scenes, bands red, nir" in captured.out
    assert "1 scenes failed" in captured.err and "bad.tif" in captured.err
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "scenes:   3" in text and "red" in text and "EPSG:32631" in text
    assert main(["info", "--json", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["scenes"] == 3 and info["datetime"][0].startswith("2024-02-03")


def test_errors_are_clear_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(tmp_path / "missing.parquet")]) == 2
    assert "error: no Collection at" in capsys.readouterr().err
    assert main(["build", "files", "-o", str(tmp_path / "x.parquet"),
                 str(tmp_path / "missing.tif")]) == 2
    assert "error:" in capsys.readouterr().err
    assert main(["build", "dataset", "nope/nothing", "-o", str(tmp_path / "y.parquet")]) == 2
    assert "no dataset 'nope/nothing'" in capsys.readouterr().err
    assert main(["build", "stac", "http://127.0.0.1:9/", "c", "--bbox", "1,2,3",
                 "-o", str(tmp_path / "z.parquet")]) == 2
    assert "--bbox" in capsys.readouterr().err


def test_datasets_lists_the_registry(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    for ds in ("earthsearch/sentinel-2-l2a", "pc/usda-cdl", "aef/v1-annual"):
        assert ds in out


def test_demo_console_script(tmp_path: Path) -> None:
    """The README's main job, through the installed console script, in a fresh directory."""
    exe = Path(sys.executable).with_name("cogflight")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([str(exe), "demo"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "indexed headers of 24 files" in proc.stdout
    assert "requests per header: median 1, max 1" in proc.stdout
    assert (tmp_path / "collections" / "demo.parquet").is_file()
    # The main job end to end: an embedded server streams chips into torch tensors.
    assert "5. embedded Flight server over collections/ at grpc+unix://" in proc.stdout
    cold = re.search(r"cold .*: (\d+) chips of \[4, 256, 256\] in (\d+) batches \(up to 16\) "
                     r"torch.uint16, (\d+) MB; first batch after [\d.]+ s, .* chips/s .*"
                     r"sharing the received buffers (\d+), copied 0", proc.stdout)
    assert cold, proc.stdout
    chips, batches, mb, zero_copy = (int(g) for g in cold.groups())
    assert chips >= 192 and abs(mb - chips * 4 * 256 * 256 * 2 / 1e6) <= 1
    assert zero_copy == 2 * batches, "chip and valid of every batch share memory"
    epoch = re.search(r"num_workers=2\): (\d+) chips \((\d+) distinct\)", proc.stdout)
    assert epoch and int(epoch.group(1)) == int(epoch.group(2)) == chips
    again = subprocess.run([str(exe), "info", "collections/demo.parquet"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=120, env=env, check=False)
    assert again.returncode == 0 and "scenes:   6" in again.stdout
