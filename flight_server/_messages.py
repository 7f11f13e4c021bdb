"""Status messages at the Flight boundary: one line, no traceback, no server path.

Every error a handler raises leaves through :func:`wire_error`: its status code
comes from the one table (:func:`cogflight_core.status_code`), its message is
flattened to one line, server paths (the root, local hrefs, ``file://`` URLs)
are replaced by ``.../NAME``, and the request id under which the server logged
the details is quoted: ``bands: 'blue' not in ... (request 3f2a9c1e)``.

Why :func:`install_traceback_filter` wraps :func:`traceback.format_exception`:
pyarrow's Flight server sends a Python exception that is not a
``flight.FlightError`` (the only way to answer INVALID_ARGUMENT or NOT_FOUND:
``ArrowInvalid`` and ``ArrowKeyError``) with a status detail that its C++ side
formats when it converts the exception, by calling
``traceback.format_exception(type, value, tb)`` looked up on the module at that
moment. The detail reaches the client in the gRPC status message and in the
``x-arrow-status-detail-bin`` trailer: a traceback with the server's file paths.
pyarrow has no API for these codes without that detail. So the boundary raises
two private classes (:class:`InvalidArgument`, :class:`NotFound`) and the wrapper
formats exactly those as their status code; every other exception, anywhere in
the process, is formatted by the original function, unchanged. The
``FlightError`` subclasses (UNAVAILABLE, PERMISSION_DENIED, ...) never carry a
traceback: pyarrow sends their code name as the detail.

Concurrency policy: pure functions; the wrapper is installed once per process
(idempotent, under a lock) and is itself stateless.
"""

from __future__ import annotations

import functools
import re
import secrets
import threading
import traceback
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
from pyarrow import flight

from cogflight_core import (
    ChipReadError,
    DeadlineExceededError,
    PermissionDeniedError,
    UnavailableError,
    status_code,
    to_flight,
)

__all__ = [
    "InvalidArgument",
    "NotFound",
    "Redactor",
    "code_of",
    "install_traceback_filter",
    "new_request_id",
    "one_line",
    "wire_error",
]

MAX_MESSAGE = 600  # characters of a status message; the log has the rest


class InvalidArgument(pa.ArrowInvalid):  # type: ignore[misc]
    """INVALID_ARGUMENT as the boundary raises it (formatted without a traceback)."""


class NotFound(pa.ArrowKeyError):  # type: ignore[misc]
    """NOT_FOUND as the boundary raises it (formatted without a traceback)."""

    def __str__(self) -> str:  # a KeyError quotes its message; the wire should not
        return str(self.args[0]) if self.args else ""


_CODES: dict[type[BaseException], str] = {
    InvalidArgument: "INVALID_ARGUMENT",
    NotFound: "NOT_FOUND",
}
_INSTALL = threading.Lock()


def install_traceback_filter() -> None:
    """Make :func:`traceback.format_exception` format the two boundary classes as their code.

    Idempotent; every other exception is formatted by the original function.
    """
    with _INSTALL:
        current = traceback.format_exception
        if getattr(current, "_cogflight_filter", False):
            return

        @functools.wraps(current)
        def format_exception(exc: Any, /, *args: Any, **kwargs: Any) -> list[str]:
            cls = exc if isinstance(exc, type) else type(exc)
            code = _CODES.get(cls)
            if code is not None:
                return [code]
            return current(exc, *args, **kwargs)

        format_exception._cogflight_filter = True  # type: ignore[attr-defined]
        traceback.format_exception = format_exception


def new_request_id() -> str:
    """A short random id that a status message quotes and the server log records."""
    return secrets.token_hex(4)


def one_line(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` on one line (lines joined by ``; ``), at most ``limit`` characters."""
    parts = [" ".join(line.split()) for line in text.splitlines()]
    flat = "; ".join(p.lstrip("- ") for p in parts if p)
    if len(flat) > limit:
        flat = flat[: limit - 3].rstrip() + "..."
    return flat


_FILE_URL = re.compile(r"file://[^\s'\",;)\]]*")
# An absolute POSIX path: a slash not preceded by a word character, ':' or another slash
# (so dates like 2024-06-01/2024-08-31 and URLs like s3://bucket/key are left alone).
_ABS_PATH = re.compile(r"(?<![\w:/.~-])/(?:[^\s'\",;:()\[\]{}]+)")


def _leaf(match: re.Match[str]) -> str:
    text = match.group(0).rstrip("/.")
    name = text.rsplit("/", 1)[-1]
    return f".../{name}" if name else "..."


class Redactor:
    """Replaces server filesystem paths in messages: the root and every local path.

    The root (and any extra prefix given) becomes ``<root>``; any other absolute
    path or ``file://`` URL becomes ``.../NAME`` (its last component, so the asset
    stays recognisable). Object-store and HTTP URLs are not server paths and stay.
    """

    def __init__(self, prefixes: Iterable[str] = ()) -> None:
        self._prefixes = sorted({p.rstrip("/") for p in prefixes if p and p != "/"}, key=len)[::-1]

    def __call__(self, text: str) -> str:
        for prefix in self._prefixes:
            text = text.replace(prefix, "<root>")
        text = _FILE_URL.sub(lambda m: "file://" + _leaf(m), text)
        return _ABS_PATH.sub(_leaf, text)


def _message(exc: BaseException, code: str) -> str:
    if code == "INTERNAL":
        return "internal error: a bug in the server; report it with this request id"
    text = str(exc)
    if isinstance(exc, flight.FlightError):
        text = text.split(". Detail:", 1)[0]
    if isinstance(exc, ChipReadError):
        text = f"upstream storage: {text}"
    return text


def _flight_code(exc: BaseException) -> str:
    """The status code of a ``FlightError`` some lower layer raised."""
    if isinstance(exc, flight.FlightUnavailableError):
        return "UNAVAILABLE"
    if isinstance(exc, flight.FlightUnauthorizedError):
        return "PERMISSION_DENIED"
    if isinstance(exc, flight.FlightUnauthenticatedError):
        return "UNAUTHENTICATED"
    if isinstance(exc, flight.FlightTimedOutError):
        return "DEADLINE_EXCEEDED"
    if isinstance(exc, flight.FlightCancelledError):
        return "CANCELLED"
    return "INTERNAL"


_BY_CODE: dict[str, type[Exception]] = {
    "UNAVAILABLE": UnavailableError,
    "PERMISSION_DENIED": PermissionDeniedError,
    "DEADLINE_EXCEEDED": DeadlineExceededError,
}


def code_of(exc: BaseException) -> str:
    """The status code a client sees for ``exc``."""
    if isinstance(exc, flight.FlightError):
        return _flight_code(exc)
    return status_code(exc)


def wire_error(exc: BaseException, request_id: str, redact: Redactor) -> BaseException:
    """The exception a handler raises for ``exc``: its code, a clean one-line message."""
    code = code_of(exc)
    text = f"{one_line(redact(_message(exc, code)))} (request {request_id})"
    if code == "INVALID_ARGUMENT":
        return InvalidArgument(text)
    if code == "NOT_FOUND":
        return NotFound(text)
    if code == "UNAUTHENTICATED":
        return flight.FlightUnauthenticatedError(text)  # type: ignore[no-any-return]
    if code == "CANCELLED":
        return flight.FlightCancelledError(text)  # type: ignore[no-any-return]
    if isinstance(exc, flight.FlightError) and code in _BY_CODE:
        exc = _BY_CODE[code](text)
    return to_flight(exc, text)
