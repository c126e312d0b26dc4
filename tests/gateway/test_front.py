"""``_front``: HTTP requests pass the app's outer layers in two frames, and every
answer, by the front or the whole way, is the same (the lane's requests, other
routes, an endpoint that raises); requests FastAPI would instrument, and
stacks of other layers, go the whole way."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from gateway_support import settings
from starlette.middleware.errors import ServerErrorMiddleware
from test_lane import LIMIT, ORDINARY, REQUESTS, _raises, answers_of

from ssegate.gateway import create_app
from ssegate.gateway._auth import ScrubToken
from ssegate.gateway._begin import ChatCompletionBody
from ssegate.gateway._front import Front
from ssegate.gateway._gateway import principal
from ssegate.gateway._hot import HotRoute
from ssegate.server import GracefulShutdown
from ssegate.testing import serve

KEY = "chat-key-0123456789abcdef"
ORIGIN = "https://app.example"


class CountedFront:
    """The app's front, counting the requests it takes."""

    def __init__(self, front: Front) -> None:
        self.front = front
        self.calls = 0

    def takes(self, scope: Any) -> bool:
        return self.front.takes(scope)

    def __call__(self, scope: Any, receive: Any, send: Any) -> Any:
        self.calls += 1
        return self.front(scope, receive, send)


def _built(app: FastAPI, *, front: bool) -> tuple[FastAPI, CountedFront]:
    """``app`` with its stack built, and its front counted (or none: the whole way)."""
    app.middleware_stack = app.build_middleware_stack()
    made = app.front  # type: ignore[attr-defined]
    assert made is not None
    counted = CountedFront(made)
    app.front = counted if front else None  # type: ignore[attr-defined]
    return app, counted


def test_the_front_stands_for_the_outer_layers() -> None:
    app, _ = _built(create_app(settings()), front=True)
    front = app.front.front  # type: ignore[attr-defined]
    stack, exceptions, limit, scrub, graceful = front.chain
    assert stack is app.middleware_stack
    assert [type(layer).__name__ for layer in (stack, exceptions, limit)] == [
        "ServerErrorMiddleware",
        "ExceptionTelemetryMiddleware",
        "AppBodyLimitMiddleware",
    ]
    assert (type(scrub), type(graceful)) == (ScrubToken, GracefulShutdown)
    assert type(front.errors) is ServerErrorMiddleware
    assert (front.errors.handler, front.errors.debug) == (stack.handler, stack.debug)


@pytest.fixture(scope="module")
def gateways() -> Iterator[tuple[tuple[str, str], CountedFront]]:
    """The gateway by its front, and the same the whole way."""
    values: dict[str, Any] = {
        "keys": [{"id": "chat", "key": KEY, "scopes": ["chat"]}],
        "cors_origins": [ORIGIN],
        "limits": {"max_body_bytes": LIMIT, "max_streams_per_key": 1},
        "echo_tokens_per_second": 100.0,
    }
    (by_front, counted), (whole, _) = (
        _built(create_app(settings(**values)), front=True),
        _built(create_app(settings(**values)), front=False),
    )
    with ExitStack() as stack:
        urls = (stack.enter_context(serve(by_front)).url, stack.enter_context(serve(whole)).url)
        yield urls, counted


@pytest.mark.parametrize(
    ("what", "query", "headers", "body"), REQUESTS, ids=[r[0] for r in REQUESTS]
)
def test_every_stream_start_is_answered_the_same_by_the_front_or_the_whole_way(
    gateways: tuple[tuple[str, str], CountedFront],
    what: str,
    query: str,
    headers: dict[str, str],
    body: Any,
) -> None:
    urls, counted = gateways
    before = counted.calls
    answers = answers_of(urls, query, headers, body)
    assert answers[0] == answers[1]
    assert counted.calls - before == 1  # every HTTP request by the front


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("GET", "/v1/models", {"authorization": f"Bearer {KEY}"}),
        ("GET", "/v1/models", {}),
        ("GET", "/v1/models?access_token=" + KEY, {}),
        ("GET", "/no/such/page", {}),
        ("GET", "/healthz", {}),
        (
            "OPTIONS",
            "/v1/chat/completions",
            {"origin": ORIGIN, "access-control-request-method": "POST"},
        ),
        ("DELETE", "/v1/streams/gen_" + "0" * 32, {"authorization": f"Bearer {KEY}"}),
    ],
)
def test_other_requests_are_answered_the_same_by_the_front_or_the_whole_way(
    gateways: tuple[tuple[str, str], CountedFront],
    method: str,
    path: str,
    headers: dict[str, str],
) -> None:
    urls, counted = gateways
    before = counted.calls
    answers = []
    for url in urls:
        response = httpx.request(method, url + path, headers=headers)
        kept = {k: v for k, v in response.headers.items() if k != "date"}
        answers.append((response.status_code, kept, response.content))
    assert answers[0] == answers[1]
    assert counted.calls - before == 1


def test_what_an_endpoint_raises_is_answered_the_same() -> None:
    answers = []
    for front in (True, False):
        app = create_app(settings(cors_origins=[ORIGIN]))
        app.hot_routes[("POST", "/v1/chat/completions")] = HotRoute(  # type: ignore[attr-defined]
            ChatCompletionBody, _raises, principal
        )
        built, counted = _built(app, front=front)
        with serve(built) as server:
            response = httpx.post(
                server.url + "/v1/chat/completions",
                headers={"content-type": "application/json", "origin": ORIGIN},
                content=ORDINARY,
            )
        kept = {k: v for k, v in response.headers.items() if k != "date"}
        answers.append((response.status_code, kept, response.text))
        assert counted.calls == (1 if front else 0)
    assert answers[0] == answers[1]
    assert answers[0][0] == 500  # the error middleware's, outside CORS as ever
    assert "access-control-allow-origin" not in answers[0][1]


def _http(path: str = "/v1/models") -> dict[str, Any]:
    return {"type": "http", "path": path, "method": "GET", "headers": [], "query_string": b""}


def test_requests_fastapi_would_instrument_go_the_whole_way() -> None:
    app, counted = _built(create_app(settings()), front=True)
    front = counted.front
    assert front.takes(_http())
    assert not front.takes({**_http(), "type": "websocket"})
    assert not front.takes({"type": "lifespan"})
    assert not front.takes({**_http(), "fastapi.telemetry": object()})
    from opentelemetry import trace

    saved = trace._TRACER_PROVIDER
    trace._TRACER_PROVIDER = object()  # type: ignore[assignment]  # an SDK's, configured since
    try:
        assert app._native_telemetry.enabled()  # type: ignore[attr-defined]
        assert not front.takes(_http())
    finally:
        trace._TRACER_PROVIDER = saved
    assert front.takes(_http())
    app.root_path = "/gateway"
    assert not front.takes(_http())
    app.root_path = ""
    scrub = front.chain[3]
    inner, scrub.app = scrub.app, ScrubToken(scrub.app)  # a layer put in since
    assert not front.takes(_http())
    scrub.app = inner
    assert front.takes(_http())


def test_no_front_over_other_layers() -> None:
    app = create_app(settings())
    stack: Any = app.build_middleware_stack()
    assert Front.over(app, stack) is not None
    assert Front.over(app, stack.app) is None  # not from the top
    scrub = stack.app.app.app
    inner, scrub.app = scrub.app, ScrubToken(scrub.app)  # one more layer between
    assert Front.over(app, stack) is None
    scrub.app = inner
    app.max_body_size = 1000  # FastAPI's own body limit: its middleware acts
    assert Front.over(app, stack) is None
