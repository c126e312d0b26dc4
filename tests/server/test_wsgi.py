"""The WSGI helper, iterated directly as a WSGI server would."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest

from ssegate import Event
from ssegate.server import wsgi_stream

WAIT = 10.0


def test_encodes_items_like_the_asgi_side() -> None:
    items = [Event("a", id="1"), "b", {"c": "é"}, b"data: d\n\n"]
    for ping in (None, 30.0):
        stream = wsgi_stream(items, ping=ping, retry=1500)
        assert list(stream) == [
            b"retry: 1500\n",
            b"id: 1\ndata: a\n\n",
            b"data: b\n\n",
            b'data: {"c":"\xc3\xa9"}\n\n',
            b"data: d\n\n",
        ]
        stream.close()


def test_keepalive_while_the_producer_blocks() -> None:
    release = threading.Event()

    def slow() -> Iterator[str]:
        release.wait(WAIT)
        yield "late"

    stream = wsgi_stream(slow(), ping=0.01)
    # the producer is blocked until released, so the first chunk is a comment
    assert next(stream) == b": ping\n"
    release.set()
    chunks = list(stream)
    assert chunks[-1] == b"data: late\n\n"
    assert set(chunks[:-1]) <= {b": ping\n"}


@pytest.mark.parametrize("ping", [None, 0.01])
def test_close_runs_the_producers_finally(ping: float | None) -> None:
    release = threading.Event()
    finished = threading.Event()

    def endless() -> Iterator[str]:
        try:
            yield "first"
            release.wait(WAIT)
            yield "second"
        finally:
            finished.set()

    stream = wsgi_stream(endless(), ping=ping)
    assert next(stream) == b"data: first\n\n"
    stream.close()  # what the server does when the client has gone
    release.set()
    assert finished.wait(WAIT)
    assert list(stream) == []


@pytest.mark.parametrize("ping", [None, 30.0])
def test_producer_error(ping: float | None, caplog: pytest.LogCaptureFixture) -> None:
    def failing() -> Iterator[str]:
        yield "ok"
        raise RuntimeError("secret")

    with caplog.at_level(logging.ERROR, logger="ssegate.server"):
        chunks = list(wsgi_stream(failing(), ping=ping))
    assert chunks == [
        b"data: ok\n\n",
        b'event: error\ndata: {"code":"internal_error","message":"The event stream failed.",'
        b'"retryable":false}\n\n',
    ]
    assert [r.message for r in caplog.records] == ["event stream producer failed"]


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="content must be an iterable of items, not str"):
        wsgi_stream("text")
    with pytest.raises(TypeError, match="not int"):
        wsgi_stream(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ping must be a positive number"):
        wsgi_stream([], ping=0)
    with pytest.raises(ValueError, match="retry must be a non-negative int"):
        wsgi_stream([], retry=-1)


def test_client_leaving_a_real_wsgi_server_closes_the_producer() -> None:
    """werkzeug notices the client has gone when a write fails, then closes the response."""
    import httpx
    from flask import Flask, Response
    from werkzeug.serving import make_server

    from ssegate.server import SSE_HEADERS

    finished = threading.Event()
    upstream = threading.Event()  # never set: a slow upstream that never ends

    def endless() -> Iterator[str]:
        try:
            yield "first"
            while True:
                upstream.wait(0.05)
                yield "more"
        finally:
            finished.set()

    app = Flask(__name__)

    @app.get("/")
    def stream() -> Response:
        return Response(wsgi_stream(endless(), ping=0.02), headers=SSE_HEADERS)

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/"
        with httpx.stream("GET", url, timeout=WAIT) as response:
            for line in response.iter_lines():
                if line == "data: first":
                    break
        assert finished.wait(WAIT)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(WAIT)
