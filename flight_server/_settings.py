"""Engine settings read once from ``COGFLIGHT_*`` environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from functools import lru_cache

from catalog import parse_bytes

from ._errors import InvalidRequestError

__all__ = ["EngineSettings", "engine_settings"]


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """Defaults of :class:`~flight_server.ChipEngine`; every constructor argument wins."""

    cache_bytes: int = 1024**3
    """Decoded-tile cache budget shared by every request in the process."""
    max_requests: int = 64
    """Concurrent range requests to object storage."""
    decode_threads: int = max(1, os.cpu_count() or 1)
    """Threads decoding tiles (imagecodecs releases the GIL)."""
    coalesce_bytes: int = 64 * 1024
    """Ranges of one file closer than this are fetched in one request."""
    max_chip_pixels: int = 4096 * 4096
    """Largest chip (height x width) a request may ask for."""
    max_chips: int = 100_000
    """Most chips one request may produce."""

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> EngineSettings:
        """Read ``COGFLIGHT_CACHE_BYTES``, ``COGFLIGHT_MAX_REQUESTS``, ... (unset = default)."""
        env = os.environ if environ is None else environ
        table = {
            "cache_bytes": ("COGFLIGHT_CACHE_BYTES", parse_bytes),
            "max_requests": ("COGFLIGHT_MAX_REQUESTS", int),
            "decode_threads": ("COGFLIGHT_DECODE_THREADS", int),
            "coalesce_bytes": ("COGFLIGHT_COALESCE_BYTES", parse_bytes),
            "max_chip_pixels": ("COGFLIGHT_MAX_CHIP_PIXELS", int),
            "max_chips": ("COGFLIGHT_MAX_CHIPS", int),
        }
        updates: dict[str, int] = {}
        for field, (var, fn) in table.items():
            raw = env.get(var)
            if not raw:
                continue
            try:
                value = int(fn(raw))  # type: ignore[operator]
            except ValueError as exc:
                raise InvalidRequestError(f"environment variable {var}={raw!r}: {exc}") from exc
            if value < (0 if field in ("cache_bytes", "coalesce_bytes") else 1):
                raise InvalidRequestError(f"environment variable {var} must be positive")
            updates[field] = value
        return replace(cls(), **updates)


@lru_cache(maxsize=1)
def engine_settings() -> EngineSettings:
    """The engine settings of this process."""
    return EngineSettings.from_env()
