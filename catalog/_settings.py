"""Settings read once from ``COGFLIGHT_*`` environment variables, in one place.

Defaults are tuned for object storage with 20-100 ms per request: a read-ahead
large enough for typical COG headers (one GET per file) and enough concurrency
to keep many requests in flight.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from functools import lru_cache

from ._errors import InvalidArgumentError

__all__ = ["Settings", "parse_bytes", "settings"]

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
}


def parse_bytes(value: str | int) -> int:
    """Parse ``"64KiB"``, ``"1.5GB"`` or ``65536`` into a byte count."""
    if isinstance(value, int):
        if value < 0:
            raise InvalidArgumentError(f"byte size must be >= 0, got {value}")
        return value
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", str(value))
    if not match or match.group(2).lower() not in _UNITS:
        raise InvalidArgumentError(
            f"cannot read {value!r} as a byte size; use e.g. 65536, '64KiB' or '2GB'"
        )
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


@dataclass(frozen=True, slots=True)
class Settings:
    """Process-wide defaults; every builder argument overrides its setting."""

    read_ahead: int = 64 * 1024
    """Bytes fetched by the first (usually only) header request of a file."""
    header_concurrency: int = 64
    """Headers parsed at once while building a Collection."""
    max_ifds: int = 256
    """IFDs followed per file before the file is rejected as hostile."""
    max_tag_bytes: int = 64 * 1024 * 1024
    """Largest tag value (e.g. a tile offset array) read from a header."""
    request_timeout_s: float = 30.0
    """Timeout of one request to object storage."""
    max_retries: int = 3
    """Retries of transient storage errors, with exponential backoff."""

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        """Read ``COGFLIGHT_*`` variables; unset ones keep their defaults."""
        env = os.environ if environ is None else environ
        s = cls()
        conv = {
            "read_ahead": ("COGFLIGHT_READ_AHEAD", parse_bytes),
            "header_concurrency": ("COGFLIGHT_HEADER_CONCURRENCY", int),
            "max_ifds": ("COGFLIGHT_MAX_IFDS", int),
            "max_tag_bytes": ("COGFLIGHT_MAX_TAG_BYTES", parse_bytes),
            "request_timeout_s": ("COGFLIGHT_REQUEST_TIMEOUT", float),
            "max_retries": ("COGFLIGHT_MAX_RETRIES", int),
        }
        updates: dict[str, object] = {}
        for field, (var, fn) in conv.items():
            raw = env.get(var)
            if raw is None or raw == "":
                continue
            try:
                value = fn(raw)  # type: ignore[operator]
            except (ValueError, InvalidArgumentError) as exc:
                raise InvalidArgumentError(f"environment variable {var}={raw!r}: {exc}") from exc
            if (value <= 0 and field != "max_retries") or value < 0:
                raise InvalidArgumentError(f"environment variable {var} must be positive")
            updates[field] = value
        return replace(s, **updates)  # type: ignore[arg-type]


@lru_cache(maxsize=1)
def settings() -> Settings:
    """The settings of this process, read from the environment on first use."""
    return Settings.from_env()
