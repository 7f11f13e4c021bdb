"""Tensor helpers for mosaicking chips into samples (the TorchGeo adapter's).

Concurrency policy: pure functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["as_bits", "gather_rows"]

_SIGNED = {torch.uint16: torch.int16, torch.uint32: torch.int32, torch.uint64: torch.int64}


def as_bits(t: Any) -> Any:
    """Pixels as a type every torch op copies (uint16/32/64 as signed: same bits)."""
    signed = _SIGNED.get(t.dtype)
    return t if signed is None else t.view(signed)


def gather_rows(parts: Sequence[Any], at: Sequence[tuple[int, int]]) -> Any:
    """Rows ``(part, row)`` of same-shaped tensors, copied into one new tensor."""
    if len(parts) == 1:
        return parts[0].index_select(0, torch.tensor([j for _, j in at], dtype=torch.long))
    out = torch.empty((len(at), *parts[0].shape[1:]), dtype=parts[0].dtype)
    by_part: dict[int, tuple[list[int], list[int]]] = {}
    for k, (p, j) in enumerate(at):
        dst, src = by_part.setdefault(p, ([], []))
        dst.append(k)
        src.append(j)
    for p, (dst, src) in by_part.items():
        out[torch.tensor(dst)] = parts[p][torch.tensor(src)]
    return out
