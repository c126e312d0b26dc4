"""What a stream leaves to the cyclic garbage collector, inside real apps.

A stream's objects must die by reference counting: every connection, every
event, on every way a stream ends (completed, client gone, a failed send, the
producer raising, a send timeout, a server shutdown, HEAD), returned from a
Starlette ``Route`` and from a FastAPI app behind CORS, GZip and a timing
middleware. Reference cycles would be found only by the collector, whose full
collections stall every stream on the event loop for tens of milliseconds
(issue 10). The collector is switched off while the streams run and
``gc.DEBUG_SAVEALL`` keeps whatever it then finds, so the test names the
objects of any cycle.

A live stream's tracked objects are counted too: each one makes every full
collection longer, and there is one set per open connection.
"""

from __future__ import annotations

import asyncio
import gc
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.middleware.gzip import GZipMiddleware
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from ssegate.server import EventSourceResponse, Shutdown, freeze_startup_objects
from ssegate.server._loops import _Done

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


App = Callable[[MutableMapping[str, Any], Any, Any], Any]
STREAMS = 20


class Client:
    """One in-process request: records bodies, and can leave or fail on cue."""

    def __init__(
        self,
        *,
        method: str = "GET",
        leave_after: int | None = None,
        fail_after: int | None = None,
        block_after: int | None = None,
        on_body: Callable[[int], None] | None = None,
    ) -> None:
        self.scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": "/events",
            "raw_path": b"/events",
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"test"), (b"accept-encoding", b"gzip")],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
        }
        self.leave_after = leave_after
        self.fail_after = fail_after
        self.block_after = block_after
        self.on_body = on_body
        self.bodies: list[bytes] = []
        self.gone = anyio.Event()

    async def receive(self) -> MutableMapping[str, Any]:
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: MutableMapping[str, Any]) -> None:
        if message["type"] != "http.response.body":
            return
        count = len(self.bodies)
        if self.fail_after is not None and count >= self.fail_after:
            raise OSError("connection reset")  # an ASGI 2.4 server's failed send
        if self.block_after is not None and count >= self.block_after:
            await anyio.sleep_forever()  # a client that stopped reading
        self.bodies.append(message["body"])
        if self.leave_after is not None and len(self.bodies) >= self.leave_after:
            self.gone.set()
        if self.on_body is not None:
            self.on_body(len(self.bodies))

    @property
    def body(self) -> bytes:
        return b"".join(self.bodies)


# -- producers ------------------------------------------------------------------


async def tokens() -> AsyncIterator[Any]:
    """Items that come after a wait (sent at once) and items that are ready
    together (batched): both paths of the pump."""
    for i in range(6):
        await anyio.lowlevel.checkpoint()
        yield f"token {i}"
        yield {"n": i}


async def forever() -> AsyncIterator[str]:
    yield "first"
    await anyio.lowlevel.checkpoint()
    yield "second"
    await anyio.sleep_forever()
    yield "never"


async def failing() -> AsyncIterator[str]:
    yield "first"
    await anyio.lowlevel.checkpoint()
    raise RuntimeError("the model crashed")


def sync_tokens() -> Iterator[str]:
    yield from ("a", "b", "c")


# -- apps: bare ASGI, a Starlette Route, FastAPI behind middleware ------------------


class Timing:
    """A pure-ASGI timing middleware, as a service has for its metrics."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.requests = 0
        self.seconds = 0.0

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        start = anyio.current_time()
        try:
            await self.app(scope, receive, send)
        finally:
            self.requests += 1
            self.seconds = anyio.current_time() - start


def mounted(mount: str, make: Callable[[], EventSourceResponse]) -> App:
    if mount == "asgi":

        async def bare(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
            await make()(scope, receive, send)

        return bare

    async def endpoint(request: Request) -> EventSourceResponse:
        return make()

    if mount == "route":
        return Starlette(routes=[Route("/events", endpoint)])
    api = FastAPI()
    api.add_middleware(GZipMiddleware, minimum_size=500)
    api.add_middleware(CORSMiddleware, allow_origins=["*"])
    api.add_middleware(Timing)
    api.add_api_route("/events", endpoint, methods=["GET", "HEAD"])
    return api


# -- the scenarios: every way a stream ends ---------------------------------------------


@dataclass(frozen=True)
class Scenario:
    make: Callable[[Shutdown], EventSourceResponse]
    client: Callable[[Shutdown], Client]
    expected: bytes


TOKENS = b"".join(b'data: token %d\n\ndata: {"n":%d}\n\n' % (i, i) for i in range(6))
ERROR = (
    b'event: error\ndata: {"code":"internal_error","message":"The event stream failed.",'
    b'"retryable":false}\n\n'
)

SCENARIOS = {
    "completed": Scenario(lambda _: EventSourceResponse(tokens()), lambda _: Client(), TOKENS),
    "client_gone": Scenario(
        lambda _: EventSourceResponse(forever()),
        lambda _: Client(leave_after=3),
        b"data: first\n\ndata: second\n\n",
    ),
    "send_failed": Scenario(
        lambda _: EventSourceResponse(forever()),
        lambda _: Client(fail_after=2),
        b"data: first\n\n",
    ),
    "producer_error": Scenario(
        lambda _: EventSourceResponse(failing()),
        lambda _: Client(),
        b"data: first\n\n" + ERROR,
    ),
    "send_timeout": Scenario(
        lambda _: EventSourceResponse(forever(), send_timeout=0.001),
        lambda _: Client(block_after=2),
        b"data: first\n\n",
    ),
    "shutdown": Scenario(
        lambda shutdown: EventSourceResponse(forever(), shutdown=shutdown, farewell="bye"),
        lambda shutdown: Client(on_body=lambda n: shutdown.set() if n == 3 else None),
        b"data: first\n\ndata: second\n\ndata: bye\n\n",
    ),
    "head": Scenario(
        lambda _: EventSourceResponse(forever()), lambda _: Client(method="HEAD"), b""
    ),
    "sync_producer": Scenario(
        lambda _: EventSourceResponse(sync_tokens()),
        lambda _: Client(),
        b"data: a\n\ndata: b\n\ndata: c\n\n",
    ),
}


def describe(garbage: list[Any]) -> str:
    kinds = Counter(type(obj).__qualname__ for obj in garbage)
    code = Counter(
        f"{obj.f_code.co_filename}:{obj.f_code.co_name}"
        for obj in garbage
        if type(obj).__name__ == "frame"
    )
    return f"{len(garbage)} objects in cycles: {dict(kinds.most_common(12))}; frames: {dict(code)}"


async def cyclic_garbage(run: Callable[[], Any]) -> list[Any]:
    """Run ``run()`` with the collector off; return the objects only it could free."""
    await run()  # first use: imports, caches, lazily made class attributes
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    # Held while measuring: what existed before cannot become garbage during
    # ``run()`` (an earlier test's event loop, which the test runner lets go of
    # when the backend changes, is not this run's garbage).
    before = gc.get_objects()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        await run()
        await anyio.lowlevel.checkpoint()  # let cancelled watcher tasks finish
        await anyio.lowlevel.checkpoint()
        gc.collect()
        return list(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        del before
        if enabled:
            gc.enable()


@pytest.mark.parametrize("mount", ["asgi", "route", "fastapi"])
@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_no_reference_cycles(mount: str, name: str, anyio_backend: str) -> None:
    scenario = SCENARIOS[name]
    shutdowns: list[Shutdown] = []

    def make() -> EventSourceResponse:
        return scenario.make(shutdowns[-1])

    app = mounted(mount, make)

    async def run() -> None:
        for _ in range(STREAMS):
            shutdown = Shutdown()
            shutdowns.append(shutdown)
            client = scenario.client(shutdown)
            await app(client.scope, client.receive, client.send)
            client.gone.set()
            assert client.body == scenario.expected
        shutdowns.clear()

    garbage = await cyclic_garbage(run)
    assert garbage == [], describe(garbage)


# -- the objects a live stream keeps ---------------------------------------------------


async def held(release: anyio.Event) -> AsyncIterator[str]:
    """Two items at once (one batch, handed to an aside task to send), then a
    wait (a model thinking) until released."""
    yield "a"
    yield "b"
    await release.wait()


def hand_written(release: anyio.Event) -> App:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"", "more_body": True})
        async for item in held(release):
            body = f"data: {item}\n\n".encode()
            await send({"type": "http.response.body", "body": body, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


def ssegate(release: anyio.Event) -> App:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await EventSourceResponse(held(release))(scope, receive, send)

    return app


async def tracked_per_stream(
    make: Callable[[anyio.Event], App], streams: int
) -> tuple[float, Counter[str]]:
    """GC-tracked objects each open stream keeps while its producer waits."""
    release = anyio.Event()
    app = make(release)
    clients = [Client() for _ in range(streams)]

    async def serve(client: Client) -> None:
        await app(client.scope, client.receive, client.send)

    gc.collect()
    before = Counter(type(obj).__qualname__ for obj in gc.get_objects())
    async with anyio.create_task_group() as tasks:
        for client in clients:
            tasks.start_soon(serve, client)
        for _ in range(5):
            await anyio.lowlevel.checkpoint()
        gc.collect()
        grown = Counter(type(obj).__qualname__ for obj in gc.get_objects()) - before
        release.set()
    assert all(client.body == b"data: a\n\ndata: b\n\n" for client in clients)
    return sum(grown.values()) / streams, grown


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_tracked_objects_per_live_stream() -> None:
    """What ssegate adds to a waiting stream, over a hand-written ASGI app
    waiting on the same producer, is pinned (asyncio, as uvicorn runs it).

    Measured on CPython 3.11, plain asyncio: the hand-written app keeps 32
    tracked objects per stream (the producer's and the peer's included);
    EventSourceResponse kept 26 more before issue 10 (a finished aside task
    with its coroutine, context and weak reference; a context per task and per
    timer; a bound clock and ``__anext__``; a list for the batch; the
    response's own ``__call__`` frame), 17 after them, 14 before the ``run``
    coroutine's frame went (the pump's generator is now the stream's whole
    life, see ``_awaitable``), and keeps 13 more now: the response, the
    session, the pump's frame, the watcher task
    (its coroutine, context, weak reference, and the receive it waits in; under
    uvicorn there is none of these, see ``test_uvicorn.py``). The keep-alive is
    an entry in the loop's wheel (no timer handle, no bound method) and the
    response keeps no header list.
    """
    for make in (hand_written, ssegate):  # warm up
        await tracked_per_stream(make, 10)
    # The least of three counts each: a thread left running by another test
    # may allocate (or free) meanwhile, by a few dozen objects in all. That is
    # a fraction of one object per stream: the count is pinned to the nearest
    # whole object per stream, so one more kept per stream (14) still fails.
    base = min([(await tracked_per_stream(hand_written, 200))[0] for _ in range(3)])
    ours, kinds = min(
        [await tracked_per_stream(ssegate, 200) for _ in range(3)], key=lambda found: found[0]
    )
    assert round(ours - base) <= 13, (base, ours, kinds.most_common())
    assert kinds["AsyncioSession"] == kinds["EventSourceResponse"] == 200


def test_freeze_startup_objects() -> None:
    """Everything alive is frozen (no collection walks it); later objects are not."""
    gc.collect()
    assert gc.get_freeze_count() == 0
    try:
        frozen = freeze_startup_objects()
        assert frozen > 1000
        # Frozen objects may still die by reference count (threads left by other
        # tests run meanwhile), so the count can only have fallen since.
        assert gc.get_freeze_count() <= frozen
        later = [[] for _ in range(10)]
        assert all(gc.is_tracked(obj) for obj in later)
        gc.collect()  # collections go on, and freeze nothing more
        assert gc.get_freeze_count() <= frozen
    finally:
        gc.unfreeze()
    assert gc.get_freeze_count() == 0


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_aside_signal_after_a_cancelled_wait() -> None:
    """The asyncio aside signal is a bare future, which a cancelled wait
    cancels: a later wait gets a fresh one, set or not as the signal is."""
    loop = asyncio.get_running_loop()
    done = _Done(loop.create_future())
    waiting = loop.create_task(_wait(done))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    again = loop.create_task(_wait(done))
    await asyncio.sleep(0)
    assert not again.done()  # not set yet: the fresh future waits
    done.set()
    assert await again == "done"
    assert await _wait(done) == "done"  # once set, every wait ends at once


async def _wait(done: _Done) -> str:
    await done.wait()
    return "done"
