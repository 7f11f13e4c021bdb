"""The README's PyTorch section runs as written, in order, against the demo Collection."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

import catalog
from catalog.testing import write_sample_scenes

README = Path(__file__).resolve().parents[2] / "README.md"


def _section_blocks(title: str) -> list[str]:
    text = README.read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    section = text[start : end if end != -1 else None]
    return re.findall(r"^```python\n(.*?)^```", section, flags=re.S | re.M)


@pytest.fixture
def demo_dir(tmp_path: Path) -> Path:
    """What `make demo` leaves: collections/demo.parquet over the sample scenes."""
    scenes = write_sample_scenes(tmp_path / "demo-data")
    collection = catalog.build_from_files(
        {s.id: s.files for s in scenes}, name="demo",
        datetime={s.id: s.datetime for s in scenes}, progress=False,
    )
    collection.save(tmp_path / "collections" / "demo.parquet")
    return tmp_path


def test_pytorch_section_runs_as_written(demo_dir: Path) -> None:
    blocks = _section_blocks("PyTorch and TorchGeo")
    assert len(blocks) >= 2
    cwd = os.getcwd()
    os.chdir(demo_dir)
    namespace: dict[str, object] = {"__name__": "__readme__"}
    try:
        for block in blocks:
            exec(compile(block, str(README), "exec"), namespace)  # our own README
    finally:
        os.chdir(cwd)
        client = namespace.get("client")
        if client is not None:
            client.close()  # type: ignore[attr-defined]
    images, labels = namespace["images"], namespace["labels"]
    assert images.shape[1:] == (3, 64, 64) and images.dtype.is_floating_point  # type: ignore[attr-defined]
    assert len(labels) == images.shape[0]  # type: ignore[arg-type, attr-defined]
    assert len(namespace["train"]) > 0  # type: ignore[arg-type]
