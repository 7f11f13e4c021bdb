"""The docs say what the code declares: tables generated from the one declaration of each fact."""

from __future__ import annotations

from pathlib import Path

import cogflight_core

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_wire_contract_field_table_is_the_declaration() -> None:
    text = (DOCS / "wire-contract.md").read_text()
    assert cogflight_core.field_table() in text, (
        "docs/wire-contract.md's field table differs from cogflight_core.ChipQuery; paste "
        "cogflight_core.field_table() there"
    )


def test_wire_contract_status_table_is_the_status_table() -> None:
    text = (DOCS / "wire-contract.md").read_text()
    assert cogflight_core.status_table() in text


def test_every_declared_field_is_in_the_table() -> None:
    table = cogflight_core.field_table()
    for name, spec in cogflight_core.chip_fields().items():
        assert f"| `{spec.wire or name}` |" in table
    for name in cogflight_core.FILTER_FIELDS:
        assert f"| `filter.{name}` |" in table
