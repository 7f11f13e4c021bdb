"""What a client may see in a status message: checks shared by the server's tests."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
from pyarrow import flight

from cogflight_core import clean_message

__all__ = ["REQUEST_ID", "assert_clean", "client_code", "server_paths"]

REQUEST_ID = re.compile(r"\(request ([0-9a-f]{8})\)")
_ABSOLUTE = re.compile(r"(?<![\w:/.~-])/(?:tmp|work|home|root|usr|opt|var|etc|proc)/")


def client_code(exc: BaseException) -> str:
    """The gRPC status code behind an exception pyarrow's client raised."""
    for cls, code in (
        (flight.FlightUnauthenticatedError, "UNAUTHENTICATED"),
        (flight.FlightUnauthorizedError, "PERMISSION_DENIED"),
        (flight.FlightUnavailableError, "UNAVAILABLE"),
        (flight.FlightTimedOutError, "DEADLINE_EXCEEDED"),
        (flight.FlightCancelledError, "CANCELLED"),
        (flight.FlightInternalError, "INTERNAL"),
        (flight.FlightServerError, "INTERNAL"),
        (pa.ArrowInvalid, "INVALID_ARGUMENT"),
        (pa.ArrowKeyError, "NOT_FOUND"),
    ):
        if isinstance(exc, cls):
            return code
    return "UNKNOWN"


def server_paths(*extra: str | Path) -> list[str]:
    """Absolute paths of the server machine a message must never show."""
    paths = [str(p) for p in extra]
    paths += [str(Path(__file__).resolve().parents[2]), sys.prefix, str(Path.home())]
    return [p for p in paths if len(p) > 1]


def assert_clean(exc: BaseException, paths: Iterable[str]) -> str:
    """Assert what a client sees is one clean line; returns the request id it quotes."""
    full = str(exc)
    message = clean_message(exc)
    assert "\n" not in message and "\r" not in message, message
    for text in (full, message):
        assert "Traceback" not in text, text
        assert 'File "' not in text, text
        for path in paths:
            assert path not in text, (path, text)
    assert not _ABSOLUTE.search(message), message
    found = REQUEST_ID.search(message)
    assert found, message
    return found.group(1)
