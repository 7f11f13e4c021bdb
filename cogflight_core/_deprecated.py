"""Old error names, kept for one release with a DeprecationWarning (see each package)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

__all__ = ["deprecated_attribute"]


def deprecated_attribute(module: str, name: str, aliases: Mapping[str, tuple[str, Any]]) -> Any:
    """The new object for an old name in ``module``, with a warning; AttributeError if unknown."""
    if name not in aliases:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    new_name, value = aliases[name]
    warnings.warn(
        f"{module}.{name} is deprecated and will be removed in the next release; use {new_name}",
        DeprecationWarning,
        stacklevel=3,
    )
    return value
