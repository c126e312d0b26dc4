"""The asyncio stream's coroutine (``_awaitable.GeneratorCoroutine``) behaves as a coroutine would.

What ``EventSourceResponse(...)(scope, receive, send)`` returns on asyncio is
not a native coroutine but the session's one generator (``pump(begin)``, the
stream's whole life, so an idle stream keeps no frame of its own but the
pump's) dressed as one. Everything a caller may do with a coroutine must work
the same: ``await`` it, make it a task, throw into it, close it before or
while it runs; and awaiting it hands over the generator itself.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator

import pytest

from ssegate.server import CloseReason, EventSourceResponse
from ssegate.server._awaitable import GeneratorCoroutine

from .conftest import Peer

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Held:
    """A producer that yields one item, then waits until released (or closed)."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.finally_ran = False
        self.reasons: list[CloseReason] = []

    async def items(self) -> AsyncIterator[str]:
        try:
            yield "first"
            await self.release.wait()
            yield "last"
        finally:
            self.finally_ran = True

    def response(self) -> EventSourceResponse:
        return EventSourceResponse(self.items(), ping=None, on_close=self.reasons.append)


async def test_is_a_coroutine_a_task_can_run() -> None:
    held, peer = Held(), Peer()
    coro = held.response()(peer.scope, peer.receive, peer.send)
    assert isinstance(coro, GeneratorCoroutine)
    assert asyncio.iscoroutine(coro)
    assert inspect.isawaitable(coro)
    task = asyncio.get_running_loop().create_task(coro)
    await asyncio.sleep(0)
    held.release.set()
    assert await task is CloseReason.COMPLETED
    assert peer.body == b"data: first\n\ndata: last\n\n"
    assert held.reasons == [CloseReason.COMPLETED]


async def test_closed_before_it_runs_does_nothing() -> None:
    held, peer = Held(), Peer()
    coro = held.response()(peer.scope, peer.receive, peer.send)
    coro.close()
    coro.close()  # closing again is a no-op, as for a coroutine
    assert peer.messages == []
    assert held.reasons == []


async def test_closed_while_the_producer_waits_closes_the_stream() -> None:
    """As a coroutine closed mid-way: GeneratorExit runs every cleanup that
    does not wait (``on_close`` is told). The producer's ``asend``, closed
    where it waits, leaves the async generator unable to ``aclose`` (CPython
    says it is still running; logged), as under the native coroutine before."""
    held, peer = Held(), Peer()
    coro = held.response()(peer.scope, peer.receive, peer.send)
    coro.send(None)  # runs until the producer waits
    assert peer.body == b"data: first\n\n"
    coro.close()
    assert held.reasons == [CloseReason.CANCELLED]
    assert peer.body == b"data: first\n\n"  # nothing more was sent


async def test_thrown_into_the_waiting_producer_is_its_error() -> None:
    """An exception thrown in reaches the producer where it waits, as with
    ``await``: raised from there, the stream ends as the producer's error."""
    held, peer = Held(), Peer()
    coro = held.response()(peer.scope, peer.receive, peer.send)
    coro.send(None)
    with pytest.raises(StopIteration) as done:
        coro.throw(ValueError("boom"))
    assert done.value.value is CloseReason.ERROR
    assert held.finally_ran
    assert held.reasons == [CloseReason.ERROR]
    assert b"event: error\n" in peer.body
    assert peer.bodies()[-1][2] is False  # the response was completed


async def test_a_cancellation_from_outside_goes_on_up() -> None:
    held, peer = Held(), Peer()
    task = asyncio.get_running_loop().create_task(
        held.response()(peer.scope, peer.receive, peer.send)
    )
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert held.finally_ran
    assert held.reasons == [CloseReason.CANCELLED]


async def test_awaiting_it_awaits_the_one_generator() -> None:
    """``await`` gets the pump's generator itself: no frame or object of ours
    sits between the awaiting frame and the pump; a second await is refused."""
    held, peer = Held(), Peer()
    coro = held.response()(peer.scope, peer.receive, peer.send)
    life = coro.__await__()
    assert inspect.isgenerator(life)
    assert life.gi_code.co_name == "pump"
    with pytest.raises(RuntimeError, match="cannot reuse already awaited coroutine"):
        coro.__await__()
    life.send(None)  # as the await does: the stream runs until its producer waits
    assert peer.body == b"data: first\n\n"
    life.close()
    assert held.reasons == [CloseReason.CANCELLED]
