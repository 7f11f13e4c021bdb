"""pyproj objects, cached per thread.

pyproj CRS and Transformer objects belong to the PROJ context of the thread
that made them; sharing one across threads (as a plain ``lru_cache`` would)
crashes the process when gRPC or asyncio worker threads use it. These caches
are thread-local; only plain values (strings, booleans) are shared.
"""

from __future__ import annotations

import threading
from functools import lru_cache

import pyproj

__all__ = ["CRS84", "crs", "same_crs", "transformer"]

CRS84 = "OGC:CRS84"
_local = threading.local()
_MAX = 512


def _cache(name: str) -> dict[object, object]:
    cache: dict[object, object] | None = getattr(_local, name, None)
    if cache is None:
        cache = {}
        setattr(_local, name, cache)
    elif len(cache) > _MAX:
        cache.clear()
    return cache


def crs(text: str) -> pyproj.CRS:
    """A CRS from any pyproj user input (``EPSG:4326``, WKT, PROJ JSON), cached per thread."""
    cache = _cache("crs")
    value = cache.get(text)
    if value is None:
        value = cache[text] = pyproj.CRS.from_user_input(text)
    return value  # type: ignore[return-value]


def transformer(src: str, dst: str) -> pyproj.Transformer:
    """A transformer with x = easting/longitude on both sides, cached per thread."""
    cache = _cache("transformer")
    key = (src, dst)
    value = cache.get(key)
    if value is None:
        value = cache[key] = pyproj.Transformer.from_crs(crs(src), crs(dst), always_xy=True)
    return value  # type: ignore[return-value]


def same_crs(a: str, b: str) -> bool:
    """Whether two CRS strings mean the same CRS (ignoring axis order)."""
    return a == b or _same(a, b)


@lru_cache(maxsize=2048)
def _same(a: str, b: str) -> bool:
    return bool(crs(a).equals(crs(b), ignore_axis_order=True))
