"""The one error tree of cogflight, shared by every package.

Every error the product raises derives from :class:`CogflightError`; errors of
libraries below (obstore, pyarrow, pyproj, shapely, imagecodecs) are translated
at the boundary with ``raise ... from exc``. Each class belongs to one status
family, and :data:`STATUS_CODES` (in ``_status``) maps families to Flight status
codes in both directions: the server raises, the client translates back.

::

    CogflightError
    ├── InvalidArgumentError (ValueError)      INVALID_ARGUMENT: bad input, names the field
    │   ├── LimitExceededError                 a request over a server limit
    │   └── HeaderError                        a TIFF header is malformed or hostile
    │       └── UnsupportedLayoutError         a valid TIFF cogflight cannot serve exactly
    ├── NotFoundError (LookupError)            NOT_FOUND
    │   ├── CollectionNotFoundError (KeyError)
    │   └── DatasetNotFoundError (KeyError)
    ├── AuthenticationError                    UNAUTHENTICATED
    ├── PermissionDeniedError                  PERMISSION_DENIED
    ├── UnavailableError                       UNAVAILABLE: try again, elsewhere or later
    │   ├── StorageError                       reading an object failed
    │   │   ├── ObjectNotFoundError
    │   │   ├── AccessDeniedError
    │   │   └── ObjectChangedError             an object no longer holds its indexed bytes
    │   ├── ChipReadError                      a chip could not be produced correctly
    │   │   ├── UpstreamError                  storage failed after the retry budget
    │   │   └── DecodeError                    tile bytes did not decode
    │   ├── PartialFailureError                some chips failed
    │   ├── CollectionError                    a Collection file is unreadable
    │   │   └── SchemaVersionError
    │   └── StacError                          a STAC API failed
    ├── DeadlineExceededError                  DEADLINE_EXCEEDED
    ├── BuildError                             a build indexed nothing (or strict saw a failure)
    ├── MissingDependencyError (ImportError)   an optional package is not installed
    └── ServerError                            INTERNAL: a bug; details are in the server log

This module is dependency-free (standard library only), so the remote client
and every layer can import it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "AccessDeniedError",
    "AuthenticationError",
    "BuildError",
    "BuildFailure",
    "ChipReadError",
    "CogflightError",
    "CollectionError",
    "CollectionNotFoundError",
    "DatasetNotFoundError",
    "DeadlineExceededError",
    "DecodeError",
    "EmptyResultWarning",
    "HeaderError",
    "InvalidArgumentError",
    "LimitExceededError",
    "MissingDependencyError",
    "NotFoundError",
    "ObjectChangedError",
    "ObjectNotFoundError",
    "PartialFailureError",
    "PermissionDeniedError",
    "SchemaVersionError",
    "ServerError",
    "StacError",
    "StorageError",
    "UnavailableError",
    "UnsupportedLayoutError",
    "UpstreamError",
]


class EmptyResultWarning(UserWarning):
    """A query made no chip; the message says why (extents, filter) and what to check."""


class CogflightError(Exception):
    """Base class of every error cogflight raises."""


class InvalidArgumentError(CogflightError, ValueError):
    """An argument, query field or input file is wrong; the message names it."""


class LimitExceededError(InvalidArgumentError):
    """A request asks for more than the server allows; the message names the limit."""


class HeaderError(InvalidArgumentError):
    """A TIFF/GeoTIFF header is malformed, truncated or hostile."""

    def __init__(self, href: str, reason: str) -> None:
        self.href = href
        self.reason = reason
        super().__init__(f"{href}: {reason}")


class UnsupportedLayoutError(HeaderError):
    """A well-formed TIFF that cogflight cannot serve correctly."""


class NotFoundError(CogflightError, LookupError):
    """The named thing (Collection, dataset) does not exist."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class CollectionNotFoundError(NotFoundError, KeyError):
    """No Collection of that name is served (or saved there)."""


class DatasetNotFoundError(NotFoundError, KeyError):
    """No dataset with that id is registered."""


class AuthenticationError(CogflightError):
    """Missing or invalid credentials (a bearer token)."""


class PermissionDeniedError(CogflightError):
    """The caller may not read this (a token's Collections, the data access policy)."""


class UnavailableError(CogflightError):
    """A server or store is unreachable, busy or failing; retrying later may succeed."""


class StorageError(UnavailableError):
    """Reading or writing an object failed."""

    def __init__(self, href: str, reason: str) -> None:
        self.href = href
        self.reason = reason
        super().__init__(f"{href}: {reason}")


class ObjectNotFoundError(StorageError):
    """The object does not exist."""


class AccessDeniedError(StorageError):
    """The store refused the credentials (or the lack of them)."""


class ObjectChangedError(StorageError):
    """An object no longer holds the bytes its index says it holds (truncated or replaced)."""


class ChipReadError(UnavailableError):
    """A chip could not be produced correctly; names the asset, byte range and cause."""

    def __init__(self, href: str, cause: str, byte_range: tuple[int, int] | None = None) -> None:
        self.href = href
        self.cause = cause
        self.byte_range = byte_range
        where = f" bytes [{byte_range[0]}, {byte_range[1]})" if byte_range else ""
        super().__init__(f"{href}{where}: {cause}")


class UpstreamError(ChipReadError):
    """Storage failed (not found, denied, unreachable) after the retry budget was spent."""


class DecodeError(ChipReadError):
    """Tile bytes could not be decoded (corrupt data or a codec mismatch)."""


def _listing(message: str, items: Sequence[object]) -> str:
    lines = [message, *(f"  - {f}" for f in items[:20])]
    if len(items) > 20:
        lines.append(f"  ... and {len(items) - 20} more")
    return "\n".join(lines)


class PartialFailureError(UnavailableError):
    """Some chips of a multi-scene request failed; lists every failure."""

    def __init__(self, message: str, failures: Sequence[ChipReadError]) -> None:
        self.failures = tuple(failures)
        super().__init__(_listing(message, self.failures))


class CollectionError(UnavailableError):
    """A Collection file is missing, unreadable or not a cogflight Collection."""


class SchemaVersionError(CollectionError):
    """A Collection was written with a schema version this release cannot read."""


class StacError(UnavailableError):
    """A STAC API search failed or returned something unusable."""


class DeadlineExceededError(CogflightError):
    """A call ran past its deadline."""


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


class BuildError(CogflightError):
    """A build produced no scene, or ``strict=True`` saw a failure."""

    def __init__(self, message: str, failures: Sequence[BuildFailure] = ()) -> None:
        self.failures = tuple(failures)
        super().__init__(_listing(message, self.failures))


class MissingDependencyError(CogflightError, ImportError):
    """An optional dependency is not installed; the message says what to install."""


class ServerError(CogflightError):
    """The server failed unexpectedly (INTERNAL: a bug; its log has the details)."""
