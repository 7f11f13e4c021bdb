"""Bearer tokens: the token file and the middleware that checks every call.

A token file holds one ``TOKEN`` (every Collection) or ``TOKEN name,name`` per
line. Each call must send ``authorization: Bearer <token>``; the token is compared
with every known one in constant time. A token is never logged: limits and logs
name it by :func:`principal`, the start of its hash.

Concurrency policy: the factory is immutable after construction; gRPC may call
it from any thread.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from pyarrow import flight

__all__ = ["AuthFactory", "load_tokens", "principal"]


def load_tokens(path: str | os.PathLike[str]) -> dict[str, frozenset[str] | None]:
    """Read a token file: one ``TOKEN`` (all Collections) or ``TOKEN name,name`` per line."""
    tokens: dict[str, frozenset[str] | None] = {}
    for n, raw in enumerate(Path(path).read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) > 2 or len(parts[0]) < 16:
            raise ValueError(
                f"{path}:{n}: expected 'TOKEN [collection,...]' with a token of "
                "at least 16 characters"
            )
        tokens[parts[0]] = frozenset(parts[1].split(",")) if len(parts) == 2 else None
    if not tokens:
        raise ValueError(f"{path}: no tokens")
    return tokens


def principal(token: bytes) -> str:
    """How a token appears in limits and logs: never in clear, as the start of its hash."""
    return "sha256:" + hashlib.sha256(token).hexdigest()[:12]


class AuthMiddleware(flight.ServerMiddleware):  # type: ignore[misc]
    """What a call's token may read, and how limits and logs name it."""

    def __init__(self, allowed: frozenset[str] | None, principal: str) -> None:
        self.allowed = allowed
        self.principal = principal


class AuthFactory(flight.ServerMiddlewareFactory):  # type: ignore[misc]
    """Bearer tokens: ``authorization: Bearer <token>`` on every call.

    ``refused`` is told the method (``DoGet``) of each call refused here (metrics).
    """

    def __init__(
        self,
        tokens: Mapping[str, frozenset[str] | None],
        refused: Callable[[str], None] | None = None,
    ) -> None:
        self._tokens = [(t.encode(), allowed) for t, allowed in tokens.items()]
        self._refused = refused

    def start_call(self, info: flight.CallInfo, headers: dict[str, list[str]]) -> AuthMiddleware:
        """The call's middleware; UNAUTHENTICATED without a known token."""
        try:
            return self._check(headers)
        except flight.FlightUnauthenticatedError:
            if self._refused is not None:
                method = str(getattr(info.method, "name", info.method)).rsplit(".", 1)[-1]
                self._refused("".join(w.capitalize() for w in method.split("_")))
            raise

    def _check(self, headers: dict[str, list[str]]) -> AuthMiddleware:
        values = headers.get("authorization") or headers.get("Authorization") or []
        if not values:
            raise flight.FlightUnauthenticatedError(
                "missing credentials: send the header 'authorization: Bearer <token>'"
            )
        scheme, _, token = str(values[0]).partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise flight.FlightUnauthenticatedError("expected 'authorization: Bearer <token>'")
        given = token.strip().encode()
        match = None
        for known, allowed in self._tokens:  # compare with every token, in constant time
            if hmac.compare_digest(known, given):
                match = (known, allowed)
        if match is None:
            raise flight.FlightUnauthenticatedError("invalid token")
        return AuthMiddleware(match[1], principal(match[0]))
