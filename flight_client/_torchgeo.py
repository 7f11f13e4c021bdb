"""A TorchGeo ``GeoDataset`` whose pixels come from a cogflight server.

It honours the contract of torchgeo 0.8: an ``index`` GeoDataFrame in the
dataset CRS with a closed ``datetime`` IntervalIndex (tz-naive), ``crs`` and
``res`` (settable, as ``IntersectionDataset``/``UnionDataset`` do), ``bounds``,
and ``__getitem__(GeoSlice)`` returning ``image`` (or ``mask``), ``crs``,
``bounds``, ``transform`` and, with ``label_field``, ``label``. Each query is
one request for a grid exactly like ``rasterio.merge.merge`` builds (origin at
the slice's ``xmin, ymax``, ``round(extent / res)`` pixels); scenes are mosaicked
first-valid-wins, as ``RasterDataset`` does, or stacked ``[T, C, H, W]`` with
``time_series=True``. Scenes in other CRSs are reprojected by the server.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from cogflight_core import ChipQuery, InvalidArgumentError, MissingDependencyError

from ._client import Client, connect
from ._torch import to_torch

try:
    import geopandas as gpd
    import pandas as pd
    import pyproj
    import shapely
    import torch
    from torchgeo.datasets import GeoDataset
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(
        "FlightGeoDataset needs TorchGeo: pip install 'cogflight[torchgeo]'"
    ) from exc

__all__ = ["FlightGeoDataset"]

_MIN, _MAX = pd.Timestamp.min, pd.Timestamp.max


def _naive(value: Any) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_convert("UTC").tz_localize(None) if ts.tzinfo is not None else ts


def _interval(value: Any) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The time span of a scene date, as TorchGeo's ``disambiguate_timestamp`` gives it.

    A date (midnight) covers its whole day, an instant its second; zero-width
    intervals would never overlap the half-open queries of TorchGeo's samplers.
    """
    if value is None:
        return _MIN, _MAX
    start = _naive(value)
    span = pd.Timedelta(days=1) if start == start.normalize() else pd.Timedelta(seconds=1)
    start = start.floor("s")
    return start, start + span - pd.Timedelta(microseconds=1)


class FlightGeoDataset(GeoDataset):
    """A Collection served over Flight (remote, or embedded with ``client=None``).

    Args:
        client: a :class:`Client`, a location string, or None for an embedded server
            over ``root``.
        collection: the Collection name.
        bands: band names (default: all).
        crs: dataset CRS (default: the CRS most scenes use; on a tie the first scene's,
            as RasterDataset).
        res: pixel size in ``crs`` units (default: the native size of a scene in ``crs``).
        is_image: ``image`` float32 ``[C, H, W]``; False for label rasters: ``mask``
            int64 ``[H, W]`` from the first band.
        label_field: a Collection column returned as ``label`` (from the first scene hit).
        time_series: ``image`` ``[T, C, H, W]``, one step per scene by date, instead of
            a mosaic; the index then has one row per stack of scenes sharing an extent,
            spanning their dates, so that samplers query whole stacks.
        resampling: ``nearest`` (default) or ``bilinear``, when the grid is not native.
        filter: wire-contract filter (date range, cloud cover, ids, where) on scenes.
        transforms: applied to each sample, as in TorchGeo.
        root: Collections directory of the embedded server (``client=None``).
    """

    def __init__(
        self,
        client: Client | str | None,
        collection: str,
        *,
        bands: Sequence[str] | None = None,
        crs: Any = None,
        res: float | tuple[float, float] | None = None,
        is_image: bool = True,
        label_field: str | None = None,
        time_series: bool = False,
        resampling: str = "nearest",
        filter: Mapping[str, Any] | None = None,
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        root: str | None = None,
    ) -> None:
        if isinstance(client, Client):
            self.client = client
        else:
            self.client = connect(client, root=root)  # both given: a clear error
        self.collection = collection
        self.bands = list(bands) if bands is not None else None
        self.is_image = is_image
        self.label_field = label_field
        self.time_series = time_series
        self.resampling = resampling
        self.filter = dict(filter) if filter else None
        self.transforms = transforms
        self.paths: list[str] = []

        table = self.client.index(collection, filter=self.filter)  # filtered by the server
        if table.num_rows == 0:
            raise InvalidArgumentError(f"Collection {collection!r} has no scene matching {filter}")
        if label_field is not None and label_field not in table.column_names:
            raise InvalidArgumentError(
                f"label_field: Collection {collection!r} has no column {label_field!r}"
            )
        from ._sampling import scene_grids

        grids = {g["id"]: g for g in scene_grids(table)}
        crss = table.column("crs").to_pylist()
        target = pyproj.CRS.from_user_input(
            crs if crs is not None else Counter(crss).most_common(1)[0][0]  # ties: first
        )
        ids = table.column("id").to_pylist()
        footprints = self._footprints(table, grids, ids, crss, target)
        times = table.column("datetime").to_pylist()
        intervals = [_interval(t) for t in times]
        columns: dict[str, Any] = {"id": ids}
        if label_field is not None:
            columns[label_field] = table.column(label_field).to_pylist()
        index = pd.IntervalIndex.from_tuples(intervals, closed="both", name="datetime")
        scenes = gpd.GeoDataFrame(columns, index=index, geometry=list(footprints), crs=target)
        self._scenes = scenes
        self.index = self._stacks(scenes) if time_series else scenes
        if res is None:
            res = self._native_res(grids, ids, crss, target)
        xres, yres = (res, res) if isinstance(res, int | float) else res
        self._res = (float(xres), float(yres))

    @staticmethod
    def _stacks(scenes: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
        """One index row per stack of scenes on the same extent, spanning their dates.

        TorchGeo's samplers query one index row's time span; with a row per stack
        a sample holds every date of its place.
        """
        keys = [g.wkb for g in scenes.geometry]
        groups: dict[bytes, list[int]] = {}
        for k, key in enumerate(keys):
            groups.setdefault(key, []).append(k)
        rows = list(groups.values())
        left, right = scenes.index.left, scenes.index.right
        spans = [(min(left[m] for m in g), max(right[m] for m in g)) for g in rows]
        data: dict[str, Any] = {"ids": [[scenes["id"].iloc[m] for m in g] for g in rows]}
        for column in scenes.columns:
            if column not in ("id", "geometry"):
                data[column] = [scenes[column].iloc[g[0]] for g in rows]
        return gpd.GeoDataFrame(
            data,
            index=pd.IntervalIndex.from_tuples(spans, closed="both", name="datetime"),
            geometry=[scenes.geometry.iloc[g[0]] for g in rows],
            crs=scenes.crs,
        )

    @staticmethod
    def _footprints(
        table: Any,
        grids: Mapping[str, Any],
        ids: Sequence[str],
        crss: Sequence[str],
        target: pyproj.CRS,
    ) -> list[Any]:
        """Scene extents in ``target``: the raster's own box, as RasterDataset indexes it."""
        lonlat = gpd.GeoSeries(
            shapely.from_wkb(table.column("geometry").to_pylist()), crs="OGC:CRS84"
        ).to_crs(target)
        out = []
        for k, (sid, scene_crs) in enumerate(zip(ids, crss, strict=True)):
            grid = grids.get(sid)
            if grid is None:  # no georeferenced header: the footprint polygon
                out.append(lonlat.iloc[k])
                continue
            gt = grid["transform"]
            xs = (gt[0], gt[0] + gt[1] * grid["width"])
            ys = (gt[3], gt[3] + gt[5] * grid["height"])
            bounds = (min(xs), min(ys), max(xs), max(ys))
            source = pyproj.CRS.from_user_input(scene_crs)
            if not source.equals(target):
                bounds = pyproj.Transformer.from_crs(
                    source, target, always_xy=True
                ).transform_bounds(*bounds, densify_pts=21)
            out.append(shapely.box(*bounds))
        return out

    @staticmethod
    def _native_res(
        grids: Mapping[str, Any], ids: Sequence[str], crss: Sequence[str], target: pyproj.CRS
    ) -> tuple[float, float]:
        for sid, scene_crs in zip(ids, crss, strict=True):
            if sid in grids and pyproj.CRS.from_user_input(scene_crs).equals(target):
                gt = grids[sid]["transform"]
                return (abs(gt[1]), abs(gt[5]))
        raise InvalidArgumentError(
            "res: no scene is in the dataset CRS; give res= in units of that CRS"
        )

    def _crs_text(self) -> str:
        auth = self.crs.to_authority()
        return f"{auth[0]}:{auth[1]}" if auth else self.crs.to_wkt()

    def __getitem__(self, query: Any) -> dict[str, Any]:
        """Pixels of the scenes intersecting ``query`` on its grid (see the class docs)."""
        x, y, t = self._disambiguate_slice(query)
        interval = pd.Interval(t.start, t.stop)
        if self._scenes is not self.index and self._scenes.crs != self.index.crs:
            self._scenes = self._scenes.to_crs(self.index.crs)  # the crs setter moved the index
        scenes = self._scenes
        hits = scenes.iloc[scenes.index.overlaps(interval)]
        hits = hits.iloc[:: t.step or 1]
        hits = hits.cx[x.start : x.stop, y.start : y.stop]
        if hits.empty:
            raise IndexError(f"query: {query} not found in index with bounds: {self.bounds}")
        xres = float(x.step if x.step is not None else self.res[0])
        yres = float(y.step if y.step is not None else self.res[1])
        order = list(hits["id"])
        fields: ChipQuery = {
            "geometries": [(float(x.start), float(y.start), float(x.stop), float(y.stop))],
            "geometry_crs": self._crs_text(),
            "crs": self._crs_text(),
            "resolution": [xres, yres],
            "resampling": self.resampling,
            "time_series": self.time_series,
            "filter": {"ids": order},
            "batch_rows": max(len(order), 1),
        }
        if self.bands is not None:
            fields["bands"] = self.bands
        batches = list(self.client.chips(self.collection, **fields))
        if not batches or sum(b.num_rows for b in batches) == 0:
            raise IndexError(f"query: {query} returned no chips")
        parts = [to_torch(b) for b in batches]
        out_dtype = torch.float32 if self.is_image else torch.long
        chips = torch.cat([p["chip"].to(out_dtype) for p in parts])
        valid = torch.cat([p["valid"] for p in parts])
        scene_ids: list[Any] = [i for p in parts for i in p["id"]]
        if self.time_series:
            data, mask = chips[0], valid[0]  # [T, C, H, W], one geometry
        else:
            rank = {sid: k for k, sid in enumerate(order)}
            sequence = sorted(range(len(scene_ids)), key=lambda k: rank.get(scene_ids[k], 0))
            data = torch.zeros(chips.shape[1:], dtype=chips.dtype)
            filled = torch.zeros(valid.shape[1:], dtype=torch.bool)
            for k in sequence:  # first valid pixel wins, as rasterio.merge(method='first')
                take = valid[k] & ~filled
                data[:, take] = chips[k][:, take]
                filled |= take
            mask = filled
        sample: dict[str, Any] = {
            "crs": self.crs,
            "bounds": query,
            "transform": torch.tensor(
                [float(x.start), xres, 0.0, float(y.stop), 0.0, -yres], dtype=torch.float64
            ),
            "valid": mask,
        }
        if self.is_image:
            sample["image"] = data
        else:
            sample["mask"] = data[..., 0, :, :] if self.time_series else data[0]
        if self.label_field is not None:
            label = hits[self.label_field].iloc[0]
            sample["label"] = (
                torch.tensor(label) if isinstance(label, int | float | np.number) else label
            )
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample
