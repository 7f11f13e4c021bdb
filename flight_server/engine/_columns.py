"""The metadata columns of a chip stream, specified once.

Every chip row carries ``id``, ``datetime``, ``geometry_index``, ``crs``,
``transform``, ``bounds`` and ``ordinal``, then the pass-through columns a
request names. ``ordinal`` is the chip's index in the whole query (as planned,
before ``shard`` and ``skip``): stable across shards, replicas and chips left out
under ``on_error="skip"``, so a client resuming a broken stream knows exactly
which chips it already has.

:data:`METADATA` (plus :func:`meta_columns` for the pass-through ones) is the
only specification: :func:`meta_schema` derives the Arrow schema from it (for
plans, before any pixel is read) and :class:`MetaRows` builds each batch's
rows from it, so the two cannot disagree.

Scene columns come from the chip's scene row; in a time series they become
lists over the chip's time steps, padded with nulls to the plan's step count.
Chip columns describe the chip itself. Pure Arrow, no I/O; :class:`MetaRows`
reads its scene columns from the table once per request.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from catalog import Collection
from cogflight_core import InvalidArgumentError

from ._types import Chip, Grid

__all__ = ["METADATA", "MetaColumn", "MetaRows", "meta_columns", "meta_schema"]

TIMESTAMP = pa.timestamp("us", tz="UTC")
ChipValue = Callable[[Chip, tuple[int, int]], Any]


@dataclass(frozen=True, slots=True)
class MetaColumn:
    """One metadata column: its name, the type of one value, and where values come from.

    ``chip_value`` is None for scene columns (read from the Collection column of the
    same name); otherwise it computes the value from the chip and the plan's
    ``(height, width)``.
    """

    name: str
    type: pa.DataType
    chip_value: ChipValue | None = None

    @property
    def per_scene(self) -> bool:
        """Whether values come from the scene row (and so list per time step)."""
        return self.chip_value is None

    def field(self, time_series: bool) -> pa.Field:
        """The Arrow field of this column in a stream (a list per chip in time series)."""
        many = time_series and self.per_scene
        return pa.field(self.name, pa.list_(self.type) if many else self.type)


def _bounds(chip: Chip, shape: tuple[int, int]) -> list[float]:
    return list(Grid(chip.grid.crs, chip.grid.transform, shape[0], shape[1]).bounds)


#: The columns every chip row has, in order.
METADATA: tuple[MetaColumn, ...] = (
    MetaColumn("id", pa.string()),
    MetaColumn("datetime", TIMESTAMP),
    MetaColumn("geometry_index", pa.int32(), lambda chip, _: chip.geometry_index),
    MetaColumn("crs", pa.string(), lambda chip, _: chip.grid.crs),
    MetaColumn("transform", pa.list_(pa.float64(), 6), lambda chip, _: list(chip.grid.transform)),
    MetaColumn("bounds", pa.list_(pa.float64(), 4), _bounds),
    MetaColumn("ordinal", pa.int64(), lambda chip, _: chip.index),
)


def meta_columns(collection: Collection, columns: Sequence[str]) -> tuple[MetaColumn, ...]:
    """The metadata columns of a request: :data:`METADATA`, then the pass-through columns.

    Raises:
        InvalidArgumentError: a pass-through column is not in the Collection (or is an
            asset column).
    """
    schema = collection.table.schema
    extra = []
    for name in columns:
        if name not in schema.names or name.startswith("asset:"):
            raise InvalidArgumentError(
                f"columns: Collection {collection.name!r} has no column {name!r}"
            )
        extra.append(MetaColumn(name, schema.field(name).type))
    return (*METADATA, *extra)


def meta_schema(columns: Sequence[MetaColumn], time_series: bool) -> pa.Schema:
    """The Arrow schema of the metadata columns (before ``chip`` and ``valid``)."""
    return pa.schema([c.field(time_series) for c in columns])


class MetaRows:
    """Builds the metadata table of each batch of one request."""

    def __init__(
        self, collection: Collection, columns: Sequence[MetaColumn], steps: int | None
    ) -> None:
        self.columns = tuple(columns)
        self.steps = steps
        self.schema = meta_schema(self.columns, steps is not None)
        table = collection.table
        self._scene = {c.name: table.column(c.name).to_pylist() for c in columns if c.per_scene}

    def table(self, chips: Sequence[Chip], shape: tuple[int, int]) -> pa.Table:
        """The rows of ``chips`` (each chip's grid cut to the plan's ``shape``)."""
        steps = self.steps
        arrays = []
        for column in self.columns:
            if column.chip_value is not None:
                values = [column.chip_value(chip, shape) for chip in chips]
            elif steps is None:
                scene = self._scene[column.name]
                values = [scene[chip.rows[0]] for chip in chips]
            else:
                scene = self._scene[column.name]
                values = [
                    [scene[r] for r in chip.rows] + [None] * (steps - len(chip.rows))
                    for chip in chips
                ]
            arrays.append(pa.array(values, column.field(steps is not None).type))
        return pa.Table.from_arrays(arrays, schema=self.schema)
