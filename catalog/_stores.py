"""Where bytes come from: one obstore store per bucket/host, shared by everything.

Hrefs are local paths, ``file://``, ``s3://``, ``gs://``, ``az://`` or
``http(s)://`` URLs. A :class:`StoreRegistry` turns an href into a store and a
path, creating each store once per (scheme, bucket or host, options) and
reusing it (and its connection pool) for every later request. Stores are
dropped after ``fork`` because obstore's runtime is not fork-safe.

Concurrency policy: the registry is thread-safe (one lock around its store
cache). Reading bytes is :mod:`catalog._fetch`'s job (:class:`ObjectReader`,
re-exported here), which coalesces nearby ranges, issues the resulting
requests concurrently and retries them (obstore's own retries are off unless a
registry asks for them); callers bound how many readers run at once.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict
from urllib.parse import unquote, urlsplit

from obstore.store import AzureStore, GCSStore, HTTPStore, LocalStore, S3Store

from cogflight_core import InvalidArgumentError

from ._fetch import is_range_past_end, translate_storage_error
from ._reader import ObjectReader, RangeReader
from ._settings import settings

if TYPE_CHECKING:
    from obstore.store import ObjectStore

__all__ = [
    "ObjectReader",
    "RangeReader",
    "StoreOptions",
    "StoreRegistry",
    "default_registry",
    "is_range_past_end",
    "normalize_href",
    "translate_storage_error",
]


class StoreOptions(TypedDict, total=False):
    """How to reach one source. Never holds secrets that end up in a Collection.

    Secrets (keys, tokens) come from the environment as obstore reads them
    (``AWS_*``, ``GOOGLE_*``, ``AZURE_*``) or through ``config``.
    """

    anonymous: bool
    """Send unsigned requests (public buckets); ``AWS_NO_SIGN_REQUEST=YES`` sets it for S3."""
    requester_pays: bool
    """Ask S3 to bill the requester (Landsat, NAIP buckets); needs credentials."""
    region: str
    """S3 bucket region, e.g. ``us-west-2``."""
    endpoint: str
    """Custom S3/Azure/GCS endpoint (MinIO, moto, Azurite)."""
    allow_http: bool
    """Allow plain-HTTP endpoints (loopback test servers)."""
    planetary_computer: bool
    """Sign Azure blob requests with Planetary Computer SAS tokens."""
    azure_account: str
    """Storage account for ``az://container/path`` hrefs."""
    config: dict[str, str]
    """Extra obstore store configuration keys, passed through unchanged."""


# Options that may be written into a Collection so a server can read it later.
PERSISTED_OPTION_KEYS = (
    "anonymous",
    "requester_pays",
    "region",
    "endpoint",
    "allow_http",
    "planetary_computer",
    "azure_account",
)

_REMOTE_SCHEMES = ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "azure", "http", "https")


def normalize_href(href: str | os.PathLike[str]) -> str:
    """Return an absolute local path or the URL unchanged.

    Raises:
        InvalidArgumentError: the href is empty or uses an unknown scheme.
    """
    if isinstance(href, os.PathLike):
        return str(Path(href).resolve())
    if not isinstance(href, str) or not href.strip():
        raise InvalidArgumentError(f"expected a path or URL, got {href!r}")
    scheme = urlsplit(href).scheme.lower()
    if scheme == "file":
        return str(Path(unquote(urlsplit(href).path)).resolve())
    if scheme in _REMOTE_SCHEMES:
        return href
    if len(scheme) > 1:  # one letter is a Windows drive
        raise InvalidArgumentError(
            f"unsupported URL scheme {scheme!r} in {href!r}; use a local path or "
            "s3://, gs://, az://, http(s)://"
        )
    return str(Path(href).expanduser().resolve())


class StoreRegistry:
    """Creates and caches one store per bucket or host.

    ``options`` apply to every href; ``overrides`` maps href prefixes (for
    example ``"s3://usgs-landsat"``) to options that replace the defaults for
    matching hrefs. ``retries``: obstore's own retries of a failed request; 0
    (the default) for stores read through :class:`~catalog.RangeFetcher`, which
    retries and counts itself. Whole-object reads outside it (loading a Collection,
    listing a root) ask for ``settings().max_retries``. Thread-safe.
    """

    def __init__(
        self,
        options: StoreOptions | None = None,
        *,
        overrides: Mapping[str, StoreOptions] | None = None,
        retries: int = 0,
    ) -> None:
        self._options: StoreOptions = dict(options or {})  # type: ignore[assignment]
        self._overrides = dict(overrides or {})
        self._retries = int(retries)
        self._stores: dict[tuple[Any, ...], ObjectStore] = {}
        self._lock = threading.Lock()
        self._pid = os.getpid()

    @property
    def options(self) -> StoreOptions:
        """The default options of this registry."""
        return self._options

    def options_for(self, href: str) -> StoreOptions:
        """The options that apply to ``href`` (defaults merged with the longest override)."""
        merged: dict[str, Any] = dict(self._options)
        best = max((p for p in self._overrides if href.startswith(p)), key=len, default=None)
        if best is not None:
            merged.update(self._overrides[best])
        return merged  # type: ignore[return-value]

    def reader(self, href: str) -> ObjectReader:
        """A reader for one object."""
        store, path = self.resolve(href)
        return ObjectReader(store, path, href)

    def resolve(self, href: str) -> tuple[ObjectStore, str]:
        """Return the store serving ``href`` and the path inside it."""
        href = normalize_href(href)
        opts = self.options_for(href)
        key, factory, path = _plan_store(href, opts, self._retries)
        with self._lock:
            if os.getpid() != self._pid:  # after fork: never reuse the parent's runtime
                self._stores.clear()
                self._pid = os.getpid()
            store = self._stores.get(key)
            if store is None:
                try:
                    store = factory()
                except Exception as exc:
                    raise InvalidArgumentError(
                        f"cannot create a store for {href!r}: {exc}"
                    ) from exc
                self._stores[key] = store
        return store, path


def _client_options(opts: StoreOptions, http: bool) -> dict[str, Any]:
    s = settings()
    client: dict[str, Any] = {
        "timeout": timedelta(seconds=s.request_timeout_s),
        "connect_timeout": timedelta(seconds=min(10.0, s.request_timeout_s)),
    }
    if http or opts.get("allow_http"):
        client["allow_http"] = True
    return client


def _retry_config(retries: int) -> dict[str, Any]:
    s = settings()
    return {
        "max_retries": retries,
        "backoff": {
            "init_backoff": timedelta(milliseconds=100),
            "max_backoff": timedelta(seconds=5),
            "base": 2,
        },
        "retry_timeout": timedelta(seconds=max(s.request_timeout_s * 2, 30.0)),
    }


def _frozen(opts: Mapping[str, Any]) -> tuple[Any, ...]:
    items: list[Any] = []
    for k in sorted(opts):
        v = opts[k]
        items.append((k, tuple(sorted(v.items())) if isinstance(v, dict) else v))
    return tuple(items)


def _plan_store(
    href: str, opts: StoreOptions, retries: int = 0
) -> tuple[tuple[Any, ...], Any, str]:
    """Return (cache key, zero-argument store factory, path in store)."""
    parts = urlsplit(href)
    scheme = parts.scheme.lower()
    extra = dict(opts.get("config", {}))
    frozen = _frozen(opts)
    if scheme in ("", "file") or len(scheme) == 1:
        return ("file",), LocalStore, href.lstrip("/")
    if parts.query and scheme in ("http", "https") and ".blob.core.windows.net" not in parts.netloc:
        raise InvalidArgumentError(
            f"{href!r} carries a query string; pre-signed or tokenised URLs are not supported. "
            "Use the object's plain URL and give credentials through store options"
        )
    path = unquote(parts.path.lstrip("/"))
    if scheme in ("s3", "s3a"):
        bucket = parts.netloc
        if not bucket or not path:
            raise InvalidArgumentError(f"malformed S3 URL {href!r}; expected s3://bucket/key")
        cfg: dict[str, Any] = dict(extra)
        if opts.get("region"):
            cfg["region"] = opts["region"]
        if opts.get("endpoint"):
            cfg["endpoint"] = opts["endpoint"]
        if opts.get("requester_pays"):
            cfg["request_payer"] = True
        anonymous = opts.get("anonymous")
        if anonymous is None:
            anonymous = os.environ.get("AWS_NO_SIGN_REQUEST", "").upper() in ("YES", "TRUE", "1")
        if anonymous:
            cfg["skip_signature"] = True
        http = str(opts.get("endpoint", "")).startswith("http://")

        def make_s3() -> ObjectStore:
            return S3Store(
                bucket,
                client_options=_client_options(opts, http),  # type: ignore[arg-type]
                retry_config=_retry_config(retries),  # type: ignore[arg-type]
                **cfg,
            )

        return ("s3", bucket, frozen), make_s3, path
    if scheme in ("gs", "gcs"):
        bucket = parts.netloc
        if not bucket or not path:
            raise InvalidArgumentError(f"malformed GCS URL {href!r}; expected gs://bucket/key")
        gcfg: dict[str, Any] = dict(extra)
        if opts.get("anonymous"):
            gcfg["skip_signature"] = True
        if opts.get("endpoint"):
            gcfg["base_url"] = opts["endpoint"]

        def make_gcs() -> ObjectStore:
            return GCSStore(
                bucket,
                client_options=_client_options(opts, False),  # type: ignore[arg-type]
                retry_config=_retry_config(retries),  # type: ignore[arg-type]
                **gcfg,
            )

        return ("gs", bucket, frozen), make_gcs, path
    account: str | None
    if scheme in ("az", "azure", "abfs", "abfss"):
        container = parts.netloc.split("@", 1)[0]
        account = (
            parts.netloc.split("@", 1)[1].split(".", 1)[0]
            if "@" in parts.netloc
            else opts.get("azure_account") or os.environ.get("AZURE_STORAGE_ACCOUNT_NAME")
        )
        if not account:
            raise InvalidArgumentError(
                f"{href!r} names no storage account; pass store option azure_account "
                "or set AZURE_STORAGE_ACCOUNT_NAME"
            )
        return _azure(account, container, path, opts, extra, frozen, retries)
    if scheme in ("http", "https") and parts.netloc.endswith(".blob.core.windows.net"):
        account = parts.netloc.split(".", 1)[0]
        container, _, blob = path.partition("/")
        if opts.get("planetary_computer") or not parts.query:
            if parts.query:
                raise InvalidArgumentError(
                    f"{href!r} is already signed; give the plain URL, cogflight signs it"
                )
            return _azure(account, container, blob, opts, extra, frozen, retries)
        raise InvalidArgumentError(
            f"{href!r} carries a SAS token; give the plain URL with store option "
            "planetary_computer=True, or AZURE_STORAGE_SAS_KEY in the environment"
        )
    if scheme in ("http", "https"):
        base = f"{scheme}://{parts.netloc}"

        def make_http() -> ObjectStore:
            return HTTPStore.from_url(
                base,
                client_options=_client_options(opts, scheme == "http"),  # type: ignore[arg-type]
                retry_config=_retry_config(retries),  # type: ignore[arg-type]
            )

        return ("http", base, frozen), make_http, path
    raise InvalidArgumentError(f"unsupported URL scheme in {href!r}")


def _azure(
    account: str,
    container: str,
    path: str,
    opts: StoreOptions,
    extra: dict[str, Any],
    frozen: tuple[Any, ...],
    retries: int,
) -> tuple[tuple[Any, ...], Any, str]:
    if not container or not path:
        raise InvalidArgumentError(
            f"malformed Azure blob href (account {account!r}, container {container!r})"
        )
    cfg: dict[str, Any] = dict(extra)
    if opts.get("endpoint"):
        cfg["endpoint"] = opts["endpoint"]
    if opts.get("anonymous"):
        cfg["skip_signature"] = True
    http = str(opts.get("endpoint", "")).startswith("http://")

    def make_azure() -> ObjectStore:
        provider = None
        if opts.get("planetary_computer"):
            from obstore.auth.planetary_computer import PlanetaryComputerCredentialProvider

            provider = PlanetaryComputerCredentialProvider(
                account_name=account, container_name=container
            )
        return AzureStore(
            container_name=container,
            account_name=account,
            credential_provider=provider,
            client_options=_client_options(opts, http),  # type: ignore[arg-type]
            retry_config=_retry_config(retries),  # type: ignore[arg-type]
            **cfg,
        )

    return ("az", account, container, frozen), make_azure, path


_DEFAULT: StoreRegistry | None = None
_DEFAULT_LOCK = threading.Lock()


def default_registry() -> StoreRegistry:
    """The process-wide registry used when no registry is passed."""
    global _DEFAULT  # noqa: PLW0603
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = StoreRegistry()
        return _DEFAULT


def iter_unique(hrefs: Iterable[str]) -> list[str]:
    """Hrefs in first-seen order without repeats."""
    return list(dict.fromkeys(hrefs))
