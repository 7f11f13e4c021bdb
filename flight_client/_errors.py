"""Flight statuses translated at the client's boundary into cogflight errors.

A status a server sends becomes the error class of its code through
:data:`cogflight_core.STATUS_TABLE` (the table the server raised it with), so
``except flight_client.InvalidArgumentError`` catches a bad query whether the
client or the server found it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import pyarrow as pa
from pyarrow import flight

from cogflight_core import from_flight

__all__ = ["call", "translated"]

T = TypeVar("T")


@contextmanager
def translated() -> Iterator[None]:
    """Re-raise pyarrow/Flight errors as the cogflight error of their status code."""
    try:
        yield
    except (flight.FlightError, pa.ArrowException) as exc:
        raise from_flight(exc) from exc


def call(fn: Callable[..., T], *args: object, **kwargs: object) -> T:
    """Call ``fn`` with errors translated."""
    with translated():
        return fn(*args, **kwargs)
