"""Chip locality: shards that keep chips sharing tiles together, placed by rendezvous hashing.

A tile is fetched and decoded by the process that serves the chip needing it; two
processes serving chips of the same tile each fetch and decode it. So shards are
cut along tiles, not along the query's order:

- every chip gets a *locality key*: its first scene row, then the full-resolution
  tile of that scene's first band under the chip's centre, as a Morton (Z-order)
  code of the tile's row and column, so neighbouring tiles get near keys;
- the chips in key order are cut into ``count`` runs of about equal size, each cut
  moved to the nearest change of key within a quarter of a shard (chips over one
  tile stay in one shard where balance allows);
  a shard streams its chips in ordinal order, so ``skip`` and ``ordinal`` keep
  their meaning, and the shards of a query partition its chips exactly;
- each shard is placed on the advertised locations by rendezvous (highest random
  weight) hashing of its first key, bounded so that no location takes more than
  ``ceil(shards / locations)``: the same tiles go to the same process for
  every query that plans them the same way (warm caches), and the whole ranking is
  the endpoint's list of locations (the next one is the failover).

Pure functions; thread-safe.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence

import numpy as np
import pyproj

from catalog import HeaderRecord
from cogflight_core import InvalidArgumentError

from ._geometry import transform_points
from ._types import Grid

__all__ = ["locality_keys", "place_shards", "shard_key", "shard_members"]

_AXIS_BITS = 21  # tile row and column each clamped to 2**21 - 1 (2 million tiles across)
_SPREAD = 1.0  # bounded load: no location takes more than its share of shards (rounded up)


def _morton(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Interleave the bits of ``rows`` and ``cols`` (uint64 Z-order codes)."""
    out = np.zeros(rows.shape, dtype=np.uint64)
    r = rows.astype(np.uint64)
    c = cols.astype(np.uint64)
    for bit in range(_AXIS_BITS):
        b = np.uint64(bit)
        out |= ((c >> b) & np.uint64(1)) << np.uint64(2 * bit)
        out |= ((r >> b) & np.uint64(1)) << np.uint64(2 * bit + 1)
    return out


def locality_keys(
    grids: Sequence[Grid], rows: Sequence[int], header_of: Callable[[int], HeaderRecord]
) -> list[int]:
    """One key per chip: ``(scene row << 42) | Morton(tile row, tile column)``.

    ``grids`` are the chips' output grids, ``rows`` their first scene rows and
    ``header_of(row)`` that scene's first band (the reference raster). Centres are
    projected in one call per pair of CRSs.
    """
    n = len(grids)
    tile_rows = np.zeros(n, dtype=np.int64)
    tile_cols = np.zeros(n, dtype=np.int64)
    groups: dict[tuple[str, int], list[int]] = {}
    for i, (grid, row) in enumerate(zip(grids, rows, strict=True)):
        groups.setdefault((grid.crs, row), []).append(i)
    by_pair: dict[tuple[str, str], list[tuple[int, HeaderRecord, list[int]]]] = {}
    for (crs, row), members in groups.items():
        ref = header_of(row)
        by_pair.setdefault((crs, ref.crs), []).append((row, ref, members))
    for (src, dst), parts in by_pair.items():
        idx = [i for _, _, members in parts for i in members]
        cx = np.array([_centre(grids[i])[0] for i in idx])
        cy = np.array([_centre(grids[i])[1] for i in idx])
        try:
            xs, ys = transform_points(cx, cy, src, dst)
        except (pyproj.exceptions.ProjError, InvalidArgumentError, ValueError):
            # centres PROJ cannot move between these CRSs: no locality for these chips
            xs, ys = np.zeros_like(cx), np.zeros_like(cy)
        at = 0
        for _, ref, members in parts:
            k = len(members)
            col, row_ = _pixel(ref, xs[at : at + k], ys[at : at + k])
            level = ref.levels[0]
            limit = (1 << _AXIS_BITS) - 1
            finite = np.isfinite(col) & np.isfinite(row_)
            tc = np.where(finite, np.floor(col / level.tile_width), 0)
            tr = np.where(finite, np.floor(row_ / level.tile_height), 0)
            tile_cols[members] = np.clip(tc, 0, limit).astype(np.int64)
            tile_rows[members] = np.clip(tr, 0, limit).astype(np.int64)
            at += k
    codes = _morton(tile_rows, tile_cols)
    return [
        (int(row) << (2 * _AXIS_BITS)) | int(code) for row, code in zip(rows, codes, strict=True)
    ]


def _centre(grid: Grid) -> tuple[float, float]:
    x0, dx, rx, y0, ry, dy = grid.transform
    u, v = grid.width / 2, grid.height / 2
    return x0 + u * dx + v * rx, y0 + u * ry + v * dy


def _pixel(ref: HeaderRecord, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column and row in ``ref``'s full-resolution pixels of points in its CRS."""
    x0, a, b, y0, d, e = ref.geotransform
    det = a * e - b * d
    if det == 0:
        return np.zeros_like(xs), np.zeros_like(ys)
    px, py = xs - x0, ys - y0
    return (e * px - b * py) / det, (a * py - d * px) / det


def shard_members(keys: Sequence[int], count: int) -> list[list[int]]:
    """The chip positions of each of ``count`` shards, each in ascending (ordinal) order.

    Chips sorted by (key, position) are cut into ``count`` runs of about ``n / count``;
    each cut moves to the nearest position where the key changes, unless that is
    farther than a quarter of a shard (then the tile is split: shards stay balanced);
    no shard is left empty while there are as many chips as shards.
    """
    n = len(keys)
    if count <= 1 or n == 0:
        return [list(range(n))] + [[] for _ in range(max(0, count - 1))]
    order = sorted(range(n), key=lambda p: (keys[p], p))
    sorted_keys = [keys[p] for p in order]
    changes = [j for j in range(1, n) if sorted_keys[j] != sorted_keys[j - 1]]
    reach = n // (4 * count)  # a cut moves at most a quarter of a shard
    cuts = [0]
    for k in range(1, count):
        ideal = k * n // count
        # Never empty a shard that ideal cuts would fill.
        lo = cuts[-1] + 1 if n >= count else cuts[-1]
        hi = n - (count - k) if n >= count else n
        best = min(max(ideal, lo), hi)
        if changes and reach:
            j = int(np.searchsorted(changes, ideal))
            near = [changes[i] for i in (j - 1, j) if 0 <= i < len(changes)]
            near = [c for c in near if abs(c - ideal) <= reach and lo <= c <= hi]
            if near:
                best = min(near, key=lambda c: (abs(c - ideal), c))
        cuts.append(best)
    cuts.append(n)
    return [sorted(order[cuts[k] : cuts[k + 1]]) for k in range(count)]


def shard_key(keys: Sequence[int], members: Sequence[int]) -> int:
    """The key a shard is placed by: the lowest key of its chips (-1 for an empty shard)."""
    return min((keys[p] for p in members), default=-1)


def _weight(key: int, location: str) -> int:
    digest = hashlib.blake2b(f"{key}|{location}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def place_shards(shard_keys: Sequence[int], locations: Sequence[str]) -> list[list[str]]:
    """For each shard, every location in the order a client should try them.

    The first is the shard's place (rendezvous hashing of its key, at most
    ``ceil(shards / locations)`` shards per location, first choices served
    before second ones); the rest follow in the shard's rendezvous order, so a failed
    location's shards spread over the others.
    """
    locs = list(dict.fromkeys(locations))
    if not locs:
        return [[] for _ in shard_keys]
    if len(locs) == 1:
        return [list(locs) for _ in shard_keys]
    cap = max(1, math.ceil(_SPREAD * len(shard_keys) / len(locs)))
    load = dict.fromkeys(locs, 0)
    ranked = [sorted(locs, key=lambda loc: (-_weight(key, loc), loc)) for key in shard_keys]
    chosen: list[str | None] = [None] * len(shard_keys)
    # Every shard gets its first choice where there is room before any takes its second,
    # so a shard keeps its place unless its own location is lost or full.
    # Shards that want the same location at the same rank: the higher weight wins it.
    for rank in range(len(locs)):
        wanting = [s for s in range(len(ranked)) if chosen[s] is None]
        wanting.sort(key=lambda s: (-_weight(shard_keys[s], ranked[s][rank]), s))
        for s in wanting:
            loc = ranked[s][rank]
            if load[loc] < cap:
                chosen[s] = loc
                load[loc] += 1
    out = []
    for order, first in zip(ranked, chosen, strict=True):
        head = first if first is not None else order[0]
        out.append([head, *(loc for loc in order if loc != head)])
    return out
