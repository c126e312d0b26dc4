"""What the cyclic collector sees of streams on a FastAPI endpoint under a real uvicorn.

Issue 10: on a FastAPI endpoint behind middleware (CORS, GZip, a pure-ASGI
timing middleware) a full collection walks every object the open streams
keep, and stops every stream while it does. Most of what a stream keeps there
is uvicorn's, Starlette's and FastAPI's (the chain of middleware coroutines
awaiting the response, their closures, two ``Request`` objects...): ~116
tracked objects per stream, which any response keeps (a hand-written one that
only forwards the producer's items, ``HandWritten`` below). These tests pin
what ssegate adds to that floor, and that a finished stream leaves nothing to
the collector.
"""

from __future__ import annotations

import asyncio
import gc
import socket
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from starlette.responses import Response

from gc_support import cyclic_garbage
from ssegate.server import EventSourceResponse
from ssegate.testing import serve

from .test_gc import mounted

WAIT = 10.0  # bound for cross-thread handshakes on a busy machine
STREAMS = 100
#: What EventSourceResponse keeps per open stream beyond the hand-written
#: response: its session and one copy of the request's context (for the
#: keep-alive and watcher callbacks). Before issue 10's FastAPI work: 3 (a
#: ``Watch`` object too; the session is now its own watcher).
OURS_OVER_FLOOR = 2
#: Modules whose objects must die by reference count once their request is over.


class Gate:
    """Opened from the test thread; producers in the server's loop wait on it."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.event: asyncio.Event | None = None

    def wait(self) -> Any:
        if self.event is None:
            self.loop = asyncio.get_running_loop()
            self.event = asyncio.Event()
        return self.event.wait()

    def open(self) -> None:
        assert self.loop is not None
        assert self.event is not None
        self.loop.call_soon_threadsafe(self.event.set)


async def held(gate: Gate, events: int = 1) -> AsyncIterator[str]:
    """``events`` items, each after a wait (the last is "a"), then a wait (a
    model thinking) until the gate opens."""
    for i in range(events - 1, -1, -1):
        await asyncio.sleep(0)
        yield "a" if i == 0 else f"a{i}"
    await gate.wait()
    yield "b"


class HandWritten(Response):
    """The least a streaming response keeps: the producer, forwarded."""

    background = None  # FastAPI sets a returned response's background tasks

    def __init__(self, content: AsyncIterator[str]) -> None:
        self.content = content

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"", "more_body": True})
        async for item in self.content:
            body = f"data: {item}\n\n".encode()
            await send({"type": "http.response.body", "body": body, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def service(response: Callable[[], Any]) -> Any:
    """The FastAPI app of ``test_gc``: CORS, GZip and a timing middleware; one
    endpoint, ``/events``, returning ``response()``."""
    return mounted("fastapi", response)


def read_until(sock: socket.socket, wanted: bytes) -> bytes:
    received = b""
    while wanted not in received:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"closed before {wanted!r}: {received!r}")
        received += chunk
    return received


def tracked() -> Counter[str]:
    gc.collect()
    return Counter(type(obj).__qualname__ for obj in gc.get_objects())


def open_streams(port: int, count: int) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        sock.sendall(b"GET /events HTTP/1.1\r\nHost: t\r\nOrigin: http://o\r\n\r\n")
        socks.append(sock)
    for sock in socks:
        assert read_until(sock, b"data: a\n\n").startswith(b"HTTP/1.1 200 ")
    return socks


def per_stream(kind: type[Response], events: int = 1) -> tuple[float, Counter[str]]:
    """Tracked objects each open stream of ``kind`` keeps while its producer
    waits, after ``events`` events."""
    gate = Gate()
    with serve(service(lambda: kind(held(gate, events))), lifespan="off") as server:
        # warm-up (imports, caches); they stay open, waiting, while counted
        warm = open_streams(server.port, 3)
        before = tracked()
        socks = open_streams(server.port, STREAMS)
        grown = tracked() - before
        gate.open()
        for sock in warm + socks:
            read_until(sock, b"data: b\n\n")
            sock.close()
    return sum(grown.values()) / STREAMS, grown


def test_tracked_objects_per_open_stream_over_the_floor() -> None:
    """On a FastAPI endpoint behind CORS, GZip and a timing middleware, an open
    EventSourceResponse keeps exactly OURS_OVER_FLOOR tracked objects more than
    a hand-written response that only forwards the producer's items."""
    # A first server in the process makes some objects once (weak references,
    # bound methods of uvicorn's first use): not a stream's.
    per_stream(HandWritten)
    floor, floor_kinds = per_stream(HandWritten)
    ours, kinds = per_stream(EventSourceResponse)
    assert kinds["AsyncioSession"] == kinds["EventSourceResponse"] == STREAMS
    assert floor_kinds["HandWritten"] == STREAMS
    # whole objects per stream; a stray allocation elsewhere is a fraction of one
    assert round(ours - floor) == OURS_OVER_FLOOR, (
        ours,
        floor,
        (kinds - floor_kinds).most_common(8),
        (floor_kinds - kinds).most_common(8),
    )


def test_nothing_per_event_outlives_its_event() -> None:
    """What an open stream keeps while its producer waits is the same after 1
    event as after 50, each sent after a wait: no object of an event (its
    message, its send, the step of the producer that made it) lives on into
    the wait, where a collection would promote it."""
    per_stream(EventSourceResponse)  # the first server in the process: see above
    one, one_kinds = per_stream(EventSourceResponse, 1)
    many, many_kinds = per_stream(EventSourceResponse, 50)
    assert round(many - one) == 0, (
        one,
        many,
        (many_kinds - one_kinds).most_common(8),
        (one_kinds - many_kinds).most_common(8),
    )


@pytest.fixture
def collector_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


def test_finished_streams_leave_no_reference_cycles(collector_off: None) -> None:
    """Streams that complete, and streams whose client leaves, on the FastAPI
    endpoint under uvicorn: everything of theirs dies by reference count."""
    gate = Gate()
    with serve(service(lambda: EventSourceResponse(held(gate))), lifespan="off") as server:
        for sock in open_streams(server.port, 1):  # warm-up
            sock.close()
        leaving = open_streams(server.port, 10)
        completing = open_streams(server.port, 10)
        for sock in leaving:
            sock.close()
        gate.open()
        for sock in completing:
            read_until(sock, b"0\r\n\r\n")  # the end of the chunked body
            sock.close()
        assert cyclic_garbage(server, WAIT) == []
