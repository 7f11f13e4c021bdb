"""The Collections a server serves: every ``NAME.parquet`` directly under its root.

A root is a local directory or an object-store prefix (``s3://bucket/prefix``).
Collections are loaded on first use and reloaded when the file changes (size and
modification time, or ETag on object storage), so saving a new version under
the root is picked up without a restart.

Every Collection is checked against the server's data access policy when it is
loaded: every distinct asset href, and the store endpoint it names, if any (an
endpoint other than the server's own must be allowed explicitly). A Collection
that fails to load, or that the policy refuses, is *unavailable*: it is left out
of :meth:`CollectionRoot.names` (so one bad file never breaks listing for every
client), logged once per version of its file with the reason, reported by
:meth:`CollectionRoot.problems` (the ``health`` action), and asked for by name
it raises that reason (UNAVAILABLE, or PERMISSION_DENIED for the policy).
Reasons never carry the server's paths.

Concurrency policy: thread-safe; one lock guards the caches, loading happens
outside it (two threads may load the same new file once each).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import obstore

from catalog import (
    AccessPolicy,
    CogflightError,
    Collection,
    StoreOptions,
    StoreRegistry,
    asset_column,
    load,
    normalize_href,
    settings,
    translate_storage_error,
)
from cogflight_core import (
    CollectionNotFoundError,
    InvalidArgumentError,
    PermissionDeniedError,
    UnavailableError,
)

__all__ = ["CollectionNotFoundError", "CollectionRoot"]

logger = logging.getLogger("cogflight.server")
SUFFIX = ".parquet"


@dataclass
class _Entry:
    version: Any
    collection: Collection


@dataclass
class _Failure:
    version: Any
    error: CogflightError  # UnavailableError or PermissionDeniedError, path-free message


class CollectionRoot:
    """Lists and loads the Collections under one root. Thread-safe.

    Args:
        root: a directory or an object-store prefix.
        store_options: how to reach the root (and, by default, its imagery).
        policy: the data access policy every Collection is checked against when
            loaded (default: the root's own store only, ``AccessPolicy.for_root``).
    """

    def __init__(
        self,
        root: str,
        *,
        store_options: StoreOptions | None = None,
        policy: AccessPolicy | None = None,
    ) -> None:
        self.root = normalize_href(root)
        self.store_options = store_options
        endpoint = (store_options or {}).get("endpoint")
        self.policy = (
            policy
            if policy is not None
            else AccessPolicy.for_root(self.root, endpoints=[endpoint] if endpoint else ())
        )
        self._remote = "://" in self.root
        self._lock = threading.Lock()
        self._cache: dict[str, _Entry] = {}
        self._failed: dict[str, _Failure] = {}
        if self._remote:
            registry = StoreRegistry(store_options, retries=settings().max_retries)
            self._store, self._prefix = registry.resolve(
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
                try:
                    st = p.stat()
                    out[p.name[: -len(SUFFIX)]] = (st.st_size, st.st_mtime_ns)
                except OSError as exc:  # a dangling link: listed, and unavailable
                    out[p.name[: -len(SUFFIX)]] = ("unreadable", exc.errno)
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
        """Names of the Collections served, sorted: those that load and the policy allows.

        Each is loaded on first listing (and cached); the others are reported by
        :meth:`problems`.
        """
        out = []
        for name, version in sorted(self._listing().items()):
            try:
                self._load(name, version)
            except (UnavailableError, PermissionDeniedError):
                continue
            out.append(name)
        return out

    def problems(self) -> dict[str, str]:
        """``{name: reason}`` of every Collection file under the root that is not served."""
        listing = self._listing()
        for name, version in listing.items():  # learn about files never asked for yet
            with contextlib.suppress(UnavailableError, PermissionDeniedError):
                self._load(name, version)
        with self._lock:
            return {
                name: str(f.error)
                for name, f in sorted(self._failed.items())
                if listing.get(name, object()) == f.version
            }

    def get(self, name: str) -> Collection:
        """The Collection ``name`` (loaded or reloaded as needed).

        Raises:
            CollectionNotFoundError: no such Collection under the root.
            UnavailableError: its file cannot be loaded as a Collection.
            PermissionDeniedError: it names an asset or store outside the policy.
        """
        listing = self._listing()
        if name not in listing:
            raise CollectionNotFoundError(
                f"no Collection {name!r} on this server; served: "
                f"{', '.join(sorted(listing)) or 'none'}"
            )
        return self._load(name, listing[name])

    def _load(self, name: str, version: Any) -> Collection:
        with self._lock:
            entry = self._cache.get(name)
            if entry is not None and entry.version == version:
                return entry.collection
            failed = self._failed.get(name)
            if failed is not None and failed.version == version:
                raise type(failed.error)(str(failed.error))
        href = self.root.rstrip("/") + "/" + name + SUFFIX
        try:
            collection = self._read(name, href)
            self._check(name, collection)
        except (UnavailableError, PermissionDeniedError) as exc:
            logger.warning("Collection %r is not served: %s", name, exc)
            with self._lock:
                self._failed[name] = _Failure(version, exc)
                self._cache.pop(name, None)
            raise
        logger.info("loaded Collection %r (%d scenes) from %s", name, len(collection), href)
        with self._lock:
            self._cache[name] = _Entry(version, collection)
            self._failed.pop(name, None)
        return collection

    def _read(self, name: str, href: str) -> Collection:
        """Load one Collection file; every failure an :class:`UnavailableError` without paths."""
        try:
            return load(href, store_options=self.store_options)
        except CogflightError as exc:
            reason = self._scrub(str(exc).split("\n", 1)[0], name, href)
            raise UnavailableError(f"Collection {name!r} cannot be loaded: {reason}") from exc
        except Exception as exc:  # a file that trips a library: this Collection only
            logger.warning("loading %s failed unexpectedly", href, exc_info=True)
            raise UnavailableError(
                f"Collection {name!r} cannot be loaded: it is not a valid Collection "
                f"({type(exc).__name__})"
            ) from exc

    def _scrub(self, text: str, name: str, href: str) -> str:
        """A message without the server's paths: the file by its name, the root as 'the root'."""
        text = text.replace(href, f"{name}{SUFFIX}")
        for root in {self.root, str(Path(self.root).resolve()) if not self._remote else ""}:
            if root:
                text = text.replace(root.rstrip("/"), "<root>")
        return text

    def _check(self, name: str, collection: Collection) -> None:
        """Refuse a Collection naming any asset or endpoint outside the policy (fail fast)."""
        policy = self.policy
        if policy.is_open:
            return
        endpoint = collection.store_options.get("endpoint")
        if endpoint:
            policy.check_endpoint(str(endpoint), what=f"the store endpoint of Collection {name!r}")
        refused = policy.refusals(_assets(collection))
        if refused:
            first, count = refused
            more = f" (and {count - 1} more assets)" if count > 1 else ""
            raise PermissionDeniedError(f"Collection {name!r}: {first}{more}")


def _assets(collection: Collection) -> Iterator[tuple[str, str]]:
    """``(href, label)`` of every distinct asset href, labelled by its first scene and asset."""
    ids = collection.table.column("id").to_pylist()
    seen: set[str] = set()
    for asset in collection.assets:
        column = collection.table.column(asset_column(asset))
        hrefs = column.combine_chunks().field("href").to_pylist() if len(column) else []
        valid = column.is_valid().to_pylist() if len(column) else []
        for scene, href, ok in zip(ids, hrefs, valid, strict=True):
            if ok and href not in seen:
                seen.add(href)
                yield href, f"asset {asset!r} of scene {scene!r}"
