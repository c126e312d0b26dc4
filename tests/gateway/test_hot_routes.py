"""``_hot``: ordinary chat requests skip FastAPI's per-request work, and every answer,
taken that way or FastAPI's, is the same."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest
from gateway_support import events, settings
from hypothesis import given
from hypothesis import settings as settings_
from hypothesis import strategies as st
from starlette.middleware.exceptions import ExceptionMiddleware

from json_values import CHAT_FIELDS, json_values
from ssegate.gateway import create_app
from ssegate.gateway._auth import ANONYMOUS, Principal
from ssegate.gateway._begin import ChatCompletionBody
from ssegate.gateway._gateway import principal
from ssegate.gateway._hot import HotRoute, HotRoutes
from ssegate.testing import serve

KEY = "chat-key-0123456789abcdef"
MESSAGES = [{"role": "user", "content": "one two three"}]
ORDINARY = json.dumps({"model": "echo", "stream": True, "messages": MESSAGES}).encode()
JSON = {"content-type": "application/json"}


def test_the_hot_routes_sit_right_inside_the_exception_middleware() -> None:
    app = create_app(settings())
    layer: Any = app.build_middleware_stack()
    while not isinstance(layer, ExceptionMiddleware):
        layer = layer.app
    assert isinstance(layer.app, HotRoutes)
    assert list(layer.app.routes) == [("POST", "/v1/chat/completions")]
    assert layer.app.app is not None  # FastAPI's way: every other request


async def _anyone(request: object) -> Principal:
    return ANONYMOUS


@pytest.mark.parametrize(
    ("content_type", "body", "taken"),
    [
        (b"application/json", ORDINARY, True),
        (b"application/json; charset=utf-8", ORDINARY, True),
        (b"Application/JSON", ORDINARY, True),
        (None, ORDINARY, False),  # FastAPI refuses it: its words
        (b"text/plain", ORDINARY, False),
        (b"application/vnd.api+json", ORDINARY, False),  # FastAPI takes it: its way
        (b"application/json", b"", False),
        (b"application/json", b"{", False),
        (b"application/json", b"[1]", False),
        (b"application/json", b'{"model": "echo"}', False),
        (b"application/json", b'{"model": "echo", "messages": [], "stream": "yes"}', False),
        (b"application/json", b'{"model": "echo", "messages": [{}], "max_tokens": 1.0}', False),
    ],
)
def test_only_bodies_fastapi_would_take_as_they_are_go_the_hot_way(
    content_type: bytes | None, body: bytes, taken: bool
) -> None:
    route = HotRoute(ChatCompletionBody, None, _anyone)  # type: ignore[arg-type]
    headers = [(b"host", b"x")] + ([(b"content-type", content_type)] if content_type else [])
    parsed = route.ordinary(headers, body)
    assert (parsed is not None) == taken
    if taken:
        assert parsed == ChatCompletionBody.model_validate(json.loads(body))


def _fastapis(body: bytes) -> ChatCompletionBody | None:
    """The body as FastAPI makes it (json.loads, the model in Python mode), or None."""
    try:
        return ChatCompletionBody.model_validate(json.loads(body))
    except Exception:
        return None


def _same(ours: ChatCompletionBody | None, theirs: ChatCompletionBody | None) -> None:
    assert (ours is None) == (theirs is None)
    if ours is not None and theirs is not None:
        # Every value and its type, the fields sent and the extras in their order.
        assert repr(ours.model_dump()) == repr(theirs.model_dump())
        assert ours.model_fields_set == theirs.model_fields_set
        assert list((ours.model_extra or {}).items()).__repr__() == repr(
            list((theirs.model_extra or {}).items())
        )
        kinds = [type(v) for v in ours.model_dump().values()]
        assert kinds == [type(v) for v in theirs.model_dump().values()]


@pytest.mark.parametrize(
    "body",
    [
        b'{"model": "m", "messages": [{"role": "user", "content": "\\ud800"}]}',  # lone surrogate
        b'\xef\xbb\xbf{"model": "m", "messages": [{}]}',  # a byte order mark
        b'{"model": "m", "messages": [{}], "t": NaN, "u": -Infinity, "v": 1e400, "w": -0.0}',
        b'{"model": "m", "model": "n", "messages": [{}], "temperature": 1, "top_p": 1e2}',
        b'{"model": "m", "messages": [{}], "x": 123456789012345678901234567890, "y": 0.1e1}',
        b'{"model": "m", "messages": [{"content": "a\\u0000\\u00e9\xc3\xa9\\/"}]}',
        b'{"model": "m", "messages": [{}], "t": ' + b"[" * 300 + b"]" * 300 + b"}",
        b'{"model": "m", "messages": [{"content": "a\x01b"}]}',  # a raw control character
        b'{"model": "m", "messages": [{}]} x',
        b'{"model": "m", "messages": [{"content": "a\xffb"}]}',  # not UTF-8
        b'{"model": "m", "messages": [{"content": "a\xed\xa0\x80b"}]}',  # an encoded surrogate
        '{"model": "m", "messages": [{}]}'.encode("utf-16-le"),  # json.loads detects UTF-16
        b' \t{"model": "m", "messages": [{}]}\r\n',
    ],
)
def test_the_hot_way_makes_the_body_fastapi_makes(body: bytes) -> None:
    route = HotRoute(ChatCompletionBody, None, _anyone)  # type: ignore[arg-type]
    _same(route.ordinary([(b"content-type", b"application/json")], body), _fastapis(body))


@settings_(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.sampled_from([*CHAT_FIELDS, "x", "top_p"]), json_values, max_size=6).map(
        lambda d: {"model": "m", "messages": [{"role": "user"}], **d}
    ),
    st.booleans(),
)
def test_random_bodies_are_made_as_fastapi_makes_them(fields: dict[str, Any], ascii: bool) -> None:
    body = json.dumps(fields, ensure_ascii=ascii).encode()
    route = HotRoute(ChatCompletionBody, None, _anyone)  # type: ignore[arg-type]
    _same(route.ordinary([(b"content-type", b"application/json")], body), _fastapis(body))


#: Requests, each sent to a gateway with the hot route and to one without.
REQUESTS: list[tuple[str, dict[str, str], bytes]] = [
    ("ordinary stream", {**JSON, "authorization": f"Bearer {KEY}"}, ORDINARY),
    (
        "not streamed",
        {**JSON, "authorization": f"Bearer {KEY}"},
        json.dumps({"model": "echo", "messages": MESSAGES, "max_tokens": 2}).encode(),
    ),
    ("no key", JSON, ORDINARY),
    ("a wrong key", {**JSON, "authorization": "Bearer nope"}, ORDINARY),
    ("no key and bad JSON", JSON, b"{"),
    ("bad JSON", {**JSON, "authorization": f"Bearer {KEY}"}, b"{"),
    ("no content type", {"authorization": f"Bearer {KEY}"}, ORDINARY),
    (
        "a bad field",
        {**JSON, "authorization": f"Bearer {KEY}"},
        json.dumps({"model": "echo", "messages": MESSAGES, "max_tokens": 0}).encode(),
    ),
    (
        "an unknown model",
        {**JSON, "authorization": f"Bearer {KEY}"},
        json.dumps({"model": "gpt-9", "stream": True, "messages": MESSAGES}).encode(),
    ),
    (
        "a bad message",
        {**JSON, "authorization": f"Bearer {KEY}"},
        json.dumps({"model": "echo", "messages": [{"role": "robot", "content": "x"}]}).encode(),
    ),
    ("not UTF-8", {**JSON, "authorization": f"Bearer {KEY}"}, b'{"model": "\xff"}'),
]


def _answer(response: httpx.Response) -> dict[str, Any]:
    """What must be the same either way (ids and times aside)."""
    headers = {k: v for k, v in response.headers.items() if k not in ("date", "content-length")}
    for name in ("x-stream-id", "link"):
        if name in headers:
            headers[name] = "<stream>"
    answer: dict[str, Any] = {"status": response.status_code, "headers": headers}
    if headers.get("content-type", "").startswith("text/event-stream"):
        answer["events"] = [
            {k: v for k, v in json.loads(e.data).items() if k not in ("id", "created")}
            if e.data != "[DONE]"
            else e.data
            for e in events(response)
        ]
    else:
        body = response.json()
        if "id" in body:  # a whole completion
            body["id"] = body["created"] = None
        answer["body"] = body
    return answer


@pytest.fixture(scope="module")
def two_gateways() -> Iterator[tuple[str, str]]:
    """The gateway as created, and the same with no hot routes (FastAPI's way)."""
    keys = [{"id": "chat", "key": KEY, "scopes": ["chat"]}]
    hot = create_app(settings(keys=keys))
    plain = create_app(settings(keys=keys))
    plain.hot_routes = {}  # type: ignore[attr-defined]
    with ExitStack() as stack:
        yield stack.enter_context(serve(hot)).url, stack.enter_context(serve(plain)).url


@pytest.mark.parametrize(("what", "headers", "body"), REQUESTS, ids=[r[0] for r in REQUESTS])
def test_every_answer_is_the_same_either_way(
    two_gateways: tuple[str, str], what: str, headers: dict[str, str], body: bytes
) -> None:
    hot, plain = (
        _answer(httpx.post(url + "/v1/chat/completions", headers=headers, content=body))
        for url in two_gateways
    )
    assert hot == plain
    if what == "ordinary stream":
        assert hot["status"] == 200
        assert [e if isinstance(e, str) else e["choices"][0]["delta"] for e in hot["events"]] == [
            {"role": "assistant", "content": ""},
            {"content": "one"},
            {"content": " two"},
            {"content": " three"},
            {},
            "[DONE]",
        ]


def test_dependency_overrides_are_honoured(gateway) -> None:  # type: ignore[no-untyped-def]
    """An app overriding ``principal`` is answered FastAPI's way, where overrides apply."""
    app = create_app(settings(keys=[{"id": "chat", "key": KEY, "scopes": ["chat"]}]))

    async def nobody() -> Principal:
        return Principal("nobody", frozenset())

    app.dependency_overrides[principal] = nobody
    with serve(app) as server:
        response = httpx.post(
            server.url + "/v1/chat/completions",
            headers={**JSON, "authorization": f"Bearer {KEY}"},
            content=ORDINARY,
        )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "insufficient_scope"
