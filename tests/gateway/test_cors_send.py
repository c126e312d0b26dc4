"""``_cors.lean_send``: the CORS middleware's work on a response's start, for a
request without ``Origin`` done in fewer steps, the very same message as
Starlette's (any headers the response has, ``Vary`` among them or not); a
request with ``Origin``, and other Starlette code, Starlette's own way."""

from __future__ import annotations

import asyncio
import copy
import itertools
from typing import Any

import pytest
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware

from ssegate.gateway import _cors
from ssegate.gateway._cors import lean_send

ORIGIN = "https://app.example"

RESPONSE_HEADERS = [
    [],
    [(b"content-type", b"text/event-stream")],
    [(b"vary", b"Accept-Encoding")],
    [(b"x-a", b"1"), (b"vary", b"Accept"), (b"x-b", b"2"), (b"vary", b"Cookie\xe9")],
    ((b"vary", b"A"), (b"x", b"y")),  # a tuple, as a response may give them
]
REQUEST_HEADERS = [
    [],
    [(b"authorization", b"Bearer k")],
    [(b"origin", ORIGIN.encode())],
    [(b"origin", b"https://evil.example"), (b"x", b"y")],
]


def _cors_middleware(**options: Any) -> CORSMiddleware:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        pass

    return CORSMiddleware(app, **options)


def _sent(send_with: Any, message: Any, request: list[tuple[bytes, bytes]]) -> Any:
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    asyncio.run(send_with(message, send, Headers(raw=list(request))))
    return sent


@pytest.mark.parametrize(
    "options",
    [
        {"allow_origins": [ORIGIN]},
        {"allow_origins": ["*"]},
        {"allow_origins": ["*"], "allow_credentials": True},
        {"allow_origins": [], "expose_headers": ["X-Stream-Id"]},
    ],
)
def test_every_start_is_sent_as_starlette_sends_it(options: dict[str, Any]) -> None:
    cors = _cors_middleware(**options)
    lean = lean_send(cors)
    assert isinstance(lean, _cors._LeanSend)
    for response, request in itertools.product(RESPONSE_HEADERS, REQUEST_HEADERS):
        for message in (
            {"type": "http.response.start", "status": 200, "headers": response},
            {"type": "http.response.start", "status": 404},  # no headers at all
            {"type": "http.response.body", "body": b"x"},
        ):
            ours = _sent(lean, copy.deepcopy(message), request)
            theirs = _sent(cors.send, copy.deepcopy(message), request)
            assert ours == theirs, (message, request)
            assert [type(m.get("headers")) for m in ours] == [
                type(m.get("headers")) for m in theirs
            ]


def test_other_starlette_code_goes_starlettes_way(monkeypatch: pytest.MonkeyPatch) -> None:
    cors = _cors_middleware(allow_origins=[ORIGIN])
    monkeypatch.setitem(_cors._FINGERPRINTS, "Headers.getlist", "another starlette")
    assert lean_send(cors) == cors.send
