"""Collections from GeoTIFF paths or URLs: one scene per file, or a scene -> band mapping."""

from __future__ import annotations

import datetime as dt
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any, Unpack
from urllib.parse import urlsplit

from cogflight_core import InvalidArgumentError

from ._build import BandSpec, BuildOptions, DatetimeArg, SceneSpec, assemble, href_sample, to_utc
from ._collection import Collection
from ._stores import StoreOptions, normalize_href

__all__ = ["build_from_files"]


def _datetime_for(arg: DatetimeArg, scene_id: str, href: str) -> dt.datetime | None:
    if arg is None:
        return None
    if callable(arg):
        return to_utc(arg(href), "datetime")
    if isinstance(arg, Mapping):
        return to_utc(arg.get(scene_id), f"datetime[{scene_id!r}]")
    return to_utc(arg, "datetime")


def _stem(href: str) -> str:
    path = urlsplit(href).path if "://" in href else href
    name = PurePosixPath(path).name
    for suffix in (".tiff", ".tif", ".TIF", ".TIFF"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def build_from_files(
    sources: Sequence[str | os.PathLike[str]] | Mapping[str, Mapping[str, Any]],
    *,
    name: str = "collection",
    bands: Sequence[str] | None = None,
    datetime: DatetimeArg = None,
    store_options: StoreOptions | None = None,
    **options: Unpack[BuildOptions],
) -> Collection:
    """Build a Collection from GeoTIFF paths or URLs.

    Args:
        sources: a list of files, one scene each (scene id = file name without
            extension, bands = the file's samples), or a mapping
            ``{scene_id: {band: href or (href, sample)}}`` with one file per band.
        name: the Collection's name.
        bands: names for the samples of list-mode files (default ``b1``, ``b2``...).
        datetime: one date for all scenes, ``{scene_id: date}``, or a callable
            ``href -> date``; ISO strings, dates, datetimes or years.
        store_options: how to reach remote files (anonymous, region, endpoint...).
        **options: how headers are read and failures treated (:class:`BuildOptions`).

    Raises:
        InvalidArgumentError: bad arguments (duplicate scene ids, empty input...).
        BuildError: no scene could be indexed (or ``strict`` and one failed).
    """
    scenes: list[SceneSpec] = []
    band_specs: list[BandSpec] = []
    auto: dict[str, Callable[[int], list[str]]] = {}
    if isinstance(sources, Mapping):
        if bands is not None:
            raise InvalidArgumentError("bands: not used with a {scene: {band: href}} mapping")
        samples: dict[str, int] = {}  # band -> sample, in first-seen order
        for scene_id, band_map in sources.items():
            if not isinstance(band_map, Mapping) or not band_map:
                raise InvalidArgumentError(
                    f"sources[{scene_id!r}]: expected a non-empty {{band: href}} mapping"
                )
            assets: dict[str, str] = {}
            for band, target in band_map.items():
                href, sample = href_sample(target, f"sources[{scene_id!r}][{band!r}]")
                if band not in samples:
                    samples[band] = sample
                elif samples[band] != sample:
                    raise InvalidArgumentError(
                        f"sources[{scene_id!r}][{band!r}]: sample {sample} differs from "
                        f"sample {samples[band]} used for this band in other scenes"
                    )
                assets[band] = normalize_href(href)
            first = next(iter(assets.values()))
            scenes.append(
                SceneSpec(str(scene_id), _datetime_for(datetime, str(scene_id), first), assets)
            )
        band_specs = [BandSpec(b, b, sample) for b, sample in samples.items()]
    else:
        if isinstance(sources, str | os.PathLike) or not isinstance(sources, Sequence):
            raise InvalidArgumentError(
                "sources: expected a list of paths/URLs or a {scene: {band: href}} mapping"
            )
        hrefs = [normalize_href(s) for s in sources]
        if not hrefs:
            raise InvalidArgumentError("sources: no files given")
        stems = [_stem(h) for h in hrefs]
        dupes = sorted(s for s, n in Counter(stems).items() if n > 1)
        if dupes:
            raise InvalidArgumentError(
                f"several files share the scene id {', '.join(dupes[:5])!s} (file name without "
                "extension); pass a {scene_id: {band: href}} mapping to name scenes yourself"
            )
        for stem, href in zip(stems, hrefs, strict=True):
            scenes.append(SceneSpec(stem, _datetime_for(datetime, stem, href), {"image": href}))
        if bands is not None:
            if isinstance(bands, str) or not bands:
                raise InvalidArgumentError("bands: expected a non-empty list of band names")
            band_specs = [BandSpec(str(b), "image", i) for i, b in enumerate(bands)]
        else:
            auto["image"] = lambda n: [f"b{i + 1}" for i in range(n)]
    return assemble(
        scenes,
        name=name,
        bands=band_specs,
        auto_bands=auto,
        store_options=store_options,
        source={"kind": "files", "files": sum(len(s.assets) for s in scenes)},
        **options,
    )
