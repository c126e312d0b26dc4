"""``Presence``: which streams a replica marks in Redis, and when.

A burst of new readers used to re-mark every stream read here at each new one
(N new streams: N times the streams already read, 10 % of a replica's CPU at
1 000 streams starting in a second); now a new stream is marked alone and all
of them once per ``refresh``.
"""

from __future__ import annotations

import math

import anyio
import anyio.lowlevel
import pytest
import redis.asyncio as aioredis

from ssegate.gateway._presence import Presence
from ssegate.streams.redis import RedisStore

pytestmark = [pytest.mark.anyio, pytest.mark.redis]


async def until_marked(presence: Presence, stream: str, marked: bool = True) -> None:
    """Wait for the mark to be there (or gone): an outcome, not a duration; up to 30 s."""
    for _ in range(3000):
        if await presence.elsewhere(stream) is marked:
            return
        await anyio.sleep(0.01)
    pytest.fail(f"{stream} still {'un' if marked else ''}marked after 30 s")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_new_readers_are_marked_alone_and_all_of_them_once_per_refresh(
    redis_url: str, redis_prefix: str
) -> None:
    clock = Clock()
    async with RedisStore(redis_url, prefix=redis_prefix) as store:
        presence = Presence(store, refresh=1.0, clock=clock)
        assert presence.due() == []  # the first call refreshes all: none yet
        presence.add("a")
        presence.add("b")
        presence.add("a")  # a second reader of a: already on its way
        assert presence.due() == ["a", "b"]
        assert presence.due() == []
        presence.add("c")
        clock.now += 0.5
        assert presence.due() == ["c"]  # not a and b again
        presence.add("d")
        presence.remove("d")  # gone before it was marked: nothing to mark
        presence.add("e")
        presence.remove("e")
        presence.add("e")  # came back: marked once
        assert presence.due() == ["e"]
        clock.now += 0.5  # the refresh is due: every stream read here
        presence.add("f")
        assert presence.due() == ["a", "b", "c", "e", "f"]
        assert presence.due() == []
        presence.remove("a")
        presence.remove("a")
        clock.now += 1.0
        assert presence.due() == ["b", "c", "e", "f"]


async def test_without_redis_nothing_is_marked() -> None:
    from ssegate.streams import MemoryStore

    presence = Presence(MemoryStore())
    presence.add("a")
    assert not presence.shared
    assert presence._fresh == []
    await presence.run()  # returns at once: nothing to do
    assert await presence.elsewhere("a") is False


async def test_a_new_reader_is_marked_at_once_not_at_the_next_refresh(
    redis_url: str, redis_prefix: str
) -> None:
    async with RedisStore(redis_url, prefix=redis_prefix) as store:
        presence = Presence(store, refresh=600.0)  # the next refresh is far away
        async with anyio.create_task_group() as tg:
            tg.start_soon(presence.run)
            for stream in ("s1", "s2"):
                presence.add(stream)
                await until_marked(presence, stream)
            tg.cancel_scope.cancel()


async def test_marks_last_twice_the_refresh_and_lapse_after_the_last_reader(
    redis_url: str, redis_prefix: str
) -> None:
    async with RedisStore(redis_url, prefix=redis_prefix) as store:
        presence = Presence(store, refresh=0.2)
        client = aioredis.Redis.from_url(redis_url)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(presence.run)
                presence.add("s1")
                presence.add("s2")
                await until_marked(presence, "s1")
                ttl = await client.pttl(f"{redis_prefix}readers:s1")
                assert 0 < ttl <= 400  # 2 x refresh
                presence.remove("s1")
                await until_marked(presence, "s1", marked=False)  # no longer refreshed: it lapses
                assert await presence.elsewhere("s2")  # still refreshed
                tg.cancel_scope.cancel()
        finally:
            await client.aclose()


async def test_a_burst_of_new_readers_is_marked_in_one_pipeline(
    redis_url: str, redis_prefix: str
) -> None:
    async with RedisStore(redis_url, prefix=redis_prefix) as store:
        presence = Presence(store, refresh=600.0, gather=0.5)
        sent: list[int] = []
        pipeline = store.redis.pipeline

        def counted(*args: object, **kwargs: object) -> object:
            pipe = pipeline(*args, **kwargs)  # type: ignore[arg-type]
            execute = pipe.execute

            async def execute_counted(*a: object, **k: object) -> object:
                sent.append(len(pipe.command_stack))
                return await execute(*a, **k)  # type: ignore[arg-type]

            pipe.execute = execute_counted  # type: ignore[method-assign]
            return pipe

        store.redis.pipeline = counted  # type: ignore[method-assign]
        async with anyio.create_task_group() as tg:
            tg.start_soon(presence.run)
            while presence._next_all == -math.inf:  # its first round (nothing read yet) done
                await anyio.lowlevel.checkpoint()
            for i in range(5):
                presence.add(f"s{i}")
                await anyio.lowlevel.checkpoint()  # the first wakes the marker at once
            await until_marked(presence, "s4")
            assert sent == [5]
            tg.cancel_scope.cancel()
