"""The one error hierarchy of :mod:`flight_client`; Flight statuses translated at the boundary."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import pyarrow as pa
from pyarrow import flight

T = TypeVar("T")


class ClientError(Exception):
    """Base class of every error raised by ``flight_client``."""


class InvalidQueryError(ClientError, ValueError):
    """The server (or the client, before sending) rejected a query field (INVALID_ARGUMENT)."""


class CollectionNotFoundError(ClientError, KeyError):
    """The server serves no Collection of that name (NOT_FOUND)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class AuthenticationError(ClientError):
    """Missing or invalid token, or a token that may not read this Collection."""


class ServerUnavailableError(ClientError):
    """The server (or its storage) is unreachable, busy, or failed upstream (UNAVAILABLE)."""


class ServerError(ClientError):
    """Any other server failure (INTERNAL is a server bug: see its log)."""


class MissingDependencyError(ClientError, ImportError):
    """An optional dependency is not installed; the message says what to install."""


_DETAIL = re.compile(r"\. Detail: .*", re.DOTALL)


def clean_message(exc: BaseException) -> str:
    """The server's message without gRPC debug context and server tracebacks."""
    text = str(exc)
    text = _DETAIL.sub("", text)
    return text.split("\ngRPC client debug context", 1)[0].strip()


def translate(exc: BaseException) -> ClientError:
    """Map a pyarrow/Flight exception to this package's hierarchy."""
    msg = clean_message(exc)
    if isinstance(exc, flight.FlightUnauthenticatedError | flight.FlightUnauthorizedError):
        return AuthenticationError(msg)
    if isinstance(exc, flight.FlightUnavailableError | flight.FlightTimedOutError):
        return ServerUnavailableError(msg)
    if isinstance(exc, pa.ArrowKeyError):
        return CollectionNotFoundError(msg)
    if isinstance(exc, pa.ArrowInvalid):
        return InvalidQueryError(msg)
    return ServerError(msg)


@contextmanager
def translated() -> Iterator[None]:
    """Re-raise pyarrow/Flight errors as :class:`ClientError` subclasses."""
    try:
        yield
    except (flight.FlightError, pa.ArrowException) as exc:
        raise translate(exc) from exc


def call(fn: Callable[..., T], *args: object, **kwargs: object) -> T:
    """Call ``fn`` with errors translated."""
    with translated():
        return fn(*args, **kwargs)
