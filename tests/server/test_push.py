"""The push path: a live token sent from the appender's task, the reader's not woken.

``stream_response`` over a ``Hub`` on asyncio: while a reader waits for the next
event with nothing being sent, the hub hands a token to its ``Tap`` from the
task that appended it, and the session sends it there (``Session.take``).
Each test drives the real store, hub, response and session in virtual time
(``VirtualTimeLoop``), records every body message with its time, and counts
the events that went the push way (``taken``); every fallback (a send that must
wait, a keep-alive on its way, the end, a resume, a render that raises, the
client leaving, trio) is asserted event by event, as the pull path sends them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from starlette.requests import Request
from trio.testing import MockClock

from ssegate import Event
from ssegate.server import EventSourceResponse
from ssegate.streams import Hub, MemoryStore, StreamItem, default_transform, stream_response

from .conftest import Peer, VirtualTimeLoop

pytestmark = pytest.mark.anyio

ERROR = (
    b'event: error\ndata: {"code":"internal_error","message":"The event stream failed.",'
    b'"retryable":false}\n\n'
)


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, object]]:
    return ("asyncio", {"loop_factory": VirtualTimeLoop})


class GatedPeer(Peer):
    """A client whose socket fills up while ``gate`` is closed (its sends wait)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gate = asyncio.Event()
        self.gate.set()

    async def send(self, message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.body" and not self.gate.is_set():
            await self.gate.wait()
        await super().send(message)


class BrokenPeer(Peer):
    """A client whose connection breaks at its ``breaks_at``-th body message."""

    def __init__(self, breaks_at: int) -> None:
        super().__init__()
        self.breaks_at = breaks_at

    async def send(self, message: MutableMapping[str, Any]) -> None:
        body = message["type"] == "http.response.body"
        if body and len(self.bodies()) + 1 >= self.breaks_at:
            raise OSError("connection reset")
        await super().send(message)


class Reader:
    """One client following ``name`` through ``stream_response``."""

    def __init__(self, response: EventSourceResponse, task: asyncio.Task[Any], peer: Peer) -> None:
        self.response = response
        self.task = task
        self.peer = peer

    @property
    def taken(self) -> int:
        """Events that went the push way."""
        return self.response.pusher.taken  # type: ignore[union-attr,attr-defined,no-any-return]

    async def bodies(self) -> list[tuple[float, bytes, bool]]:
        await self.task
        return self.peer.bodies()


async def follow(
    source: Hub | MemoryStore,
    name: str,
    peer: Peer | None = None,
    *,
    after: str | None = None,
    transform: Callable[[StreamItem], Any] = default_transform,
    ping: float | None = None,
    ends_after: frozenset[str] = frozenset(),
) -> Reader:
    peer = Peer() if peer is None else peer
    peer.scope["query_string"] = b""
    if after is not None:
        peer.scope["headers"] = [(b"last-event-id", after.encode())]
    response = await stream_response(
        source,
        name,
        Request(peer.scope),
        missing_ok=True,
        transform=transform,
        ping=ping,
        ends_after=ends_after,
    )
    assert isinstance(response, EventSourceResponse)
    task = asyncio.ensure_future(response(peer.scope, peer.receive, peer.send))
    return Reader(response, task, peer)


async def settle() -> None:
    """Readers started now send their headers and wait for the first event."""
    await anyio.sleep(0.5)


async def paced(store: MemoryStore, data: Iterable[str]) -> list[str]:
    """Append ``data`` to ``s`` a second apart (the reader idle between); their ids."""
    ids = []
    for item in data:
        ids.append(await store.append("s", Event(item)))
        await anyio.sleep(1)
    return ids


def event(store_id: str, data: str) -> bytes:
    return f"id: {store_id}\ndata: {data}\n\n".encode()


async def test_an_idle_reader_takes_each_token_from_the_appender() -> None:
    store = MemoryStore()
    async with Hub(store) as hub:
        reader = await follow(hub, "s")
        await settle()
        ids = await paced(store, "abc")
        await store.end("s", "done")
        assert await reader.bodies() == [
            (0.0, b"", True),
            (0.5, event(ids[0], "a"), True),
            (1.5, event(ids[1], "b"), True),
            (2.5, event(ids[2], "c"), True),
            (3.5, b"", False),  # the end: read by the reader itself
        ]
        assert reader.taken == 3
        assert reader.response.pusher.session is None  # type: ignore[union-attr]
        assert hub.subscribers == 0


async def test_tokens_taken_in_one_turn_of_the_loop_leave_in_one_message() -> None:
    """Several tokens of one upstream read: one write, as the woken reader made."""
    store = MemoryStore()
    async with Hub(store) as hub:
        reader = await follow(hub, "s")
        await settle()
        ids = [await store.append("s", Event(data)) for data in "ab"]
        await anyio.sleep(1)
        await store.end("s", "done")
        assert await reader.bodies() == [
            (0.0, b"", True),
            (0.5, event(ids[0], "a") + event(ids[1], "b"), True),
            (1.5, b"", False),
        ]
        assert reader.taken == 2


async def test_a_token_taken_as_the_end_comes_leaves_with_the_end() -> None:
    """The end woke the reader before the loop's flush: the reader sends what
    was taken first, with the end, in one message (one write)."""
    store = MemoryStore()
    async with Hub(store) as hub:
        reader = await follow(hub, "s")
        await settle()
        a = await store.append("s", Event("a"))
        await store.end("s", "done")  # in the same step: before the flush
        assert await reader.bodies() == [
            (0.0, b"", True),
            (0.5, event(a, "a"), False),
        ]
        assert reader.taken == 1


async def test_a_last_event_waits_a_turn_for_the_end_and_leaves_with_it() -> None:
    """``ends_after``: an event of such a type, taken, is flushed a loop turn
    later; the end that comes meanwhile (the next step of the appender's task)
    wakes the reader, which sends both in one message, at the same time."""
    store = MemoryStore()
    async with Hub(store) as hub:
        reader = await follow(hub, "s", ends_after=frozenset({"finish"}))
        await settle()
        a = await store.append("s", Event("a"))
        await anyio.sleep(1)
        z = await store.append("s", Event("z", event="finish"))
        await asyncio.sleep(0)  # the end in the appender's next step, as the runner's
        await store.end("s", "done")
        assert await reader.bodies() == [
            (0.0, b"", True),
            (0.5, event(a, "a"), True),
            (1.5, f"event: finish\nid: {z}\ndata: z\n\n".encode(), False),
        ]
        assert reader.taken == 2


async def test_a_last_event_whose_end_is_late_goes_after_a_turn_alone() -> None:
    """A hint only: no end within the turn, the event is sent then, by itself."""
    store = MemoryStore()
    async with Hub(store) as hub:
        reader = await follow(hub, "s", ends_after=frozenset({"finish"}))
        await settle()
        z = await store.append("s", Event("z", event="finish"))
        for _ in range(3):
            await asyncio.sleep(0)  # the turn it waits, and the one that sends it
        assert reader.peer.bodies()[-1] == (
            0.5,
            f"event: finish\nid: {z}\ndata: z\n\n".encode(),
            True,
        )
        y = await store.append("s", Event("y", event="finish"))  # not the last after all
        await anyio.sleep(1)
        await store.end("s", "done")
        assert await reader.bodies() == [
            (0.0, b"", True),
            (0.5, f"event: finish\nid: {z}\ndata: z\n\n".encode(), True),
            (0.5, f"event: finish\nid: {y}\ndata: y\n\n".encode(), True),
            (1.5, b"", False),
        ]
        assert reader.taken == 2


async def test_a_token_that_renders_to_nothing_is_taken_and_sends_nothing() -> None:
    def quiet(item: StreamItem) -> object:
        if isinstance(item, Event) and item.data == "usage":
            return None  # e.g. OpenAI's usage chunk without include_usage
        return default_transform(item)

    store = MemoryStore()
    async with Hub(store) as hub:
        reader = await follow(hub, "s", transform=quiet)
        await settle()
        ids = await paced(store, ["a", "usage", "b"])
        await store.end("s", "done")
        assert await reader.bodies() == [
            (0.0, b"", True),
            (0.5, event(ids[0], "a"), True),
            (2.5, event(ids[2], "b"), True),
            (3.5, b"", False),
        ]
        assert reader.taken == 3


async def test_a_send_that_must_wait_leaves_the_next_tokens_to_the_reader() -> None:
    """A full socket: the token being sent finishes aside; the next ones are read
    and sent by the reader in order, once it has gone; then the push path again."""
    store = MemoryStore()
    async with Hub(store) as hub:
        peer = GatedPeer()
        reader = await follow(hub, "s", peer)
        await settle()
        peer.gate.clear()
        a = await store.append("s", Event("a"))  # taken; its send waits
        await anyio.sleep(1)
        b = await store.append("s", Event("b"))  # not taken: the reader wakes
        c = await store.append("s", Event("c"))  # the reader is not waiting
        await anyio.sleep(1)
        assert reader.taken == 1
        peer.gate.set()
        await anyio.sleep(1)
        d = await store.append("s", Event("d"))  # the reader waits again, idle: taken
        await anyio.sleep(1)
        await store.end("s", "done")
        assert await reader.bodies() == [
            (0.0, b"", True),
            (2.5, event(a, "a"), True),
            (2.5, event(b, "b"), True),
            (2.5, event(c, "c"), True),
            (3.5, event(d, "d"), True),
            (4.5, b"", False),
        ]
        assert reader.taken == 2


async def test_a_keep_alive_on_its_way_leaves_the_token_to_the_reader() -> None:
    store = MemoryStore()
    async with Hub(store) as hub:
        peer = GatedPeer()
        reader = await follow(hub, "s", peer, ping=1.0)
        await settle()
        peer.gate.clear()
        await anyio.sleep(0.75)  # the keep-alive of 1.0 waits on the full socket
        a = await store.append("s", Event("a"))
        await anyio.sleep(0.25)
        peer.gate.set()
        await anyio.sleep(0.25)
        b = await store.append("s", Event("b"))
        await anyio.sleep(0.25)
        await store.end("s", "done")
        assert await reader.bodies() == [
            (0.0, b"", True),
            (1.5, b": ping\n", True),
            (1.5, event(a, "a"), True),
            (1.75, event(b, "b"), True),
            (2.0, b"", False),
        ]
        assert reader.taken == 1  # b only


def shout(item: StreamItem) -> object:
    """Another format: upper case."""
    if isinstance(item, Event):
        return Event(item.data.upper(), id=item.id)
    return default_transform(item)


async def test_several_readers_each_take_their_own_and_a_slow_one_stalls_nobody() -> None:
    store = MemoryStore()
    async with Hub(store) as hub:
        slow_peer = GatedPeer()
        upper = await follow(hub, "s", transform=shout)
        slow = await follow(hub, "s", slow_peer)
        plain = await follow(hub, "s")
        await settle()
        slow_peer.gate.clear()
        ids = await paced(store, "abc")
        slow_peer.gate.set()
        await anyio.sleep(1)
        await store.end("s", "done")
        at = [0.5, 1.5, 2.5]
        assert await plain.bodies() == [
            (0.0, b"", True),
            *((t, event(i, d), True) for t, i, d in zip(at, ids, "abc", strict=True)),
            (4.5, b"", False),
        ]
        assert await upper.bodies() == [
            (0.0, b"", True),
            *((t, event(i, d), True) for t, i, d in zip(at, ids, "ABC", strict=True)),
            (4.5, b"", False),
        ]
        assert await slow.bodies() == [
            (0.0, b"", True),
            *((3.5, event(i, d), True) for i, d in zip(ids, "abc", strict=True)),
            (4.5, b"", False),
        ]
        assert (plain.taken, upper.taken, slow.taken) == (3, 3, 1)


async def test_a_resuming_reader_replays_then_takes_live_tokens() -> None:
    store = MemoryStore()
    async with Hub(store) as hub:
        ids = [await store.append("s", Event(data)) for data in "abc"]
        reader = await follow(hub, "s", after=ids[0])
        await settle()
        ids.append(await store.append("s", Event("d")))
        await anyio.sleep(1)
        await store.end("s", "done")
        assert await reader.bodies() == [
            (0.0, b"", True),
            # the replay, as without the push path: ready together, one message
            (0.0, event(ids[1], "b") + event(ids[2], "c"), True),
            (0.5, event(ids[3], "d"), True),
            (1.5, b"", False),
        ]
        assert reader.taken == 1


async def test_a_render_that_raises_ends_the_stream_as_when_the_reader_reads() -> None:
    def render(item: StreamItem) -> object:
        if isinstance(item, Event) and item.data == "boom":
            raise ValueError("cannot render")
        return default_transform(item)

    store = MemoryStore()
    async with Hub(store) as hub:
        pushed = await follow(hub, "s", transform=render)
        pulled = await follow(store, "s", transform=render)  # no hub: no push path
        await settle()
        a = await store.append("s", Event("a"))
        await anyio.sleep(1)
        await store.append("s", Event("boom"))
        await anyio.sleep(1)
        await store.append("s", Event("never"))
        expected = [(0.0, b"", True), (0.5, event(a, "a"), True), (1.5, ERROR, False)]
        assert await pushed.bodies() == expected
        assert await pulled.bodies() == expected
        assert pushed.taken == 1
        assert pulled.response.pusher is None
        assert hub.subscribers == 0


@pytest.mark.parametrize(
    ("peer", "sent"),
    [
        (Peer(disconnect_at=2.0), "ab"),  # gone while idle: c is not taken
        (BrokenPeer(breaks_at=3), "a"),  # b is taken; its send fails: the stream ends
    ],
    ids=["disconnect", "broken-connection"],
)
async def test_a_client_that_leaves_takes_nothing_more(peer: Peer, sent: str) -> None:
    store = MemoryStore()
    async with Hub(store) as hub:
        reader = await follow(hub, "s", peer)
        await settle()
        ids = await paced(store, "abc")
        assert await reader.bodies() == [
            (0.0, b"", True),
            *((t, event(i, d), True) for t, i, d in zip([0.5, 1.5], ids, sent, strict=False)),
        ]
        assert reader.taken == 2
        assert hub.subscribers == 0


@pytest.mark.parametrize("anyio_backend", [("trio", {"clock": MockClock(autojump_threshold=0)})])
async def test_on_trio_the_reader_reads_every_token_itself() -> None:
    store = MemoryStore()
    async with Hub(store) as hub, anyio.create_task_group() as tasks:
        peer = Peer()
        peer.scope["query_string"] = b""
        response = await stream_response(hub, "s", Request(peer.scope), missing_ok=True, ping=None)
        assert isinstance(response, EventSourceResponse)
        tasks.start_soon(response, peer.scope, peer.receive, peer.send)
        await settle()
        ids = await paced(store, "ab")
        await store.end("s", "done")
    assert peer.bodies() == [
        (0.0, b"", True),
        (0.5, event(ids[0], "a"), True),
        (1.5, event(ids[1], "b"), True),
        (2.5, b"", False),
    ]
    assert response.pusher.taken == 0  # type: ignore[union-attr,attr-defined]


def step(life: Any) -> asyncio.Future[Any] | None:
    """Run ``life`` (a coroutine) until it waits for a future (returned) or ends."""
    try:
        while (waiting := life.send(None)) is None:  # a bare yield: go on at once
            pass
    except StopIteration:
        return None
    assert isinstance(waiting, asyncio.Future)
    return waiting


async def test_a_pump_resumed_before_the_flush_sends_what_was_taken_first() -> None:
    """Taken items go before anything the pump sends, whoever resumes it first.

    On asyncio the flush is always called before the reader's task can wake
    (``call_soon`` runs callbacks in order); here the test is the scheduler,
    stepping the stream's coroutine by hand, and resumes it first.
    """
    store = MemoryStore()
    async with Hub(store) as hub:
        peer = Peer()
        peer.scope["query_string"] = b""
        response = await stream_response(hub, "s", Request(peer.scope), missing_ok=True, ping=None)
        assert isinstance(response, EventSourceResponse)
        life = response(peer.scope, peer.receive, peer.send)
        waiting = step(life)  # headers sent; it waits for the first event
        a = await store.append("s", Event("a"))  # taken; the flush is not called yet
        assert peer.bodies() == [(0.0, b"", True)]
        waiting.set_result(None)  # as if woken by the hub
        waiting = step(life)  # resumed: a goes before anything else
        assert peer.bodies() == [(0.0, b"", True), (0.0, event(a, "a"), True)]
        b = await store.append("s", Event("b"))  # taken again: it waits, idle
        await anyio.lowlevel.checkpoint()  # the flush
        await store.end("s", "done")
        assert waiting is not None
        await asyncio.wait([waiting])  # the hub wakes it for the end
        await asyncio.ensure_future(life)  # the rest of its life in a task
        assert peer.bodies() == [
            (0.0, b"", True),
            (0.0, event(a, "a"), True),
            (0.0, event(b, "b"), True),
            (0.0, b"", False),
        ]
        assert response.pusher.taken == 2  # type: ignore[union-attr,attr-defined]
