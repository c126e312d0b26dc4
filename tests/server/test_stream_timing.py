"""Schedules of the streaming core in virtual time (trio's MockClock, and an asyncio twin).

Every body message is recorded with the virtual time it was sent, so the
assertions are exact: when keep-alives go out, when a batch leaves, when a stuck
client is dropped, when a shutdown cuts the producer. No real sleeping.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator

import anyio
import pytest
from trio.testing import MockClock

from ssegate import Event
from ssegate.server import CloseReason, Shutdown
from ssegate.server._options import MAX_BATCH_SIZE, SHUTDOWN_SEND_S, StreamOptions
from ssegate.server._stream import stream_events

from .conftest import Peer, VirtualTimeLoop

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(
    request: pytest.FixtureRequest, virtual_clock: MockClock
) -> tuple[str, dict[str, object]]:
    """Both loops with virtual time (the asyncio and the anyio halves of the core)."""
    if request.param == "asyncio":
        return ("asyncio", {"loop_factory": VirtualTimeLoop})
    return ("trio", {"clock": virtual_clock})


async def run(peer: Peer, content: object, **options: object) -> tuple[float, CloseReason]:
    t0 = anyio.current_time()
    reason = await stream_events(
        peer.scope,
        peer.receive,
        peer.send,
        content,  # type: ignore[arg-type]
        StreamOptions(**options),  # type: ignore[arg-type]
    )
    return t0, reason


async def test_pings_start_before_the_first_event() -> None:
    """A model thinking for 40 s: keep-alives at 15 and 30 s, then the token."""

    async def thinking() -> AsyncIterator[str]:
        await anyio.sleep(40)
        yield "late"

    peer = Peer()
    t0, reason = await run(peer, thinking(), ping=15)
    assert reason is CloseReason.COMPLETED
    assert peer.bodies(t0=t0) == [
        (0.0, b"", True),
        (15.0, b": ping\n", True),
        (30.0, b": ping\n", True),
        (40.0, b"data: late\n\n", True),
        (40.0, b"", False),
    ]


async def test_ping_counts_silence_from_the_last_write() -> None:
    async def trickle() -> AsyncIterator[str]:
        await anyio.sleep(10)
        yield "a"
        await anyio.sleep(20)
        yield "b"

    peer = Peer()
    t0, _ = await run(peer, trickle(), ping=15)
    assert peer.bodies(t0=t0) == [
        (0.0, b"", True),
        (10.0, b"data: a\n\n", True),
        (25.0, b": ping\n", True),
        (30.0, b"data: b\n\n", True),
        (30.0, b"", False),
    ]


async def test_no_pings_when_disabled() -> None:
    async def slow() -> AsyncIterator[str]:
        await anyio.sleep(100)
        yield "x"

    peer = Peer()
    t0, _ = await run(peer, slow(), ping=None)
    assert peer.bodies(t0=t0) == [
        (0.0, b"", True),
        (100.0, b"data: x\n\n", True),
        (100.0, b"", False),
    ]


async def test_ready_items_leave_together_and_are_not_held_for_later_ones() -> None:
    async def bursts() -> AsyncIterator[str]:
        yield "a"
        yield "b"
        await anyio.sleep(10)
        yield "c"
        await anyio.sleep(10)
        yield "d"
        yield "e"

    peer = Peer()
    t0, _ = await run(peer, bursts(), ping=None)
    assert peer.bodies(t0=t0) == [
        (0.0, b"", True),
        # a and b were ready together; they go while the producer sleeps
        (0.0, b"data: a\n\ndata: b\n\n", True),
        (10.0, b"data: c\n\n", True),
        (20.0, b"data: d\n\n", True),
        (20.0, b"data: e\n\n", False),
    ]


async def test_client_gone_cancels_producer_and_runs_its_finally() -> None:
    log: list[str] = []

    async def forever() -> AsyncIterator[str]:
        try:
            yield "first"
            await anyio.sleep_forever()
            yield "never"
        finally:
            log.append(f"finally at {anyio.current_time() - t0}")

    closed: list[CloseReason] = []
    peer = Peer(disconnect_at=anyio.current_time() + 7)
    t0 = anyio.current_time()
    _, reason = await run(peer, forever(), ping=5, on_close=closed.append)
    assert reason is CloseReason.CLIENT_GONE
    assert closed == [CloseReason.CLIENT_GONE]
    assert log == ["finally at 7.0"]
    # nothing is sent after the client left, not even the end of the body
    assert peer.bodies(t0=t0) == [
        (0.0, b"", True),
        (0.0, b"data: first\n\n", True),
        (5.0, b": ping\n", True),
    ]


async def test_client_gone_before_the_first_item() -> None:
    """sysid/sse-starlette#156: the producer's finally must run even then."""
    log: list[str] = []

    async def never_yields() -> AsyncIterator[str]:
        try:
            await anyio.sleep_forever()
            yield "never"
        finally:
            log.append("finally")

    peer = Peer(disconnect_at=anyio.current_time())
    _, reason = await run(peer, never_yields())
    assert reason is CloseReason.CLIENT_GONE
    assert log == ["finally"]
    assert peer.body == b""


async def test_send_timeout_drops_a_client_that_stopped_reading() -> None:
    pulled = 0

    async def firehose() -> AsyncIterator[str]:
        nonlocal pulled
        while True:
            pulled += 1
            yield "x" * 1000

    closed: list[CloseReason] = []
    peer = Peer(block_body_after=3)
    t0, reason = await run(peer, firehose(), send_timeout=2.5, ping=1, on_close=closed.append)
    assert reason is CloseReason.SEND_TIMEOUT
    assert closed == [CloseReason.SEND_TIMEOUT]
    assert anyio.current_time() - t0 == 2.5
    # the empty first message and two full batches got through, the third batch
    # is stuck; the producer was not pulled any further meanwhile
    per_batch = math.ceil(MAX_BATCH_SIZE / len(b"data: " + b"x" * 1000 + b"\n\n"))
    assert [len(body) for _, body, _ in peer.bodies()] == [0, per_batch * 1008, per_batch * 1008]
    assert pulled == 3 * per_batch


async def test_send_timeout_while_only_pinging() -> None:
    async def idle() -> AsyncIterator[str]:
        await anyio.sleep_forever()
        yield "never"

    peer = Peer(block_body_after=1)
    t0, reason = await run(peer, idle(), send_timeout=3, ping=10)
    assert reason is CloseReason.SEND_TIMEOUT
    assert anyio.current_time() - t0 == 13.0  # the ping at 10 s was stuck for 3 s


async def test_shutdown_sends_farewell_and_closes() -> None:
    shutdown = Shutdown()
    log: list[str] = []

    async def ticker() -> AsyncIterator[Event]:
        try:
            for i in range(100):
                await anyio.sleep(1)
                yield Event(str(i), id=str(i))
        finally:
            log.append("closed")

    async def stop_later() -> None:
        await anyio.sleep(2.5)
        shutdown.set()

    peer = Peer()
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(stop_later)
        t0, reason = await run(
            peer,
            ticker(),
            ping=None,
            shutdown=shutdown,
            farewell=Event("", event="shutdown", retry=5000),
        )
    assert reason is CloseReason.SHUTDOWN
    assert log == ["closed"]
    assert peer.bodies(t0=t0) == [
        (0.0, b"", True),
        (1.0, b"id: 0\ndata: 0\n\n", True),
        (2.0, b"id: 1\ndata: 1\n\n", True),
        (2.5, b"event: shutdown\nretry: 5000\ndata: \n\n", False),
    ]


async def test_shutdown_grace_lets_the_producer_finish() -> None:
    shutdown = Shutdown()

    async def short_answer() -> AsyncIterator[str]:
        for word in ("a", "b", "c"):
            await anyio.sleep(1)
            yield word

    async def stop_soon() -> None:
        await anyio.sleep(0.5)
        shutdown.set()

    peer = Peer()
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(stop_soon)
        t0, reason = await run(
            peer, short_answer(), ping=None, shutdown=shutdown, shutdown_grace=10, farewell="bye"
        )
    assert reason is CloseReason.COMPLETED  # it finished within the grace period
    assert peer.bodies(t0=t0)[-1] == (3.0, b"", False)


async def test_shutdown_grace_expires() -> None:
    shutdown = Shutdown()
    shutdown.set()  # already set when the stream starts

    async def endless() -> AsyncIterator[str]:
        while True:
            await anyio.sleep(1)
            yield "t"

    peer = Peer()
    t0, reason = await run(
        peer, endless(), ping=None, shutdown=shutdown, shutdown_grace=2.5, farewell="bye"
    )
    assert reason is CloseReason.SHUTDOWN
    assert peer.bodies(t0=t0) == [
        (0.0, b"", True),
        (1.0, b"data: t\n\n", True),
        (2.0, b"data: t\n\n", True),
        (2.5, b"data: bye\n\n", False),
    ]


async def test_shutdown_from_the_scope() -> None:
    """GracefulShutdown shares its Shutdown through the scope."""
    shutdown = Shutdown()
    shutdown.set()

    async def endless() -> AsyncIterator[str]:
        await anyio.sleep_forever()
        yield "never"

    peer = Peer()
    peer.scope["ssegate.shutdown"] = shutdown
    _, reason = await run(peer, endless(), ping=None, farewell="bye")
    assert reason is CloseReason.SHUTDOWN
    assert peer.body == b"data: bye\n\n"


async def test_cancelled_from_outside() -> None:
    """A timeout around the response (or a server giving up) still closes the producer."""
    log: list[str] = []

    async def forever() -> AsyncIterator[str]:
        try:
            yield "first"
            await anyio.sleep_forever()
            yield "never"
        finally:
            log.append("finally")

    closed: list[CloseReason] = []
    peer = Peer()
    t0 = anyio.current_time()
    with anyio.move_on_after(4) as scope:
        await run(peer, forever(), ping=None, on_close=closed.append)
    assert scope.cancelled_caught
    assert anyio.current_time() - t0 == 4.0
    assert log == ["finally"]
    assert closed == [CloseReason.CANCELLED]


async def test_producer_that_swallows_cancellation_is_still_stopped() -> None:
    async def stubborn() -> AsyncIterator[str]:
        yield "first"
        with contextlib.suppress(BaseException):  # a badly behaved producer
            await anyio.sleep_forever()
        while True:
            yield "zombie"

    peer = Peer(disconnect_at=anyio.current_time() + 3)
    t0, reason = await run(peer, stubborn(), ping=None)
    assert reason is CloseReason.CLIENT_GONE
    assert anyio.current_time() - t0 == 3.0
    assert peer.body == b"data: first\n\n"


async def test_shutdown_cuts_off_a_client_that_stopped_reading() -> None:
    """Without send_timeout a stuck client would keep the server from ever exiting."""
    shutdown = Shutdown()

    async def firehose() -> AsyncIterator[str]:
        while True:
            yield "x" * 1000

    async def stop_later() -> None:
        await anyio.sleep(1)
        shutdown.set()

    closed: list[CloseReason] = []
    peer = Peer(block_body_after=2)  # takes the empty first message and one batch
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(stop_later)
        t0, reason = await run(
            peer, firehose(), ping=None, shutdown=shutdown, farewell="bye", on_close=closed.append
        )
    assert reason is CloseReason.SHUTDOWN
    assert closed == [CloseReason.SHUTDOWN]
    # the farewell could not be delivered: cut off SHUTDOWN_SEND_S after the signal
    assert anyio.current_time() - t0 == 1 + SHUTDOWN_SEND_S
    assert len(peer.bodies()) == 2
