"""The Collections a server serves: every ``NAME.parquet`` directly under its root.

A root is a local directory or an object-store prefix (``s3://bucket/prefix``).
Collections are loaded on first use and reloaded when the file changes (size and
modification time, or ETag on object storage), so saving a new version under
the root is picked up without a restart.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import obstore

from catalog import (
    CogflightError,
    Collection,
    StoreOptions,
    StoreRegistry,
    load,
    normalize_href,
    translate_storage_error,
)
from cogflight_core import CollectionNotFoundError, InvalidArgumentError, UnavailableError

__all__ = ["CollectionNotFoundError", "CollectionRoot"]

logger = logging.getLogger("cogflight.server")
SUFFIX = ".parquet"


@dataclass
class _Entry:
    version: Any
    collection: Collection


class CollectionRoot:
    """Lists and loads the Collections under one root. Thread-safe."""

    def __init__(self, root: str, *, store_options: StoreOptions | None = None) -> None:
        self.root = normalize_href(root)
        self.store_options = store_options
        self._remote = "://" in self.root
        self._lock = threading.Lock()
        self._cache: dict[str, _Entry] = {}
        if self._remote:
            self._store, self._prefix = StoreRegistry(store_options).resolve(
                self.root.rstrip("/") + "/" + "probe" + SUFFIX
            )
            self._prefix = self._prefix.rsplit("/", 1)[0] if "/" in self._prefix else ""
        elif not Path(self.root).is_dir():
            raise InvalidArgumentError(f"root {self.root} is not a directory")

    def _listing(self) -> dict[str, Any]:
        """``{name: version}`` of every Collection file under the root."""
        out: dict[str, Any] = {}
        if not self._remote:
            for p in sorted(Path(self.root).glob("*" + SUFFIX)):
                if p.name.startswith("."):
                    continue  # temporary files of an atomic save
                st = p.stat()
                out[p.name[: -len(SUFFIX)]] = (st.st_size, st.st_mtime_ns)
            return out
        try:
            prefix = self._prefix + "/" if self._prefix else None
            for chunk in obstore.list(self._store, prefix=prefix):
                for meta in chunk:
                    key = meta["path"]
                    name = key.rsplit("/", 1)[-1]
                    rest = key[len(prefix or "") :]
                    if "/" in rest or not name.endswith(SUFFIX) or name.startswith("."):
                        continue
                    out[name[: -len(SUFFIX)]] = (meta.get("e_tag"), meta.get("size"))
        except Exception as exc:
            raise UnavailableError(
                f"cannot list root {self.root}: {translate_storage_error(self.root, exc)}"
            ) from exc
        return out

    def names(self) -> list[str]:
        """Names of the Collections under the root, sorted."""
        return sorted(self._listing())

    def get(self, name: str) -> Collection:
        """The Collection ``name`` (loaded or reloaded as needed).

        Raises:
            CollectionNotFoundError: no such Collection under the root.
        """
        listing = self._listing()
        if name not in listing:
            raise CollectionNotFoundError(
                f"no Collection {name!r} under {self.root}; served: "
                f"{', '.join(sorted(listing)) or 'none'}"
            )
        version = listing[name]
        with self._lock:
            entry = self._cache.get(name)
            if entry is not None and entry.version == version:
                return entry.collection
        href = self.root.rstrip("/") + "/" + name + SUFFIX
        try:
            collection = load(href, store_options=self.store_options)
        except CogflightError as exc:
            raise UnavailableError(f"Collection {name!r} cannot be loaded: {exc}") from exc
        logger.info("loaded Collection %r (%d scenes) from %s", name, len(collection), href)
        with self._lock:
            self._cache[name] = _Entry(version, collection)
        return collection
