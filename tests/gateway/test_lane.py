"""``_lane``: ordinary stream starts skip the gateway's inner middleware layers, and
every answer, taken by the lane or through the layers, is the same (CORS, limits,
auth, refusals)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from gateway_support import settings
from starlette.middleware.cors import CORSMiddleware
from test_hot_routes import _answer

from ssegate.gateway import create_app
from ssegate.gateway._begin import ChatCompletionBody
from ssegate.gateway._errors import ApiError
from ssegate.gateway._gateway import principal
from ssegate.gateway._hot import HotRoute
from ssegate.gateway._lane import HotLane
from ssegate.server import GracefulShutdown
from ssegate.testing import serve

KEY = "chat-key-0123456789abcdef"
ORIGIN = "https://app.example"
MESSAGES = [{"role": "user", "content": "one two three"}]
ORDINARY = json.dumps({"model": "echo", "stream": True, "messages": MESSAGES}).encode()
JSON = {"content-type": "application/json"}
AUTH = {**JSON, "authorization": f"Bearer {KEY}"}
LIMIT = 1000  # a body over it still goes in one write (the 413 comes before it is read)


def _lane_of(stack: Any) -> tuple[Any, HotLane] | None:
    """The layer holding the lane, and the lane (``None``: there is none)."""
    while getattr(stack, "app", None) is not None:
        if isinstance(stack.app, HotLane):
            return stack, stack.app
        stack = stack.app
    return None


class Counted:
    """An ASGI app counting the HTTP requests it passes to ``app``."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.calls = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.calls += 1
        await self.app(scope, receive, send)


def _app(*, lane: bool, **values: Any) -> tuple[FastAPI, Counted]:
    """The app, and what counts the requests its layers answer (with the lane,
    those it does not take)."""
    return _app_stack(create_app(settings(**values)), lane=lane)


def _app_stack(app: FastAPI, *, lane: bool) -> tuple[FastAPI, Counted]:
    app.middleware_stack = app.build_middleware_stack()
    found = _lane_of(app.middleware_stack)
    assert found is not None
    holder, taken = found
    layers = Counted(taken.app)
    if lane:
        taken.app = layers  # type: ignore[assignment]
    else:  # the layers themselves, as before the lane
        holder.app = layers
    return app, layers


def test_the_lane_is_over_the_gateways_own_layers() -> None:
    found = _lane_of(create_app(settings()).build_middleware_stack())
    assert found is not None
    _, lane = found
    assert isinstance(found[0], GracefulShutdown)
    assert isinstance(lane.app, CORSMiddleware)
    assert lane.cors is lane.app
    assert list(lane.hot.routes) == [("POST", "/v1/chat/completions")]
    assert lane.limit.max_bytes == 1024 * 1024


def test_no_lane_over_other_layers() -> None:
    stack: Any = create_app(settings()).build_middleware_stack()
    found = _lane_of(stack)
    assert found is not None
    layers = found[1].app
    assert HotLane.over(layers) is not None
    assert HotLane.over(layers.app) is None  # not from the top of the inner layers
    limit = layers.app
    inner, limit.app = limit.app, CORSMiddleware(limit.app)  # one more layer between
    assert HotLane.over(layers) is None
    limit.app = inner

    exceptions = inner
    exceptions._exception_handlers[KeyError] = lambda request, exc: None
    assert HotLane.over(layers) is None  # a handler Starlette would run in a thread


@pytest.fixture(scope="module")
def gateways() -> Iterator[tuple[tuple[str, str], Counted]]:
    """The gateway as created (with the lane), and the same through the layers."""
    values: dict[str, Any] = {
        "keys": [{"id": "chat", "key": KEY, "scopes": ["chat"]}],
        "cors_origins": [ORIGIN],
        "limits": {"max_body_bytes": LIMIT, "max_streams_per_key": 1},
        "echo_tokens_per_second": 100.0,  # a held stream runs while the next one asks
    }
    (with_lane, by_layers), (without, _) = _app(lane=True, **values), _app(lane=False, **values)
    with ExitStack() as stack:
        urls = (stack.enter_context(serve(with_lane)).url, stack.enter_context(serve(without)).url)
        yield urls, by_layers


@pytest.fixture
def two_gateways(gateways: tuple[tuple[str, str], Counted]) -> tuple[str, str]:
    return gateways[0]


BIG = json.dumps({"model": "echo", "messages": MESSAGES, "pad": "x" * LIMIT}).encode()

#: (what, query, headers, body): each sent to both gateways.
REQUESTS: list[tuple[str, str, dict[str, str], Any]] = [
    ("ordinary stream", "", AUTH, ORDINARY),
    ("from an allowed origin", "", {**AUTH, "origin": ORIGIN}, ORDINARY),
    ("from another origin", "", {**AUTH, "origin": "https://evil.example"}, ORDINARY),
    (
        "not streamed, from an allowed origin",
        "",
        {**AUTH, "origin": ORIGIN},
        json.dumps({"model": "echo", "messages": MESSAGES, "max_tokens": 2}).encode(),
    ),
    (
        "a wrong key, from an allowed origin",
        "",
        {**JSON, "authorization": "Bearer no", "origin": ORIGIN},
        ORDINARY,
    ),
    ("no key", "", JSON, ORDINARY),
    ("the key in the query", f"?access_token={KEY}", JSON, ORDINARY),
    ("an escaped query", "?x=%20", AUTH, ORDINARY),
    (
        "an unknown model, from an allowed origin",
        "",
        {**AUTH, "origin": ORIGIN},
        json.dumps({"model": "gpt-9", "stream": True, "messages": MESSAGES}).encode(),
    ),
    ("bad JSON", "", {**AUTH, "origin": ORIGIN}, b"{"),
    ("too long by its length", "", {**AUTH, "origin": ORIGIN}, BIG),
    ("too long in chunks", "", {**AUTH, "origin": ORIGIN}, "chunks"),
]


#: What the lane leaves to the layers.
BY_LAYERS = {
    "bad JSON",
    "too long by its length",
    "too long in chunks",
}


def answers_of(urls: Iterable[str], query: str, headers: dict[str, str], body: Any) -> list[Any]:
    """What each gateway answers a stream start (one of ``REQUESTS``), for comparing."""
    answers = []
    for url in urls:
        content = iter([BIG[:LIMIT], BIG[LIMIT:]]) if body == "chunks" else body
        response = httpx.post(
            url + "/v1/chat/completions" + query, headers=headers, content=content
        )
        if response.status_code == 413:  # its body, without what the lengths change
            kept = {k: v for k, v in response.headers.items() if k != "date"}
            answers.append((413, response.json(), kept))
            continue
        answers.append(_answer(response))
    return answers


@pytest.mark.parametrize(
    ("what", "query", "headers", "body"), REQUESTS, ids=[r[0] for r in REQUESTS]
)
def test_every_answer_is_the_same_by_the_lane_or_the_layers(
    gateways: tuple[tuple[str, str], Counted],
    what: str,
    query: str,
    headers: dict[str, str],
    body: Any,
) -> None:
    urls, layers = gateways
    before = layers.calls
    lane, by_layers = answers_of(urls, query, headers, body)
    assert lane == by_layers
    # Taken by the lane: the ordinary requests, refused or not; the rest by the layers.
    assert layers.calls - before == (1 if what in BY_LAYERS else 0)
    if what == "from an allowed origin":
        assert lane["status"] == 200
        assert lane["headers"]["access-control-allow-origin"] == ORIGIN
        assert lane["headers"]["access-control-expose-headers"] == "X-Stream-Id, Link, Retry-After"
    if what == "a wrong key, from an allowed origin":
        assert lane["status"] == 401
        assert lane["headers"]["access-control-allow-origin"] == ORIGIN
    if what.startswith("too long"):
        assert lane[0] == 413


def test_too_many_streams_is_the_same_by_the_lane_or_the_layers(
    two_gateways: tuple[str, str],
) -> None:
    slow = json.dumps(
        {"model": "echo", "stream": True, "messages": [{"role": "user", "content": "w " * 300}]}
    ).encode()
    answers = []
    for url in two_gateways:
        with httpx.stream("POST", url + "/v1/chat/completions", headers=AUTH, content=slow) as held:
            assert held.status_code == 200
            answers.append(
                _answer(
                    httpx.post(
                        url + "/v1/chat/completions",
                        headers={**AUTH, "origin": ORIGIN},
                        content=ORDINARY,
                    )
                )
            )
        httpx.delete(url + "/v1/streams/" + held.headers["x-stream-id"], headers=AUTH)
    lane, layers = answers
    assert lane == layers
    assert lane["status"] == 429
    assert lane["headers"]["retry-after"] == "1"
    assert lane["headers"]["access-control-allow-origin"] == ORIGIN


class Boom(Exception):
    pass


async def _raises(body: Any, request: Any, who: Any) -> Any:
    raise Boom("no")


async def _raises_once_started(body: Any, request: Any, who: Any) -> Any:
    async def answer(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise ApiError(400, "too late")  # handled, but the response has started

    return answer


@pytest.mark.parametrize("endpoint", [_raises, _raises_once_started])
def test_what_the_endpoint_raises_is_answered_the_same(endpoint: Any) -> None:
    statuses = []
    for lane in (True, False):
        app = create_app(settings(cors_origins=[ORIGIN]))
        app.hot_routes[("POST", "/v1/chat/completions")] = HotRoute(
            ChatCompletionBody, endpoint, principal
        )
        built, layers = _app_stack(app, lane=lane)
        with serve(built) as server:
            try:
                response = httpx.post(
                    server.url + "/v1/chat/completions",
                    headers={**JSON, "origin": ORIGIN},
                    content=ORDINARY,
                )
                statuses.append((response.status_code, response.text, dict(response.headers)))
            except httpx.RemoteProtocolError:  # the server closed the started response
                statuses.append(("cut", "", {}))
        assert layers.calls == (0 if lane else 1)
    for status in statuses:
        status[2].pop("date", None)
    assert statuses[0] == statuses[1]
    if endpoint is _raises:  # the error middleware's 500, outside CORS as ever
        assert statuses[0] == (
            500,
            '{"error":{"message":"The gateway failed to answer this request.",'
            '"type":"server_error","code":"internal_error","param":null}}',
            {"server": "uvicorn", "content-length": "125", "content-type": "application/json"},
        )
    else:  # Starlette's RuntimeError: the started response is cut
        assert statuses[0] == ("cut", "", {})
