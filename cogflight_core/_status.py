"""Errors to Flight status codes and back: one table, used by the server and the client.

The server maps whatever a handler raised to the pyarrow exception that carries
its status code (:func:`to_flight`); the client maps the pyarrow exception it
received back to the error class of that code (:func:`from_flight`), as httpx
maps lower-layer errors through one table. The helper process of a forked
DataLoader worker sends ``(code, message)`` pairs and rebuilds them with
:func:`error_for`.

pyarrow is imported only when a function here is called, so the table itself
stays importable without it (the docs and the contract tests read it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ._errors import (
    AuthenticationError,
    CogflightError,
    CollectionNotFoundError,
    DeadlineExceededError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ServerError,
    UnavailableError,
)

__all__ = [
    "STATUS_TABLE",
    "Status",
    "clean_message",
    "error_for",
    "from_flight",
    "status_code",
    "status_table",
    "to_flight",
]


@dataclass(frozen=True, slots=True)
class Status:
    """One row of the table: a gRPC status code, its error family and its pyarrow class."""

    code: str
    """The gRPC status code a client sees."""
    family: tuple[type[CogflightError], ...]
    """The error classes of this code; the first is what a client raises."""
    arrow: str
    """The pyarrow exception that carries this code (raised by servers, seen by clients)."""
    meaning: str
    """When the server answers with this code (the wire contract's status table)."""


STATUS_TABLE: tuple[Status, ...] = (
    Status(
        "INVALID_ARGUMENT",
        (InvalidArgumentError,),
        "ArrowInvalid",
        "malformed query, unknown band or column, a limit exceeded (chips per request, "
        "pixels per chip); the message names the field",
    ),
    Status(
        "NOT_FOUND",
        (CollectionNotFoundError, NotFoundError),
        "ArrowKeyError",
        "unknown Collection",
    ),
    Status(
        "UNAUTHENTICATED",
        (AuthenticationError,),
        "FlightUnauthenticatedError",
        "missing or invalid bearer token (`authorization: Bearer <token>`)",
    ),
    Status(
        "PERMISSION_DENIED",
        (PermissionDeniedError,),
        "FlightUnauthorizedError",
        "the token may not read this Collection",
    ),
    Status(
        "UNAVAILABLE",
        (UnavailableError,),
        "FlightUnavailableError",
        "upstream storage failed after retries (the message names the asset and byte "
        "range), a Collection cannot be loaded, or the server is at its stream limit",
    ),
    Status(
        "DEADLINE_EXCEEDED",
        (DeadlineExceededError,),
        "FlightTimedOutError",
        "the call ran past its deadline",
    ),
    Status(
        "INTERNAL",
        (ServerError,),
        "FlightInternalError",
        "a bug (details in the server log only)",
    ),
)

_BY_CODE = {row.code: row for row in STATUS_TABLE}
_DETAIL = re.compile(r"\. Detail: .*", re.DOTALL)


def status_code(exc: BaseException) -> str:
    """The status code of an error: its nearest family in the table, else ``INTERNAL``."""
    for cls in type(exc).__mro__:
        for row in STATUS_TABLE:
            if cls in row.family:
                return row.code
    return "INTERNAL"


def error_for(code: str, message: str) -> CogflightError:
    """The error a client raises for a status code (unknown codes: :class:`ServerError`)."""
    row = _BY_CODE.get(code)
    cls = row.family[0] if row is not None else ServerError
    return cls(message)


def _arrow_class(name: str) -> Any:
    import pyarrow as pa
    from pyarrow import flight

    return getattr(flight, name, None) or getattr(pa, name)


def _not_found(message: str) -> BaseException:
    import pyarrow as pa

    class NotFound(pa.ArrowKeyError):  # type: ignore[misc]
        def __str__(self) -> str:  # a KeyError quotes its message; the wire should not
            return message

    return NotFound(message)


def to_flight(exc: BaseException, message: str | None = None) -> BaseException:
    """The pyarrow exception a Flight handler raises for ``exc`` (its code, one line)."""
    code = status_code(exc)
    text = message if message is not None else str(exc)
    if code == "NOT_FOUND":
        return _not_found(text)
    cls = _arrow_class(_BY_CODE[code].arrow)
    return cls(text)  # type: ignore[no-any-return]


def clean_message(exc: BaseException) -> str:
    """A server's message without gRPC debug context or pyarrow's appended detail."""
    text = _DETAIL.sub("", str(exc))
    return text.split("\ngRPC client debug context", 1)[0].strip()


def from_flight(exc: BaseException) -> CogflightError:
    """The cogflight error for a pyarrow/Flight exception a client received."""
    if isinstance(exc, CogflightError):
        return exc
    message = clean_message(exc)
    for row in STATUS_TABLE:
        if isinstance(exc, _arrow_class(row.arrow)):
            return row.family[0](message)
    return ServerError(message)


def status_table() -> str:
    """The docs' status-code table (markdown), generated from :data:`STATUS_TABLE`."""
    rows = ["| code | error class | when |", "|------|-------------|------|"]
    rows += [f"| `{r.code}` | `{r.family[0].__name__}` | {r.meaning} |" for r in STATUS_TABLE]
    return "\n".join(rows)
