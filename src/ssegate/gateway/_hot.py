"""Hot routes: the request every stream starts with, answered without FastAPI's per-request work.

Each ``POST /v1/chat/completions`` is a stream start, and a gateway holding
10 000 one-minute streams starts ~170 a second. FastAPI handles each request
with work this route does not need: every route's pattern tried in turn, the
content type parsed with ``email.message``, the endpoint's context extracted,
the dependencies solved, and two exit stacks and an exception wrapper entered
that stay open, with their closures, frames and coroutines, for as long as the
stream runs (the response is sent from inside them). Measured in
``benchmarks/stream_starts.py`` against the tree before (docs/gateway.md, with
the routes made once per model name): a stream's CPU 0.79 against 0.93 ms, its
start 590 Python calls against 808, and an open stream 172 objects for the
collector to walk against 217.

``HotRoutes`` sits between the app's exception middleware and its router. A
request to a hot route whose body is ordinary (``Content-Type:
application/json``, JSON the route's body model accepts) is answered here: the
route's own endpoint function is called with the validated body, the request
and the principal, exactly as FastAPI would call it. Anything else goes the
whole FastAPI way with its body replayed, so every refusal (422 naming the
field, invalid JSON, a 401 first when the key is wrong too) is FastAPI's and
the handlers' as before, and the OpenAPI schema is the route's. What the
endpoint raises reaches the same exception handlers (the exception
middleware around this), before the response starts. An app with dependency
overrides (``app.dependency_overrides``, e.g. another ``principal``) is
answered FastAPI's way throughout, where the overrides apply.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from ._auth import Principal
from ._limits import Replay

__all__ = ["HotRoute", "HotRoutes"]

Endpoint = Callable[[Any, Request, Principal], Awaitable[Response]]
Authenticate = Callable[[Request], Awaitable[Principal]]

_JSON = b"application/json"


class HotRoute:
    """``endpoint(body, request, principal)`` for bodies ``model`` accepts."""

    __slots__ = ("authenticate", "endpoint", "model")

    def __init__(self, model: type[BaseModel], endpoint: Endpoint, authenticate: Authenticate):
        self.model = model
        self.endpoint = endpoint
        self.authenticate = authenticate

    def ordinary(self, headers: list[tuple[bytes, bytes]], body: bytes) -> BaseModel | None:
        """The body as the model, when FastAPI would take it as it is; else ``None``."""
        for name, value in headers:
            if name == b"content-type":
                if value.partition(b";")[0].strip().lower() != _JSON:
                    return None
                break
        else:
            return None
        try:
            # pydantic's own parser first (1.4 against 3.3 us for a stream
            # start's body): where it takes a body, the model is the one FastAPI
            # makes (json.loads, then the model in Python mode; tested on random
            # JSON, test_hot_routes). It refuses some that json.loads takes (a
            # lone surrogate, a byte order mark): those go FastAPI's own steps.
            return self.model.model_validate_json(body)
        except Exception:
            pass
        try:
            return self.model.model_validate(json.loads(body))
        except Exception:  # refused: FastAPI's way says why, in its words
            return None


class HotRoutes:
    """ASGI app: hot routes by (method, path), every other request to ``app``."""

    def __init__(self, app: Any, routes: dict[tuple[str, str], HotRoute], fastapi: FastAPI) -> None:
        self.app = app
        self.routes = routes
        self.fastapi = fastapi

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("root_path") or self.fastapi.dependency_overrides:
            await self.app(scope, receive, send)
            return
        route = self.routes.get((scope["method"], scope["path"]))
        if route is None:
            await self.app(scope, receive, send)
            return
        response = await self._answer(route, scope, receive, send)
        # Sent from this frame, which holds nothing else while the stream runs.
        if response is not None:
            await response(scope, receive, send)

    async def _answer(
        self, route: HotRoute, scope: Any, receive: Any, send: Any
    ) -> Response | None:
        """The endpoint's response (``None``: answered the whole FastAPI way, or gone)."""
        chunks = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # gone before its body arrived
                return None
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        parsed = route.ordinary(scope["headers"], body)
        if parsed is None:
            await self.app(scope, Replay(body, receive), send)
            return None
        request = Request(scope, receive, send)
        return await route.endpoint(parsed, request, await route.authenticate(request))
