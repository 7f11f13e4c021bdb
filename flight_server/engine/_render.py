"""Rendering one chip: every band of every time step onto the chip's grid.

A :class:`Render` holds what every chip of one request shares (Collection,
store registry, request, bands, fills, header cache, tile loader, decode
pool); :meth:`Render.chip` writes one chip into its slot of the batch buffer.
For each file the grid is read directly from tiles when it is the file's own
(or an overview's) grid, and resampled otherwise (:mod:`._warp`); files of one
scene sharing a grid share one warp plan.

Concurrency policy: coroutines run on the engine loop; every file of every
time step of a chip is read at once (a chip costs one round trip, not one per
file and step); CPU work (rasterising, warp plans, resampling) runs in the
decode pool at the priority of the chip's batch.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from catalog import Band, Collection, HeaderRecord, StoreRegistry, same_crs
from cogflight_core import PermissionDeniedError

from ._assemble import apply_scale_offset, fill_invalid, native_fill, paste
from ._headers import HeaderCache
from ._rasterize import rasterize_polygon
from ._request import ChipRequest
from ._tiles import TileLoader
from ._types import Chip, Grid
from ._warp import WarpPlan, aligned_window, sample_bilinear, take_nearest, warp_plan
from ._windows import Window, tiles_in_window

__all__ = ["Render"]

WarpKey = tuple[Any, ...]


@dataclass
class Render:
    """What the chips of one request are rendered from (one per stream)."""

    collection: Collection
    registry: StoreRegistry
    request: ChipRequest
    bands: tuple[Band, ...]
    fills: tuple[float | int, ...]
    headers: HeaderCache
    loader: TileLoader
    executor: Executor
    _memo: dict[tuple[int, str], HeaderRecord] = field(default_factory=dict, repr=False)

    async def chip(self, chip: Chip, dest: np.ndarray, dest_valid: np.ndarray) -> None:
        """Render ``chip`` into ``dest`` (``[T?, C, H, W]``) and ``dest_valid``, in place."""
        loop = asyncio.get_running_loop()
        grid, request = chip.grid, self.request
        gh, gw = grid.height, grid.width
        polygon = chip.polygon
        poly_mask = None
        if polygon is not None:
            poly_mask = await loop.run_in_executor(
                self.executor,
                lambda: rasterize_polygon(
                    polygon, grid.transform, gh, gw, all_touched=request.all_touched
                ),
            )
        by_asset: dict[str, list[int]] = {}
        for bi, b in enumerate(self.bands):
            by_asset.setdefault(b.asset, []).append(bi)
        series = request.time_series
        warps: dict[WarpKey, asyncio.Future[WarpPlan]] = {}
        # Every file of every time step at once: a chip costs one round trip, not one
        # per file and step (15 dates x 4 band files at 50 ms would be 3 s).
        jobs = [  # per time step, one task per file
            [
                asyncio.ensure_future(
                    self._file(row, ab, (dest[si] if series else dest)[:, :gh, :gw], grid, warps)
                )
                for ab in by_asset.values()
            ]
            for si, row in enumerate(chip.rows)
        ]
        try:
            await asyncio.gather(*(task for step in jobs for task in step))
        except BaseException:
            for step in jobs:
                for task in step:
                    task.cancel()
            raise
        for si, step in enumerate(jobs):
            step_valid = np.ones((gh, gw), dtype=bool)
            for task in step:
                step_valid &= task.result()
            if poly_mask is not None:
                step_valid &= poly_mask
            if poly_mask is not None or request.scale_offset:
                fill_invalid((dest[si] if series else dest)[:, :gh, :gw], step_valid, self.fills)
            (dest_valid[si] if series else dest_valid)[:gh, :gw] = step_valid

    def header(self, row: int, band: Band) -> HeaderRecord:
        """The header of ``band``'s file in scene ``row`` (memoised for this request)."""
        key = (row, band.asset)
        header = self._memo.get(key)
        if header is None:
            header = self._memo[key] = self.headers.get(self.collection, row, band)
        return header

    async def _file(
        self,
        row: int,
        asset_bands: list[int],
        region: np.ndarray,
        grid: Grid,
        warps: dict[WarpKey, asyncio.Future[WarpPlan]],
    ) -> np.ndarray:
        """Read one file's bands of scene ``row`` into ``region``; return their validity."""
        band = self.bands[asset_bands[0]]
        header = self.header(row, band)
        samples = [self.bands[bi].sample for bi in asset_bands]
        targets = [region[bi] for bi in asset_bands]
        try:
            valid = await self._on_grid(header, samples, grid, targets, warps)
        except PermissionDeniedError as exc:  # the policy refused a read: name the asset
            scene = self.collection.table.column("id")[row].as_py()
            raise PermissionDeniedError(f"asset {band.asset!r} of scene {scene!r}: {exc}") from exc
        if self.request.scale_offset:
            for bi in asset_bands:
                apply_scale_offset(region[bi], self.bands[bi], header)
        return valid

    async def _on_grid(
        self,
        header: HeaderRecord,
        samples: list[int],
        grid: Grid,
        targets: list[np.ndarray],
        warps: dict[WarpKey, asyncio.Future[WarpPlan]],
    ) -> np.ndarray:
        """Write one file's samples on the grid into ``targets``; return validity.

        A direct window read when the grid is the file's own (or an overview's),
        resampling otherwise.
        """
        if same_crs(grid.crs, header.crs):
            for level in range(len(header.levels)):
                window = aligned_window(header.level_geotransform(level), grid)
                if window is not None:
                    return await self._window(header, level, window, samples, targets)
        loop = asyncio.get_running_loop()
        # Files of one scene usually share a grid (one file per band): where their
        # pixels come from is worked out once per chip and grid, not once per file.
        key = (
            header.crs,
            tuple(header.geotransform),
            tuple((lv.width, lv.height) for lv in header.levels),
        )
        pending = warps.get(key)
        if pending is None:
            pending = warps[key] = loop.run_in_executor(
                self.executor, warp_plan, grid, header, self.request.resampling
            )
        plan = await asyncio.shield(pending)
        if plan.need is None:
            return np.zeros((grid.height, grid.width), dtype=bool)
        c0, r0, c1, r1 = plan.need
        fill = native_fill(header)
        src = np.full((len(samples), r1 - r0, c1 - c0), fill, dtype=header.dtype)
        src_valid = await self._window(
            header, plan.level, Window(c0, r0, c1 - c0, r1 - r0), samples, list(src)
        )
        if plan.index is not None:
            out, valid = await loop.run_in_executor(
                self.executor, take_nearest, src, src_valid, plan.index, fill
            )
        else:
            out, valid = await loop.run_in_executor(
                self.executor, sample_bilinear, src, src_valid, plan.sx, plan.sy, c0, r0, fill
            )
        for k, target in enumerate(targets):
            target[valid] = out[k][valid]
        return valid

    async def _window(
        self,
        header: HeaderRecord,
        level: int,
        window: Window,
        samples: list[int],
        targets: list[np.ndarray],
    ) -> np.ndarray:
        """A boundless window read into ``targets`` (one ``[h, w]`` per sample); validity."""
        refs = list(tiles_in_window(header, level, window, samples))
        mask_refs = (
            list(tiles_in_window(header, level, window, samples, mask=True))
            if (header.masks and header.masks[level] is not None)
            else []
        )
        tiles = await self.loader.load(self.registry, header, [r[0] for r in refs + mask_refs])
        return paste(header, level, window, samples, refs, mask_refs, tiles, targets)
