"""A stream's body written straight to uvicorn's transport (``server._direct``).

Each test runs uvicorn's real httptools protocol and request cycle on a
transport of our own (``Wire``: it records every write with its time, and
fills up and drains on demand, as a socket does for a client that reads
slowly), in virtual time (``VirtualTimeLoop``), and asserts the exact bytes on
the wire: the same as uvicorn's ``send`` writes, on every path (the push path,
the pump, a full socket, the client leaving, keep-alives), and which messages
still went by ``send``. Then the fallbacks: another server (h11, on real
sockets) or a request cycle not shaped as expected, where every part goes by
``send``.
"""

from __future__ import annotations

import asyncio
import socket
import types
from collections.abc import AsyncIterator, Callable, MutableMapping
from typing import Any

import anyio
import pytest
import uvicorn
from starlette.requests import Request
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from ssegate import Event
from ssegate.server import CloseReason, EventSourceResponse
from ssegate.server._direct import body_writer, hold_head, write_body
from ssegate.streams import Hub, MemoryStore, stream_response
from ssegate.testing import serve

from .conftest import VirtualTimeLoop

pytestmark = pytest.mark.anyio

HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
    b"cache-control: no-cache\r\nx-accel-buffering: no\r\ntransfer-encoding: chunked\r\n\r\n"
)


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, object]]:
    return ("asyncio", {"loop_factory": VirtualTimeLoop})


class Wire(asyncio.Transport):
    """The client's socket as uvicorn sees it: what is written, with the time."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[float, bytes]] = []
        self.closed = False
        self.protocol: HttpToolsProtocol | None = None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        addresses = {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}
        return addresses.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed
        if data:  # as asyncio's and uvloop's transports, an empty write is nothing
            self.writes.append((asyncio.get_running_loop().time(), bytes(data)))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def fill(self) -> None:
        """The socket buffer is full: uvicorn pauses writing."""
        assert self.protocol is not None
        self.protocol.pause_writing()

    def drain(self) -> None:
        assert self.protocol is not None
        self.protocol.resume_writing()

    def leave(self) -> None:
        """The client closes the connection."""
        assert self.protocol is not None
        self.closed = True
        self.protocol.connection_lost(None)

    def chunks(self, *, t0: float = 0.0) -> list[tuple[float, bytes]]:
        """(time since t0, bytes) of every write, the response head taken off
        the first (alone, or with the first part: ``hold_head``)."""
        (t, first), *rest = self.writes
        assert first.startswith(HEAD)
        writes = [(t, first[len(HEAD) :])] if first != HEAD else []
        return [(round(t - t0, 6), data) for t, data in writes + rest]

    @property
    def body(self) -> bytes:
        return b"".join(data for _, data in self.writes)[len(HEAD) :]


class Counted:
    """What the gateway passes a stream (``_reading._BodyStraight``): body
    messages go on to uvicorn's ``send`` unchanged (``body_send``), and every
    message that went by ``send`` at all is noted."""

    def __init__(self, send: Callable[[MutableMapping[str, Any]], Any]) -> None:
        self.body_send = send
        self.sent: list[MutableMapping[str, Any]] = []

    def __call__(self, message: MutableMapping[str, Any]) -> Any:
        self.sent.append(message)
        return self.body_send(message)

    @property
    def bodies(self) -> list[tuple[bytes, bool]]:
        return [(m["body"], m["more_body"]) for m in self.sent if "body" in m]


Respond = Callable[[Request], Any]


class Served:
    """One request served by uvicorn's httptools protocol on a ``Wire``."""

    def __init__(self, respond: Respond, *, wrap: bool = True) -> None:
        self.respond = respond
        self.wrap = wrap
        self.send: Counted | None = None
        self.reasons: list[CloseReason] = []
        self.done = asyncio.Event()
        self.wire = Wire()
        config = uvicorn.Config(
            self.app, http="httptools", interface="asgi3", lifespan="off", log_level="warning"
        )
        protocol = HttpToolsProtocol(config, ServerState(), {}, asyncio.get_running_loop())
        self.wire.protocol = protocol
        protocol.connection_made(self.wire)
        protocol.data_received(b"GET /s HTTP/1.1\r\nHost: test\r\n\r\n")

    async def app(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            response = await self.respond(Request(scope))
            if self.wrap:
                send = self.send = Counted(send)
            await response(scope, receive, send)
            self.reasons.append(response.close_reason)
        finally:
            self.done.set()

    async def finished(self) -> None:
        await self.done.wait()


async def follow(hub: Hub) -> Served:
    """A reader of the hub's stream ``s`` (it may not exist yet), waiting for
    its first event from 0.5 s on."""
    served = Served(lambda request: stream_response(hub, "s", request, missing_ok=True))
    await anyio.sleep(0.5)
    return served


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def event(store_id: str, data: str) -> bytes:
    return chunk(f"id: {store_id}\ndata: {data}\n\n".encode())


END = b"0\r\n\r\n"


async def test_live_tokens_go_straight_to_the_transport_with_the_same_bytes() -> None:
    """The push path (a hub's caught-up reader) and the pump (the end, read by
    the reader): every part between the first and the last is written past
    ``send``, framed as uvicorn frames it."""
    store = MemoryStore()
    async with Hub(store) as hub:
        served = await follow(hub)
        a = await store.append("s", Event("a"))
        await anyio.sleep(1)
        b = await store.append("s", Event("b"))
        c = await store.append("s", Event("c"))  # in the same turn: one part
        await anyio.sleep(1)
        await store.end("s", "done")
        await served.finished()
    assert served.wire.chunks() == [
        (0.5, event(a, "a")),
        (1.5, chunk(f"id: {b}\ndata: b\n\nid: {c}\ndata: c\n\n".encode())),
        (2.5, END),
    ]
    assert served.send is not None
    assert served.send.bodies == [(b"", False)]  # the last only (it ends the response)
    assert served.reasons == [CloseReason.COMPLETED]


async def test_items_after_a_wait_and_in_batches_from_the_pump() -> None:
    """A producer of its own (no hub): items that come after a wait, and a
    batch of items ready together, are written past ``send`` too; an empty
    item writes nothing (a zero-size chunk would end the body)."""

    async def produce() -> AsyncIterator[object]:
        yield "a"
        await anyio.sleep(1)
        yield b""
        yield "b"
        yield {"c": 1}
        await anyio.sleep(1)
        yield b""

    async def respond(request: Request) -> EventSourceResponse:
        return EventSourceResponse(produce(), ping=None, send_timeout=5.0)

    served = Served(respond)
    await served.finished()
    assert served.wire.chunks() == [
        (0.0, chunk(b"data: a\n\n")),
        (1.0, chunk(b'data: b\n\ndata: {"c":1}\n\n')),
        (2.0, END),
    ]
    assert served.send is not None
    assert served.send.bodies == [(b"", False)]


async def test_a_full_socket_sends_by_send_which_waits_and_keeps_the_order() -> None:
    """Writing paused (the client reads slowly): parts go by uvicorn's ``send``,
    which waits for the socket to drain; nothing is written past it meanwhile,
    nothing is lost or reordered, and once drained the parts go straight again."""
    store = MemoryStore()
    async with Hub(store) as hub:
        served = await follow(hub)
        a = await store.append("s", Event("a"))
        await anyio.sleep(1)
        served.wire.fill()
        b = await store.append("s", Event("b"))  # its send waits (aside)
        await anyio.sleep(1)
        c = await store.append("s", Event("c"))  # read by the reader, sent after b
        await anyio.sleep(1)
        served.wire.drain()
        await anyio.sleep(1)
        d = await store.append("s", Event("d"))  # straight again
        await anyio.sleep(1)
        await store.end("s", "done")
        await served.finished()
    assert served.wire.chunks() == [
        (0.5, event(a, "a")),
        (3.5, event(b, "b")),
        (3.5, event(c, "c")),
        (4.5, event(d, "d")),
        (5.5, END),
    ]
    assert served.send is not None
    waited = f"id: {b}\ndata: b\n\n".encode()
    assert served.send.bodies == [(waited, True), (b"", False)]


async def test_keep_alives_go_by_send_as_before() -> None:
    store = MemoryStore()
    async with Hub(store) as hub:
        served = Served(lambda request: stream_response(hub, "s", request, ping=1.0))
        await store.create("s")
        await anyio.sleep(2.5)
        a = await store.append("s", Event("a"))
        await anyio.sleep(1.75)
        await store.end("s", "done")
        await served.finished()
    assert served.wire.chunks() == [
        (1.0, chunk(b": ping\n")),
        (2.0, chunk(b": ping\n")),
        (2.5, event(a, "a")),
        (3.5, chunk(b": ping\n")),
        (4.25, END),
    ]
    assert served.send is not None
    ping = (b": ping\n", True)
    assert served.send.bodies == [ping, ping, ping, (b"", False)]


async def test_a_client_that_leaves_gets_nothing_more() -> None:
    store = MemoryStore()
    async with Hub(store) as hub:
        served = await follow(hub)
        a = await store.append("s", Event("a"))
        await anyio.sleep(1)
        served.wire.leave()
        await store.append("s", Event("b"))
        await anyio.sleep(1)
        await store.append("s", Event("c"))
        await served.finished()
        assert hub.subscribers == 0
    assert served.wire.chunks() == [(0.5, event(a, "a"))]
    assert served.reasons == [CloseReason.CLIENT_GONE]


async def test_uvicorns_send_itself_is_written_past_too() -> None:
    """A raw ASGI app handing the stream uvicorn's own ``send``."""

    async def produce() -> AsyncIterator[str]:
        yield "a"
        await anyio.sleep(1)

    async def respond(request: Request) -> EventSourceResponse:
        return EventSourceResponse(produce(), ping=None)

    served = Served(respond, wrap=False)
    await served.finished()
    assert served.wire.chunks() == [(0.0, chunk(b"data: a\n\n")), (1.0, END)]


async def test_the_first_part_is_written_with_the_headers_out_and_nothing_empty() -> None:
    """The first body message (it pushes held headers through middleware) is
    written straight too: the headers are out, and an empty one is nothing."""

    async def produce() -> AsyncIterator[str]:
        await anyio.sleep(1)
        yield "a"

    async def respond(request: Request) -> EventSourceResponse:
        return EventSourceResponse(produce(), ping=None, retry=3000)

    served = Served(respond)
    await served.finished()
    assert served.wire.chunks() == [
        (0.0, chunk(b"retry: 3000\n")),
        (1.0, chunk(b"data: a\n\n")),
        (1.0, END),
    ]
    assert served.send is not None
    assert served.send.bodies == [(b"", False)]


def test_another_server_gets_every_part_by_send() -> None:
    """h11's protocol (other internals): no writing past it, no head held, the same bytes."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert body_writer(send) is None
        assert hold_head(send) is None
        response = EventSourceResponse(["a", "b"], ping=None)
        await response(scope, receive, Counted(send))

    with (
        serve(app, http="h11", lifespan="off") as running,
        socket.create_connection((running.host, running.port), timeout=10) as sock,
    ):
        sock.sendall(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        raw = b""
        while part := sock.recv(65536):
            raw += part
    assert raw.partition(b"\r\n\r\n")[2] == chunk(b"data: a\n\n") + chunk(b"data: b\n\n") + END


def cycle_like(**fields: Any) -> Any:
    """uvicorn's ``send`` bound to an object with ``fields`` (a request cycle
    of another shape): what ``body_writer`` must not write to."""
    return types.MethodType(RequestResponseCycle.send, types.SimpleNamespace(**fields))


class Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)


def shaped(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "transport": Transport(),
        "flow": types.SimpleNamespace(write_paused=False),
        "disconnected": False,
        "response_started": True,
        "response_complete": False,
        "chunked_encoding": True,
        "scope": {"method": "GET"},
    }
    fields.update(changes)
    return {name: value for name, value in fields.items() if value is not ...}


@pytest.mark.parametrize(
    "changes",
    [
        {"transport": ...},
        {"flow": ...},
        {"flow": types.SimpleNamespace()},  # no write_paused
        {"disconnected": ...},
        {"response_complete": ...},
        {"chunked_encoding": ...},
        {"scope": ...},
        {"transport": object()},  # no write()
        {"response_started": False},
        {"chunked_encoding": False},  # Content-Length
        {"scope": {"method": "HEAD"}},
    ],
)
def test_a_request_cycle_of_another_shape_is_not_written_to(changes: dict[str, Any]) -> None:
    assert body_writer(cycle_like(**shaped(**changes))) is None


def test_what_is_written_to_a_cycle_of_the_expected_shape() -> None:
    send = cycle_like(**shaped())
    cycle = body_writer(send)
    assert cycle is send.__self__
    assert body_writer(types.SimpleNamespace(body_send=send)) is cycle
    assert body_writer(lambda message: None) is None
    assert write_body(cycle, b"data: a\n\n")
    assert write_body(cycle, b"")  # nothing to write
    cycle.flow.write_paused = True
    assert not write_body(cycle, b"data: b\n\n")  # send would wait
    cycle.flow.write_paused = False
    cycle.disconnected = True
    assert not write_body(cycle, b"data: b\n\n")  # send drops it
    cycle.disconnected = False
    cycle.response_complete = True
    assert not write_body(cycle, b"data: b\n\n")
    assert cycle.transport.written == [b"9\r\ndata: a\n\n\r\n"]


@pytest.mark.parametrize("size", [1, 9, 15, 16, 255, 256, 1023, 1024, 4096, 70000])
def test_every_part_is_framed_with_its_size_in_hex_as_uvicorn_frames_it(size: int) -> None:
    """Parts under 1 KiB take their size line from a table, larger ones are
    formatted: the same framing either way (uvicorn's ``"%x\\r\\n"``)."""
    cycle = body_writer(cycle_like(**shaped()))
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    assert write_body(cycle, data)
    assert cycle.transport.written == [f"{size:x}\r\n".encode() + data + b"\r\n"]


# -- the response head and the first part in one write (``hold_head``) ----------


async def test_the_head_goes_with_a_first_part_ready_at_once_in_one_write() -> None:
    """A first item ready when the stream starts: the head and its part in one
    write (the same bytes as uvicorn's two), then the rest as before; the
    cycle has its own transport back."""

    async def produce() -> AsyncIterator[str]:
        yield "a"
        yield "b"
        await anyio.sleep(1)
        yield "c"

    async def respond(request: Request) -> EventSourceResponse:
        return EventSourceResponse(produce(), ping=None)

    served = Served(respond)
    await served.finished()
    assert served.wire.writes == [
        (0.0, HEAD + chunk(b"data: a\n\ndata: b\n\n")),
        (1.0, chunk(b"data: c\n\n")),
        (1.0, END),
    ]
    assert served.send is not None
    assert body_writer(served.send).transport is served.wire


async def test_a_head_with_nothing_ready_goes_alone_at_once() -> None:
    """A producer that waits (a model still loading): the head is written in
    the same loop turn, alone, as before; the keep-alives after it."""

    async def produce() -> AsyncIterator[str]:
        await anyio.sleep(2.5)
        yield "a"

    async def respond(request: Request) -> EventSourceResponse:
        return EventSourceResponse(produce(), ping=1.0)

    served = Served(respond)
    await served.finished()
    assert served.wire.writes == [
        (0.0, HEAD),
        (1.0, chunk(b": ping\n")),
        (2.0, chunk(b": ping\n")),
        (2.5, chunk(b"data: a\n\n")),
        (2.5, END),
    ]


async def test_a_head_held_goes_with_the_retry_field_or_with_the_end() -> None:
    async def nothing() -> AsyncIterator[str]:
        return
        yield

    async def retry(request: Request) -> EventSourceResponse:
        return EventSourceResponse(nothing(), ping=None, retry=3000)

    async def empty(request: Request) -> EventSourceResponse:
        return EventSourceResponse(nothing(), ping=None)

    served = Served(retry)
    await served.finished()
    assert served.wire.writes == [(0.0, HEAD + chunk(b"retry: 3000\n")), (0.0, END)]

    served = Served(empty)
    await served.finished()
    assert served.wire.writes == [(0.0, HEAD + END)]


async def test_a_client_gone_before_the_head_was_released_gets_nothing() -> None:
    """The client leaves while the head is held (the producer's first step runs
    before the release): as from ``send`` then, nothing is written."""
    wires: list[Wire] = []

    async def produce() -> AsyncIterator[str]:
        assert wires[0].writes == []  # held
        wires[0].leave()
        await anyio.sleep(1)
        yield "a"

    async def respond(request: Request) -> EventSourceResponse:
        return EventSourceResponse(produce(), ping=None)

    served = Served(respond)
    wires.append(served.wire)
    await served.finished()
    assert served.wire.writes == []
    assert served.send is not None
    assert body_writer(served.send).transport is served.wire
    assert served.reasons == [CloseReason.CLIENT_GONE]


def test_what_a_held_head_writes_and_where_it_holds_none() -> None:
    """The stand-in: the first write held, the next with it in one, the
    transport given back; ``release`` writes a head held alone, once; and
    no holding where the cycle is not as expected or the response started."""
    send = cycle_like(**shaped(response_started=False))
    cycle = send.__self__
    transport = cycle.transport
    transport.is_closing = lambda: False
    transport.close = lambda: transport.written.append(b"<closed>")
    held = hold_head(send)
    assert held is not None
    assert cycle.transport is held
    held.write(b"head")
    assert transport.written == []
    held.write(b"part")
    assert transport.written == [b"headpart"]
    assert cycle.transport is transport
    held.release()  # nothing more
    assert transport.written == [b"headpart"]

    held = hold_head(send)
    assert held is not None
    held.write(b"head")
    held.close()  # as run_asgi after a failure: the head, then closed
    assert transport.written[1:] == [b"head", b"<closed>"]
    assert cycle.transport is transport

    held = hold_head(send)
    assert held is not None
    held.write(b"head")
    cycle.disconnected = True
    held.release()  # the client left: send writes nothing then
    assert transport.written[3:] == []
    assert cycle.transport is transport
    assert hold_head(send) is None  # disconnected
    cycle.disconnected = False
    cycle.flow.write_paused = True
    assert hold_head(send) is None  # send would wait
    cycle.flow.write_paused = False
    cycle.response_started = True
    assert hold_head(send) is None
    assert hold_head(lambda message: None) is None
    assert hold_head(cycle_like(**shaped(response_started=False, transport=Transport()))) is None


def test_a_held_head_gives_body_writer_its_cycle() -> None:
    """``body_writer(send, held)``: the cycle ``hold_head`` found, with the same
    checks of the response as without it (started, chunked)."""
    send = cycle_like(**shaped(response_started=False))
    cycle = send.__self__
    cycle.transport.is_closing = lambda: False
    cycle.transport.close = lambda: None
    held = hold_head(send)
    assert held is not None
    assert body_writer(send, held) is None  # not started yet
    cycle.response_started = True
    assert body_writer(send, held) is cycle
    assert body_writer(send) is cycle
    cycle.chunked_encoding = False
    assert body_writer(send, held) is None
    assert body_writer(send) is None
