"""The data access policy: which hrefs a server may read, decided before every read.

A server serves Collections that other people wrote, so an asset href is
untrusted input: ``/etc/passwd``, ``file:///...``, ``http://169.254.169.254/``
(cloud metadata) or ``http://10.0.0.5/admin`` must never be fetched just because
a Collection names them. :class:`AccessPolicy` allows exactly the prefixes the
operator lists (``--allow``; the Collection root's own store is always listed)
and refuses everything else with :class:`~cogflight_core.PermissionDeniedError`
naming the asset, never its bytes.

Rules, in order:

1. the href must parse, with a scheme cogflight reads (local paths, ``file``,
   ``s3``, ``gs``, ``az``, ``http``, ``https``);
2. it must lie under an allowed prefix, compared on whole path segments after
   normalising (``..`` and, for local files, symlinks resolved first);
3. an ``http(s)`` prefix may name any host (``https://*/``) or any host under a
   domain (``https://*.example.org/``); a host allowed that way that is, or
   resolves to, a loopback, link-local, private, reserved, multicast or unspecified
   address is refused. A host named exactly (``--allow http://127.0.0.1:9000/``,
   ``--allow http://minio.internal:9000/``) is the operator's explicit choice;
4. a host named exactly in any prefix is trusted as the operator's choice, even
   for hrefs that only a wildcard prefix covers.

Hosts are resolved at every check (DNS answers change). The engine's HTTP reader
(:mod:`catalog._http`) checks every redirect target with the same policy before
following it, and every address it connects to (:meth:`AccessPolicy.allows_address`),
so a name that resolves to a public address at check time and to an internal one
at connect time is refused too. Store endpoints a Collection carries (its
``endpoint`` store option) are checked with :meth:`AccessPolicy.check_endpoint`.
Pure logic except for the name lookup, which is injectable for tests.
"""

from __future__ import annotations

import copy
import functools
import ipaddress
import os
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from cogflight_core import InvalidArgumentError, PermissionDeniedError

__all__ = ["AccessPolicy", "Resolver", "default_resolver"]

Resolver = Callable[[str], Sequence[str]]
"""Host name -> IP address strings (``socket.getaddrinfo`` by default)."""

_OBJECT_SCHEMES = {
    "s3": "s3",
    "s3a": "s3",
    "gs": "gs",
    "gcs": "gs",
    "az": "az",
    "azure": "az",
    "abfs": "az",
    "abfss": "az",
}
_HTTP = ("http", "https")


def default_resolver(host: str) -> Sequence[str]:
    """Every address ``host`` resolves to (empty when it does not resolve)."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError):
        return ()
    return tuple(dict.fromkeys(str(info[4][0]) for info in infos))


def _is_internal(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return bool(
        ip.is_loopback
        or ip.is_link_local
        or ip.is_private
        or ip.is_reserved
        or ip.is_multicast
        or ip.is_unspecified
        or (isinstance(ip, ipaddress.IPv4Address) and ip in ipaddress.ip_network("100.64.0.0/10"))
    )


@dataclass(frozen=True, slots=True)
class _Prefix:
    """An allowed prefix, split so that comparisons are on whole segments."""

    kind: str  # "file", "s3", "gs", "az", "http", "https"
    authority: str  # bucket, container or host[:port] (lower case); "" for files
    path: str  # normalised path, without a trailing slash ("" = the whole store)
    text: str  # as the operator wrote it, for messages

    @property
    def wildcard(self) -> bool:
        """Whether the host is a pattern (``*`` or ``*.domain``) rather than a name."""
        return self.authority.startswith("*")

    def covers(self, kind: str, authority: str, path: str) -> bool:
        if kind != self.kind:
            return False
        if self.authority == "*":
            pass
        elif self.authority.startswith("*."):
            if not authority.split(":", 1)[0].endswith(self.authority[1:]):
                return False
        elif authority != self.authority:
            return False
        return not self.path or path == self.path or path.startswith(self.path + "/")


def _split(href: str, *, for_prefix: bool = False) -> tuple[str, str, str]:
    """(kind, authority, normalised path) of an href or prefix; raises on what cannot be read."""
    if not isinstance(href, str) or not href.strip():
        raise InvalidArgumentError(f"expected a path or URL, got {href!r}")
    if "\x00" in href:
        raise InvalidArgumentError("an href may not contain NUL bytes")
    parts = urlsplit(href)
    scheme = parts.scheme.lower()
    if scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt"):
        raw = unquote(parts.path) if scheme == "file" else href
        if scheme == "file" and parts.netloc not in ("", "localhost"):
            raise InvalidArgumentError(f"file URL {href!r} names a remote host")
        path = os.path.realpath(Path(raw).expanduser())
        return "file", "", path.rstrip("/") or "/"
    if scheme in _OBJECT_SCHEMES:
        authority = parts.netloc.lower()
        if not authority:
            raise InvalidArgumentError(f"{href!r} names no bucket or container")
        path = os.path.normpath("/" + unquote(parts.path)).lstrip("/")
        return _OBJECT_SCHEMES[scheme], authority, "" if path == "." else path.rstrip("/")
    if scheme in _HTTP and for_prefix and parts.netloc.startswith("*"):
        path = os.path.normpath("/" + unquote(parts.path)).lstrip("/")
        return scheme, parts.netloc.lower(), "" if path == "." else path.rstrip("/")
    if scheme in _HTTP:
        host = (parts.hostname or "").lower()
        if not host:
            raise InvalidArgumentError(f"{href!r} names no host")
        if parts.username or parts.password:
            raise InvalidArgumentError(f"{href!r} carries credentials in the URL")
        try:
            port = parts.port
        except ValueError as exc:
            raise InvalidArgumentError(f"{href!r} has an invalid port") from exc
        default = 443 if scheme == "https" else 80
        authority = host if port in (None, default) else f"{host}:{port}"
        path = os.path.normpath("/" + unquote(parts.path)).lstrip("/")
        return scheme, authority, "" if path == "." else path.rstrip("/")
    what = "prefix" if for_prefix else "href"
    raise InvalidArgumentError(
        f"unsupported scheme {scheme!r} in {what} {href[:200]!r}; cogflight reads local "
        "paths, s3://, gs://, az:// and http(s):// URLs"
    )


class AccessPolicy:
    """The prefixes a server may read, and the checks that keep it to them.

    Args:
        allow: allowed prefixes (local directories, ``s3://bucket/prefix``,
            ``https://host/path``...). A local prefix allows the files below it.
        endpoints: store endpoints (``endpoint`` store option) the server itself is
            configured with; a Collection may name these without an ``allow`` entry.
        resolver: host name lookup (default: the system resolver).

    Thread-safe (immutable); picklable with the default resolver (spawned workers).
    """

    def __init__(
        self,
        allow: Iterable[str] = (),
        *,
        endpoints: Iterable[str] = (),
        resolver: Resolver | None = None,
    ) -> None:
        prefixes = []
        for text in allow:
            kind, authority, path = _split(str(text), for_prefix=True)
            prefixes.append(_Prefix(kind, authority, path, str(text)))
        self._prefixes = tuple(prefixes)
        self._endpoints = frozenset(_endpoint_key(e) for e in endpoints if e)
        self._resolve = resolver or default_resolver
        self._open = False

    @classmethod
    def open(cls) -> AccessPolicy:
        """A policy that allows every href (for code that reads its own files, in-process)."""
        policy = cls()
        policy._open = True
        return policy

    @classmethod
    def for_root(
        cls,
        root: str,
        allow: Iterable[str] = (),
        *,
        endpoints: Iterable[str] = (),
        resolver: Resolver | None = None,
    ) -> AccessPolicy:
        """The root's own store (its bucket, or the root directory) plus ``allow``."""
        kind, authority, path = _split(root, for_prefix=True)
        if kind == "file":
            own = path
        elif kind in _HTTP:
            own = f"{kind}://{authority}/{path}"
        else:
            own = f"{kind}://{authority}/"  # the root's bucket or container
        return cls([own, *allow], endpoints=endpoints, resolver=resolver)

    @property
    def is_open(self) -> bool:
        """Whether every href is allowed."""
        return self._open

    @property
    def prefixes(self) -> tuple[str, ...]:
        """The allowed prefixes, as given."""
        return tuple(p.text for p in self._prefixes)

    def check(self, href: str, *, asset: str | None = None, resolve: bool = True) -> None:
        """Refuse ``href`` unless the policy allows it.

        Args:
            href: what is about to be read.
            asset: how to name it in a refusal (``"asset red of scene s1"``).
            resolve: look up host names that a wildcard prefix allowed. The HTTP reader
                passes False: its connections check every address they connect to.

        Raises:
            PermissionDeniedError: the href is outside every allowed prefix, or its
                host is internal and not allowed by name. The message names the asset,
                never a local path or a query string.
        """
        if self._open:
            return
        label = asset or "asset"
        try:
            kind, authority, path = _split(href)
        except InvalidArgumentError as exc:
            raise PermissionDeniedError(f"{label} {_shown(href)} cannot be read: {exc}") from exc
        covering = [p for p in self._prefixes if p.covers(kind, authority, path)]
        if not covering:
            raise PermissionDeniedError(
                f"{label} {_shown(href)} is outside the server's data access policy; "
                "the operator can allow its prefix with --allow"
            )
        if all(p.wildcard for p in covering) and not self.names_host(kind, authority):
            self._check_host(urlsplit(href).hostname or "", href, label, resolve)

    def refusals(self, items: Iterable[tuple[str, str]]) -> tuple[str, int] | None:
        """Check many ``(href, label)`` at once: the first refusal's message and how many.

        Host names are looked up once per call (a Collection names thousands of
        objects on a few hosts). None when everything is allowed.
        """
        if self._open:
            return None
        memo = functools.lru_cache(maxsize=4096)(lambda host: tuple(self._resolve(host)))
        fast = copy.copy(self)
        fast._resolve = memo
        first: str | None = None
        count = 0
        for href, label in items:
            try:
                fast.check(href, asset=label)
            except PermissionDeniedError as exc:
                count += 1
                first = first or str(exc)
        return (first, count) if first is not None else None

    def names_host(self, scheme: str, authority: str) -> bool:
        """Whether a prefix names this ``host[:port]`` exactly (the operator's explicit choice).

        Such a host may be internal (``--allow http://minio.internal:9000/``); a host
        reached only through a wildcard may not.
        """
        if self._open:
            return True
        return any(p.kind == scheme and p.authority == authority for p in self._prefixes)

    def allows_address(self, scheme: str, authority: str, address: str) -> bool:
        """Whether a connection to ``host[:port]`` may go to ``address`` (an IP string)."""
        return self.names_host(scheme, authority) or not _is_internal(address)

    def check_endpoint(self, endpoint: str, *, what: str = "store endpoint") -> None:
        """Refuse a store endpoint (``endpoint`` store option) the operator did not allow.

        The server's own endpoints (given to :meth:`for_root`) are allowed; any other
        must lie under an allowed ``http(s)`` prefix.
        """
        if self._open or _endpoint_key(endpoint) in self._endpoints:
            return
        try:
            self.check(endpoint.rstrip("/") + "/", asset=what)
        except PermissionDeniedError as exc:
            raise PermissionDeniedError(
                f"{what} {_shown(endpoint)} is not the server's own endpoint and is not "
                "allowed; the operator can allow it with --allow"
            ) from exc

    def _check_host(self, host: str, href: str, label: str, resolve: bool) -> None:
        """Refuse a host that a wildcard allowed when it is (or resolves to) an internal address."""
        try:
            addresses: Sequence[str] = (str(ipaddress.ip_address(host)),)
            named = True  # an IP literal in the href
        except ValueError:
            if not resolve:
                return  # the reader checks the addresses it connects to
            addresses = self._resolve(host)
            named = False
        if not addresses:
            raise PermissionDeniedError(f"{label} {_shown(href)}: host {host!r} does not resolve")
        internal = [a for a in addresses if _is_internal(a)]
        if not internal:
            return
        where = "is" if named else f"resolves to {internal[0]}, which is"
        raise PermissionDeniedError(
            f"{label} {_shown(href)}: host {host!r} {where} a loopback, link-local or "
            "private address; an operator who means it can allow that host by name with --allow"
        )

    def describe(self) -> dict[str, object]:
        """The policy as JSON-able data (for logs; local prefixes are server paths)."""
        return {"open": self._open, "allow": list(self.prefixes)}

    def __repr__(self) -> str:
        if self._open:
            return "AccessPolicy.open()"
        return f"AccessPolicy({list(self.prefixes)!r})"


def _shown(href: str) -> str:
    """An href for a message: never a local path (a server's layout) nor a query string."""
    if not isinstance(href, str):
        return "(not a string)"
    scheme = urlsplit(href).scheme.lower() if "://" in href else ""
    if scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt"):
        return "(a local file)"
    return repr(href.split("?", 1)[0].split("#", 1)[0][:200])


def _endpoint_key(endpoint: str) -> str:
    """An endpoint URL compared loosely: scheme and host lower case, no trailing slash."""
    parts = urlsplit(str(endpoint).strip())
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{parts.path.rstrip('/')}"
