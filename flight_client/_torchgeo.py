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
A DataLoader batch (``__getitems__``) is one request for all its queries.

Concurrency policy: the dataset may be read from several threads (the client is
thread-safe; the scene index and its spatial index are built before threads start
and only read in them). :class:`GeoBatchLoader` owns a bounded thread pool per epoch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from cogflight_core import ChipQuery, InvalidArgumentError, MissingDependencyError

from ._client import Client, connect
from ._mosaic import as_bits, gather_rows
from ._torch import to_torch

if TYPE_CHECKING:
    from ._geoloader import GeoBatchLoader

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

    Batches: a DataLoader with a batch size calls ``__getitems__`` with the batch's
    queries, and the batch is one request (one geometry per query; a batch mixing
    resolutions or chip sizes, or whose time slices would pull scenes another query
    leaves out, is split into as few requests as that needs). Samples equal
    ``__getitem__``'s, query by query. Without DataLoader workers nothing overlaps
    the requests with training; :meth:`loader` fetches the next batches in threads
    while one is consumed (see :class:`GeoBatchLoader`). With workers, the
    DataLoader's own ``prefetch_factor`` does that. The tensors of a batch's samples
    are views of a few tensors per request (``stack_samples`` copies them into the
    batch anyway); clone one to keep it without the rest.
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

    def _scene_index(self) -> gpd.GeoDataFrame:
        """The scene index in the dataset CRS, its spatial index built.

        Called before any prefetch thread starts, so threads only read it.
        """
        if self._scenes is not self.index and self._scenes.crs != self.index.crs:
            self._scenes = self._scenes.to_crs(self.index.crs)  # the crs setter moved the index
        _ = self._scenes.sindex  # built once, here, not concurrently in threads
        return self._scenes

    def _resolve(self, query: Any, scenes: gpd.GeoDataFrame, view: _View) -> _Resolved:
        """A query's grid and scenes (those of its time slice, every ``step``-th, under it).

        Raises:
            IndexError: no scene of the index is under the query.
        """
        x, y, t = _disambiguate(query, view.bounds)
        box = (float(x.start), float(y.start), float(x.stop), float(y.stop))
        under = scenes.sindex.query(shapely.box(*box), predicate="intersects")
        interval = pd.Interval(t.start, t.stop)  # what IntervalIndex.overlaps would take
        start, stop = interval.left.to_datetime64(), interval.right.to_datetime64()
        overlap = (view.left <= stop) & (start < view.right)  # closed both / closed right
        in_time = np.flatnonzero(overlap & (not interval.is_empty))
        rows = np.intersect1d(in_time[:: t.step or 1], under)
        if rows.size == 0:
            raise IndexError(f"query: {query} not found in index with bounds: {view.bounds}")
        xres = float(x.step if x.step is not None else self.res[0])
        yres = float(y.step if y.step is not None else self.res[1])
        shape = (  # the server's grid (flight_server.engine.chip_grid)
            max(1, round((box[3] - box[1]) / yres)),
            max(1, round((box[2] - box[0]) / xres)),
        )
        return _Resolved(
            query,
            box,
            (xres, yres),
            shape,
            tuple(rows.tolist()),
        )

    def _requests(self, resolved: Sequence[_Resolved]) -> list[list[int]]:
        """Which queries share a request (positions, in order).

        One request has one resolution and one chip shape (the server pads every chip
        to the largest) and, for time series, one number of steps; each query names
        its own scenes (``geometry_scenes``), so none gets another's dates.
        """
        groups: dict[Any, list[int]] = {}
        for k, r in enumerate(resolved):
            key = (r.res, r.shape, len(r.rows) if self.time_series else 0)
            groups.setdefault(key, []).append(k)
        return list(groups.values())

    def _fetch(self, group: Sequence[_Resolved], scenes: gpd.GeoDataFrame) -> list[tuple[Any, Any]]:
        """One request for a group of queries: each query's ``(data, valid)``.

        Chips are grouped by ``geometry_index``; each query keeps only chips (or time
        steps) of its own scenes, mosaicked first-valid-wins in its scene order. The
        work is a few tensor ops per request, not per chip (in-process, the server's
        threads take the GIL between ops); samples are views of per-request tensors.
        """
        union = sorted(set().union(*(r.rows for r in group)))
        ids = scenes["id"].iloc[union].tolist()
        id_of = dict(zip(union, ids, strict=True))
        crs = self._crs_text()
        fields: ChipQuery = {
            "geometries": [r.box for r in group],
            "geometry_crs": crs,
            "crs": crs,
            "resolution": list(group[0].res),
            "resampling": self.resampling,
            "time_series": self.time_series,
            "filter": {"ids": ids},
            "geometry_scenes": [[id_of[row] for row in r.rows] for r in group],
            "ramp": False,  # every chip is needed before the samples exist
            "batch_rows": len(group) if self.time_series else sum(len(r.rows) for r in group),
        }
        if self.bands is not None:
            fields["bands"] = self.bands
        h, w = group[0].shape  # the server pads chips to a request's largest: crop
        chips: list[Any] = []  # per received batch, pixels as stored (see as_bits)
        valids: list[Any] = []
        found: list[list[tuple[Any, tuple[int, int]]]] = [[] for _ in group]  # (id, at)
        native = torch.float32
        for n, batch in enumerate(self.client.chips(self.collection, **fields)):
            part = to_torch(batch.select(["chip", "valid", "geometry_index", "id"]))
            native = part["chip"].dtype
            chips.append(as_bits(part["chip"])[..., :h, :w])
            valids.append(part["valid"][..., :h, :w])
            geometry = part["geometry_index"].tolist()
            for j, (g, sid) in enumerate(zip(geometry, part["id"], strict=True)):
                found[g].append((sid, (n, j)))
        picks: list[list[tuple[int, int]]] = []  # each query's chips, in its scene order
        steps: list[list[int] | None] = []  # time series: the steps it keeps (None: all)
        for r, mine in zip(group, found, strict=True):
            rank = {id_of[p]: k for k, p in enumerate(r.rows)}
            ranked: list[tuple[int, tuple[int, int]]] = []
            for sid, at in mine:
                if self.time_series:  # one chip per geometry: the steps of its own scenes
                    keep = [k for k, step in enumerate(sid) if step in rank]  # not padding
                    if keep:
                        ranked.append((0, at))
                        steps.append(None if len(keep) == len(sid) else keep)
                        break
                elif sid in rank:
                    ranked.append((rank[sid], at))
            if not ranked:
                raise IndexError(f"query: {r.query} returned no chips")
            picks.append([at for _, at in sorted(ranked)])
        dtype = torch.float32 if self.is_image else torch.long
        firsts = [at[0] for at in picks]
        data = gather_rows(chips, firsts)
        mask = gather_rows(valids, firsts)
        if self.time_series:  # as the server sent them
            pixels = data.view(native).to(dtype)
            return [
                (pixels[q], mask[q]) if keep is None else (pixels[q][keep], mask[q][keep])
                for q, keep in enumerate(steps)
            ]
        data.masked_fill_(~mask.unsqueeze(-3), 0)  # where no scene has data, as merge leaves it
        for k in range(1, max(len(at) for at in picks)):  # first valid pixel wins
            queries = [q for q, at in enumerate(picks) if len(at) > k]
            qi = torch.tensor(queries)
            d, m = data[qi], mask[qi]
            take = gather_rows(valids, [picks[q][k] for q in queries]) & ~m
            torch.where(
                take.unsqueeze(-3), gather_rows(chips, [picks[q][k] for q in queries]), d, out=d
            )
            data[qi], mask[qi] = d, m | take
        pixels = data.view(native).to(dtype)
        return [(pixels[q], mask[q]) for q in range(len(group))]

    def _sample(
        self, r: _Resolved, scenes: gpd.GeoDataFrame, data: Any, mask: Any
    ) -> dict[str, Any]:
        """The TorchGeo sample of one query from its pixels, transforms applied."""
        sample: dict[str, Any] = {
            "crs": self.crs,
            "bounds": r.query,
            "transform": torch.tensor(
                [r.box[0], r.res[0], 0.0, r.box[3], 0.0, -r.res[1]], dtype=torch.float64
            ),
            "valid": mask,
        }
        if self.is_image:
            sample["image"] = data
        else:
            sample["mask"] = data[..., 0, :, :] if self.time_series else data[0]
        if self.label_field is not None:
            label = scenes[self.label_field].iloc[r.rows[0]]
            sample["label"] = (
                torch.tensor(label) if isinstance(label, int | float | np.number) else label
            )
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample

    def __getitem__(self, query: Any) -> dict[str, Any]:
        """Pixels of the scenes intersecting ``query`` on its grid (see the class docs)."""
        return self.__getitems__([query])[0]

    def __getitems__(self, queries: Sequence[Any]) -> list[dict[str, Any]]:
        """The samples of several queries (a DataLoader batch), in as few requests as can be.

        PyTorch's DataLoader calls this with a batch's queries. Queries of one
        resolution and chip shape go in one request (see ``_requests``); each sample
        equals what ``__getitem__`` gives for its query alone.

        Raises:
            IndexError: a query has no scene (nothing is returned for the others).
        """
        scenes = self._scene_index()
        view = _View(self.bounds, scenes.index.left.to_numpy(), scenes.index.right.to_numpy())
        resolved = [self._resolve(q, scenes, view) for q in queries]
        samples: list[dict[str, Any]] = [{} for _ in resolved]
        for members in self._requests(resolved):
            group = [resolved[k] for k in members]
            for k, r, (data, mask) in zip(members, group, self._fetch(group, scenes), strict=True):
                samples[k] = self._sample(r, scenes, data, mask)
        return samples

    def loader(
        self,
        sampler: Iterable[Any],
        batch_size: int = 1,
        *,
        prefetch: int = 2,
        collate_fn: Callable[[list[dict[str, Any]]], Any] | None = None,
        drop_last: bool = False,
    ) -> GeoBatchLoader:
        """Batches of ``sampler``'s queries, fetched ``prefetch`` batches ahead in threads.

        See :class:`GeoBatchLoader`; ``collate_fn`` defaults to TorchGeo's
        ``stack_samples``.
        """
        from ._geoloader import GeoBatchLoader

        return GeoBatchLoader(
            self,
            sampler,
            batch_size,
            prefetch=prefetch,
            collate_fn=collate_fn,
            drop_last=drop_last,
        )


def _disambiguate(query: Any, bounds: tuple[slice, slice, slice]) -> tuple[slice, slice, slice]:
    """``GeoDataset._disambiguate_slice`` over bounds computed once for a whole batch."""
    out = list(bounds)
    for i, part in enumerate((query,) if isinstance(query, slice) else query):
        start = part.start if part.start is not None else out[i].start
        stop = part.stop if part.stop is not None else out[i].stop
        step = part.step if part.step is not None else out[i].step
        out[i] = slice(start, stop, step)
    x, y, t = out
    return x, y, t


@dataclass(frozen=True)
class _View:
    """What resolving a batch of queries reads of the index, taken once per batch."""

    bounds: tuple[slice, slice, slice]
    left: np.ndarray  # scene intervals, closed on both sides
    right: np.ndarray


@dataclass(frozen=True, eq=False)
class _Resolved:
    """One query resolved against the scene index."""

    query: Any  # as given: the sample's ``bounds``
    box: tuple[float, float, float, float]
    res: tuple[float, float]
    shape: tuple[int, int]  # (height, width) of its grid
    rows: tuple[int, ...]  # positions of its scenes in the scene index, in mosaic order
