"""Storage settings of :mod:`catalog`: the ``storage`` section of the one configuration model.

Defaults are tuned for object storage with 20-100 ms per request: a read-ahead
large enough for typical COG headers (one GET per file) and enough concurrency
to keep many requests in flight. Variables and defaults: ``docs/configuration.md``.
"""

from __future__ import annotations

from cogflight_core import StorageSettings, config, parse_bytes

__all__ = ["Settings", "parse_bytes", "settings"]

Settings = StorageSettings
"""The storage settings (an alias kept for the catalog's public API)."""


def settings() -> StorageSettings:
    """The storage settings of this process, read from the environment on first use."""
    return config().storage
