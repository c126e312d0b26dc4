"""``create_app(settings)``: the gateway as an ASGI app (FastAPI).

It only wires the parts together: the store (memory or Redis), one ``Hub``
reading it for every local reader, the generation ``Runner``, the models, the
metrics registry, and the middleware (in order from the outside: the query
token scrubbed before anything logs, the graceful shutdown that tells every
open stream to reconnect elsewhere when the process is asked to stop, CORS,
the body size limit). Each route lives in the module of its concern; the pages
in ``_pages``. The request every stream starts with (``POST
/v1/chat/completions``) is answered without FastAPI's per-request work when its
body is ordinary (``_hot``).

At startup the process answers at once; the local model loads in the
background (``/readyz`` says when it is ready). ``sleep`` and ``clock`` are
injected for tests (the echo model's pace, the detach grace period).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.exceptions import ExceptionMiddleware

from ..llm.providers import Provider
from ..server import GracefulShutdown
from ..streams import Hub, MemoryStore, StreamStore
from . import _chat, _dashboard, _ops, _pages, _static, _streams, _topics
from ._auth import ScrubToken
from ._begin import ChatCompletionBody
from ._errors import install_error_handlers
from ._front import Front
from ._gateway import Gateway, principal
from ._hot import HotRoute, HotRoutes
from ._lane import HotLane
from ._limits import BodyLimit
from ._metrics import Metrics
from ._models import Models
from ._reading import RAW_SEND_KEY
from ._runner import Runner
from ._settings import Settings

__all__ = ["create_app"]


class _GatewayApp(FastAPI):
    """FastAPI, handing event streams the ``send`` it was called with.

    Every message a response sends passes through each middleware's ``send``
    wrapper (Starlette's error middleware, its exception handler, CORS): four
    coroutines per token per stream. They only look at ``http.response.start``
    (CORS adds its headers there, the others note that the response started),
    so an event stream sends its start through them and its body messages
    straight to this ``send`` (``Reader``). Only while the middleware is the
    gateway's own: one added later may change bodies, and then every message
    goes the whole way. And the hot routes (``_hot``) answered inside its
    exception middleware, their ordinary requests by the lane over the
    layers from CORS in (``_lane``); HTTP requests through the outer layers
    in two frames (``_front``).
    """

    own_middleware = -1

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        #: Routes answered without FastAPI's per-request work (``_hot``); set by
        #: ``create_app``, read when the middleware stack is built (the first request).
        self.hot_routes: dict[tuple[str, str], HotRoute] = {}
        #: The outer layers in fewer frames (``_front``), once the stack is built.
        self.front: Front | None = None
        super().__init__(*args, **kwargs)

    def build_middleware_stack(self) -> Any:
        # The hot routes go right inside the exception middleware, so that what
        # they raise is answered by the app's handlers, as a route's would be.
        stack: Any = super().build_middleware_stack()
        outer = stack
        while getattr(outer, "app", None) is not None:
            if isinstance(outer, ExceptionMiddleware):
                outer.app = HotRoutes(outer.app, self.hot_routes, self)
                break
            outer = outer.app
        # And their ordinary requests take the lane over the layers from CORS in.
        outer = stack
        while getattr(outer, "app", None) is not None:
            if isinstance(outer.app, CORSMiddleware):
                lane = HotLane.over(outer.app)
                if lane is not None:
                    outer.app = lane
                break
            outer = outer.app
        self.front = Front.over(self, stack)
        return stack

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if len(self.user_middleware) != self.own_middleware:
            await super().__call__(scope, receive, send)
            return
        # The server's send is a bound method of its request cycle, which holds
        # the scope: taken out again at the end, or every connection would stay
        # in a reference cycle (cycle -> scope -> send -> cycle) until a full
        # collection, with its transport and buffers.
        scope[RAW_SEND_KEY] = send
        try:
            front = self.front
            if front is not None and front.takes(scope):
                await front(scope, receive, send)
            else:
                await super().__call__(scope, receive, send)
        finally:
            del scope[RAW_SEND_KEY]


def _store(settings: Settings) -> StreamStore:
    if settings.store == "memory":
        return MemoryStore(max_len=settings.retention_events, ttl=settings.retention_seconds)
    from ..streams.redis import RedisStore

    return RedisStore(
        settings.store,
        prefix=settings.redis_prefix,
        max_len=settings.retention_events,
        ttl=settings.retention_seconds,
    )


def create_app(
    settings: Settings | None = None,
    *,
    store: StreamStore | None = None,
    local: Provider | None = None,
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> FastAPI:
    """The gateway for ``settings`` (defaults: ``Settings()``, no environment read).

    ``store`` replaces the one the settings name; ``local`` the embedded model's
    provider (tests share one loaded engine).
    """
    settings = settings if settings is not None else Settings.model_construct()
    metrics = Metrics()
    models = Models(settings, sleep=sleep, local=local)
    gw = Gateway(settings, store if store is not None else _store(settings), models, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            stack.push_async_callback(models.aclose)
            await stack.enter_async_context(gw.store)
            # Background work of the app: the local model's load, presence marks.
            loading = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(loading.cancel_scope.cancel)
            # The model loads at start when it is the default (what /readyz waits
            # for); otherwise on the first request for it (which waits with
            # keep-alives meanwhile): nobody pays 550 MB for a model unused.
            models.loader = loading
            if settings.local.preload and not models.ready(settings.default_model):
                models.want_local()
            loading.start_soon(gw.presence.run, name="ssegate-presence")
            gw._hub = await stack.enter_async_context(Hub(gw.store))
            gw._runner = await stack.enter_async_context(
                Runner(
                    gw.store,
                    metrics,
                    grace=settings.detach_grace,
                    lease_ttl=settings.lease_ttl,
                    lease_renew=settings.lease_renew,
                    sleep=sleep,
                    clock=clock,
                    elsewhere=gw.presence.elsewhere,
                    shutdown_wait=settings.shutdown_timeout,
                )
            )
            yield

    app = _GatewayApp(
        title="ssegate",
        summary="An LLM streaming gateway: OpenAI-compatible, resumable, stoppable SSE.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.gateway = gw
    install_error_handlers(app, principal)
    for module in (_chat, _streams, _topics, _ops, _static, _dashboard, _pages):
        app.include_router(module.router)
    app.hot_routes = {
        ("POST", "/v1/chat/completions"): HotRoute(
            ChatCompletionBody, _chat.chat_completions, principal
        ),
    }
    app.add_middleware(BodyLimit, max_bytes=settings.limits.max_body_bytes)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(settings.cors_origins),
        allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "Last-Event-ID", "Cache-Control"],
        expose_headers=["X-Stream-Id", "Link", "Retry-After"],
        max_age=600,
    )
    app.add_middleware(GracefulShutdown)
    app.add_middleware(ScrubToken)
    app.own_middleware = len(app.user_middleware)
    return app
