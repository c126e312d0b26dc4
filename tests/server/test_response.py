"""EventSourceResponse as an ASGI app, driven by a hand-written peer, on asyncio and trio."""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import AsyncIterator, Iterator, MutableMapping
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from ssegate import Event
from ssegate.server import (
    SSE_HEADERS,
    CloseReason,
    EventSourceResponse,
    default_error_event,
    encode_item,
)

from .conftest import Peer

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


async def items() -> AsyncIterator[Any]:
    yield Event("one", id="1")
    yield "two"
    yield {"n": 3, "text": "é\u2028"}
    yield b"data: four\n\n"
    yield Event("five\nlines", event="update")


EXPECTED = (
    b"id: 1\ndata: one\n\n"
    b"data: two\n\n"
    b'data: {"n":3,"text":"\xc3\xa9\xe2\x80\xa8"}\n\n'
    b"data: four\n\n"
    b"event: update\ndata: five\ndata: lines\n\n"
)


async def test_whole_exchange() -> None:
    peer = Peer()
    response = EventSourceResponse(items(), ping=None)
    await response(peer.scope, peer.receive, peer.send)
    assert [m for _, m in peer.messages] == [
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/event-stream; charset=utf-8"),
                (b"cache-control", b"no-cache"),
                (b"x-accel-buffering", b"no"),
            ],
        },
        {"type": "http.response.body", "body": b"", "more_body": True},
        {"type": "http.response.body", "body": EXPECTED, "more_body": False},
    ]
    assert response.close_reason is CloseReason.COMPLETED


async def test_headers_status_and_retry() -> None:
    peer = Peer()
    response = EventSourceResponse(
        ["x"],
        status_code=201,
        retry=2500,
        headers={"X-Stream-Id": "abc", "Cache-Control": "no-store"},
    )
    response.headers["X-Later"] = "1"
    await response(peer.scope, peer.receive, peer.send)
    assert peer.start["status"] == 201
    assert peer.start["headers"] == [
        (b"x-stream-id", b"abc"),
        (b"cache-control", b"no-store"),  # the caller's value wins
        (b"content-type", b"text/event-stream; charset=utf-8"),
        (b"x-accel-buffering", b"no"),
        (b"x-later", b"1"),
    ]
    assert peer.body == b"retry: 2500\ndata: x\n\n"
    assert peer.bodies()[0] == (peer.bodies()[0][0], b"retry: 2500\n", True)


def test_sse_headers_constant() -> None:
    assert dict(SSE_HEADERS) == {
        "Content-Type": "text/event-stream; charset=utf-8",
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",
    }


async def test_sync_iterable_runs_in_a_worker_thread() -> None:
    threads: list[int] = []
    log: list[str] = []

    def numbers() -> Iterator[str]:
        try:
            for i in range(3):
                threads.append(threading.get_ident())
                yield str(i)
        finally:
            log.append("finally")

    peer = Peer()
    await EventSourceResponse(numbers(), ping=None)(peer.scope, peer.receive, peer.send)
    assert peer.body == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
    assert threading.get_ident() not in threads
    assert log == ["finally"]


async def test_sync_list_content() -> None:
    peer = Peer()
    await EventSourceResponse([Event("a"), {"b": 1}])(peer.scope, peer.receive, peer.send)
    assert peer.body == b'data: a\n\ndata: {"b":1}\n\n'


async def test_sync_generator_closed_when_client_leaves() -> None:
    log: list[str] = []
    release = threading.Event()

    def blocking() -> Iterator[str]:
        try:
            yield "first"
            release.wait(10)  # blocked in its thread when the client leaves
            yield "second"
            yield "third"
        finally:
            log.append("finally")

    peer = Peer()
    first_sent = anyio.Event()

    async def send(message: MutableMapping[str, Any]) -> None:
        await peer.send(message)
        if message.get("body") == b"data: first\n\n":
            first_sent.set()

    async def client_leaves() -> MutableMapping[str, Any]:
        await first_sent.wait()
        return {"type": "http.disconnect"}

    closed: list[CloseReason] = []
    response = EventSourceResponse(blocking(), ping=None, on_close=closed.append)
    await response(peer.scope, client_leaves, send)
    assert closed == [CloseReason.CLIENT_GONE]
    release.set()
    # the abandoned thread closes the generator as soon as next() returns
    for _ in range(500):
        if log:
            break
        await anyio.sleep(0.01)
    assert log == ["finally"]
    assert peer.body == b"data: first\n\n"


async def test_producer_error_sends_error_event_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    async def failing() -> AsyncIterator[str]:
        yield "ok"
        raise RuntimeError("secret database password")

    peer = Peer()
    closed: list[CloseReason] = []
    with caplog.at_level(logging.ERROR, logger="ssegate.server"):
        await EventSourceResponse(failing(), on_close=closed.append)(
            peer.scope, peer.receive, peer.send
        )
    assert closed == [CloseReason.ERROR]
    assert peer.body == (
        b"data: ok\n\n"
        b"event: error\n"
        b'data: {"code":"internal_error","message":"The event stream failed.",'
        b'"retryable":false}\n\n'
    )
    assert peer.bodies()[-1][2] is False
    assert b"secret" not in peer.body
    [record] = caplog.records
    assert record.message == "event stream producer failed"
    assert record.exc_info is not None
    assert "secret database password" in str(record.exc_info[1])


async def test_custom_error_event_and_none() -> None:
    async def failing() -> AsyncIterator[str]:
        raise ValueError("bad input")
        yield "never"

    peer = Peer()
    response = EventSourceResponse(
        failing(), error_event=lambda exc: {"error": type(exc).__name__, "detail": str(exc)}
    )
    await response(peer.scope, peer.receive, peer.send)
    assert peer.body == b'data: {"error":"ValueError","detail":"bad input"}\n\n'

    peer = Peer()
    await EventSourceResponse(failing(), error_event=None)(peer.scope, peer.receive, peer.send)
    assert peer.body == b""
    assert peer.bodies()[-1][2] is False


async def test_bad_item_is_a_producer_error() -> None:
    async def wrong() -> AsyncIterator[Any]:
        yield "fine"
        yield 42

    peer = Peer()
    response = EventSourceResponse(wrong())
    await response(peer.scope, peer.receive, peer.send)
    assert response.close_reason is CloseReason.ERROR
    assert peer.body == b"data: fine\n\n" + encode_item(default_error_event(TypeError()))


async def test_failing_send_means_client_gone() -> None:
    """An ASGI 2.4 server raises OSError from send() once the client has left."""
    log: list[str] = []

    async def forever() -> AsyncIterator[str]:
        try:
            while True:
                await anyio.lowlevel.checkpoint()
                yield "x"
        finally:
            log.append("finally")

    sent = 0

    async def send(message: MutableMapping[str, Any]) -> None:
        nonlocal sent
        sent += 1
        if sent > 3:
            raise OSError("connection reset")

    closed: list[CloseReason] = []
    peer = Peer()
    await EventSourceResponse(forever(), on_close=closed.append)(peer.scope, peer.receive, send)
    assert closed == [CloseReason.CLIENT_GONE]
    assert log == ["finally"]


async def test_async_on_close_and_background() -> None:
    calls: list[str] = []

    async def on_close(reason: CloseReason) -> None:
        await anyio.lowlevel.checkpoint()
        calls.append(f"on_close {reason}")

    async def background() -> None:
        calls.append("background")

    from starlette.background import BackgroundTask

    peer = Peer()
    await EventSourceResponse(["a"], on_close=on_close, background=BackgroundTask(background))(
        peer.scope, peer.receive, peer.send
    )
    assert calls == ["on_close completed", "background"]


async def test_on_close_errors_are_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    def on_close(reason: CloseReason) -> None:
        raise RuntimeError("oops")

    peer = Peer()
    with caplog.at_level(logging.ERROR, logger="ssegate.server"):
        await EventSourceResponse(["a"], on_close=on_close)(peer.scope, peer.receive, peer.send)
    assert [r.message for r in caplog.records] == ["on_close callback failed"]
    assert peer.body == b"data: a\n\n"


async def test_producer_aclose_is_awaited() -> None:
    log: list[str] = []

    class Source:
        def __init__(self) -> None:
            self.n = 0

        def __aiter__(self) -> Source:
            return self

        async def __anext__(self) -> str:
            self.n += 1
            if self.n > 2:
                raise StopAsyncIteration
            return str(self.n)

        async def aclose(self) -> None:
            await anyio.lowlevel.checkpoint()
            log.append("aclose")

    peer = Peer()
    await EventSourceResponse(Source())(peer.scope, peer.receive, peer.send)
    assert peer.body == b"data: 1\n\ndata: 2\n\n"
    assert log == ["aclose"]


async def test_large_bursts_are_split_into_bounded_messages() -> None:
    async def many() -> AsyncIterator[bytes]:
        for _ in range(1000):
            yield b"data: " + b"y" * 200 + b"\n\n"

    peer = Peer()
    await EventSourceResponse(many(), ping=None)(peer.scope, peer.receive, peer.send)
    sizes = [len(body) for _, body, _ in peer.bodies()]
    assert sum(sizes) == 1000 * 208
    assert max(sizes) < 64 * 1024 + 208
    assert len(sizes) == 1 + 1000 * 208 // (64 * 1024 + 96) + 1


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"ping": 0}, ValueError, "ping must be a positive number"),
        ({"ping": -1.0}, ValueError, "ping must be a positive number"),
        ({"send_timeout": 0}, ValueError, "send_timeout must be a positive number"),
        ({"retry": -5}, ValueError, "retry must be a non-negative int"),
        ({"retry": 1.5}, ValueError, "retry must be a non-negative int"),
        ({"shutdown_grace": -1}, ValueError, "shutdown_grace must be >= 0"),
        ({"farewell": 3.5}, TypeError, "not float"),
        ({"shutdown": object()}, TypeError, "shutdown must be a Shutdown"),
    ],
)
def test_invalid_options(kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        EventSourceResponse([], **kwargs)


@pytest.mark.parametrize("content", ["text", b"bytes", {"a": 1}, Event("x"), 42, None])
def test_content_must_be_an_iterable_of_items(content: Any) -> None:
    with pytest.raises(TypeError, match="content must be an iterable or async iterable"):
        EventSourceResponse(content)


async def test_plain_async_iterator_and_awaitables() -> None:
    """__anext__ may be a coroutine, return a Future, or raise StopAsyncIteration at once."""

    class Countdown:
        def __init__(self) -> None:
            self.left = 3

        def __aiter__(self) -> Countdown:
            return self

        def __anext__(self) -> Any:
            if self.left == 0:
                raise StopAsyncIteration  # synchronously, not from an awaitable
            self.left -= 1
            return self._next(self.left)

        async def _next(self, n: int) -> str:
            if n == 1:
                await anyio.lowlevel.checkpoint()
            return str(n)

    peer = Peer()
    await EventSourceResponse(Countdown(), ping=None)(peer.scope, peer.receive, peer.send)
    assert peer.body == b"data: 2\n\ndata: 1\n\ndata: 0\n\n"


def test_generator_function_instead_of_generator() -> None:
    async def gen() -> AsyncIterator[str]:
        yield "x"

    with pytest.raises(TypeError, match="not function; call the generator function"):
        EventSourceResponse(gen)  # type: ignore[arg-type]


async def bursts() -> AsyncIterator[str]:
    """Two ready items, a wait, two more, a wait, one."""
    yield "a"
    yield "b"
    await anyio.lowlevel.checkpoint()
    yield "c"
    yield "d"
    await anyio.lowlevel.checkpoint()
    yield "e"


#: What ``bursts()`` sends, body by body: "a" and "b" were ready together.
BURST_BODIES = [
    (b"", True),
    (b"data: a\n\ndata: b\n\n", True),
    (b"data: c\n\n", True),
    (b"data: d\n\n", True),
    (b"data: e\n\n", True),
    (b"", False),
]


class WaitingPeer(Peer):
    """A peer whose every send waits once (a server whose socket buffer is full)."""

    async def send(self, message: MutableMapping[str, Any]) -> None:
        await anyio.lowlevel.checkpoint()
        await super().send(message)


@pytest.mark.parametrize("peer_kind", [Peer, WaitingPeer])
async def test_batches_keep_their_order_whether_the_send_waits_or_not(
    peer_kind: type[Peer],
) -> None:
    """Ready items leave together when the producer starts to wait; on asyncio
    that send begins in the request task and, if it must wait, an aside task
    finishes it while the pump waits for the producer. Order is kept either way."""

    peer = peer_kind()
    response = EventSourceResponse(bursts(), ping=None)
    await response(peer.scope, peer.receive, peer.send)
    assert [(body, more) for _, body, more in peer.bodies()] == BURST_BODIES
    assert response.close_reason is CloseReason.COMPLETED


async def test_client_gone_while_a_batch_is_sent() -> None:
    """A send that fails when a batch leaves (an ASGI 2.4 server's OSError)
    ends the stream as CLIENT_GONE and closes the producer, which was waiting."""
    closed: list[str] = []

    async def producer() -> AsyncIterator[str]:
        try:
            yield "a"
            yield "b"
            await anyio.sleep_forever()
            yield "never"
        finally:
            closed.append("closed")

    class Failing(Peer):
        async def send(self, message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.body" and message["body"]:
                raise OSError("connection reset")
            await super().send(message)

    peer = Failing()
    response = EventSourceResponse(producer(), ping=None)
    await response(peer.scope, peer.receive, peer.send)
    assert response.close_reason is CloseReason.CLIENT_GONE
    assert closed == ["closed"]
    assert [(body, more) for _, body, more in peer.bodies()] == [(b"", True)]


class ContextPeer(Peer):
    """A peer whose send sets a context variable, waits, then resets it: what an
    instrumenting middleware (a tracing span around each send) does. Resetting
    raises if the send was resumed in another context than it started in."""

    def __init__(self) -> None:
        super().__init__()
        self.var: contextvars.ContextVar[str] = contextvars.ContextVar("span")
        self.errors: list[str] = []

    async def send(self, message: MutableMapping[str, Any]) -> None:
        token = self.var.set("sending")
        try:
            await anyio.lowlevel.checkpoint()
            await super().send(message)
        finally:
            try:
                self.var.reset(token)
            except ValueError as exc:
                self.errors.append(str(exc))
                raise


async def test_a_send_that_waits_keeps_its_context_across_the_hand_over() -> None:
    """A batch send begun in the request task and finished aside runs in one
    context from its first step to its last, as a task of its own would."""

    async def producer() -> AsyncIterator[str]:
        yield "a"
        yield "b"
        await anyio.lowlevel.checkpoint()
        yield "c"

    peer = ContextPeer()
    response = EventSourceResponse(producer(), ping=None)
    await response(peer.scope, peer.receive, peer.send)
    assert peer.errors == []
    assert [(body, more) for _, body, more in peer.bodies()] == [
        (b"", True),
        (b"data: a\n\ndata: b\n\n", True),
        (b"data: c\n\n", True),
        (b"", False),
    ]
    assert response.close_reason is CloseReason.COMPLETED
    assert peer.var.get("unset") == "unset"  # nothing leaked into the request's context


class TaskPeer(Peer):
    """A peer that notes which task sends each body message."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.senders: list[object] = []

    async def send(self, message: MutableMapping[str, Any]) -> None:
        import asyncio

        if message["type"] == "http.response.body":
            self.senders.append(asyncio.current_task())
        await super().send(message)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_timed_sends_that_need_no_wait_stay_in_the_request_task() -> None:
    """With ``send_timeout`` a send that completes at its first step needs no
    timer and no task: ready batches and lone items alike leave from the
    request task (the gateway, which sets a send timeout, sends every token so)."""
    import asyncio

    peer = TaskPeer()
    request_task = None

    async def app() -> None:
        nonlocal request_task
        request_task = asyncio.current_task()
        await EventSourceResponse(bursts(), ping=None, send_timeout=30)(
            peer.scope, peer.receive, peer.send
        )

    await app()
    assert [(body, more) for _, body, more in peer.bodies()] == BURST_BODIES
    assert peer.senders == [request_task] * 6


async def test_a_batch_send_that_never_completes_times_out() -> None:
    """A ready batch whose send must wait is finished aside, under ``send_timeout``:
    a client that stopped reading is dropped, never waited on for ever."""

    async def producer() -> AsyncIterator[str]:
        yield "a"
        yield "b"
        await anyio.sleep_forever()
        yield "never"

    peer = Peer(block_body_after=1)  # takes the headers' empty body, then stops reading
    response = EventSourceResponse(producer(), ping=None, send_timeout=0.05)
    with anyio.fail_after(10):
        await response(peer.scope, peer.receive, peer.send)
    assert response.close_reason is CloseReason.SEND_TIMEOUT
    assert [(body, more) for _, body, more in peer.bodies()] == [(b"", True)]


class _Subclass(EventSourceResponse):
    """Starlette's own ``init_headers`` path (a subclass may change the media type)."""


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Stream-Id": "gen_1", "Link": '</v1/streams/gen_1?format=openai>; rel="events"'},
        {"Content-Type": "text/plain"},
        {"cache-control": "max-age=5", "X-Accel-Buffering": "yes"},
        {"Vary": "x", "vary": "y", "Content-Type": "text/event-stream"},
    ],
)
def test_given_headers_make_the_list_starlettes_way_would(headers: dict[str, str]) -> None:
    ours = EventSourceResponse(iter(()), headers=headers)
    theirs = _Subclass(iter(()), headers=headers)
    assert ours.raw_headers == theirs.raw_headers
    if "Link" in headers:
        assert ours.raw_headers == [
            (b"x-stream-id", b"gen_1"),
            (b"link", b'</v1/streams/gen_1?format=openai>; rel="events"'),
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
        ]


def test_the_same_settings_share_their_options() -> None:
    ping, timeout, farewell = float("15"), float("30"), Event("bye", event="farewell")

    def made(**given: Any) -> Any:
        settings: dict[str, Any] = {"ping": ping, "send_timeout": timeout, "farewell": farewell}
        return EventSourceResponse(iter(()), **{**settings, **given}).options

    first, again = made(), made()
    assert again is first
    assert (first.ping, first.send_timeout, first.farewell) == (15.0, 30.0, farewell)
    equal = made(ping=float("15"))  # equal, not the same object: made anew, the same values
    assert equal is not first
    assert (equal.ping, equal.send_timeout, equal.farewell) == (15.0, 30.0, farewell)
    assert made(retry=1000).retry == 1000
    with pytest.raises(ValueError, match="ping must be a positive number"):
        made(ping=-1.0)  # each refused, whatever was made before
    with pytest.raises(ValueError, match="ping must be a positive number"):
        made(ping=-1.0)

    def on_close(reason: object) -> None:
        pass

    own = made(on_close=on_close)
    assert own.on_close is on_close
    assert made(on_close=on_close) is not own  # options with callbacks: each its own
