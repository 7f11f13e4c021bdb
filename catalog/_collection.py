"""The Collection: a GeoParquet table of scenes with parsed headers per asset."""

from __future__ import annotations

import io
import json
import logging
import os
import tempfile
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Unpack

import numpy as np
import obstore
import pyarrow as pa
import pyarrow.compute
import pyarrow.parquet as pq

from cogflight_core import BuildFailure, CollectionError, InvalidArgumentError

from ._filters import SceneFilter, select_rows
from ._header import HeaderRecord
from ._schema import (
    ASSET_PREFIX,
    ASSET_TYPE,
    CORE_FIELDS,
    GEO_KEY,
    METADATA_KEY,
    SCHEMA_VERSION,
    Band,
    asset_column,
    header_from_dict,
    identity_from_row,
    normalise_assets,
    read_metadata,
)
from ._settings import settings
from ._stores import StoreOptions, StoreRegistry, normalize_href, translate_storage_error

__all__ = ["Collection", "load"]

logger = logging.getLogger("cogflight.catalog")


class Collection:
    """One row per scene; per asset the href and the parsed header.

    Build one with :func:`catalog.build_from_files`, :func:`catalog.build_from_table`,
    :func:`catalog.build_from_stac` or :func:`catalog.build`; open a saved one
    with :func:`catalog.load`. Collections are immutable: :meth:`subset`
    returns a new one.
    """

    def __init__(
        self,
        table: pa.Table,
        *,
        failures: Sequence[BuildFailure] = (),
        where: str = "Collection",
    ) -> None:
        self._meta = read_metadata(table.schema, where)
        self._bands = tuple(Band.from_json(b) for b in self._meta.get("bands", []))
        table = normalise_assets(table)  # older Collections lack the identity fields
        _validate(table, self._bands, where)
        self._table = table
        self._failures = tuple(failures)

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def _from_parts(
        cls,
        table: pa.Table,
        meta: Mapping[str, Any],
        geo: Mapping[str, Any],
        failures: Sequence[BuildFailure] = (),
    ) -> Collection:
        md = dict(table.schema.metadata or {})
        md[METADATA_KEY] = json.dumps(dict(meta), separators=(",", ":")).encode()
        md[GEO_KEY] = json.dumps(dict(geo), separators=(",", ":")).encode()
        return cls(table.replace_schema_metadata(md), failures=failures)

    # -- properties ------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The Collection's name (the flight name when served)."""
        return str(self._meta.get("name", ""))

    @property
    def table(self) -> pa.Table:
        """The index as an Arrow table (GeoParquet metadata included)."""
        return self._table

    @property
    def bands(self) -> tuple[Band, ...]:
        """The bands, in order."""
        return self._bands

    @property
    def band_names(self) -> tuple[str, ...]:
        """Band names, in order."""
        return tuple(b.name for b in self._bands)

    @property
    def assets(self) -> tuple[str, ...]:
        """Asset keys (one ``asset:<key>`` column each)."""
        return tuple(
            c[len(ASSET_PREFIX) :] for c in self._table.column_names if c.startswith(ASSET_PREFIX)
        )

    @property
    def metadata(self) -> dict[str, Any]:
        """The ``cogflight`` metadata (schema version, bands, source, store options)."""
        return json.loads(json.dumps(self._meta))  # type: ignore[no-any-return]

    @property
    def store_options(self) -> StoreOptions:
        """How to reach the assets (no secrets): anonymous, region, requester pays..."""
        return dict(self._meta.get("store_options") or {})  # type: ignore[return-value]

    @property
    def failures(self) -> tuple[BuildFailure, ...]:
        """Scenes the builder could not index, with reasons (empty after :func:`load`)."""
        return self._failures

    @property
    def ids(self) -> list[str]:
        """Scene ids, in row order."""
        return [str(v) for v in self._table.column("id").to_pylist()]

    def __len__(self) -> int:
        return int(self._table.num_rows)

    def __repr__(self) -> str:
        return f"Collection(name={self.name!r}, scenes={len(self)}, bands={list(self.band_names)})"

    def band(self, name: str) -> Band:
        """The band called ``name``.

        Raises:
            InvalidArgumentError: no such band (the message lists the bands).
        """
        for b in self._bands:
            if b.name == name:
                return b
        raise InvalidArgumentError(
            f"unknown band {name!r}; the Collection has {', '.join(self.band_names)}"
        )

    def header(self, row: int, band: str) -> HeaderRecord:
        """The parsed header of the file holding ``band`` in scene ``row``."""
        b = self.band(band)
        if not 0 <= row < len(self):
            raise InvalidArgumentError(f"row {row} out of range for {len(self)} scenes")
        value = self._table.column(asset_column(b.asset))[row].as_py()
        if value is None:
            raise CollectionError(f"scene {self.ids[row]!r} has no asset {b.asset!r}")
        return header_from_dict(value["href"], value["header"], identity_from_row(value))

    def iter_headers(self, band: str) -> Iterator[HeaderRecord | None]:
        """Headers of one band for every scene, in row order."""
        b = self.band(band)
        for value in self._table.column(asset_column(b.asset)).to_pylist():
            yield (
                None
                if value is None
                else header_from_dict(value["href"], value["header"], identity_from_row(value))
            )

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary: size, bands, CRSs, time span, extent, columns."""
        t = self._table
        span = pa.compute.min_max(t.column("datetime")).as_py()
        bb = t.column("bbox").to_pylist()
        xs = [b for b in bb if b is not None]
        extent = (
            [
                min(b["xmin"] for b in xs),
                min(b["ymin"] for b in xs),
                max(b["xmax"] for b in xs),
                max(b["ymax"] for b in xs),
            ]
            if xs
            else None
        )
        crs_counts: dict[str, int] = {}
        for c in t.column("crs").to_pylist():
            crs_counts[str(c)] = crs_counts.get(str(c), 0) + 1
        return {
            "name": self.name,
            "schema_version": SCHEMA_VERSION,
            "scenes": len(self),
            "bands": [b.to_json() for b in self._bands],
            "assets": list(self.assets),
            "crs": crs_counts,
            "datetime": [
                None if span["min"] is None else span["min"].isoformat(),
                None if span["max"] is None else span["max"].isoformat(),
            ],
            "bbox": extent,
            "columns": [
                c
                for c in t.column_names
                if c not in ("geometry",) and not c.startswith(ASSET_PREFIX)
            ],
            "source": self._meta.get("source"),
            "store_options": self.store_options,
            "created_at": self._meta.get("created_at"),
        }

    # -- selection ---------------------------------------------------------------------------
    def subset(self, **filters: Unpack[SceneFilter]) -> Collection:
        """A new Collection of the scenes matching every condition given (:class:`SceneFilter`).

        For example ``subset(date_range="2024-06/2024-08", cloud_cover_lt=20,
        bbox=(11.0, 46.0, 11.5, 46.5))``. The geometry rules are the engine's too.
        """
        idx = select_rows(self._table, **filters)
        return self.take(idx)

    def take(self, indices: Sequence[int] | np.ndarray) -> Collection:
        """A new Collection with the given rows, in that order."""
        sub = self._table.take(pa.array(np.asarray(indices, dtype=np.int64)))
        return Collection(sub.replace_schema_metadata(self._table.schema.metadata))

    def with_columns(self, columns: Mapping[str, Any]) -> Collection:
        """A new Collection with columns added or replaced (:func:`catalog.with_columns`)."""
        from ._patches import with_columns

        return with_columns(self, columns)

    # -- persistence -------------------------------------------------------------------------
    def to_parquet_bytes(self) -> bytes:
        """The Collection as GeoParquet bytes."""
        sink = io.BytesIO()
        _write(self._table, sink)
        return sink.getvalue()

    def save(
        self,
        path_or_url: str | os.PathLike[str],
        *,
        store_options: StoreOptions | None = None,
    ) -> str:
        """Write the Collection as one GeoParquet file, atomically.

        Locally the file is written beside its target and renamed into place,
        so a crash never leaves a partial Collection under the final name. On
        object storage a single PUT is atomic. Returns the normalized target.
        """
        target = normalize_href(path_or_url)
        if "://" not in target:
            final = Path(target)
            final.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(
                prefix=f".{final.name}.", suffix=f".tmp-{uuid.uuid4().hex[:8]}", dir=final.parent
            )
            try:
                with os.fdopen(fd, "wb") as fh:
                    _write(self._table, fh)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, final)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            logger.info("saved Collection %r (%d scenes) to %s", self.name, len(self), final)
            return str(final)
        data = self.to_parquet_bytes()
        store, path = StoreRegistry(store_options, retries=settings().max_retries).resolve(target)
        try:
            obstore.put(store, path, data)
        except Exception as exc:
            raise translate_storage_error(target, exc) from exc
        logger.info("saved Collection %r (%d scenes) to %s", self.name, len(self), target)
        return target


def _write(table: pa.Table, sink: Any) -> None:
    pq.write_table(
        table,
        sink,
        compression="zstd",
        row_group_size=4096,
        write_statistics=["id", "datetime"],
    )


def load(
    path_or_url: str | os.PathLike[str],
    *,
    store_options: StoreOptions | None = None,
) -> Collection:
    """Open a saved Collection (local path or object-store URL).

    Raises:
        CollectionError: missing, unreadable, or not a cogflight Collection.
        SchemaVersionError: written by an incompatible cogflight version.
    """
    target = normalize_href(path_or_url)
    try:
        if "://" not in target:
            if not Path(target).is_file():
                raise CollectionError(f"no Collection at {target} (file not found)")
            # ParquetFile, not read_table: the latter imports pyarrow.dataset and pandas
            # (a quarter of a second of a cold start).
            table = pq.ParquetFile(target).read()
        else:
            store, path = StoreRegistry(store_options, retries=settings().max_retries).resolve(
                target
            )
            try:
                data = obstore.get(store, path).bytes()
            except Exception as exc:
                err = translate_storage_error(target, exc)
                raise CollectionError(f"cannot read Collection {target}: {err.reason}") from exc
            table = pq.ParquetFile(pa.BufferReader(memoryview(data))).read()
    except (pa.ArrowInvalid, OSError) as exc:
        raise CollectionError(f"{target} is not a readable Parquet file: {exc}") from exc
    return Collection(table, where=target)


def _validate(table: pa.Table, bands: Sequence[Band], where: str) -> None:
    names = table.column_names
    for f in CORE_FIELDS:
        if f.name not in names:
            raise CollectionError(f"{where}: missing required column {f.name!r}")
        actual = table.schema.field(f.name).type
        if not actual.equals(f.type):
            raise CollectionError(
                f"{where}: column {f.name!r} has type {actual}, expected {f.type}"
            )
    if not bands:
        raise CollectionError(f"{where}: the Collection declares no bands")
    seen: set[str] = set()
    for b in bands:
        if b.name in seen:
            raise CollectionError(f"{where}: band {b.name!r} is declared twice")
        seen.add(b.name)
        col = asset_column(b.asset)
        if col not in names:
            raise CollectionError(f"{where}: band {b.name!r} refers to missing column {col!r}")
        if not table.schema.field(col).type.equals(ASSET_TYPE):
            raise CollectionError(f"{where}: column {col!r} does not hold asset records")
    ids = table.column("id")
    if ids.null_count:
        raise CollectionError(f"{where}: {ids.null_count} scenes have no id")
    if len(ids) and pa.compute.count_distinct(ids).as_py() != len(ids):
        raise CollectionError(f"{where}: scene ids are not unique")
