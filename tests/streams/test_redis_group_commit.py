"""RedisStore's group commit against a real Redis: exact under concurrency, errors and
cancellation reach only the appends they concern, close() flushes, Redis restarts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing, asynccontextmanager
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis
from streams_support import Ids, ids_of, needs_redis_server, seq, until

from ssegate import Event, StoreUnavailable, StreamEnded
from ssegate.streams import DONE, FAILED, End, Hub, StreamItem
from ssegate.streams.redis import RedisStore
from ssegate.testing._redis import RedisServer

pytestmark = [pytest.mark.anyio, pytest.mark.redis]


async def collect(items: AsyncIterator[StreamItem]) -> list[StreamItem]:
    with anyio.fail_after(30):
        async with aclosing(items) as it:  # type: ignore[type-var]
            return [item async for item in it]


@asynccontextmanager
async def own_redis(**options: Any) -> AsyncIterator[tuple[RedisStore, aioredis.Redis]]:
    """A store on a redis-server of our own, and an admin client to it (to pause it...)."""
    with RedisServer() as server:
        admin = aioredis.Redis.from_url(server.url)
        try:
            async with RedisStore(server.url, **options) as store:
                yield store, admin
        finally:
            await admin.aclose()


def count_calls(store: RedisStore, shapes: list[tuple[int, int]] | None = None) -> list[int]:
    """Counts the append script's calls (Redis still runs every one of them), and
    notes in ``shapes`` each call's number of keys and of arguments."""
    calls = [0]
    script = store._append_script

    async def counted(*, keys: list[Any], args: list[Any], **kwargs: Any) -> Any:
        calls[0] += 1
        if shapes is not None:
            shapes.append((len(keys), len(args)))
        return await script(keys=keys, args=args, **kwargs)

    store._append_script = counted  # type: ignore[assignment]
    return calls


async def test_many_writers_on_many_streams_get_exact_ids_and_readers_exact_lists(
    redis_store_factory: Callable[..., RedisStore],
) -> None:
    streams, writers, per_writer = 40, 5, 30  # 6 000 appends, interleaved
    async with redis_store_factory() as store, Hub(store) as hub:
        shapes: list[tuple[int, int]] = []
        calls = count_calls(store, shapes)
        acked: dict[str, list[tuple[str, str]]] = {f"s{s}": [] for s in range(streams)}
        read: dict[str, list[StreamItem]] = {}

        async def write(stream: str, w: int) -> None:
            for i in range(per_writer):
                data = f"w{w}-{i}"
                acked[stream].append((data, await store.append(stream, Event(data))))
                if i % 7 == w:
                    await anyio.lowlevel.checkpoint()  # shuffle the interleaving

        async def follow(stream: str) -> None:
            read[stream] = await collect(hub.read(stream, missing_ok=True))

        async with anyio.create_task_group() as readers:
            for s in range(streams):
                readers.start_soon(follow, f"s{s}")
            async with anyio.create_task_group() as tg:
                for s in range(streams):
                    for w in range(writers):
                        tg.start_soon(write, f"s{s}", w)
            for s in range(streams):
                await store.end(f"s{s}")

        assert calls[0] < streams * writers * per_writer / 10, "appends were not batched"
        # Whatever a call carries, it has three keys (the notification streams,
        # the store's own and the shared one, and the writers' set) and six
        # arguments (the batch is one): the client's cost is per argument.
        assert set(shapes) == {(3, 6)}
        for stream, pairs in acked.items():
            _id = await ids_of(store, stream)
            # Every append got its own id; together they number the stream 1..n.
            assert sorted(seq(i) for _, i in pairs) == list(range(1, writers * per_writer + 1))
            expected = sorted((Event(data, id=i) for data, i in pairs), key=lambda e: e.id or "")
            everything = [*expected, End(DONE, _id(writers * per_writer + 1))]
            assert read[stream] == everything, stream
            assert await collect(store.read(stream)) == everything, stream
            for w in range(writers):  # each writer's events in the order it appended them
                mine = [e.data for e in expected if e.data.startswith(f"w{w}-")]
                assert mine == [f"w{w}-{i}" for i in range(per_writer)]


async def test_an_error_reaches_only_the_appends_it_concerns(
    redis_store_factory: Callable[..., RedisStore],
) -> None:
    # Any window: the appends below are all queued before the writer task
    # starts its wait (without one, the first would go out alone, at once).
    async with redis_store_factory(append_window=0.001) as store:
        calls = count_calls(store)
        await store.append("ended", Event("before"))
        await store.end("ended")
        await store.append("old", Event("o1"))
        old = await ids_of(store, "old")
        # A key of the wrong type where a stream's log should be.
        log, _ = store._keys("broken")
        await store.redis.set(log, "not a stream")
        # A producer whose lease has run out by Redis's clock, unnoticed so far.
        await store.append("orphan", Event("x1"))
        await store.acquire_lease("orphan", 0.001)
        # An entry the store did not write, with the next event's entry id: the
        # log refuses that id (its ids only grow), so all of the stream's appends fail.
        stray = Ids.of(await store.append("stray", Event("y1")))
        await store.redis.xadd(store._keys("stray")[0], {"d": "?"}, id=f"2-{int(stray.epoch, 16)}")
        deadline = int(await store.redis.hget(store._keys("orphan")[1], "lease"))
        for _ in range(1000):
            seconds, micros = await store.redis.time()
            if seconds * 1000 + micros // 1000 > deadline:
                break
            await anyio.sleep(0.001)
        calls[0] = 0

        # All queued before the writer runs: one call carries them.
        results = await asyncio.gather(
            store.append("old", Event("o2")),
            store.append("ended", Event("late")),
            store.append("new", Event("n1")),
            store.append("broken", Event("b1")),
            store.append("old", Event("o3")),
            store.append("ended", Event("late2")),
            store.append("new", Event("n2")),
            store.append("orphan", Event("x2")),
            store.append("stray", Event("y2")),
            store.append("stray", Event("y3")),
            return_exceptions=True,
        )
        assert calls[0] == 1
        new = await ids_of(store, "new")
        assert new.epoch != old.epoch  # each stream's ids carry its own epoch
        o2, late, n1, b1, o3, late2, n2, x2, y2, y3 = results
        assert (o2, o3, n1, n2) == (old(2), old(3), new(1), new(2))
        for exc in (late, late2):
            assert isinstance(exc, StreamEnded)
            assert str(exc) == "stream 'ended' has ended (done)"
        assert isinstance(b1, StoreUnavailable)
        assert "WRONGTYPE" in str(b1)
        for exc in (y2, y3):
            assert isinstance(exc, StoreUnavailable)
            assert "equal or smaller" in str(exc)
        assert await store.redis.hget(store._keys("stray")[1], "last") == b"1"  # none counted
        assert isinstance(x2, StreamEnded)
        assert str(x2) == "stream 'orphan' has ended (failed)"
        orphan = await ids_of(store, "orphan")
        assert await collect(store.read("orphan")) == [
            Event("x1", id=orphan(1)),
            End(FAILED, orphan(2)),
        ]

        for stream in ("old", "new"):
            await store.end(stream)
        assert await collect(store.read("old")) == [
            Event("o1", id=old(1)),
            Event("o2", id=old(2)),
            Event("o3", id=old(3)),
            End(DONE, old(4)),
        ]
        assert await collect(store.read("new")) == [
            Event("n1", id=new(1)),
            Event("n2", id=new(2)),
            End(DONE, new(3)),
        ]
        ended = await ids_of(store, "ended")
        assert await collect(store.read("ended")) == [
            Event("before", id=ended(1)),
            End(DONE, ended(2)),
        ]


async def test_an_append_refused_before_it_is_queued_does_not_disturb_the_batch(
    redis_store_factory: Callable[..., RedisStore],
) -> None:
    async with redis_store_factory() as store:
        results = await asyncio.gather(
            store.append("s", Event("a")),
            store.append("s", Event("\ud800")),  # a lone surrogate cannot be sent
            store.append("s", Event("b")),
            return_exceptions=True,
        )
        _id = await ids_of(store, "s")
        assert results[0] == _id(1)
        assert isinstance(results[1], ValueError)
        assert results[2] == _id(2)


async def test_an_appender_cancelled_while_queued_takes_its_event_back(
    redis_store_factory: Callable[..., RedisStore],
) -> None:
    # A long window keeps the appends queued until we let them go.
    async with redis_store_factory(append_window=3600.0) as store:
        calls = count_calls(store)
        tasks = [asyncio.ensure_future(store.append("s", Event(f"e{i}"))) for i in range(4)]
        await until(lambda: len(store._commit) == 4, "queued")
        tasks[1].cancel()
        tasks[2].cancel()
        await asyncio.gather(tasks[1], tasks[2], return_exceptions=True)
        assert len(store._commit) == 2
        store._commit.drain()  # as aclose() does: let them go now
        store._wake_flusher()
        first, last = await asyncio.gather(tasks[0], tasks[3])
        _id = Ids.of(first)
        assert (first, last) == (_id(1), _id(2))
        assert calls[0] == 1
        await store.end("s")
        assert await collect(store.read("s")) == [
            Event("e0", id=_id(1)),
            Event("e3", id=_id(2)),
            End(DONE, _id(3)),
        ]


@needs_redis_server
async def test_an_appender_cancelled_once_its_call_is_sent_leaves_the_others_intact() -> None:
    # A window, so the three go out together, from the writer task.
    async with own_redis(append_window=0.001) as (store, admin):
        await store.create("s")
        # Writes wait in Redis until unpaused: the call stays in flight.
        await admin.execute_command("CLIENT", "PAUSE", "60000", "WRITE")
        tasks = [asyncio.ensure_future(store.append("s", Event(f"e{i}"))) for i in range(3)]
        await until(
            lambda: store._flusher is not None and len(store._commit) == 0,
            "taken for the call",
        )
        tasks[1].cancel()
        await asyncio.gather(tasks[1], return_exceptions=True)
        await admin.execute_command("CLIENT", "UNPAUSE")
        first, last = await asyncio.gather(tasks[0], tasks[2])
        _id = Ids.of(first)
        assert (first, last) == (_id(1), _id(3))
        assert tasks[1].cancelled()
        await store.end("s")
        # It was sent, so it is written, once, in its place.
        assert await collect(store.read("s")) == [
            Event("e0", id=_id(1)),
            Event("e1", id=_id(2)),
            Event("e2", id=_id(3)),
            End(DONE, _id(4)),
        ]


@needs_redis_server
async def test_an_idle_store_writes_from_the_appenders_task_and_cancelling_it_is_safe() -> None:
    # Idle and without a window, an append is written at once from its own
    # task (no hand-off); what comes meanwhile waits for it, then goes together.
    async with own_redis() as (store, admin):
        calls = count_calls(store)
        assert Ids.of(await store.append("s", Event("alone"))) is not None
        assert calls[0] == 1
        await admin.execute_command("CLIENT", "PAUSE", "60000", "WRITE")
        tasks = [asyncio.ensure_future(store.append("s", Event(f"e{i}"))) for i in range(3)]
        await until(lambda: store._writing is not None and len(store._commit) == 2, "queued")
        tasks[0].cancel()  # mid-call: its append may or may not be written
        await asyncio.gather(tasks[0], return_exceptions=True)
        assert tasks[0].cancelled()
        await admin.execute_command("CLIENT", "UNPAUSE")
        ids = await asyncio.gather(tasks[1], tasks[2])
        assert calls[0] == 3  # the others went together, after it
        await store.end("s")
        items = await collect(store.read("s"))
        _id = Ids.of(ids[0])
        got = [(e.data, e.id) for e in items if isinstance(e, Event)]
        assert got[0] == ("alone", _id(1))
        # The others: each written once, in order, with the id its append returned.
        assert [g for g in got if g[0] in ("e1", "e2")] == [("e1", ids[0]), ("e2", ids[1])]
        assert [g[0] for g in got if g[0] == "e0"] in ([], ["e0"])
        assert [seq(i) for _, i in got] == list(range(1, len(got) + 1))
        assert items[-1] == End(DONE, _id(len(got) + 1))


async def test_close_writes_what_is_queued(
    redis_url: str, redis_store_factory: Callable[..., RedisStore]
) -> None:
    store = redis_store_factory(append_window=3600.0)
    calls = count_calls(store)
    tasks = [asyncio.ensure_future(store.append(f"s{i % 3}", Event(f"e{i}"))) for i in range(9)]
    await until(lambda: len(store._commit) == 9, "queued")
    assert not (await store.info("s0")).exists  # the window holds them
    await store.aclose()
    assert calls[0] == 1  # gathered over the window, written in one call
    ids = [task.result() for task in tasks]
    async with RedisStore(redis_url, prefix=store.prefix) as reader:
        for s in range(3):
            _id = await ids_of(reader, f"s{s}")
            assert ids[s::3] == [_id(1), _id(2), _id(3)]
            await reader.end(f"s{s}")
            assert await collect(reader.read(f"s{s}")) == [
                Event(f"e{s}", id=_id(1)),
                Event(f"e{s + 3}", id=_id(2)),
                Event(f"e{s + 6}", id=_id(3)),
                End(DONE, _id(4)),
            ]


async def test_an_interval_holds_the_next_call_until_it_is_over(
    redis_url: str, redis_store_factory: Callable[..., RedisStore]
) -> None:
    store = redis_store_factory(append_interval=3600.0)
    calls = count_calls(store)
    first = await store.append("s", Event("e0"))  # no call before it: at once
    assert calls[0] == 1
    tasks = [asyncio.ensure_future(store.append("s", Event(f"e{i}"))) for i in range(1, 4)]
    await until(lambda: len(store._commit) == 3, "queued")
    assert calls[0] == 1  # the interval holds them
    await store.aclose()
    assert calls[0] == 2  # written in one call
    _id = Ids.of(first)
    assert [first, *(task.result() for task in tasks)] == [_id(n) for n in range(1, 5)]


async def test_a_bad_window_is_refused() -> None:
    with pytest.raises(ValueError, match="window"):
        RedisStore(append_window=-0.001)
    with pytest.raises(ValueError, match="interval"):
        RedisStore(append_interval=-0.001)


@needs_redis_server
async def test_redis_restarting_mid_write_loses_no_acknowledged_event() -> None:
    # appendfsync always: what Redis acknowledged survives kill -9.
    with RedisServer(appendonly=True) as server:
        async with RedisStore(server.url) as store:
            streams, writers = 10, 3
            acked: dict[str, str] = {}  # data -> id
            failed: list[tuple[str, StoreUnavailable]] = []
            stop = False

            async def write(stream: str, w: int) -> None:
                i = 0
                while not stop:
                    data = f"{stream}/w{w}/{i}"
                    i += 1
                    try:
                        acked[data] = await store.append(stream, Event(data))
                    except StoreUnavailable as exc:
                        failed.append((data, exc))
                        await anyio.sleep(0.005)

            async with anyio.create_task_group() as tg:
                for s in range(streams):
                    for w in range(writers):
                        tg.start_soon(write, f"s{s}", w)
                await until(lambda: len(acked) >= 1000, "writing")
                server.stop(kill=True)
                down = len(failed)
                await until(lambda: len(failed) >= down + streams * writers, "errors")
                server.start()
                back = len(acked)
                await until(lambda: len(acked) >= back + 1000, "writing again")
                stop = True

            assert failed, "no append saw Redis go away"
            for _, exc in failed:
                assert str(exc).startswith("Redis cannot be reached")
            lost_in_flight = {data for data, _ in failed}
            for s in range(streams):
                await store.end(f"s{s}")
                items = await collect(store.read(f"s{s}"))
                assert isinstance(items[-1], End)
                events = items[:-1]
                assert all(isinstance(e, Event) for e in events)
                got = {e.data: e.id for e in events if isinstance(e, Event)}
                assert len(got) == len(events), "an event was written twice"
                mine = {d: i for d, i in acked.items() if d.startswith(f"s{s}/")}
                # Every acknowledged event is there with the id its append returned;
                # the only others are appends that were told Redis went away
                # (a call in flight when it died may have been written).
                assert {d: got[d] for d in mine} == mine
                assert set(got) - set(mine) <= lost_in_flight
                assert [seq(e.id) for e in events if isinstance(e, Event)] == list(
                    range(1, len(events) + 1)
                )
                for w in range(writers):  # each writer's events in its order
                    numbers = [int(d.rsplit("/", 1)[1]) for d in got if f"/w{w}/" in d]
                    assert numbers == sorted(numbers)


@needs_redis_server
async def test_a_call_refused_whole_fails_each_of_its_appends_with_the_reason() -> None:
    # A Redis that became a replica (a failover elsewhere) refuses every write.
    async with own_redis() as (store, admin):
        _id = Ids.of(await store.append("a", Event("a1")))
        await admin.execute_command("REPLICAOF", "127.0.0.1", "1")
        results = await asyncio.gather(
            store.append("a", Event("a2")),
            store.append("b", Event("b1")),
            return_exceptions=True,
        )
        for exc in results:
            assert isinstance(exc, StoreUnavailable)
            assert str(exc).startswith("Redis refused the command: READONLY")
        await admin.execute_command("REPLICAOF", "NO", "ONE")
        assert await store.append("a", Event("a3")) == _id(2)
        await store.end("a")
        assert await collect(store.read("a")) == [
            Event("a1", id=_id(1)),
            Event("a3", id=_id(2)),
            End(DONE, _id(3)),
        ]
