"""The one error hierarchy of :mod:`catalog`.

Every error the package raises derives from :class:`CatalogError`; errors from
libraries below (obstore, pyarrow, pyproj, pystac-client) are translated at the
boundary with ``raise ... from exc`` so callers catch one family.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class CatalogError(Exception):
    """Base class of every error raised by ``catalog``."""


class InvalidArgumentError(CatalogError, ValueError):
    """An argument has the wrong type or value."""


class HeaderError(CatalogError):
    """A TIFF/GeoTIFF header is malformed, truncated or hostile."""

    def __init__(self, href: str, reason: str) -> None:
        self.href = href
        self.reason = reason
        super().__init__(f"{href}: {reason}")


class UnsupportedLayoutError(HeaderError):
    """A well-formed TIFF that cogflight cannot serve correctly."""


class StorageError(CatalogError):
    """Reading or writing an object failed."""

    def __init__(self, href: str, reason: str) -> None:
        self.href = href
        self.reason = reason
        super().__init__(f"{href}: {reason}")


class ObjectNotFoundError(StorageError):
    """The object does not exist."""


class AccessDeniedError(StorageError):
    """The store refused the credentials (or the lack of them)."""


class CollectionError(CatalogError):
    """A Collection file is missing, unreadable or not a cogflight Collection."""


class SchemaVersionError(CollectionError):
    """A Collection was written with a schema version this release cannot read."""


class DatasetNotFoundError(CatalogError, KeyError):
    """No dataset with that id is registered."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class StacError(CatalogError):
    """A STAC API search failed or returned something unusable."""


@dataclass(frozen=True, slots=True)
class BuildFailure:
    """One scene (or file) that a builder could not index, and why."""

    scene_id: str | None
    href: str | None
    error: str
    reason: str

    def __str__(self) -> str:
        where = self.href or self.scene_id or "?"
        return f"{where}: {self.error}: {self.reason}"


class BuildError(CatalogError):
    """A build produced no scene, or ``strict=True`` saw a failure."""

    def __init__(self, message: str, failures: Sequence[BuildFailure] = ()) -> None:
        self.failures = tuple(failures)
        lines = [message, *(f"  - {f}" for f in self.failures[:20])]
        if len(self.failures) > 20:
            lines.append(f"  ... and {len(self.failures) - 20} more")
        super().__init__("\n".join(lines))
