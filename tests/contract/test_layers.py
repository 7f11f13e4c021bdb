"""The architecture, checked: imports flow one way and modules stay small.

cogflight_core <- catalog <- flight_server; cogflight_core <- flight_client; the CLI
package ``cogflight`` on top of all. Parsed from the source (``ast``), so a test fails
the moment a module imports upward.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("cogflight_core", "catalog", "flight_server", "flight_client", "cogflight")
# What each package may import (module level or inside functions), besides itself.
ALLOWED = {
    "cogflight_core": set(),
    "catalog": {"cogflight_core"},
    "flight_server": {"cogflight_core", "catalog"},
    "flight_client": {"cogflight_core"},
    "cogflight": {"cogflight_core", "catalog", "flight_server", "flight_client"},
}
# Imports allowed only inside a function body (lazily): the embedded server.
LAZY = {"flight_client": {"flight_server"}}
MAX_LINES = 500


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _imports(path: Path, package: str) -> list[tuple[str, bool]]:
    """(top-level package imported, whether at module level) for every import."""
    tree = ast.parse(path.read_text(), filename=str(path))
    top_level = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.If | ast.Try):  # TYPE_CHECKING blocks and guarded imports
            top_level.update(id(n) for n in ast.walk(node) if id(node) in top_level)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [package] if node.level else [node.module or ""]
        else:
            continue
        out.extend((n.split(".")[0], id(node) in top_level) for n in names)
    return out


@pytest.mark.parametrize("package", [p for p in PACKAGES if (ROOT / p).is_dir()])
def test_imports_flow_one_way(package: str) -> None:
    ours = set(PACKAGES)
    bad = []
    for path in _modules(package):
        for name, module_level in _imports(path, package):
            if name not in ours or name == package or name in ALLOWED[package]:
                continue
            if not module_level and name in LAZY.get(package, set()):
                continue
            bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_core_needs_only_the_standard_library() -> None:
    stdlib = set(sys.stdlib_module_names) | {"__future__", "cogflight_core"}
    bad = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in _modules("cogflight_core")
        for name, module_level in _imports(path, "cogflight_core")
        if module_level and name not in stdlib
    ]
    assert not bad, "\n".join(bad)


def test_modules_stay_small() -> None:
    big = [
        f"{path.relative_to(ROOT)}: {n} lines"
        for package in PACKAGES
        if (ROOT / package).is_dir()
        for path in _modules(package)
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    ]
    assert not big, "split these modules:\n" + "\n".join(big)
