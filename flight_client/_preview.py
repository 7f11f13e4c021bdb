"""Contact sheets: look at what is being streamed (``cogflight preview``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from cogflight_core import InvalidArgumentError

__all__ = ["contact_sheet", "write_png"]

# A perceptually ordered colour map (viridis, 9 stops), interpolated to 256 entries.
_VIRIDIS = np.array(
    [
        [68, 1, 84],
        [71, 44, 122],
        [59, 81, 139],
        [44, 113, 142],
        [33, 144, 141],
        [39, 173, 129],
        [92, 200, 99],
        [170, 220, 50],
        [253, 231, 37],
    ],
    dtype=np.float64,
)
_LUT = np.stack(
    [np.interp(np.linspace(0, 8, 256), np.arange(9), _VIRIDIS[:, c]) for c in range(3)], axis=1
).astype(np.uint8)


def _stretch(band: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """2-98 percentile stretch over valid pixels, to 0..255."""
    vals = band[valid].astype(np.float64)
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return np.zeros(band.shape, np.uint8)
    lo, hi = np.percentile(vals, [2, 98])
    if hi <= lo:
        hi = lo + 1
    out = np.clip((band.astype(np.float64) - lo) / (hi - lo), 0, 1) * 255
    scaled: np.ndarray = np.nan_to_num(out).astype(np.uint8)
    return scaled


def render_chip(chip: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """One chip ``[C, H, W]`` as RGB ``[H, W, 3]``: 3+ bands as RGB, 1 band through viridis."""
    if chip.ndim == 4:  # time series: show the first valid step
        steps = [t for t in range(chip.shape[0]) if valid[t].any()] or [0]
        chip, valid = chip[steps[0]], valid[steps[0]]
    if chip.shape[0] >= 3:
        rgb = np.stack([_stretch(chip[i], valid) for i in range(3)], axis=-1)
    else:
        rgb = _LUT[_stretch(chip[0], valid)]
    rgb[~valid] = 0
    return rgb


def contact_sheet(
    chips: np.ndarray, valid: np.ndarray, *, columns: int | None = None, pad: int = 2
) -> np.ndarray:
    """Chips ``[N, C, H, W]`` laid out on a grid, as one RGB image."""
    n = chips.shape[0]
    if n == 0:
        raise InvalidArgumentError("no chips to show")
    cols = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    h, w = chips.shape[-2:]
    sheet = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        sheet[y : y + h, x : x + w] = render_chip(chips[i], valid[i].astype(bool))
    return sheet


def write_png(path: str | Path, image: np.ndarray) -> Path:
    """Write an RGB ``[H, W, 3]`` uint8 image as PNG (imagecodecs, no GUI libraries)."""
    import imagecodecs

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(imagecodecs.png_encode(np.ascontiguousarray(image)))
    return out


def preview(
    client: Any, collection: str, *, out: str | Path, limit: int = 16, **query: Any
) -> tuple[Path, int]:
    """Stream up to ``limit`` chips of a query and write their contact sheet."""
    chips, valid = [], []
    for batch in client.chips(collection, **query):
        chips.append(batch.column("chip").to_numpy_ndarray())
        valid.append(batch.column("valid").to_numpy_ndarray())
        if sum(len(c) for c in chips) >= limit:
            break
    if not chips:
        raise InvalidArgumentError(
            "the query returned no chips; check the bbox, its CRS and the filter"
        )
    data = np.concatenate(chips)[:limit]
    mask = np.concatenate(valid)[:limit]
    return write_png(out, contact_sheet(data, mask)), len(data)
