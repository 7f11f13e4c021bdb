"""Errors worth another request, and how obstore's errors sort into them.

The range fetcher retries, and counts, every failure that another request may
cure: a 5xx, a 429 (after its ``Retry-After``), a reset connection, a timeout,
a body cut short, and *content* errors, where the store answered but not with
the bytes asked for (a short or shifted range, a wrong ``Content-Range``, the
``Range`` header ignored). Everything else (not found, denied, the object
changed, the policy refused) fails at once. obstore's own retries are off
(``_stores``), so no retry happens where nobody counts it.

Pure functions and exception classes; thread-safe.
"""

from __future__ import annotations

import re

import obstore.exceptions as obs_exc

from cogflight_core import StorageError

__all__ = ["ContentError", "RetryableError", "obstore_failure_kind"]

_STATUS = re.compile(r"(?:status(?: code)?:?\s*|HTTP\s+)(\d{3})\b", re.IGNORECASE)
_RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
# obstore's words for an answer that is not the range asked for.
_CONTENT_MARKERS = ("UnexpectedRange", "RangeNotSupported", "Range request not supported")


class RetryableError(StorageError):
    """A failed read that another request may cure (``retry_after``: seconds the store asked)."""

    def __init__(self, href: str, reason: str, *, retry_after: float | None = None) -> None:
        super().__init__(href, reason)
        self.retry_after = retry_after


class ContentError(RetryableError):
    """The store answered, but not with the bytes asked for."""


def obstore_failure_kind(exc: BaseException) -> str | None:
    """``"content"``, ``"transient"`` or None (not worth another request) for an obstore error.

    obstore's retries are off, so its errors arrive as they happened: a status in
    the message (``status code: 503``), a connection or body error, or a range
    check of its own (``UnexpectedRange``: a shifted or short answer;
    ``RangeNotSupported``: the ``Range`` header ignored).
    """
    text = str(exc)
    if any(marker in text for marker in _CONTENT_MARKERS):
        return "content"
    if isinstance(
        exc,
        obs_exc.NotFoundError
        | obs_exc.PermissionDeniedError
        | obs_exc.UnauthenticatedError
        | obs_exc.PreconditionError
        | obs_exc.NotModifiedError
        | obs_exc.InvalidPathError
        | obs_exc.NotSupportedError
        | obs_exc.UnknownConfigurationKeyError
        | FileNotFoundError
        | PermissionError
        | IsADirectoryError,
    ):
        return None
    statuses = [int(m) for m in _STATUS.findall(text)]
    if statuses:
        return "transient" if any(s in _RETRY_STATUS for s in statuses) else None
    # No status: a connection, timeout or body error (or a local I/O error).
    return "transient"
