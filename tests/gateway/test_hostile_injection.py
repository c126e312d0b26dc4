"""Injection through every API input, against a real uvicorn on 127.0.0.1 (raw
paths sent with ``http.client``, which, unlike httpx, normalises nothing):

- an ``event`` or idempotency ``id`` with CR, LF, NUL or another control
  character is a 422 naming the field, and nothing reaches the topic;
- ``data`` that looks like SSE fields stays data: one event, exact bytes;
- topic names with control characters, empty, ``.`` or ``..`` segments, double
  encoding or Unicode lookalikes are refused; ``%2F`` is ``/`` to the route, the
  scope check and the store alike, so a ``subscribe:<pattern>`` scope cannot be
  escaped;
- garbage resume ids (query or header) and stream ids are 4xx JSON, bounded.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from gateway_support import events

from ssegate.testing import UvicornThread

PUB = "pub-key-0123456789abcdef"
SUB = "sub-key-0123456789abcdef"
CHAT = "chat-key-0123456789abcdef"
KEYS = [
    {"id": "pub", "key": PUB, "scopes": ["publish"]},
    {"id": "sub", "key": SUB, "scopes": ["subscribe:prices/*"]},
    {"id": "chat", "key": CHAT, "scopes": ["chat"]},
]


@pytest.fixture(scope="module")
def server() -> Iterator[UvicornThread]:
    from gateway_support import settings

    from ssegate.gateway import create_app
    from ssegate.testing import serve

    with serve(create_app(settings(keys=KEYS, keep_alive=60.0))) as running:
        yield running


def raw(
    server: UvicornThread, method: str, path: str, key: str, body: Any = None, **headers: str
) -> tuple[int, dict[str, Any]]:
    """``method path`` sent as is; the status and the JSON body (``{}`` if none)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        sent = {"authorization": f"Bearer {key}", **headers}
        content = None
        if body is not None:
            content = json.dumps(body).encode()
            sent["content-type"] = "application/json"
        connection.request(method, path, content, sent)
        response = connection.getresponse()
        status = response.status
        # A subscription that is allowed is an endless stream: its head is enough.
        text = b"" if status == 200 and method == "GET" else response.read()
    finally:
        connection.close()
    return status, json.loads(text) if text else {}


def history(server: UvicornThread, topic: str) -> bytes:
    """The raw bytes a new subscriber of ``topic`` gets, up to a ``data: end`` event."""
    with httpx.stream(
        "GET",
        f"{server.url}/v1/topics/{topic}",
        headers={"authorization": f"Bearer {SUB}"},
        timeout=10,
    ) as response:
        assert response.status_code == 200
        got = b""
        for chunk in response.iter_raw():
            got += chunk
            if got.endswith(b"data: end\n\n"):
                return got
    raise AssertionError(got)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("event", "price\nid: 1"),
        ("event", "price\r\ndata: x"),
        ("event", "price\rx"),
        ("event", "price\x00"),
        ("event", "price\x1b[31m"),
        ("event", ""),
        ("id", "req\n1"),
        ("id", "req\r1"),
        ("id", "req\x001"),
        ("id", "req 1"),
        ("id", "reqé"),
        ("id", "x" * 129),
    ],
)
def test_control_characters_in_event_and_id_are_refused(
    server: UvicornThread, field: str, value: str
) -> None:
    status, body = raw(server, "POST", "/v1/topics/prices/inj", PUB, {"data": "bad", field: value})
    assert status == 422
    assert body["error"]["param"] == field
    assert body["error"]["code"] == "invalid_value"


def test_data_that_looks_like_fields_stays_data(server: UvicornThread) -> None:
    tricky = "a\nid: 999\r\nevent: admin\r\rretry: 1\n\ndata: forged\u2028\x85 z"
    for data in (tricky, "end"):
        status, _ = raw(server, "POST", "/v1/topics/prices/data", PUB, {"data": data})
        assert status == 200
    kept = history(server, "prices/data")
    first, second = kept.split(b"\n\n")[:2]
    ids = [line for line in kept.split(b"\n") if line.startswith(b"id: ")]
    assert first == (
        b"retry: 1000\n" + ids[0] + b"\ndata: a\ndata: id: 999\ndata: event: admin\ndata: \n"
        b"data: retry: 1\ndata: \ndata: data: forged\xe2\x80\xa8\xc2\x85 z"
    )
    assert second == ids[1] + b"\ndata: end"
    assert len(ids) == 2
    [event, _] = events(httpx.Response(200, content=kept))
    assert event.data == "a\nid: 999\nevent: admin\n\nretry: 1\n\ndata: forged\u2028\x85 z"


@pytest.mark.parametrize(
    "path",
    [
        "/v1/topics/prices/x%0D%0Aevent:%20admin",
        "/v1/topics/prices/x%0Aid:%201",
        "/v1/topics/prices/x%00",
        "/v1/topics/prices/x%09",
        "/v1/topics/prices/../secret",
        "/v1/topics/prices/%2E%2E/secret",
        "/v1/topics/prices/./eur",
        "/v1/topics/prices//eur",
        "/v1/topics/prices/",
        "/v1/topics/prices%252Feur",
        "/v1/topics/prices%E2%88%95eur",  # U+2215, a lookalike of "/"
        "/v1/topics/prices%EF%BC%8Feur",  # U+FF0F, a fullwidth "/"
        "/v1/topics/pr%D1%96ces/eur",  # a Cyrillic "i"
        "/v1/topics/.hidden",
        "/v1/topics/" + "a" * 152,
    ],
)
@pytest.mark.parametrize("method", ["POST", "GET"])
def test_bad_topic_names_are_refused(server: UvicornThread, path: str, method: str) -> None:
    key = PUB if method == "POST" else SUB
    status, body = raw(server, method, path, key, {"data": "x"} if method == "POST" else None)
    assert status in (403, 404, 422), (path, status)
    assert body["error"]["message"]
    assert status != 422 or body["error"]["code"] == "invalid_topic"


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/v1/topics/prices/eur", True),
        ("/v1/topics/prices%2Feur", True),  # %2F is "/": the same topic, the same check
        ("/v1/topics/prices%2feur/daily", True),
        ("/v1/topics/prices", False),
        ("/v1/topics/PRICES/eur", False),
        ("/v1/topics/secret", False),
        ("/v1/topics/prices%2F..%2Fsecret", False),
        ("/v1/topics/pricesX/eur", False),
        ("/v1/topics/xprices/eur", False),
        ("/v1/topics/prices%5Beur", False),
    ],
)
def test_a_subscribe_scope_cannot_be_escaped(
    server: UvicornThread, path: str, allowed: bool
) -> None:
    status, body = raw(server, "GET", path, SUB)
    if allowed:
        assert status == 200
    else:
        assert status in (403, 422), (path, status, body)
        assert body["error"]["code"] in ("insufficient_scope", "invalid_topic")


def test_percent_encoded_slash_names_the_same_topic(server: UvicornThread) -> None:
    for path in ("/v1/topics/prices%2Fsame", "/v1/topics/prices/same"):
        status, body = raw(server, "POST", path, PUB, {"data": path})
        assert (status, body["topic"]) == (200, "prices/same")
    status, _ = raw(server, "POST", "/v1/topics/prices/same", PUB, {"data": "end"})
    kept = history(server, "prices/same")
    assert [e.data for e in events(httpx.Response(200, content=kept))] == [
        "/v1/topics/prices%2Fsame",
        "/v1/topics/prices/same",
        "end",
    ]


@pytest.mark.parametrize(
    "after",
    [
        "x",
        "%0D%0Aevent:%20x",
        "%00",
        "9f3c01ab-" + "9" * 5000,
        "9f3c01ab-000000000001%0A",
        "-1",
        "9f3c01ab--00000000001",
    ],
)
def test_garbage_resume_ids_are_400_and_short(server: UvicornThread, after: str) -> None:
    status, body = raw(server, "GET", f"/v1/topics/prices/eur?last_event_id={after}", SUB)
    assert status == 400
    assert body["error"]["code"] == "unknown_event_id"
    assert len(body["error"]["message"]) < 300


def test_garbage_last_event_id_headers_are_400(server: UvicornThread) -> None:
    for after in ("x" * 8000, "9f3c01ab-" + "1" * 30, "\u00e9t\u00e9".encode().decode("latin-1")):
        status, body = raw(server, "GET", "/v1/topics/prices/eur", SUB, **{"last-event-id": after})
        assert status == 400, after
        assert len(body["error"]["message"]) < 300


@pytest.mark.parametrize(
    "stream",
    [
        "gen_" + "0" * 32 + "%0A",
        "gen_" + "0" * 32 + "%00",
        "gen_" + "0" * 31 + "G",
        "..%2Ftopic:prices%2Feur",
        "topic:prices%2Feur",
        "gen_" + "0" * 3200,
    ],
)
@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_bad_stream_ids_are_404(server: UvicornThread, stream: str, method: str) -> None:
    status, body = raw(server, method, f"/v1/streams/{stream}", CHAT)
    assert status == 404
    # (An encoded "/" makes a path no route matches: "no route ...", no code.)
    assert body["error"]["code"] == ("stream_not_found" if "%2F" not in stream else None)
    assert len(body["error"]["message"]) < 300


def test_a_stream_id_sent_by_the_client_is_ignored(server: UvicornThread) -> None:
    chosen = "gen_" + "1" * 32
    response = httpx.post(
        server.url + "/v1/chat/completions",
        json={"model": "echo", "messages": [{"role": "user", "content": "hi"}], "stream": True},
        headers={"authorization": f"Bearer {CHAT}", "x-stream-id": chosen},
    )
    assert response.status_code == 200
    assert response.headers["x-stream-id"] != chosen
