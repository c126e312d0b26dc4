"""URLs: checked before anything is sent, and relative ones resolved against the client's base_url.

httpx-sse users write ``aconnect_sse(client, "GET", "/stream")`` with a client
that has a ``base_url`` (and, in tests, an ``httpx.ASGITransport``); ssegate's
clients take the same. The resolved URL is the origin credentials belong to.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest
from client_scripts import TRIO_HTTPX_GENERATORS
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from ssegate import AsyncEventSource, Event, EventSource, EventSourceResponse
from ssegate.client._base import http_url, join_base_url
from ssegate.server import SSE_HEADERS, wsgi_stream


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "127.0.0.1:8080/v1",
            "'127.0.0.1:8080/v1' is not a URL: it needs http:// or https:// in front "
            "(did you mean 'http://127.0.0.1:8080/v1'?)",
        ),
        (
            "notaurl",
            "'notaurl' is not a URL: it needs http:// or https:// in front "
            "(did you mean 'http://notaurl'?)",
        ),
        ("ftp://example.com/x", "'ftp://example.com/x' is not an http:// or https:// URL"),
        ("ws://example.com/x", "'ws://example.com/x' is not an http:// or https:// URL"),
        (
            "http://127.0.0.1:99999/v1",
            "'http://127.0.0.1:99999/v1' has a port out of range: 99999 (ports are 1 to 65535)",
        ),
        ("http://h:0/", "'http://h:0/' has a port out of range: 0 (ports are 1 to 65535)"),
        ("http://", "'http://' has no host"),
        ("https:///x", "'https:///x' has no host"),
        ("http://a b/", "'http://a b/' does not name a valid host"),
        ("http://[::1", "'http://[::1' is not a valid URL: Invalid port: ':1'"),
        ("/stream", "'/stream' is a path, not a URL: it needs http:// or https:// and a host"),
    ],
)
def test_http_url_says_what_is_wrong(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        http_url(value)


@pytest.mark.parametrize(
    "value",
    [
        "http://127.0.0.1:8000/v1/chat/completions?x=1",
        "https://u:p@example.com/",
        "http://[::1]:8080/s",
        "http://bücher.example/s",
        "http://my_service:8000/",
        "HTTPS://EXAMPLE.COM:65535",
    ],
)
def test_http_url_accepts(value: str) -> None:
    assert http_url(value) == httpx.URL(value)


@pytest.mark.parametrize(
    ("base", "url"),
    [
        ("http://api.test", "/stream"),
        ("http://api.test/v1", "/stream"),
        ("http://api.test/v1/", "stream?after=3"),
        ("https://u:p@api.test:8443/v1", "/a/b?c=d"),
        ("http://api.test/v1", ""),
        ("http://api.test/v1", "http://other.test/x"),
    ],
)
def test_relative_urls_go_where_httpx_sends_them(base: str, url: str) -> None:
    with httpx.Client(base_url=base) as client:
        assert join_base_url(url, client.base_url) == client.build_request("GET", url).url
        assert EventSource(url, client=client).url == client.build_request("GET", url).url


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "/stream",
            "EventSource needs an http:// or https:// URL: '/stream' is a relative URL: pass an "
            "absolute http:// or https:// URL, or client=httpx.Client(base_url=...) to resolve "
            "it against",
        ),
        (
            "localhost:8000/stream",
            "EventSource needs an http:// or https:// URL: 'localhost:8000/stream' is not a URL: "
            "it needs http:// or https:// in front (did you mean 'http://localhost:8000/stream'?)",
        ),
    ],
)
def test_a_relative_url_needs_a_base_url(url: str, message: str) -> None:
    for client in (None, httpx.Client()):  # no client, or one without a base_url
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            EventSource(url, client=client)


@pytest.mark.parametrize("url", ["//other.test/x", "http:/x", "http://"])
def test_half_urls_are_refused_not_merged(url: str) -> None:
    # httpx would append these to the base URL's path; they are mistakes.
    with (
        httpx.Client(base_url="http://api.test/v1") as client,
        pytest.raises(ValueError, match="EventSource needs an http:// or https:// URL: "),
    ):
        EventSource(url, client=client)


# -- in-process apps, as httpx-sse users test -------------------------------


async def _stream(request: Request) -> Response:
    if request.headers.get("last-event-id") == "2":
        return Response(status_code=204)  # "do not reconnect"
    seen = {"auth": request.headers.get("authorization"), "host": request.headers["host"]}

    async def events() -> Any:
        yield Event("first", event="token", id="1")
        yield Event(f"{seen['auth']} at {seen['host']}", event="seen", id="2")

    return EventSourceResponse(events(), ping=None, retry=0)  # reconnect at once


async def _redirect(request: Request) -> Response:
    return RedirectResponse(request.query_params["to"], status_code=307)


ASGI_APP = Starlette(routes=[Route("/v1/stream", _stream), Route("/v1/redirect", _redirect)])


@pytest.mark.parametrize("backend", ["asyncio", pytest.param("trio", marks=TRIO_HTTPX_GENERATORS)])
def test_async_relative_url_with_asgi_transport(backend: str) -> None:
    async def main() -> list[Event]:
        transport = httpx.ASGITransport(ASGI_APP)
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test/v1") as client:
            source = AsyncEventSource(
                "/stream", client=client, headers={"Authorization": "Bearer k"}
            )
            async with source as events:
                assert source.url == httpx.URL("http://api.test/v1/stream")
                return [event async for event in events]

    assert anyio.run(main, backend=backend) == [
        Event("first", event="token", id="1", retry=0),
        Event("Bearer k at api.test", event="seen", id="2"),
    ]


@pytest.mark.parametrize(
    ("to", "seen"),
    [
        ("/v1/stream", "Bearer k at api.test"),  # same origin: the key goes along
        ("http://other.test/v1/stream", "None at other.test"),  # elsewhere: it stays home
    ],
)
def test_credentials_follow_the_resolved_origin(to: str, seen: str) -> None:
    async def main() -> list[Event]:
        transport = httpx.ASGITransport(ASGI_APP)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://api.test/v1", follow_redirects=True
        ) as client:
            source = AsyncEventSource(
                "redirect",
                params={"to": to},
                client=client,
                headers={"Authorization": "Bearer k"},
            )
            async with source as events:
                return [event async for event in events]

    assert anyio.run(main)[1] == Event(seen, event="seen", id="2")


def _wsgi_app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
    if environ.get("HTTP_LAST_EVENT_ID") == "2":
        start_response("204 No Content", [])
        return iter(())
    where = f"{environ['PATH_INFO']} at {environ['HTTP_HOST']}"
    start_response("200 OK", list(SSE_HEADERS.items()))
    events = [Event("first", event="token", id="1"), Event(where, event="seen", id="2")]
    return iter(wsgi_stream(events, ping=None, retry=0))


def test_sync_relative_url_with_wsgi_transport() -> None:
    transport = httpx.WSGITransport(_wsgi_app)
    with (
        httpx.Client(transport=transport, base_url="http://api.test/v1/") as client,
        EventSource("stream", client=client) as events,
    ):
        assert list(events) == [
            Event("first", event="token", id="1", retry=0),
            Event("/v1/stream at api.test", event="seen", id="2"),
        ]
