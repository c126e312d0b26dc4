"""RedisStore's notification stream: every write announces the streams it advanced,
a hub reads only those, and its sweep finds what no notification announced."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import aclosing
from typing import Any

import anyio
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from streams_support import until

from ssegate import Event, StoreUnavailable
from ssegate.streams import DONE, FAILED, End, Hub, StreamItem
from ssegate.streams._store import format_id, parse_id
from ssegate.streams.redis import RedisStore, _RedisWaker

pytestmark = [pytest.mark.anyio, pytest.mark.redis]


async def read_into(hub: Hub, stream: str, got: list[StreamItem]) -> None:
    """Everything the hub reads of ``stream``, into ``got`` as it comes."""
    async with aclosing(hub.read(stream)) as items:
        async for item in items:
            got.append(item)


async def announced(store: RedisStore, key: bytes | None = None) -> list[str]:
    """What a notification stream (the shared one by default) holds, oldest
    first: each entry's announcement, and the stream a writer's marker names."""
    entries = await store.redis.xrange(key or store._notify)
    return [
        " ".join(value.decode() for name, value in fields.items() if name in (b"s", b"w"))
        for _, fields in entries
    ]


async def test_every_write_announces_the_streams_it_advanced_and_to_which_number(
    redis_store_factory: Callable[..., RedisStore],
) -> None:
    # A window long enough that both appends go in one call.
    async with redis_store_factory(append_window=0.2) as store:
        me = store._id.decode()  # the writer, for a reader of the stream
        own = store._own_notify_key
        await store.append("a", Event("1"))
        # Appends on the store's own stream, listed in the writers' set; the
        # write that listed it put a marker on the shared stream.
        assert await announced(store, own) == [f"{me} a 1"]
        assert await store.redis.zrange(store._writers_key, 0, -1) == [own]
        assert await announced(store) == [f"- {own.decode()}"]
        async with anyio.create_task_group() as tg:
            tg.start_soon(store.append, "a", Event("2"))
            tg.start_soon(store.append, "b", Event("1"))
        await store.end("b")
        await store.create("c")  # nothing to read: not announced
        # The store's end too: its hubs are handed it.
        assert await announced(store, own) == [f"{me} a 1", f"{me} a 2 b 1", f"{me} b 2"]
        assert await announced(store) == [f"- {own.decode()}"]
        # A producer gone: its lease runs out (a deadline long past, in Redis's
        # clock), the check ends the stream as failed and announces its end on
        # the shared stream, by nobody in particular (no hub was handed it).
        await store.acquire_lease("a", 60)
        await store.redis.hset(store._keys("a")[1], "lease", 1)
        assert await store.expire_leases(["a"]) == ["a"]
        assert await announced(store) == [f"- {own.decode()}", "- a 3"]
        assert await announced(store, own) == [f"{me} a 1", f"{me} a 2 b 1", f"{me} b 2"]
        # Listed once; everything expires like the streams.
        assert await store.redis.zrange(store._writers_key, 0, -1) == [own]
        for key in (store._notify, own, store._writers_key):
            assert await store.redis.pttl(key) > 0


async def test_a_writer_idle_past_the_ttl_leaves_the_set_when_another_is_listed(
    redis_store_factory: Callable[..., RedisStore], redis_url: str
) -> None:
    async with redis_store_factory() as store:
        await store.append("a", Event("1"))
        # Listed long ago, in Redis's clock (its score: its last write).
        await store.redis.zadd(store._writers_key, {store._own_notify_key: 1})
        async with RedisStore(redis_url, prefix=store.prefix) as other:
            await other.append("b", Event("1"))
            assert await store.redis.zrange(store._writers_key, 0, -1) == [other._own_notify_key]
        # Writing again lists it again, with a marker for the hubs.
        await store.append("a", Event("2"))
        assert set(await store.redis.zrange(store._writers_key, 0, -1)) == {
            store._own_notify_key,
            other._own_notify_key,
        }
        assert (await announced(store))[-1] == f"- {store._own_notify_key.decode()}"


async def test_a_hub_reads_only_the_streams_a_notification_names(
    redis_store_factory: Callable[..., RedisStore], redis_url: str
) -> None:
    # No sweep during the test (it reads every stream, once per poll_interval).
    async with (
        redis_store_factory(poll_interval=30.0) as store,
        Hub(store) as hub,
        # Another replica writes: the hub reads what it wrote.
        RedisStore(redis_url, prefix=store.prefix) as writer,
    ):
        reads: list[list[bytes]] = []
        script = store._read_script

        async def counted(*args: Any, **kwargs: Any) -> Any:
            reads.append(kwargs["keys"])
            return await script(*args, **kwargs)

        store._read_script = counted  # type: ignore[assignment]
        streams = [f"s{s}" for s in range(20)]
        got: dict[str, list[StreamItem]] = {stream: [] for stream in streams}

        async def follow(stream: str) -> None:
            async with aclosing(hub.read(stream)) as items:
                async for item in items:
                    got[stream].append(item)
                    if isinstance(item, End):
                        return

        waker = hub._waker
        assert isinstance(waker, _RedisWaker)
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                for stream in streams:
                    await store.create(stream)
                    tg.start_soon(follow, stream)
                await until(lambda: waker.known == set(streams), "following them all")
                x = await writer.append("s3", Event("x"))
                await until(lambda: len(got["s3"]) == 1, "delivered")
                # Every follower has joined and been read once: from now on a
                # write to s3 makes the hub read s3 alone.
                reads.clear()
                y = await writer.append("s3", Event("y"))
                await until(lambda: len(got["s3"]) == 2, "delivered")
                assert reads == [[store._keys("s3")[0].encode()]]
                for stream in streams:
                    await store.end(stream)
        assert got["s3"][:2] == [Event("x", id=x), Event("y", id=y)]
        assert all(type(got[stream][-1]) is End for stream in streams)


async def test_a_write_no_notification_announced_reaches_the_hub_by_its_sweep(
    redis_store_factory: Callable[..., RedisStore],
) -> None:
    async with redis_store_factory(poll_interval=0.1) as store, Hub(store) as hub:
        first = await store.append("s", Event("1"))
        epoch = parse_id(first).epoch
        result: list[StreamItem] = []

        async def follow() -> None:
            async with aclosing(hub.read("s")) as items:
                async for item in items:
                    result.append(item)
                    if isinstance(item, End):
                        return

        log, meta = store._keys("s")
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(follow)
                waker = hub._waker
                assert isinstance(waker, _RedisWaker)
                # Following, past the first read (which reads every stream anyway).
                await until(lambda: bool(result) and waker.known == {"s"}, "following")
                # Written as a notification trimmed before the hub read it
                # leaves it: in the log, announced nowhere. Then the end, likewise.
                part = await store.redis.hget(meta, "epoch")
                await store.redis.xadd(log, {"d": "2"}, id=b"2-" + part)
                await store.redis.xadd(log, {"end": FAILED}, id=b"3-" + part)
                await store.redis.hset(meta, mapping={"last": 2, "outcome": FAILED})
        assert result == [
            Event("1", id=first),
            Event("2", id=format_id(epoch, 2)),
            End(FAILED, format_id(epoch, 3)),
        ]


async def test_a_hub_gets_what_its_own_process_writes_without_reading_it_back(
    redis_store_factory: Callable[..., RedisStore],
) -> None:
    async with redis_store_factory(poll_interval=30.0) as store, Hub(store) as hub:
        await store.create("s")
        got: list[StreamItem] = []

        async def never(*args: Any, **kwargs: Any) -> Any:
            await anyio.sleep_forever()

        waker = hub._waker
        assert isinstance(waker, _RedisWaker)
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(read_into, hub, "s", got)
                await until(lambda: waker.known == {"s"}, "following")
                # From now on the hub cannot read the store: what reaches its
                # subscriber came from the writes themselves.
                store._read_script = never  # type: ignore[assignment]
                ids = []
                for n in range(3):
                    ids.append(await store.append("s", Event(f"{n}", event="token")))
                    assert hub._follows["s"].cursor == n + 1  # taken as the write returned
                await until(lambda: len(got) == 3, "delivered")
                tg.cancel_scope.cancel()
        assert got == [Event(f"{n}", event="token", id=ids[n]) for n in range(3)]


async def test_a_write_its_hub_is_behind_on_is_read_at_once(
    redis_store_factory: Callable[..., RedisStore], redis_url: str
) -> None:
    # No sweep: without the prompt read the last event would wait 30 s.
    async with (
        redis_store_factory(poll_interval=30.0) as store,
        Hub(store) as hub,
        RedisStore(redis_url, prefix=store.prefix) as writer,  # another replica
    ):
        await store.create("s")
        got: list[StreamItem] = []

        script = store._read_script
        held, gate = anyio.Event(), anyio.Event()

        async def gated(*args: Any, **kwargs: Any) -> Any:
            reply = await script(*args, **kwargs)
            held.set()
            await gate.wait()  # the reply comes late: the hub stays behind meanwhile
            return reply

        waker = hub._waker
        assert isinstance(waker, _RedisWaker)
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(read_into, hub, "s", got)
                await until(lambda: waker.known == {"s"}, "following")
                store._read_script = gated  # type: ignore[assignment]
                first = await writer.append("s", Event("remote"))
                await held.wait()  # read, not delivered: the hub's cursor is still 0
                # Written here, but the hub lacks the event before it: not taken,
                # and its notification is skipped (this process wrote it).
                second = await store.append("s", Event("local"))
                assert hub._follows["s"].cursor == 0
                store._read_script = script  # type: ignore[assignment]
                gate.set()
                await until(lambda: len(got) == 2, "delivered")
                tg.cancel_scope.cancel()
        assert got == [Event("remote", id=first), Event("local", id=second)]


async def test_a_hub_is_not_woken_by_what_its_own_store_writes(
    redis_store_factory: Callable[..., RedisStore],
) -> None:
    # No sweep during the test: a wait lasts until something wakes it.
    async with redis_store_factory(poll_interval=30.0) as store, Hub(store) as hub:
        await store.create("s")
        got: list[StreamItem] = []

        waits: list[Any] = []
        waker = hub._waker
        assert isinstance(waker, _RedisWaker)
        xread = waker.client.xread

        async def counted(*args: Any, **kwargs: Any) -> Any:
            waits.append(args)
            return await xread(*args, **kwargs)

        waker.client.xread = counted  # type: ignore[method-assign]
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(read_into, hub, "s", got)
                await until(lambda: waker.known == {"s"} and len(waits) == 1, "waiting")
                # The store's first write lists it: its marker wakes the hub once.
                ids = [await store.append("s", Event("0"))]
                await until(lambda: len(got) == 1 and len(waits) == 2, "woken once")
                ids += [await store.append("s", Event(f"{n}")) for n in range(1, 5)]
                await store.end("s")
                await until(lambda: len(got) == 6, "delivered")
                await anyio.sleep(0.2)
                assert len(waits) == 2  # the wait goes on: nothing woke it
                # Blocked on the shared stream (not on the store's own).
                assert set(waits[1][0]) == {store._notify_key, waker.key}
                tg.cancel_scope.cancel()
        end = ids[0][: -len("1")] + "6"
        assert got == [*(Event(f"{n}", id=ids[n]) for n in range(5)), End(DONE, end)]


async def test_an_end_whose_reply_is_lost_is_read_by_the_hub(
    redis_store_factory: Callable[..., RedisStore],
) -> None:
    # No sweep: the end is announced on the store's own stream, which its hub
    # does not read; without the prompt read it would wait 30 s.
    async with redis_store_factory(poll_interval=30.0) as store, Hub(store) as hub:
        first = await store.append("s", Event("1"))
        got: list[StreamItem] = []
        script = store._end_script

        async def lost(**kwargs: Any) -> Any:
            await script(**kwargs)  # ended, then the connection "drops"
            raise RedisConnectionError("the reply was lost")

        waker = hub._waker
        assert isinstance(waker, _RedisWaker)
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(read_into, hub, "s", got)
                await until(lambda: waker.known == {"s"} and len(got) == 1, "following")
                store._end_script = lost  # type: ignore[assignment]
                with pytest.raises(StoreUnavailable):
                    await store.end("s")
                await until(lambda: len(got) == 2, "the end read")
        assert got == [Event("1", id=first), End(DONE, first[:-1] + "2")]
