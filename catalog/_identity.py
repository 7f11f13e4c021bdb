"""Which version of an object a Collection indexed: its size, ETag and modification time.

A Collection holds byte offsets into files it does not own; when a file is
replaced (new content under the same name) those offsets point into other
bytes, and decoding them gives wrong pixels or, at best, a decode error. So the
header read at index time records the object's identity as the store reported
it (:class:`ObjectIdentity`), and every later read sends ``If-Match`` with the
ETag (where the store gave a strong one) and compares what comes back
(:func:`mismatch`): a replaced object is a clear :class:`ObjectChangedError`.

Local files record their size and modification time only: the ETag obstore
derives for them includes the inode, which a faithful copy (``rsync -a``, a
container image) does not keep.

Pure values and functions; thread-safe.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

__all__ = ["CHANGED", "ObjectIdentity", "mismatch"]

CHANGED = (
    "the object changed since the Collection was built (truncated or replaced: {what}); "
    "rebuild the Collection"
)
"""The message of a replaced object; ``{what}`` says what differs."""


@dataclass(frozen=True, slots=True)
class ObjectIdentity:
    """What a store said about an object: size in bytes, ETag, last modification (UTC).

    Any field may be None where the store did not say.
    """

    size: int | None = None
    etag: str | None = None
    last_modified: dt.datetime | None = None

    @property
    def known(self) -> bool:
        """Whether anything is known (an all-None identity checks nothing)."""
        return self.size is not None or bool(self.etag) or self.last_modified is not None

    @property
    def strong_etag(self) -> str | None:
        """The ETag when it is a strong one (``If-Match`` compares strong ETags only)."""
        etag = self.etag
        return etag if etag and not etag.startswith("W/") else None

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any], *, local: bool = False) -> ObjectIdentity:
        """From obstore's ``ObjectMeta`` (``local``: drop the inode-bound ETag)."""
        size = meta.get("size")
        modified = meta.get("last_modified")
        return cls(
            size=int(size) if size is not None else None,
            etag=None if local else (str(meta["e_tag"]) if meta.get("e_tag") else None),
            last_modified=_utc(modified) if isinstance(modified, dt.datetime) else None,
        )

    @classmethod
    def from_headers(cls, headers: Mapping[str, str], size: int | None) -> ObjectIdentity:
        """From HTTP response headers (``size`` from ``Content-Range``, when it said)."""
        modified = None
        text = headers.get("Last-Modified")
        if text:
            try:
                modified = _utc(parsedate_to_datetime(text))
            except (TypeError, ValueError, IndexError):
                modified = None
        return cls(size=size, etag=headers.get("ETag") or None, last_modified=modified)

    def to_row(self) -> dict[str, Any]:
        """The asset-column fields (``size``, ``etag``, ``last_modified``)."""
        return {"size": self.size, "etag": self.etag, "last_modified": self.last_modified}

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> ObjectIdentity | None:
        """Inverse of :meth:`to_row`; None when the row records nothing."""
        ident = cls(
            size=None if row.get("size") is None else int(row["size"]),
            etag=row.get("etag") or None,
            last_modified=_utc(row["last_modified"]) if row.get("last_modified") else None,
        )
        return ident if ident.known else None


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _opaque(etag: str) -> str:
    return etag[2:] if etag.startswith("W/") else etag


def mismatch(expected: ObjectIdentity | None, actual: ObjectIdentity | None) -> str | None:
    """Why ``actual`` is not the object ``expected`` describes, or None when it may be.

    Sizes must agree; ETags must agree (weak comparison); modification times are
    compared only when there is no ETag to compare. Unknown fields agree with anything.
    """
    if expected is None or actual is None:
        return None
    if expected.size is not None and actual.size is not None and expected.size != actual.size:
        return f"it is now {actual.size} bytes, the index says {expected.size}"
    if expected.etag and actual.etag:
        if _opaque(expected.etag) != _opaque(actual.etag):
            return f"its ETag is now {actual.etag[:80]}, the index says {expected.etag[:80]}"
        return None
    if (
        expected.last_modified is not None
        and actual.last_modified is not None
        and expected.last_modified != actual.last_modified
    ):
        return (
            f"it was modified at {actual.last_modified.isoformat()}, the index says "
            f"{expected.last_modified.isoformat()}"
        )
    return None
