"""The one error hierarchy of :mod:`flight_server`.

Errors from below (catalog, obstore, imagecodecs, pyproj) are translated at the
boundary with ``raise ... from exc``. Each class says what a client did wrong or
what failed upstream, so the Flight layer can map it to a status code.
"""

from __future__ import annotations

from collections.abc import Sequence


class EngineError(Exception):
    """Base class of every error raised by ``flight_server``."""


class InvalidRequestError(EngineError, ValueError):
    """A request (query, ticket, argument) is malformed; the message names the field."""


class LimitExceededError(InvalidRequestError):
    """A request asks for more than the server allows (chips, pixels, streams)."""


class ChipReadError(EngineError):
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


class PartialFailureError(EngineError):
    """Some chips of a multi-scene request failed; lists every failure."""

    def __init__(self, message: str, failures: Sequence[ChipReadError]) -> None:
        self.failures = tuple(failures)
        lines = [message, *(f"  - {f}" for f in self.failures[:20])]
        if len(self.failures) > 20:
            lines.append(f"  ... and {len(self.failures) - 20} more")
        super().__init__("\n".join(lines))
