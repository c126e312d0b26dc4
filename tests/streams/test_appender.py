"""Appenders: a producer's appends to one stream, in order, not awaited one by one.

The memory store appends at ``add()``; Redis queues for the next group-committed
write and ``settle()`` waits only for what is too far behind; any other store
gets the generic one (appends at ``settle()``). Exact stored lists throughout."""

from __future__ import annotations

import asyncio
import gc
import warnings
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing

import anyio
import pytest
from streams_support import ids_of

from ssegate import Event, StreamEnded
from ssegate.streams import CANCELLED, DONE, Appender, End, MemoryStore, StreamItem
from ssegate.streams.redis import RedisStore

pytestmark = pytest.mark.anyio


async def collect(items: AsyncIterator[StreamItem]) -> list[StreamItem]:
    with anyio.fail_after(30):
        async with aclosing(items) as it:  # type: ignore[type-var]
            return [item async for item in it]


async def test_the_memory_store_appends_at_add() -> None:
    store = MemoryStore()
    appender = store.appender("s")
    appender.add(Event("a"))
    appender.add(Event("b", event="delta"))
    assert (await store.info("s")).last_id is not None  # written at add()
    await appender.settle(0)  # nothing left to write
    await store.end("s")
    _id = await ids_of(store, "s")
    assert await collect(store.read("s")) == [
        Event("a", id=_id(1)),
        Event("b", event="delta", id=_id(2)),
        End(DONE, _id(3)),
    ]
    with pytest.raises(StreamEnded):
        appender.add(Event("c"))


async def test_every_appender_checks_what_append_checks() -> None:
    store = MemoryStore()
    for appender in (store.appender("s"), Appender(store, "s")):
        with pytest.raises(TypeError, match="takes an Event"):
            appender.add("text")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="assigns ids"):
            appender.add(Event("x", id="1"))
        with pytest.raises(ValueError, match="lone surrogates"):
            appender.add(Event("\ud800"))
    with pytest.raises(ValueError, match="invalid stream name 'bad name'"):
        store.appender("bad name")


async def test_the_generic_appender_appends_at_settle_in_order() -> None:
    store = MemoryStore()
    appender = Appender(store, "s")
    appender.add(Event("a"))
    appender.add(Event("b"))
    assert (await store.info("s")).epoch is None  # nothing yet
    await appender.settle(5)
    _id = await ids_of(store, "s")
    await store.end("s")
    assert await collect(store.read("s")) == [
        Event("a", id=_id(1)),
        Event("b", id=_id(2)),
        End(DONE, _id(3)),
    ]


@pytest.mark.redis
async def test_redis_queues_at_add_and_settle_waits_only_beyond_behind(
    redis_store_factory: Callable[..., RedisStore],
) -> None:
    async with redis_store_factory() as store:
        writes = [0]
        script = store._append_script

        async def counted(**kwargs: object) -> object:
            writes[0] += 1
            return await script(**kwargs)  # type: ignore[arg-type]

        store._append_script = counted  # type: ignore[assignment]
        appender = store.appender("s")
        for i in range(3):
            appender.add(Event(f"e{i}"))
        assert len(store._commit) == 3  # queued, nothing sent: add() does not wait
        await appender.settle(3)  # three behind is allowed: returns at once
        assert writes[0] == 0
        await appender.settle(0)
        assert writes[0] == 1  # the three in one write
        _id = await ids_of(store, "s")
        await store.end("s")
        assert await collect(store.read("s")) == [
            Event("e0", id=_id(1)),
            Event("e1", id=_id(2)),
            Event("e2", id=_id(3)),
            End(DONE, _id(4)),
        ]


@pytest.mark.redis
async def test_redis_a_failed_append_raises_once_and_the_rest_are_seen_to(
    redis_store_factory: Callable[..., RedisStore],
) -> None:
    async with redis_store_factory() as store:
        await store.append("s", Event("before"))
        await store.end("s", CANCELLED)  # stopped elsewhere
        appender = store.appender("s")
        appender.add(Event("late 1"))
        appender.add(Event("late 2"))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(StreamEnded):
                await appender.settle(0)
            await appender.settle(0)  # the failure was raised once; nothing is left
            await asyncio.sleep(0)
            gc.collect()
        assert not caught
        _id = await ids_of(store, "s")
        assert await collect(store.read("s")) == [
            Event("before", id=_id(1)),
            End(CANCELLED, _id(2)),
        ]


@pytest.mark.redis
async def test_redis_a_producer_cancelled_in_settle_leaves_its_appends_written_in_order(
    redis_store_factory: Callable[..., RedisStore],
) -> None:
    # A long window keeps the appends queued until we let them go.
    async with redis_store_factory(append_window=3600.0) as store:
        appender = store.appender("s")
        for i in range(4):
            appender.add(Event(f"e{i}"))
        producer = asyncio.ensure_future(appender.settle(1))
        await asyncio.sleep(0)
        assert not producer.done()  # four behind, one allowed: it waits
        producer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await producer
        assert len(store._commit) == 4  # still queued, none taken back
        # What the stream gets next (a stop's error) comes after them.
        after = asyncio.ensure_future(store.append("s", Event("after")))
        await asyncio.sleep(0)
        store._commit.drain()
        store._wake_flusher()
        await appender.settle(0)
        await after
        _id = await ids_of(store, "s")
        await store.end("s")
        assert await collect(store.read("s")) == [
            *(Event(f"e{i}", id=_id(i + 1)) for i in range(4)),
            Event("after", id=_id(5)),
            End(DONE, _id(6)),
        ]


@pytest.mark.redis
async def test_redis_failed_appends_of_a_producer_gone_are_not_logged(
    redis_store_factory: Callable[..., RedisStore],
) -> None:
    # A generation stopped (its lease lost) while its appends were queued: they fail,
    # nobody is left to look, and an overloaded gateway must not log each one.
    async with redis_store_factory() as store:
        await store.append("s", Event("before"))
        await store.end("s", CANCELLED)  # stopped elsewhere
        loop = asyncio.get_running_loop()
        logged: list[dict[str, object]] = []
        handler = loop.get_exception_handler()
        loop.set_exception_handler(lambda _loop, context: logged.append(context))
        try:
            appender = store.appender("s")
            appender.add(Event("late 1"))
            appender.add(Event("late 2"))
            queued = list(appender._unwritten)  # type: ignore[attr-defined]
            await asyncio.wait(queued)  # written: refused, the stream had ended
            assert all(isinstance(f.exception(), StreamEnded) for f in queued[:1])
            del appender, queued  # the producer gone, the second never looked at
            gc.collect()
        finally:
            loop.set_exception_handler(handler)
        assert logged == []
