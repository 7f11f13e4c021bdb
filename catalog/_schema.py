"""The Collection schema, version 1: Arrow types, metadata, and conversions.

Written down field by field in ``docs/collection-schema.md``; change both
together and bump :data:`SCHEMA_VERSION` on any incompatible change.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute
import pyproj

from cogflight_core import CollectionError, SchemaVersionError

from ._header import HeaderRecord, ImageRecord
from ._identity import ObjectIdentity

__all__ = [
    "ASSET_PREFIX",
    "ASSET_TYPE",
    "HEADER_TYPE",
    "IMAGE_TYPE",
    "METADATA_KEY",
    "RESERVED_COLUMNS",
    "SCHEMA_VERSION",
    "Band",
    "asset_column",
    "asset_row",
    "header_from_dict",
    "header_to_dict",
    "identity_from_row",
    "normalise_assets",
]

SCHEMA_VERSION = 1
METADATA_KEY = b"cogflight"
GEO_KEY = b"geo"
ASSET_PREFIX = "asset:"
RESERVED_COLUMNS = ("id", "datetime", "geometry", "bbox", "crs")

IMAGE_TYPE = pa.struct(
    [
        pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("tile_width", pa.int32(), nullable=False),
        pa.field("tile_height", pa.int32(), nullable=False),
        pa.field("compression", pa.int32(), nullable=False),
        pa.field("predictor", pa.int16(), nullable=False),
        pa.field("photometric", pa.int16(), nullable=False),
        pa.field("planar_config", pa.int16(), nullable=False),
        pa.field("bits_per_sample", pa.int16(), nullable=False),
        pa.field("tile_offsets", pa.list_(pa.uint64()), nullable=False),
        pa.field("tile_byte_counts", pa.list_(pa.uint64()), nullable=False),
        pa.field("jpeg_tables", pa.binary()),
        pa.field("ycbcr_subsampling", pa.list_(pa.int16())),
        pa.field("lerc_parameters", pa.list_(pa.int32())),
    ]
)

HEADER_TYPE = pa.struct(
    [
        pa.field("byte_order", pa.string(), nullable=False),
        pa.field("bigtiff", pa.bool_(), nullable=False),
        pa.field("dtype", pa.string(), nullable=False),
        pa.field("samples", pa.int32(), nullable=False),
        pa.field("sample_format", pa.int16(), nullable=False),
        pa.field("extra_samples", pa.list_(pa.int16())),
        pa.field("crs", pa.string(), nullable=False),
        pa.field("geotransform", pa.list_(pa.float64(), 6), nullable=False),
        pa.field("raster_type", pa.string(), nullable=False),
        pa.field("nodata", pa.string()),
        pa.field("scales", pa.list_(pa.float64())),
        pa.field("offsets", pa.list_(pa.float64())),
        pa.field("descriptions", pa.list_(pa.string())),
        pa.field("gdal_metadata", pa.string()),
        pa.field("levels", pa.list_(IMAGE_TYPE), nullable=False),
        pa.field("masks", pa.list_(IMAGE_TYPE)),
    ]
)

IDENTITY_FIELDS = (
    pa.field("size", pa.uint64()),
    pa.field("etag", pa.string()),
    pa.field("last_modified", pa.timestamp("us", tz="UTC")),
)
"""Optional fields of an asset (added in schema version 1, so Collections may lack them)."""

ASSET_TYPE = pa.struct(
    [
        pa.field("href", pa.string(), nullable=False),
        pa.field("header", HEADER_TYPE, nullable=False),
        *IDENTITY_FIELDS,
    ]
)

BBOX_TYPE = pa.struct(
    [
        pa.field("xmin", pa.float64()),
        pa.field("ymin", pa.float64()),
        pa.field("xmax", pa.float64()),
        pa.field("ymax", pa.float64()),
    ]
)

CORE_FIELDS = (
    pa.field("id", pa.string(), nullable=False),
    pa.field("datetime", pa.timestamp("us", tz="UTC")),
    pa.field("geometry", pa.binary()),
    pa.field("bbox", BBOX_TYPE),
    pa.field("crs", pa.string()),
)


def asset_column(asset: str) -> str:
    """Column name of an asset: ``asset:<key>``."""
    return ASSET_PREFIX + asset


@dataclass(frozen=True, slots=True)
class Band:
    """A band of a Collection: which asset holds it, at which sample, and what it is."""

    name: str
    asset: str
    sample: int = 0
    dtype: str | None = None
    nodata: str | None = None
    scale: float | None = None
    offset: float | None = None
    description: str | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON object stored in the Collection metadata."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Band:
        """Inverse of :meth:`to_json`."""
        try:
            return cls(
                name=str(obj["name"]),
                asset=str(obj["asset"]),
                sample=int(obj.get("sample", 0)),
                dtype=obj.get("dtype"),
                nodata=None if obj.get("nodata") is None else str(obj["nodata"]),
                scale=None if obj.get("scale") is None else float(obj["scale"]),
                offset=None if obj.get("offset") is None else float(obj["offset"]),
                description=obj.get("description"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CollectionError(f"invalid band entry in Collection metadata: {obj!r}") from exc


def _image_to_dict(img: ImageRecord) -> dict[str, Any]:
    return {
        "width": img.width,
        "height": img.height,
        "tile_width": img.tile_width,
        "tile_height": img.tile_height,
        "compression": img.compression,
        "predictor": img.predictor,
        "photometric": img.photometric,
        "planar_config": img.planar_config,
        "bits_per_sample": img.bits_per_sample,
        "tile_offsets": img.tile_offsets,
        "tile_byte_counts": img.tile_byte_counts,
        "jpeg_tables": img.jpeg_tables,
        "ycbcr_subsampling": list(img.ycbcr_subsampling) if img.ycbcr_subsampling else None,
        "lerc_parameters": list(img.lerc_parameters) if img.lerc_parameters else None,
    }


def header_to_dict(h: HeaderRecord) -> dict[str, Any]:
    """A header as a Python dict matching :data:`HEADER_TYPE`."""
    return {
        "byte_order": h.byte_order,
        "bigtiff": h.bigtiff,
        "dtype": h.dtype,
        "samples": h.samples,
        "sample_format": h.sample_format,
        "extra_samples": list(h.extra_samples),
        "crs": h.crs,
        "geotransform": list(h.geotransform),
        "raster_type": h.raster_type,
        "nodata": h.nodata,
        "scales": list(h.scales),
        "offsets": list(h.offsets),
        "descriptions": list(h.descriptions),
        "gdal_metadata": h.gdal_metadata,
        "levels": [_image_to_dict(lv) for lv in h.levels],
        "masks": [None if m is None else _image_to_dict(m) for m in h.masks],
    }


def _image_from_dict(d: Mapping[str, Any]) -> ImageRecord:
    return ImageRecord(
        width=int(d["width"]),
        height=int(d["height"]),
        tile_width=int(d["tile_width"]),
        tile_height=int(d["tile_height"]),
        compression=int(d["compression"]),
        predictor=int(d["predictor"]),
        photometric=int(d["photometric"]),
        planar_config=int(d["planar_config"]),
        bits_per_sample=int(d["bits_per_sample"]),
        tile_offsets=np.asarray(d["tile_offsets"], dtype=np.uint64),
        tile_byte_counts=np.asarray(d["tile_byte_counts"], dtype=np.uint64),
        jpeg_tables=d.get("jpeg_tables"),
        ycbcr_subsampling=(int(d["ycbcr_subsampling"][0]), int(d["ycbcr_subsampling"][1]))
        if d.get("ycbcr_subsampling")
        else None,
        lerc_parameters=tuple(d["lerc_parameters"]) if d.get("lerc_parameters") else None,
    )


def asset_row(h: HeaderRecord) -> dict[str, Any]:
    """One value of an asset column: href, header and the object's identity when known."""
    row: dict[str, Any] = {"href": h.href, "header": header_to_dict(h)}
    row.update((h.identity or ObjectIdentity()).to_row())
    return row


def identity_from_row(row: Mapping[str, Any]) -> ObjectIdentity | None:
    """The identity recorded in one value of an asset column (None: nothing recorded)."""
    return ObjectIdentity.from_row(row)


def normalise_assets(table: pa.Table) -> pa.Table:
    """``table`` with every asset column of :data:`ASSET_TYPE`.

    Collections written before the identity fields existed (and any later ones
    with fields this release does not know) hold structs with ``href`` and
    ``header``; their columns gain the missing optional fields as nulls, so every
    reader sees one type. Columns that are not asset records are left for
    validation to refuse.
    """
    for i, f in enumerate(table.schema):
        if not f.name.startswith(ASSET_PREFIX) or f.type.equals(ASSET_TYPE):
            continue
        t = f.type
        if not pa.types.is_struct(t):
            continue
        names = [t.field(k).name for k in range(t.num_fields)]
        base = ASSET_TYPE.field("href"), ASSET_TYPE.field("header")
        if any(b.name not in names or not t.field(b.name).type.equals(b.type) for b in base):
            continue
        if any(
            o.name in names and not t.field(o.name).type.equals(o.type) for o in IDENTITY_FIELDS
        ):
            continue
        chunks = []
        for chunk in table.column(i).chunks:
            children = [
                chunk.field(name)
                if name in names
                else pa.nulls(len(chunk), ASSET_TYPE.field(name).type)
                for name in (ASSET_TYPE.field(k).name for k in range(ASSET_TYPE.num_fields))
            ]
            mask = pa.compute.invert(chunk.is_valid()) if chunk.null_count else None
            chunks.append(pa.StructArray.from_arrays(children, fields=list(ASSET_TYPE), mask=mask))
        column = pa.chunked_array(chunks, type=ASSET_TYPE)
        table = table.set_column(i, pa.field(f.name, ASSET_TYPE, f.nullable, f.metadata), column)
    return table


def header_from_dict(
    href: str, d: Mapping[str, Any], identity: ObjectIdentity | None = None
) -> HeaderRecord:
    """Rebuild a :class:`HeaderRecord` from a row of an asset column."""
    gt = d["geotransform"]
    return HeaderRecord(
        href=href,
        identity=identity,
        byte_order=">" if d["byte_order"] == ">" else "<",
        bigtiff=bool(d["bigtiff"]),
        dtype=str(d["dtype"]),
        samples=int(d["samples"]),
        sample_format=int(d["sample_format"]),
        extra_samples=tuple(d.get("extra_samples") or ()),
        crs=str(d["crs"]),
        geotransform=(gt[0], gt[1], gt[2], gt[3], gt[4], gt[5]),
        raster_type="point" if d["raster_type"] == "point" else "area",
        nodata=d.get("nodata"),
        scales=tuple(d.get("scales") or ()),
        offsets=tuple(d.get("offsets") or ()),
        descriptions=tuple(d.get("descriptions") or ()),
        gdal_metadata=d.get("gdal_metadata"),
        levels=tuple(_image_from_dict(lv) for lv in d["levels"]),
        masks=tuple(None if m is None else _image_from_dict(m) for m in (d.get("masks") or ())),
    )


def geo_metadata(geometry_types: Sequence[str], bbox: Sequence[float] | None) -> dict[str, Any]:
    """GeoParquet 1.1 ``geo`` metadata for the footprint column (OGC:CRS84, bbox covering)."""
    column: dict[str, Any] = {
        "encoding": "WKB",
        "geometry_types": sorted(set(geometry_types)),
        "crs": pyproj.CRS("OGC:CRS84").to_json_dict(),
        "edges": "planar",
        "covering": {
            "bbox": {
                "xmin": ["bbox", "xmin"],
                "ymin": ["bbox", "ymin"],
                "xmax": ["bbox", "xmax"],
                "ymax": ["bbox", "ymax"],
            }
        },
    }
    if bbox is not None:
        column["bbox"] = [float(v) for v in bbox]
    return {"version": "1.1.0", "primary_column": "geometry", "columns": {"geometry": column}}


def read_metadata(schema: pa.Schema, where: str) -> dict[str, Any]:
    """The ``cogflight`` metadata of a Collection schema, version-checked."""
    raw = (schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise CollectionError(
            f"{where} is not a cogflight Collection (no 'cogflight' key in its Parquet "
            "metadata); build one with catalog.build_from_files/table/stac"
        )
    try:
        meta = json.loads(raw)
    except ValueError as exc:
        raise CollectionError(f"{where}: the cogflight metadata is not valid JSON") from exc
    version = meta.get("schema_version") if isinstance(meta, dict) else None
    if version != SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{where} has Collection schema version {version!r}; this cogflight reads version "
            f"{SCHEMA_VERSION}. Rebuild the Collection or upgrade cogflight"
        )
    assert isinstance(meta, dict)
    return meta
