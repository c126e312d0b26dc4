"""API keys and scopes on every route, the query token kept out of every log, CORS."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from gateway_support import events, settings

from ssegate.gateway import create_app

CHAT = "chat-key-0123456789abcdef"
PUB = "pub-key-0123456789abcdef"
SUB = "sub-key-0123456789abcdef"
OPS = "ops-key-0123456789abcdef"
KEYS = [
    {"id": "chat", "key": CHAT, "scopes": ["chat"]},
    {"id": "pub", "key": PUB, "scopes": ["publish"]},
    {"id": "sub", "key": SUB, "scopes": ["subscribe:prices/*"]},
    {"id": "ops", "key": OPS, "scopes": ["ops"]},
]
ORIGIN = "https://app.example.com"
BODY = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def server(gateway) -> Iterator[tuple[str, Records]]:  # type: ignore[no-untyped-def]
    records = Records()
    loggers = [logging.getLogger(n) for n in ("uvicorn.access", "uvicorn.error", "ssegate")]
    with gateway(
        uvicorn={"log_level": "info", "access_log": True}, keys=KEYS, cors_origins=[ORIGIN]
    ) as running:
        for logger in loggers:
            logger.addHandler(records)
        try:
            yield running.url, records
        finally:
            for logger in loggers:
                logger.removeHandler(records)


def stream_id(url: str) -> str:
    response = httpx.post(
        url + "/v1/streams", json=BODY, headers={"Authorization": f"Bearer {CHAT}"}
    )
    assert response.status_code == 201
    return str(response.json()["id"])


#: Routes anyone may call: operations, the API's own description, the pages and
#: their files (issue 14). Every other route of the app must be in ``GUARDED``.
PUBLIC = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("GET", "/redoc"),
    ("GET", "/"),
    ("GET", "/ssegate.js"),
    ("GET", "/ssegate.d.ts"),
    ("GET", "/topics"),
    ("GET", "/dashboard"),
    ("GET", "/static/{name}"),
    ("GET", "/favicon.ico"),
}
#: (method, path template) -> (a body, the key that may) for every guarded route.
GUARDED: dict[tuple[str, str], tuple[Any, str]] = {
    ("POST", "/v1/chat/completions"): (BODY, CHAT),
    ("GET", "/v1/models"): (None, CHAT),
    ("POST", "/v1/streams"): (BODY, CHAT),
    ("GET", "/v1/streams/{stream}"): (None, CHAT),
    ("DELETE", "/v1/streams/{stream}"): (None, CHAT),
    ("POST", "/v1/topics/{topic}"): ({"data": "1.1"}, PUB),
    ("GET", "/v1/topics/{topic}"): (None, SUB),
    ("GET", "/v1/dashboard/events"): (None, OPS),
}


def app_routes() -> set[tuple[str, str]]:
    """(method, path template) of every route the app serves (HEAD aside)."""
    found = set()

    def walk(routes: list[Any]) -> None:
        for route in routes:
            included = getattr(route, "original_router", None)  # FastAPI's include_router
            if included is not None:
                walk(included.routes)
            else:
                for method in route.methods or {"GET"}:
                    if method != "HEAD":
                        found.add((method, route.path_format))

    walk(create_app(settings(keys=KEYS)).routes)
    return found


def test_no_route_is_left_out_of_the_auth_tests() -> None:
    # A route added to the app must be listed here, guarded (and so tried below
    # without a key, with a wrong one and with one lacking its scope) or public.
    assert app_routes() - PUBLIC == set(GUARDED)


def routes(url: str) -> list[tuple[str, str, Any, str]]:
    """(method, path, body, the key that may) for every guarded route."""
    sid = stream_id(url)
    return [
        (
            method,
            template.format(stream=sid, topic="prices/eur")
            + ("?last_event_id=x" if template == "/v1/topics/{topic}" and method == "GET" else ""),
            body,
            key,
        )
        for (method, template), (body, key) in GUARDED.items()
    ]


def call(url: str, method: str, path: str, body: Any, headers: dict[str, str]) -> httpx.Response:
    """The response, its body read unless it is an event stream (the dashboard's
    feed never ends): what these tests look at is the status and the headers."""
    with httpx.Client(timeout=10) as client:
        request = client.build_request(method, url + path, json=body, headers=headers)
        response = client.send(request, stream=True)
        try:
            if not response.headers.get("content-type", "").startswith("text/event-stream"):
                response.read()
        finally:
            response.close()
    return response


def test_every_route_needs_a_key_with_its_scope(server: tuple[str, Records]) -> None:
    url, _ = server
    for method, path, body, allowed in routes(url):
        missing = call(url, method, path, body, {})
        assert missing.status_code == 401, path
        assert missing.json()["error"]["code"] == "missing_api_key"
        assert missing.headers["www-authenticate"] == "Bearer"
        wrong = call(url, method, path, body, {"Authorization": "Bearer not-a-key-at-all-00"})
        assert wrong.status_code == 401, path
        assert wrong.json()["error"]["code"] == "invalid_api_key"
        basic = call(url, method, path, body, {"Authorization": "Basic dXNlcjpwdw=="})
        assert basic.status_code == 401, path
        for key in (CHAT, PUB, SUB, OPS):
            response = call(url, method, path, body, {"Authorization": f"Bearer {key}"})
            if key == allowed:
                assert response.status_code not in (401, 403), path
            else:
                assert response.status_code == 403, (path, key)
                assert response.json()["error"]["code"] == "insufficient_scope"


def test_subscribe_scopes_match_topic_patterns(server: tuple[str, Records]) -> None:
    url, _ = server
    auth = {"Authorization": f"Bearer {SUB}"}
    assert call(url, "GET", "/v1/topics/news", None, auth).status_code == 403
    assert call(url, "GET", "/v1/topics/prices", None, auth).status_code == 403


def test_query_token_works_and_reaches_no_log(server: tuple[str, Records]) -> None:
    url, records = server
    sid = stream_id(url)
    response = httpx.get(f"{url}/v1/streams/{sid}?access_token={CHAT}&format=native")
    assert response.status_code == 200
    assert [e.event for e in events(response)] == ["token", "usage", "done"]
    bad = httpx.get(f"{url}/v1/streams/{sid}?access_token={SUB}")
    assert bad.status_code == 403
    encoded = httpx.get(f"{url}/v1/streams/{sid}?access%5Ftoken={CHAT}&format=aisdk")
    assert encoded.status_code == 200
    missing = httpx.get(f"{url}/v1/nope?access_token={CHAT}")
    assert missing.status_code == 404
    assert CHAT not in missing.text
    access = [line for line in records.lines if "/v1/streams/" in line]
    assert any("format=native" in line for line in access)  # the access log did run
    assert all(key not in line for line in records.lines for key in (CHAT, PUB, SUB))


def test_cors_preflight_and_responses(server: tuple[str, Records]) -> None:
    url, _ = server
    preflight = httpx.options(
        url + "/v1/chat/completions",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, last-event-id",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in preflight.headers["access-control-allow-methods"]
    other = httpx.options(
        url + "/v1/chat/completions",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert other.status_code == 400
    assert "access-control-allow-origin" not in other.headers
    for method, path, body, key in routes(url):
        response = call(
            url, method, path, body, {"Origin": ORIGIN, "Authorization": f"Bearer {key}"}
        )
        assert response.headers["access-control-allow-origin"] == ORIGIN, path
        refused = call(url, method, path, body, {"Origin": ORIGIN})
        assert refused.status_code == 401
        assert refused.headers["access-control-allow-origin"] == ORIGIN, path
        foreign = call(url, method, path, body, {"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in foreign.headers
    sid = stream_id(url)
    chat = httpx.post(
        url + "/v1/chat/completions",
        json={**BODY, "stream": True},
        headers={"Origin": ORIGIN, "Authorization": f"Bearer {CHAT}"},
    )
    exposed = chat.headers["access-control-expose-headers"].lower()
    assert "x-stream-id" in exposed
    assert "link" in exposed
    assert sid


def test_open_routes_need_no_key(server: tuple[str, Records]) -> None:
    url, _ = server
    for path in ("/healthz", "/metrics", "/docs", "/openapi.json"):
        assert httpx.get(url + path).status_code == 200, path


@pytest.mark.parametrize("content", [b"{not json", b"v\x7f\xf2", b'{"model": 1}', b"[]"])
def test_without_a_key_bad_input_is_401_not_a_description_of_it(
    server: tuple[str, Records], content: bytes
) -> None:
    url, _ = server
    for path in ("/v1/chat/completions", "/v1/streams", "/v1/topics/prices/eur"):
        response = httpx.post(
            url + path, content=content, headers={"content-type": "application/json"}
        )
        assert response.status_code == 401, path
        assert response.json()["error"]["code"] == "missing_api_key"
    bad_query = httpx.get(url + "/v1/streams/gen_" + "0" * 32 + "?format=xml")
    assert bad_query.status_code == 401
