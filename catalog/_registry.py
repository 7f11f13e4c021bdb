"""Built-in datasets, and the registry users add their own to.

Each entry knows where a public dataset's index lives (a STAC API collection
or a GeoParquet table), which assets are which bands, and how to reach the
files (anonymous, requester pays, Planetary Computer SAS signing).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Unpack

import shapely

from cogflight_core import DatasetNotFoundError, InvalidArgumentError

from ._build import BuildOptions
from ._build_table import build_from_table, read_table
from ._collection import Collection
from ._filters import select_rows
from ._stac import build_from_stac
from ._stores import StoreOptions

__all__ = ["DatasetEntry", "build", "get_dataset", "list_datasets", "register_dataset"]

EARTH_SEARCH = "https://earth-search.aws.element84.com/v1"
PLANETARY_COMPUTER = "https://planetarycomputer.microsoft.com/api/stac/v1"


@dataclass(frozen=True)
class DatasetEntry:
    """How to build a Collection of one public dataset.

    ``kind="stac"`` searches ``stac_api``/``collection`` and maps assets to bands
    with ``band_map`` (``{asset: band}`` or ``{asset: [band per sample]}``).
    ``kind="table"`` reads the GeoParquet index at ``table_url`` with
    ``table_bands`` (``{band: (href_column, sample)}``) and the column roles.
    """

    id: str
    title: str
    kind: Literal["stac", "table"]
    band_map: Mapping[str, str | Sequence[str]] = field(default_factory=dict)
    stac_api: str | None = None
    collection: str | None = None
    href_key: tuple[str, ...] = ("href",)
    href_rewrite: Mapping[str, str] = field(default_factory=dict)
    store_options: StoreOptions = field(default_factory=StoreOptions)
    table_url: str | None = None
    table_store_options: StoreOptions = field(default_factory=StoreOptions)
    table_bands: Mapping[str, tuple[str, int]] = field(default_factory=dict)
    id_column: str = "id"
    datetime_column: str | None = "datetime"
    geometry_column: str | None = None
    rename: Mapping[str, str] = field(default_factory=dict)
    license: str = ""
    description: str = ""

    @property
    def bands(self) -> list[str]:
        """Band names this entry exposes."""
        if self.kind == "table":
            return list(self.table_bands)
        out: list[str] = []
        for names in self.band_map.values():
            out.extend([names] if isinstance(names, str) else list(names))
        return out


_S2_EARTH_SEARCH = {
    "coastal": "B01",
    "blue": "B02",
    "green": "B03",
    "red": "B04",
    "rededge1": "B05",
    "rededge2": "B06",
    "rededge3": "B07",
    "nir": "B08",
    "nir08": "B8A",
    "nir09": "B09",
    "swir16": "B11",
    "swir22": "B12",
    "scl": "SCL",
}
_S2_PC = {
    b: b
    for b in (
        "B01",
        "B02",
        "B03",
        "B04",
        "B05",
        "B06",
        "B07",
        "B08",
        "B8A",
        "B09",
        "B11",
        "B12",
        "SCL",
    )
}
_LANDSAT = {
    "coastal": "B1",
    "blue": "B2",
    "green": "B3",
    "red": "B4",
    "nir08": "B5",
    "swir16": "B6",
    "swir22": "B7",
    "qa_pixel": "qa_pixel",
    "qa_aerosol": "qa_aerosol",
    "qa_radsat": "qa_radsat",
}
_PC = StoreOptions(planetary_computer=True)

_BUILTIN = [
    DatasetEntry(
        id="earthsearch/sentinel-2-l2a",
        title="Sentinel-2 L2A (Earth Search, AWS)",
        kind="stac",
        stac_api=EARTH_SEARCH,
        collection="sentinel-2-l2a",
        band_map=_S2_EARTH_SEARCH,
        store_options=StoreOptions(anonymous=True, region="us-west-2"),
        license="proprietary (Copernicus Sentinel data terms)",
        description="Sentinel-2 surface reflectance COGs in s3://sentinel-cogs (us-west-2).",
    ),
    DatasetEntry(
        id="earthsearch/landsat-c2-l2",
        title="Landsat Collection 2 Level-2 (Earth Search)",
        kind="stac",
        stac_api=EARTH_SEARCH,
        collection="landsat-c2-l2",
        band_map=_LANDSAT,
        href_key=("alternate.s3.href", "href"),
        href_rewrite={"https://landsatlook.usgs.gov/data/": "s3://usgs-landsat/"},
        store_options=StoreOptions(requester_pays=True, region="us-west-2"),
        license="public domain (USGS)",
        description="Requester-pays bucket s3://usgs-landsat: needs AWS credentials.",
    ),
    DatasetEntry(
        id="earthsearch/naip",
        title="NAIP aerial imagery (Earth Search)",
        kind="stac",
        stac_api=EARTH_SEARCH,
        collection="naip",
        band_map={"image": ["R", "G", "B", "NIR"]},
        store_options=StoreOptions(requester_pays=True, region="us-west-2"),
        license="public domain (USDA FSA)",
        description="4-band RGB+NIR COGs in requester-pays s3://naip-analytic.",
    ),
    DatasetEntry(
        id="earthsearch/cop-dem-glo-30",
        title="Copernicus DEM GLO-30 (Earth Search)",
        kind="stac",
        stac_api=EARTH_SEARCH,
        collection="cop-dem-glo-30",
        band_map={"data": "DEM"},
        store_options=StoreOptions(anonymous=True, region="eu-central-1"),
        license="Copernicus DEM licence",
    ),
    DatasetEntry(
        id="earthsearch/cop-dem-glo-90",
        title="Copernicus DEM GLO-90 (Earth Search)",
        kind="stac",
        stac_api=EARTH_SEARCH,
        collection="cop-dem-glo-90",
        band_map={"data": "DEM"},
        store_options=StoreOptions(anonymous=True, region="eu-central-1"),
        license="Copernicus DEM licence",
    ),
    DatasetEntry(
        id="pc/sentinel-2-l2a",
        title="Sentinel-2 L2A (Planetary Computer)",
        kind="stac",
        stac_api=PLANETARY_COMPUTER,
        collection="sentinel-2-l2a",
        band_map=_S2_PC,
        store_options=_PC,
        license="proprietary (Copernicus Sentinel data terms)",
        description="Azure blob COGs read with Planetary Computer SAS tokens.",
    ),
    DatasetEntry(
        id="pc/io-lulc-annual-v02",
        title="Impact Observatory LULC annual v02 (PC)",
        kind="stac",
        stac_api=PLANETARY_COMPUTER,
        collection="io-lulc-annual-v02",
        band_map={"data": "LULC"},
        store_options=_PC,
        license="CC-BY-4.0",
    ),
    DatasetEntry(
        id="pc/alos-dem",
        title="ALOS World 3D 30 m DEM (PC)",
        kind="stac",
        stac_api=PLANETARY_COMPUTER,
        collection="alos-dem",
        band_map={"data": "DEM"},
        store_options=_PC,
        license="proprietary (JAXA terms)",
    ),
    DatasetEntry(
        id="pc/nasadem",
        title="NASADEM (PC)",
        kind="stac",
        stac_api=PLANETARY_COMPUTER,
        collection="nasadem",
        band_map={"elevation": "DEM"},
        store_options=_PC,
        license="public domain (NASA LP DAAC)",
    ),
    DatasetEntry(
        id="pc/esa-worldcover",
        title="ESA WorldCover (PC)",
        kind="stac",
        stac_api=PLANETARY_COMPUTER,
        collection="esa-worldcover",
        band_map={"map": "MAP"},
        store_options=_PC,
        license="CC-BY-4.0",
    ),
    DatasetEntry(
        id="pc/usda-cdl",
        title="USDA Cropland Data Layer (PC)",
        kind="stac",
        stac_api=PLANETARY_COMPUTER,
        collection="usda-cdl",
        band_map={"cultivated": "CDL"},
        store_options=_PC,
        license="public domain (USDA NASS)",
    ),
    DatasetEntry(
        id="aef/v1-annual",
        title="AlphaEarth Foundations annual embeddings v1",
        kind="table",
        table_url="s3://us-west-2.opendata.source.coop/terrafloww/aef-v1-annual-rasteret/index.parquet",
        table_store_options=StoreOptions(anonymous=True, region="us-west-2"),
        table_bands={f"A{i:02d}": ("path", i) for i in range(64)},
        id_column="fid",
        datetime_column="year",
        geometry_column="geom",
        rename={"crs": "epsg"},
        href_rewrite={"https://data.source.coop/": "s3://us-west-2.opendata.source.coop/"},
        store_options=StoreOptions(anonymous=True, region="us-west-2"),
        license="CC-BY-4.0 (produced by Google and Google DeepMind)",
        description="64 int8 embedding bands in one south-up file per tile; nodata -128.",
    ),
]

_REGISTRY: dict[str, DatasetEntry] = {e.id: e for e in _BUILTIN}
_LOCK = threading.Lock()


def register_dataset(entry: DatasetEntry, *, replace: bool = False) -> None:
    """Add a dataset to the registry (``replace=True`` to overwrite an id)."""
    if not isinstance(entry, DatasetEntry):
        raise InvalidArgumentError("register_dataset expects a DatasetEntry")
    if entry.kind == "stac" and not (entry.stac_api and entry.collection and entry.band_map):
        raise InvalidArgumentError("a STAC entry needs stac_api, collection and band_map")
    if entry.kind == "table" and not (entry.table_url and entry.table_bands):
        raise InvalidArgumentError("a table entry needs table_url and table_bands")
    with _LOCK:
        if entry.id in _REGISTRY and not replace:
            raise InvalidArgumentError(
                f"dataset {entry.id!r} is already registered; pass replace=True to overwrite it"
            )
        _REGISTRY[entry.id] = entry


def get_dataset(dataset_id: str) -> DatasetEntry:
    """The registry entry for ``dataset_id``."""
    with _LOCK:
        entry = _REGISTRY.get(dataset_id)
        if entry is None:
            raise DatasetNotFoundError(
                f"no dataset {dataset_id!r}; registered: {', '.join(sorted(_REGISTRY))}"
            )
        return entry


def list_datasets() -> list[DatasetEntry]:
    """Every registered dataset, sorted by id."""
    with _LOCK:
        return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def build(
    dataset_id: str,
    *,
    bbox: Sequence[float] | None = None,
    date_range: Any = None,
    query: Mapping[str, Any] | None = None,
    bands: Sequence[str] | None = None,
    max_items: int | None = None,
    name: str | None = None,
    stac_api: str | None = None,
    table_url: str | None = None,
    store_options: StoreOptions | None = None,
    **options: Unpack[BuildOptions],
) -> Collection:
    """Build a Collection of a registered dataset.

    Args:
        dataset_id: e.g. ``"earthsearch/sentinel-2-l2a"`` (see :func:`list_datasets`).
        bbox, date_range, query, max_items: the search (STAC entries), or a
            filter on the index (table entries: bbox and date_range).
        bands: a subset of the entry's band names (default: all).
        stac_api, table_url: point at a mirror instead of the public endpoint.
        store_options: merged over the entry's own (e.g. an ``endpoint``).
    """
    entry = get_dataset(dataset_id)
    opts = StoreOptions(**{**entry.store_options, **(store_options or {})})
    if bands is not None:
        unknown = sorted(set(bands) - set(entry.bands))
        if unknown:
            raise InvalidArgumentError(
                f"bands: {dataset_id} has no {', '.join(unknown)}; it has {', '.join(entry.bands)}"
            )
    name = name or dataset_id.replace("/", "-")
    if entry.kind == "stac":
        band_map: dict[str, str | Sequence[str]] = {}
        for asset, names in entry.band_map.items():
            if isinstance(names, str):
                if bands is None or names in bands:
                    band_map[asset] = names
            elif bands is None or any(n in bands for n in names):
                band_map[asset] = list(names)  # multi-band files keep every sample
        return build_from_stac(
            stac_api or entry.stac_api,
            entry.collection or "",
            bbox=bbox,
            date_range=date_range,
            query=query,
            max_items=max_items,
            band_map=band_map,
            href_key=entry.href_key,
            href_rewrite=entry.href_rewrite,
            name=name,
            store_options=opts,
            **options,
        )
    url = table_url or entry.table_url or ""
    table = read_table(url, store_options=entry.table_store_options)[0]
    if bbox is not None or date_range is not None or max_items is not None:
        work = (
            table.rename_columns(
                ["datetime" if c == entry.datetime_column else c for c in table.column_names]
            )
            if date_range is not None
            else table
        )
        idx = select_rows(work, date_range=date_range) if date_range is not None else None
        if idx is not None:
            table = table.take(idx)
        if bbox is not None and entry.geometry_column:
            geoms = shapely.from_wkb(table.column(entry.geometry_column).to_pylist())
            keep = shapely.intersects(geoms, shapely.box(*bbox))
            table = table.filter(keep)
        if max_items is not None:
            table = table.slice(0, max_items)
    chosen = {b: v for b, v in entry.table_bands.items() if bands is None or b in bands}
    return build_from_table(
        table,
        name=name,
        bands=chosen,
        id_column=entry.id_column,
        datetime_column=entry.datetime_column,
        geometry_column=entry.geometry_column,
        rename=entry.rename,
        href_rewrite=entry.href_rewrite,
        store_options=opts,
        **options,
    )
