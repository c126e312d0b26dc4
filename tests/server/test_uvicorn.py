"""EventSourceResponse on a real uvicorn on 127.0.0.1, read by real sockets.

Waits here are bounded handshakes between the test thread and the server (a
threading.Event set by the producer or by on_close), never sleeps; nothing
asserts how long something took.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.routing import Route

from ssegate import Decoder, Event
from ssegate.server import CloseReason, EventSourceResponse, GracefulShutdown
from ssegate.testing import serve

WAIT = 10.0  # generous bound for cross-thread handshakes on a busy machine


class Probe:
    """Thread-safe record of what happened inside the server."""

    def __init__(self) -> None:
        self.closed = threading.Event()
        self.reasons: list[CloseReason] = []
        self.finally_ran = threading.Event()
        self.release = threading.Event()
        self.pulled = 0

    def on_close(self, reason: CloseReason) -> None:
        self.reasons.append(reason)
        self.closed.set()


def read_until(lines: Iterator[str], wanted: str) -> list[str]:
    seen = []
    for line in lines:
        seen.append(line)
        if line == wanted:
            return seen
    raise AssertionError(f"stream ended before {wanted!r}: {seen}")


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
def server(probe: Probe) -> Iterator[Any]:
    async def plain(request: Request) -> EventSourceResponse:
        async def gen() -> AsyncIterator[Any]:
            yield Event("hello", id="1")
            yield {"token": "wörld"}
            yield "multi\nline"

        return EventSourceResponse(gen(), on_close=probe.on_close)

    async def thinking(request: Request) -> EventSourceResponse:
        async def gen() -> AsyncIterator[str]:
            await anyio.to_thread.run_sync(probe.release.wait, WAIT)
            yield "answer"

        return EventSourceResponse(gen(), ping=0.05, on_close=probe.on_close)

    async def endless(request: Request) -> EventSourceResponse:
        async def gen() -> AsyncIterator[str]:
            try:
                yield "first"
                await anyio.sleep_forever()
                yield "never"
            finally:
                probe.finally_ran.set()

        return EventSourceResponse(gen(), on_close=probe.on_close)

    async def never(request: Request) -> EventSourceResponse:
        async def gen() -> AsyncIterator[str]:
            try:
                await anyio.sleep_forever()
                yield "never"
            finally:
                probe.finally_ran.set()

        return EventSourceResponse(gen(), on_close=probe.on_close)

    async def firehose(request: Request) -> EventSourceResponse:
        async def gen() -> AsyncIterator[bytes]:
            chunk = b"data: " + b"z" * 16_000 + b"\n\n"
            while True:
                probe.pulled += 1
                yield chunk

        return EventSourceResponse(gen(), send_timeout=0.5, ping=None, on_close=probe.on_close)

    app = Starlette(
        routes=[
            Route("/plain", plain),
            Route("/thinking", thinking),
            Route("/endless", endless),
            Route("/never", never),
            Route("/firehose", firehose),
        ]
    )
    with serve(app) as running:
        yield running


def test_headers_and_bytes_on_the_wire(server: Any, probe: Probe) -> None:
    with socket.create_connection((server.host, server.port), timeout=WAIT) as sock:
        sock.sendall(b"GET /plain HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 200 OK"
    headers = dict(line.split(b": ", 1) for line in lines[1:])
    assert headers[b"content-type"] == b"text/event-stream; charset=utf-8"
    assert headers[b"cache-control"] == b"no-cache"
    assert headers[b"x-accel-buffering"] == b"no"
    assert headers[b"transfer-encoding"] == b"chunked"
    assert b"content-encoding" not in headers
    assert b"content-length" not in headers
    payload = b'id: 1\ndata: hello\n\ndata: {"token":"w\xc3\xb6rld"}\n\ndata: multi\ndata: line\n\n'
    # the three ready events leave in one chunk, then the last chunk
    assert body == b"%x\r\n%s\r\n0\r\n\r\n" % (len(payload), payload)
    assert probe.closed.wait(WAIT)
    assert probe.reasons == [CloseReason.COMPLETED]


def test_decoded_by_the_protocol_core(server: Any) -> None:
    decoder = Decoder()
    events = []
    with httpx.stream("GET", server.url + "/plain", timeout=WAIT) as response:
        for chunk in response.iter_raw():
            events += decoder.feed(chunk)
    events += decoder.close()
    assert events == [
        Event("hello", id="1"),
        Event('{"token":"wörld"}', id="1"),
        Event("multi\nline", id="1"),
    ]


def test_keepalive_comments_before_the_first_event(server: Any, probe: Probe) -> None:
    with httpx.stream("GET", server.url + "/thinking", timeout=WAIT) as response:
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        lines = response.iter_lines()
        assert read_until(lines, ": ping")[-1] == ": ping"
        probe.release.set()
        seen = read_until(lines, "data: answer")
        assert set(seen[:-1]) <= {": ping"}
    assert probe.closed.wait(WAIT)
    assert probe.reasons == [CloseReason.COMPLETED]


def test_producer_cancelled_when_client_closes(server: Any, probe: Probe) -> None:
    with httpx.stream("GET", server.url + "/endless", timeout=WAIT) as response:
        assert read_until(response.iter_lines(), "data: first")
    # closing the response closed the connection
    assert probe.finally_ran.wait(WAIT)
    assert probe.closed.wait(WAIT)
    assert probe.reasons == [CloseReason.CLIENT_GONE]


def test_client_gone_before_the_first_item(server: Any, probe: Probe) -> None:
    with socket.create_connection((server.host, server.port), timeout=WAIT) as sock:
        sock.sendall(b"GET /never HTTP/1.1\r\nHost: test\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK\r\n")
    assert probe.finally_ran.wait(WAIT)
    assert probe.closed.wait(WAIT)
    assert probe.reasons == [CloseReason.CLIENT_GONE]


def slow_reader(server: Any, path: str) -> socket.socket:
    """A connection that asked for ``path`` and takes bytes in 4 KiB at most."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(WAIT)
    sock.connect((server.host, server.port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    return sock


def test_send_timeout_drops_a_client_that_stops_reading(server: Any, probe: Probe) -> None:
    with slow_reader(server, "/firehose"):
        # never read: the kernel buffers fill, then uvicorn's, then send() stalls
        assert probe.closed.wait(WAIT)
    assert probe.reasons == [CloseReason.SEND_TIMEOUT]
    # the producer was paused by backpressure, not drained into memory
    assert probe.pulled * 16_000 < 64 * 1024 * 1024


def test_gzip_middleware_leaves_event_streams_alone(probe: Probe) -> None:
    async def slow(request: Request) -> EventSourceResponse:
        async def gen() -> AsyncIterator[str]:
            await anyio.to_thread.run_sync(probe.release.wait, WAIT)
            yield "x" * 1000

        return EventSourceResponse(gen(), ping=None)

    for exclude in [None, ()]:
        probe.release.clear()
        options = {} if exclude is None else {"exclude_content_types": exclude, "minimum_size": 1}
        app = Starlette(
            routes=[Route("/", slow)], middleware=[Middleware(GZipMiddleware, **options)]
        )
        with (
            serve(app) as running,
            httpx.stream(
                "GET", running.url + "/", headers={"Accept-Encoding": "gzip"}, timeout=WAIT
            ) as response,
        ):
            # the headers arrived before the first event: onopen fires at once
            encoding = response.headers.get("content-encoding")
            probe.release.set()
            assert response.read() == b"data: " + b"x" * 1000 + b"\n\n"
        # excluded by default; forced compression still streams (sync-flushed)
        assert encoding == (None if exclude is None else "gzip")


def test_graceful_shutdown_closes_open_streams() -> None:
    """uvicorn waits for open connections before lifespan shutdown; Shutdown ends them."""
    started = threading.Event()

    async def forever(request: Request) -> EventSourceResponse:
        async def gen() -> AsyncIterator[str]:
            yield "running"
            started.set()
            await anyio.sleep_forever()
            yield "never"

        return EventSourceResponse(gen(), farewell=Event("bye", event="shutdown"))

    app = GracefulShutdown(Starlette(routes=[Route("/", forever)]))
    with serve(app) as running:
        received: list[str] = []

        def client() -> None:
            with httpx.stream("GET", running.url + "/", timeout=WAIT) as response:
                received.extend(response.iter_lines())

        reader = threading.Thread(target=client)
        reader.start()
        assert started.wait(WAIT)
        app.shutdown.set()  # what SIGTERM does in the main thread
        reader.join(WAIT)
        assert not reader.is_alive()
        running.stop()
    assert received == ["data: running", "", "event: shutdown", "data: bye", ""]


def test_under_base_http_middleware(probe: Probe) -> None:
    """BaseHTTPMiddleware wraps receive/send in anyio streams and task groups."""
    from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
    from starlette.responses import Response

    async def endless(request: Request) -> EventSourceResponse:
        async def gen() -> AsyncIterator[str]:
            try:
                yield "first"
                await anyio.sleep_forever()
                yield "never"
            finally:
                probe.finally_ran.set()

        return EventSourceResponse(gen(), on_close=probe.on_close)

    async def tag(request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        response.headers["X-Tagged"] = "yes"
        return response

    app = Starlette(
        routes=[Route("/", endless)], middleware=[Middleware(BaseHTTPMiddleware, dispatch=tag)]
    )
    with serve(app) as running:
        with httpx.stream("GET", running.url + "/", timeout=WAIT) as response:
            assert response.headers["x-tagged"] == "yes"
            assert read_until(response.iter_lines(), "data: first")
        assert probe.finally_ran.wait(WAIT)
        assert probe.closed.wait(WAIT)
    assert probe.reasons == [CloseReason.CLIENT_GONE]


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_empty_first_message_writes_no_empty_chunk(http: str) -> None:
    """The empty body message that flushes the headers must not end the chunked body."""

    async def endpoint(request: Request) -> EventSourceResponse:
        return EventSourceResponse(["a", "b"], ping=None)

    app = Starlette(routes=[Route("/", endpoint)])
    with (
        serve(app, http=http) as running,
        socket.create_connection((running.host, running.port), timeout=WAIT) as sock,
    ):
        sock.sendall(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    body = raw.partition(b"\r\n\r\n")[2]
    # the sync list is pulled in a thread, one item per step: two chunks, then the end
    assert body == b"9\r\ndata: a\n\n\r\n9\r\ndata: b\n\n\r\n0\r\n\r\n"


def test_head_gets_the_headers_and_no_body(server: Any, probe: Probe) -> None:
    response = httpx.head(server.url + "/plain", timeout=WAIT)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.content == b""
    assert probe.closed.wait(WAIT)
    assert probe.reasons == [CloseReason.COMPLETED]


@pytest.mark.parametrize("http", ["httptools", "h11"])
def test_an_open_stream_waits_for_the_client_to_leave_without_a_task(
    http: str, probe: Probe
) -> None:
    tasks: list[str] = []

    waiters: list[str] = []
    containers: list[str] = []

    async def idle(request: Request) -> EventSourceResponse:
        async def gen() -> AsyncIterator[str]:
            try:
                yield "first"
                # The stream is open and waits for its client to leave: every
                # task now running, by what it runs, and what waits on the
                # request cycle's message event.
                tasks.extend(sorted(t.get_coro().__qualname__ for t in asyncio.all_tasks()))
                cycle = request.receive.__self__  # type: ignore[attr-defined]
                waiters.extend(type(w).__name__ for w in cycle.message_event._waiters)
                flow_event = cycle.flow._is_writable_event
                containers.extend(
                    type(e._waiters).__name__ for e in (cycle.message_event, flow_event)
                )
                await anyio.sleep_forever()
                yield "never"
            finally:
                probe.finally_ran.set()

        return EventSourceResponse(gen(), on_close=probe.on_close)

    with serve(Starlette(routes=[Route("/idle", idle)]), http=http, lifespan="off") as server:
        with socket.create_connection((server.host, server.port), timeout=WAIT) as sock:
            sock.sendall(b"GET /idle HTTP/1.1\r\nHost: test\r\n\r\n")
            received = b""
            while b"data: first\n\n" not in received:
                received += sock.recv(65536)
        # uvicorn's own task and the request's: the stream has none (a watcher
        # task per stream would cost every idle stream ~600 bytes)
        assert tasks == ["RequestResponseCycle.run_asgi", "Server.serve"]
        # and no receive() coroutine with a future, no watcher object: the session itself waits
        assert waiters == ["AsyncioSession"]
        # in a list, as the flow control's send does: no 760-byte deques
        assert containers == ["list", "list"]
        assert probe.finally_ran.wait(WAIT)
        assert probe.closed.wait(WAIT)
    assert probe.reasons == [CloseReason.CLIENT_GONE]


@pytest.mark.parametrize("http", ["httptools", "h11"])
def test_request_body_parts_are_read_while_the_stream_is_open(http: str, probe: Probe) -> None:
    """The rest of a request body arrives while the stream is open: the watcher
    reads it (receive() returns http.request), waits again, and still hears
    the client leave."""
    waiters: list[str] = []

    async def upload(request: Request) -> EventSourceResponse:
        async def gen() -> AsyncIterator[str]:
            try:
                yield "first"
                cycle = request.receive.__self__  # type: ignore[attr-defined]
                await cycle.message_event.wait()  # set by the rest of the body
                await anyio.lowlevel.checkpoint()
                waiters.extend(type(w).__name__ for w in cycle.message_event._waiters)
                yield "second"
                await anyio.sleep_forever()
                yield "never"
            finally:
                probe.finally_ran.set()

        return EventSourceResponse(gen(), on_close=probe.on_close)

    app = Starlette(routes=[Route("/upload", upload, methods=["POST"])])
    with serve(app, http=http, lifespan="off") as server:
        with socket.create_connection((server.host, server.port), timeout=WAIT) as sock:
            sock.sendall(b"POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 10\r\n\r\nhello")
            received = b""
            while b"data: first\n\n" not in received:
                received += sock.recv(65536)
            sock.sendall(b"world")
            while b"data: second\n\n" not in received:
                received += sock.recv(65536)
        assert waiters == ["AsyncioSession"]  # the body part was read, and it waits again
        assert probe.finally_ran.wait(WAIT)
        assert probe.closed.wait(WAIT)
    assert probe.reasons == [CloseReason.CLIENT_GONE]


@pytest.mark.parametrize("http", ["httptools", "h11"])
def test_a_slow_reader_gets_every_byte(http: str, probe: Probe) -> None:
    """A client that reads slowly pauses uvicorn's writes: each send then waits
    on the flow control's event (whose waiters are a list, see ``_watch``)
    until the client has read enough, and the whole stream arrives."""
    chunk = b"data: " + b"z" * 16_000 + b"\n\n"
    chunks = 400  # 6.4 MB: far more than the socket buffers of both ends
    paused: list[bool] = []

    async def firehose(request: Request) -> EventSourceResponse:
        async def gen() -> AsyncIterator[bytes]:
            flow = request.receive.__self__.flow  # type: ignore[attr-defined]
            for _ in range(chunks):
                paused.append(flow.write_paused)
                yield chunk
                await anyio.lowlevel.checkpoint()  # one send each

        return EventSourceResponse(gen(), ping=None, on_close=probe.on_close)

    app = Starlette(routes=[Route("/firehose", firehose)])
    with serve(app, http=http, lifespan="off") as server:
        with slow_reader(server, "/firehose") as sock:
            received = bytearray()
            while not received.endswith(b"0\r\n\r\n"):  # the last chunk
                part = sock.recv(4096)
                assert part, "connection closed early"
                received += part
        assert probe.closed.wait(WAIT)
    assert probe.reasons == [CloseReason.COMPLETED]
    assert received.count(chunk) == chunks
    assert any(paused)  # the writes were paused, so sends waited on the flow's event
