"""The engine's HTTP(S) range reader: redirects and addresses checked by the access policy.

obstore's HTTP client follows redirects to any host by itself, so an allowed
host that answers ``302 Location: http://127.0.0.1/secret`` would make the
server read an internal service. :class:`HttpReader` (aiohttp underneath)
never follows a redirect on its own: it checks each target with the
:class:`~catalog._policy.AccessPolicy` first, for at most ``max_redirects``
hops, and its connections go through a resolver that refuses loopback,
link-local and private addresses for hosts the operator did not name (so DNS
cannot point an allowed wildcard host at an internal one after the check).

One request per call, no retries here: :class:`~catalog.RangeFetcher` retries
and counts. A response is checked before its body is read: status,
``Content-Range`` against the range asked for, ``Content-Encoding`` (ranges
must be the stored bytes), and its body length; what comes back is the bytes
and the object's identity (size from ``Content-Range``, ``ETag``,
``Last-Modified``). ``If-Match`` is sent when the caller knows a strong ETag.

Concurrency policy: one reader belongs to one event loop (its aiohttp session
and connection pool are made on first use, on the running loop); coroutines
may run concurrently on that loop. Close it with :meth:`HttpReader.aclose` on
the same loop.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import re
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

from cogflight_core import (
    AccessDeniedError,
    ObjectChangedError,
    ObjectNotFoundError,
    PermissionDeniedError,
    StorageError,
)

from ._identity import CHANGED, ObjectIdentity
from ._policy import AccessPolicy
from ._retryable import ContentError, RetryableError

if TYPE_CHECKING:
    import aiohttp

__all__ = ["HttpReader", "HttpResult", "RangePastEndError"]

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)$")


class RangePastEndError(StorageError):
    """The range starts at or past the end of the object (HTTP 416)."""


@dataclass(frozen=True, slots=True)
class HttpResult:
    """One answered range request: its bytes and what the server said about the object."""

    data: memoryview
    identity: ObjectIdentity


class _AddressRefusedError(PermissionDeniedError):
    """A connection would reach an address the policy refuses."""


@functools.cache
def _resolver_class() -> type[Any]:
    """The guarded resolver class (aiohttp is imported on first use: it costs ~0.2 s)."""
    from aiohttp.abc import AbstractResolver
    from aiohttp.resolver import DefaultResolver

    class GuardedResolver(AbstractResolver):
        """Resolves names, keeping only the addresses the policy lets a connection reach."""

        def __init__(self, policy: AccessPolicy) -> None:
            self._policy = policy
            self._inner = DefaultResolver()

        async def resolve(
            self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
        ) -> list[Any]:
            results = await self._inner.resolve(host, port, family)
            if self._policy.is_open:
                return list(results)
            authority = _authority(host, port)
            kept = [
                r
                for r in results
                if any(
                    self._policy.allows_address(scheme, authority(scheme), r["host"])
                    for scheme in ("http", "https")
                )
            ]
            if results and not kept:
                raise _AddressRefusedError(
                    f"host {host!r} resolves to {results[0]['host']}, a loopback, link-local "
                    "or private address; an operator who means it can allow that host by "
                    "name with --allow"
                )
            return kept

        async def close(self) -> None:
            await self._inner.close()

    return GuardedResolver


def _authority(host: str, port: int) -> Any:
    def for_scheme(scheme: str) -> str:
        default = 443 if scheme == "https" else 80
        return host.lower() if port in (0, default) else f"{host.lower()}:{port}"

    return for_scheme


def _shown(url: str) -> str:
    return repr(url.split("?", 1)[0].split("#", 1)[0][:200])


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - time.time())


class HttpReader:
    """Ranged GETs over HTTP(S), following only redirects the policy allows.

    Args:
        policy: the data access policy (redirect targets and connected addresses).
        timeout_s: limit of one request, headers and body.
        connect_timeout_s: limit of opening a connection.
        max_redirects: hops followed before giving up.
    """

    def __init__(
        self,
        policy: AccessPolicy,
        *,
        timeout_s: float = 30.0,
        connect_timeout_s: float = 10.0,
        max_redirects: int = 5,
    ) -> None:
        self.policy = policy
        self.timeout_s = timeout_s
        self.connect_timeout_s = min(connect_timeout_s, timeout_s)
        self.max_redirects = max_redirects
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _client(self) -> aiohttp.ClientSession:
        import aiohttp

        loop = asyncio.get_running_loop()
        if self._session is None or self._loop is not loop or self._session.closed:
            connector = aiohttp.TCPConnector(
                resolver=_resolver_class()(self.policy), limit=0, ttl_dns_cache=10
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(
                    total=self.timeout_s, sock_connect=self.connect_timeout_s
                ),
                auto_decompress=False,
                trust_env=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                headers={"Accept-Encoding": "identity", "User-Agent": "cogflight"},
            )
            # aiohttp re-sends a request once, unseen, when a pooled connection turns out
            # closed; off, so that every repeated request is the fetcher's, and counted.
            if hasattr(self._session, "_retry_connection"):
                setattr(self._session, "_retry_connection", False)  # noqa: B010
            self._loop = loop
        return self._session

    async def aclose(self) -> None:
        """Close the connection pool (on the loop that used it)."""
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()

    async def get_range(
        self,
        url: str,
        start: int,
        end: int,
        *,
        if_match: str | None = None,
        label: str | None = None,
    ) -> HttpResult:
        """The bytes ``[start, end)`` of ``url``, following allowed redirects.

        The answer is short when the object ends before ``end`` (the caller decides
        whether that is an error); it is never longer, nor another range.

        Raises:
            PermissionDeniedError: a redirect target or an address the policy refuses.
            RangePastEndError: the range starts past the end of the object.
            ObjectChangedError: ``If-Match`` failed (the object was replaced).
            RetryableError: a failure another request may cure (5xx, 429, reset,
                timeout, cut body, wrong range: a :class:`ContentError`).
            StorageError: any other failure (not found, denied, 4xx, too many redirects).
        """
        import aiohttp

        href = url
        headers = {"Range": f"bytes={start}-{end - 1}"}
        if if_match:
            headers["If-Match"] = if_match
        session = self._client()
        for _hop in range(self.max_redirects + 1):
            try:
                async with session.get(url, headers=headers, allow_redirects=False) as resp:
                    if resp.status in _REDIRECTS:
                        url = self._redirect(href, url, resp, label)
                        continue
                    return await self._answer(href, resp, start, end)
            except _AddressRefusedError as exc:
                raise PermissionDeniedError(f"{label or 'asset'} {_shown(url)}: {exc}") from exc
            except (PermissionDeniedError, StorageError):
                raise
            except TimeoutError as exc:
                raise RetryableError(href, f"timed out after {self.timeout_s:g} s") from exc
            except aiohttp.InvalidURL as exc:
                raise StorageError(href, f"invalid URL {_shown(str(exc.url))}") from exc
            except aiohttp.ClientPayloadError as exc:
                raise RetryableError(href, "the response body was cut short") from exc
            except aiohttp.ClientError as exc:
                first = str(exc).split("\n", 1)[0][:300] or type(exc).__name__
                raise RetryableError(href, f"{type(exc).__name__}: {first}") from exc
        raise StorageError(href, f"more than {self.max_redirects} redirects")

    def _redirect(
        self, href: str, url: str, resp: aiohttp.ClientResponse, label: str | None
    ) -> str:
        location = resp.headers.get("Location")
        if not location:
            raise StorageError(href, f"HTTP {resp.status} redirect without a Location")
        target = urljoin(url, location)
        if urlsplit(target).scheme.lower() not in ("http", "https"):
            raise PermissionDeniedError(
                f"{label or 'asset'}: the server redirected to a non-HTTP URL, which is never "
                "followed"
            )
        self.policy.check(target, asset=f"{label or 'asset'} redirected to", resolve=False)
        return target

    async def _answer(
        self, href: str, resp: aiohttp.ClientResponse, start: int, end: int
    ) -> HttpResult:
        status = resp.status
        h = resp.headers
        if status == 416:
            raise RangePastEndError(href, "the range starts past the end of the object (HTTP 416)")
        if status == 412:
            raise ObjectChangedError(href, CHANGED.format(what="its ETag no longer matches"))
        if status == 404:
            raise ObjectNotFoundError(href, "object not found")
        if status in (401, 403):
            raise AccessDeniedError(href, f"access denied (HTTP {status})")
        if status in (408, 425, 429) or status >= 500:
            raise RetryableError(
                href,
                f"HTTP {status} from the server",
                retry_after=_retry_after(h.get("Retry-After")),
            )
        if status not in (200, 206):
            raise StorageError(href, f"unexpected HTTP {status}")
        encoding = h.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise ContentError(href, f"the server encoded the range ({encoding}), not raw bytes")
        length = resp.content_length
        total: int | None
        if status == 200:
            # Range ignored. Only the whole object fitting inside the range is usable.
            if start != 0 or length is None or length > end:
                raise ContentError(
                    href, "the server ignored the Range header (200 with the whole object)"
                )
            a, b, total = 0, length, length
        else:
            m = _CONTENT_RANGE.match(h.get("Content-Range", "").strip())
            if m is None:
                raise ContentError(href, "a 206 answer without a valid Content-Range")
            a, b = int(m.group(1)), int(m.group(2)) + 1
            total = None if m.group(3) == "*" else int(m.group(3))
            want_end = end if total is None else min(end, total)
            if a != start or b != want_end or (total is not None and b > total):
                raise ContentError(
                    href,
                    f"the server sent bytes [{a}, {b}) for a request of [{start}, {end})",
                )
        if length is not None and length != b - a:
            raise ContentError(href, f"Content-Length {length} does not match the range [{a}, {b})")
        data = await resp.read()
        if len(data) != b - a:
            raise ContentError(href, f"the body has {len(data)} of {b - a} bytes")
        return HttpResult(memoryview(data), ObjectIdentity.from_headers(h, total))
