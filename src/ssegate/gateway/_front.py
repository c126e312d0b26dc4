"""``Front``: an HTTP request through the app's outer layers in two frames, not eight.

Between uvicorn and the gateway's inner layers (CORS in: ``_lane``) every
request passes FastAPI's ``__call__`` and Starlette's, the middleware FastAPI
puts outside the app's own (``ServerErrorMiddleware``,
``ExceptionTelemetryMiddleware``, ``AppBodyLimitMiddleware``), then the
gateway's outermost two (``ScrubToken``, ``GracefulShutdown``): a coroutine
frame each, made per request and passed again at every wake of the request's
task. With FastAPI's native telemetry off (asked per request, as FastAPI asks)
and no body limit of FastAPI's, those layers only pass the request on: the
telemetry middleware acts on a request FastAPI instrumented, the body limit
one on a limit set, and the gateway's two only put things in the scope. The
front does the same in fewer steps: Starlette's ``ServerErrorMiddleware``
(one of its own, with the app's handler and debug flag: the same 500s and
re-raise) around one plain call that scrubs the query token and puts the
shutdown in the scope, then the inner layers.

Only over exactly these layers, in this order (``Front.over``, when the
stack is built); anything else, and any request FastAPI would instrument,
goes the whole way (``_app._GatewayApp``).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from starlette.middleware.errors import ServerErrorMiddleware

from ..server import GracefulShutdown
from ._auth import ScrubToken

__all__ = ["Front"]


def _telemetry_middleware() -> tuple[type[Any], type[Any]] | None:
    """FastAPI's two middleware outside the app's own, where it has them."""
    try:
        from fastapi._body_limit import AppBodyLimitMiddleware
        from fastapi.telemetry._asgi import ExceptionTelemetryMiddleware
    except ImportError:
        return None
    return ExceptionTelemetryMiddleware, AppBodyLimitMiddleware


class _Scoped:
    """``ScrubToken`` and ``GracefulShutdown`` for an HTTP request: their work on
    the scope, then the inner layers' awaitable (no frame of its own)."""

    __slots__ = ("graceful",)

    def __init__(self, graceful: GracefulShutdown) -> None:
        self.graceful = graceful

    def __call__(self, scope: Any, receive: Any, send: Any) -> Any:
        ScrubToken.scrub(scope)
        graceful = self.graceful
        graceful.share(scope)
        return graceful.app(scope, receive, send)


class Front:
    """The outer layers of ``app``'s built ``stack`` for an HTTP request (see the
    module docstring): ``await front(scope, receive, send)`` where ``takes(scope)``."""

    __slots__ = ("app", "chain", "errors", "stack", "telemetry")

    def __init__(
        self,
        app: FastAPI,
        chain: tuple[Any, ...],
        errors: ServerErrorMiddleware,
        telemetry: Any,
    ) -> None:
        self.app = app
        #: The layers it stands for, outermost first (``takes``: each still the
        #: ``app`` of the one before).
        self.chain = chain
        self.stack = chain[0]
        self.errors = errors
        self.telemetry = telemetry

    @classmethod
    def over(cls, app: FastAPI, stack: Any) -> Front | None:
        """The front of ``stack`` (``app``'s built middleware) when its outer
        layers are exactly those of the module docstring; else ``None``."""
        kinds = _telemetry_middleware()
        telemetry = getattr(app, "_native_telemetry", None)
        if kinds is None or not callable(getattr(telemetry, "enabled", None)):
            return None
        exceptions = getattr(stack, "app", None)
        limit = getattr(exceptions, "app", None)
        scrub = getattr(limit, "app", None)
        graceful = getattr(scrub, "app", None)
        if not (
            type(stack) is ServerErrorMiddleware
            and type(exceptions) is kinds[0]
            and type(limit) is kinds[1]
            and type(scrub) is ScrubToken
            and type(graceful) is GracefulShutdown
            and getattr(app, "max_body_size", None) is None
            and hasattr(stack, "handler")
            and hasattr(stack, "debug")
        ):
            return None
        errors = ServerErrorMiddleware(_Scoped(graceful), handler=stack.handler, debug=stack.debug)
        return cls(app, (stack, exceptions, limit, scrub, graceful), errors, telemetry)

    def takes(self, scope: Any) -> bool:
        """Whether a request goes by the front: HTTP, the layers it was made for
        (none replaced since), no root path to set, and one FastAPI would not
        instrument."""
        app = self.app
        stack, exceptions, limit, scrub, graceful = self.chain
        built: Any = app.middleware_stack
        return (
            scope["type"] == "http"
            and built is stack
            and stack.app is exceptions
            and exceptions.app is limit
            and limit.app is scrub
            and scrub.app is graceful
            and not app.root_path
            and "fastapi.telemetry" not in scope
            and not self.telemetry.enabled()
        )

    def __call__(self, scope: Any, receive: Any, send: Any) -> Any:
        scope["app"] = self.app  # as Starlette's __call__
        return self.errors(scope, receive, send)
