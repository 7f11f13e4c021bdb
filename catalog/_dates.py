"""Dates and date ranges, read one way everywhere: builders, filters and STAC searches.

A value may be a datetime, a date, an ISO 8601 string at any precision from a year
down to a microsecond, or a year; naive values are UTC. As a range bound, a date
covers its whole day (a month its month, a year its year).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from cogflight_core import InvalidArgumentError

__all__ = ["parse_date_range", "parse_instant", "to_utc"]


def parse_instant(value: object, field: str, *, end: bool = False) -> dt.datetime | None:
    """A UTC instant; a date (or month, or year) means its first or, for ``end``, last moment.

    Accepts datetimes, dates, ISO 8601 strings (``2024``, ``2024-06``, ``2024-06-30``,
    ``2024-06-30T12:00:00Z``), years as integers, and ``None``/NaN/``""``/``".."`` (open).
    """
    if value is None or value in ("", "..") or (isinstance(value, float) and math.isnan(value)):
        return None
    day = dt.timedelta(days=1)
    tick = dt.timedelta(microseconds=1)
    if isinstance(value, dt.datetime):
        out = value
    elif isinstance(value, dt.date):
        out = dt.datetime(value.year, value.month, value.day)
        if end:
            out += day - tick
    elif isinstance(value, int | np.integer) and not isinstance(value, bool) and 0 < value < 10000:
        year = int(value)
        out = dt.datetime(year + 1, 1, 1) - tick if end else dt.datetime(year, 1, 1)
    elif isinstance(value, str):
        text = value.strip().replace("Z", "+00:00")
        try:
            if len(text) == 4 and text.isdigit():  # YYYY
                year = int(text)
                out = dt.datetime(year + 1, 1, 1) - tick if end else dt.datetime(year, 1, 1)
            elif len(text) == 7:  # YYYY-MM
                y, m = (int(p) for p in text.split("-"))
                first = dt.datetime(y, m, 1)
                out = dt.datetime(y + (m == 12), m % 12 + 1, 1) - tick if end else first
            elif len(text) == 10:  # YYYY-MM-DD
                return parse_instant(dt.date.fromisoformat(text), field, end=end)
            else:
                out = dt.datetime.fromisoformat(text)
        except ValueError as exc:
            raise InvalidArgumentError(
                f"{field}: cannot read {value!r} as a date; use ISO 8601 such as "
                "'2024-01-31' or '2024-01-31T12:00:00Z'"
            ) from exc
    else:
        raise InvalidArgumentError(f"{field}: expected a date string or datetime, got {value!r}")
    if out.tzinfo is None:
        out = out.replace(tzinfo=dt.UTC)
    return out.astimezone(dt.UTC)


def parse_date_range(
    value: object, field: str = "date_range"
) -> tuple[dt.datetime | None, dt.datetime | None]:
    """``"2024-01-01/2024-06-30"`` or a 2-sequence -> inclusive UTC bounds (None = open)."""
    if isinstance(value, str):
        parts = value.split("/")
        if len(parts) == 1:
            parts = [parts[0], parts[0]]
        if len(parts) != 2:
            raise InvalidArgumentError(f"{field}: expected 'start/end', got {value!r}")
        start_raw, end_raw = parts
    elif isinstance(value, Sequence) and len(value) == 2:
        start_raw, end_raw = value[0], value[1]
    else:
        raise InvalidArgumentError(f"{field}: expected 'start/end' or [start, end], got {value!r}")
    start = parse_instant(start_raw, field, end=False)
    end = parse_instant(end_raw, field, end=True)
    if start and end and start > end:
        raise InvalidArgumentError(f"{field}: start {start} is after end {end}")
    return start, end


def to_utc(value: Any, field_name: str = "datetime") -> dt.datetime | None:
    """A timezone-aware UTC datetime (the start of a date, month or year), or None."""
    return parse_instant(value, field_name, end=False)
