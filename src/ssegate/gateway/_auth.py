"""API keys and their scopes.

A key comes as ``Authorization: Bearer <key>`` or, for a browser's
``EventSource`` (which cannot send headers), ``?access_token=<key>``. The
query token is taken out of the request before anything else sees it
(``ScrubToken``), so it reaches no log: not the access log, not an error
message, not a ``Link`` header.

Scopes: ``chat`` (chat completions, models, streams), ``publish`` (any topic),
``subscribe:<pattern>`` (topics matching the glob), ``ops`` (the dashboard's
feed). With no keys configured auth is off: every request is an anonymous
principal with every scope (the CLI then refuses to bind anything but
loopback), and the limits meant for a key (``max_streams_per_key``) apply to
each client address instead: one greedy local client cannot take every other
one's share. Behind a reverse proxy the address is the proxy's unless uvicorn
trusts its ``X-Forwarded-For`` (``--forwarded-allow-ips``; 127.0.0.1 by default).

Keys are compared in constant time (``hmac.compare_digest``), each against all.
"""

from __future__ import annotations

import fnmatch
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

from ._errors import ApiError
from ._settings import KeySettings

__all__ = ["ANONYMOUS", "TOKEN_SCOPE_KEY", "Auth", "Principal", "ScrubToken"]

#: Where ``ScrubToken`` leaves the query token in the ASGI scope.
TOKEN_SCOPE_KEY = "ssegate.access_token"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking: the key's id (for logs), what it may do, and the ``bucket``
    its limits count in (the key's id; ``anonymous@<address>`` with auth off)."""

    key_id: str
    scopes: frozenset[str]
    bucket: str = ""

    def __post_init__(self) -> None:
        if not self.bucket:
            object.__setattr__(self, "bucket", self.key_id)

    def allows(self, scope: str) -> bool:
        """Whether ``scope`` (``chat``, ``publish``, ``ops``, ``subscribe:<topic>``) is granted."""
        if scope in self.scopes or "*" in self.scopes:
            return True
        kind, _, topic = scope.partition(":")
        if kind != "subscribe" or not topic:
            return False
        return any(
            granted.startswith("subscribe:") and fnmatch.fnmatchcase(topic, granted[10:])
            for granted in self.scopes
        )


ANONYMOUS = Principal("anonymous", frozenset({"*"}))

#: Client addresses whose anonymous principal is kept (then the cache starts over).
_ANONYMOUS_KEPT = 4096


class Auth:
    """The configured keys; ``authenticate`` maps a request's token to a ``Principal``."""

    def __init__(self, keys: Sequence[KeySettings]) -> None:
        self._keys = [
            (key.key.get_secret_value().encode(), Principal(key.id, frozenset(key.scopes)))
            for key in keys
            if key.key is not None
        ]
        self._anonymous: dict[str, Principal] = {}

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def authenticate(
        self, authorization: str | None, query_token: str | None, client: str | None = None
    ) -> Principal:
        """The principal of a request; ``client`` (its address) buckets anonymous ones."""
        if not self._keys:
            if client is None:
                return ANONYMOUS
            anonymous = self._anonymous.get(client)
            if anonymous is None:  # one per address, made once (a request's cost otherwise)
                if len(self._anonymous) >= _ANONYMOUS_KEPT:
                    self._anonymous.clear()
                anonymous = Principal(ANONYMOUS.key_id, ANONYMOUS.scopes, f"anonymous@{client}")
                self._anonymous[client] = anonymous
            return anonymous
        token: str | None = None
        if authorization:
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                raise _unauthorized(
                    "Use 'Authorization: Bearer <key>' (or ?access_token= for EventSource).",
                    "invalid_authorization",
                )
            token = value.strip()
        elif query_token:
            token = query_token
        if token is None:
            raise _unauthorized(
                "An API key is required: 'Authorization: Bearer <key>' or ?access_token=<key>.",
                "missing_api_key",
            )
        given = token.encode()
        found: Principal | None = None
        for secret, principal in self._keys:
            if hmac.compare_digest(given, secret):
                found = principal
        if found is None:
            raise _unauthorized(
                "The API key is not valid.", "invalid_api_key", 'Bearer error="invalid_token"'
            )
        return found

    @staticmethod
    def require(principal: Principal, scope: str) -> None:
        if not principal.allows(scope):
            raise ApiError(
                403, f"This API key lacks the scope {scope!r}.", code="insufficient_scope"
            )


def _unauthorized(message: str, code: str, challenge: str = "Bearer") -> ApiError:
    return ApiError(401, message, code=code, headers={"WWW-Authenticate": challenge})


class ScrubToken:
    """ASGI middleware: move ``access_token`` from the query string into the scope.

    It must run first (outermost): the server's access log reads the same scope
    dict, so the token is gone from ``query_string`` before anything logs it.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.scrub(scope)
        await self.app(scope, receive, send)

    @staticmethod
    def scrub(scope: Any) -> None:
        """What it does to a request's ``scope`` before the app sees it."""
        query = scope.get("query_string", b"") if scope["type"] in ("http", "websocket") else b""
        # "%" too: "access%5Ftoken" is the same name once decoded, and must not slip by.
        if b"access_token" in query or b"%" in query:
            pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
            tokens = [v for k, v in pairs if k == "access_token"]
            if tokens:
                scope[TOKEN_SCOPE_KEY] = tokens[-1]
                kept = [(k, v) for k, v in pairs if k != "access_token"]
                scope["query_string"] = urlencode(kept).encode("latin-1")
