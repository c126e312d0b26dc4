"""RedisStore specifics: Redis going away and coming back, and the error edge."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing

import anyio
import anyio.lowlevel
import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Connection, SSLConnection
from streams_support import Ids, ids_of, needs_redis_server, until

from ssegate import Event, StoreUnavailable
from ssegate.streams import DONE, End, Hub, StreamItem
from ssegate.streams.redis import RedisStore, _look_before_use, _RedisWaker
from ssegate.testing._redis import RedisServer

pytestmark = [pytest.mark.anyio, pytest.mark.redis]


def events(_id: Ids, numbers: range) -> list[StreamItem]:
    return [Event(f"e{i}", id=_id(i)) for i in numbers]


async def collect(items: AsyncIterator[StreamItem]) -> list[StreamItem]:
    with anyio.fail_after(30):
        async with aclosing(items) as it:  # type: ignore[type-var]
            return [item async for item in it]


@needs_redis_server
async def test_redis_going_away_gives_clear_errors_and_loses_nothing_acknowledged() -> None:
    # Our own server (the shared one must not be stopped), with an append-only
    # file synced on every write: what Redis acknowledged survives kill -9.
    with RedisServer(appendonly=True) as server:
        store = RedisStore(server.url, poll_interval=0.1)
        async with store, Hub(store, retry_delay=0.05) as hub:
            followed: list[StreamItem] = []

            other: list[StreamItem] = []

            async def follow() -> None:
                followed.extend(await collect(hub.read("s")))

            async def follow_other() -> None:
                other.extend(await collect(hub.read("t")))

            for i in range(1, 4):
                await store.append("s", Event(f"e{i}"))
            await store.create("t")  # followed throughout: the hub waits on
            _id = await ids_of(store, "s")
            async with anyio.create_task_group() as tg:
                tg.start_soon(follow)
                tg.start_soon(follow_other)
                await anyio.sleep(0.05)  # not needed for the outcome: anywhere is fine
                server.stop(kill=True)

                with pytest.raises(StoreUnavailable, match="Redis"):
                    await store.append("s", Event("lost"))
                with pytest.raises(StoreUnavailable):
                    await collect(store.read("s"))
                with pytest.raises(StoreUnavailable):
                    await store.info("s")
                for _ in range(200):  # the hub notices too (within 10 s), and keeps waiting
                    if hub.error is not None:
                        break
                    await anyio.sleep(0.05)
                assert isinstance(hub.error, StoreUnavailable)

                server.start()
                for i in range(4, 7):
                    await store.append("s", Event(f"e{i}"))
                await store.end("s")
                # The follower may have had it all handed over by the writes; the
                # hub, following another stream, is back by its next wait.
                await until(lambda: hub.error is None, "the hub back")
                await store.end("t")
        assert other[-1] == End(DONE, Ids.of(other[-1].id)(1))
        assert followed == [*events(_id, range(1, 7)), End(DONE, _id(7))]
        store = RedisStore(server.url)
        async with store:
            assert await collect(store.read("s")) == [*events(_id, range(1, 7)), End(DONE, _id(7))]


async def every_kind_of_request(store: RedisStore, n: int) -> None:
    """Appends, reads and info at once, on several pooled connections (calls of one
    loop turn share a pipeline: each pair is made a turn after the one before)."""
    async with anyio.create_task_group() as tg:
        for i in range(n):
            tg.start_soon(store.append, f"s{i}", Event("e"))
            tg.start_soon(store.info, "s")
            await anyio.lowlevel.checkpoint()
        tg.start_soon(collect, store.read("s", missing_ok=True))


async def kill_clients(url: str, *, kill: bool, before: int) -> None:
    """Kill (if ``kill``: more than ``before`` are there, the store's too) every client
    of the Redis at ``url`` but this one, and wait until the server has none left."""
    async with aioredis.Redis.from_url(url) as admin:
        if kill:
            assert len(await admin.client_list(_type="normal")) > before
            await admin.client_kill_filter(_type="normal", skipme=True)
        with anyio.fail_after(10):  # none left but this one, on the server's side
            while len(await admin.client_list(_type="normal")) > 1:  # noqa: ASYNC110
                await anyio.sleep(0.01)


@needs_redis_server
@pytest.mark.parametrize("outage", ["client kill", "restart"])
async def test_a_connection_closed_while_idle_in_the_pool_is_opened_again(outage: str) -> None:
    # Our own server: it is killed (what it acknowledged kept on disk), or all its clients are.
    with RedisServer(appendonly=True) as server:
        store = RedisStore(server.url)
        async with store:
            await store.append("s", Event("e1"))
            await store.end("s")
            await every_kind_of_request(store, 4)  # several connections, all idle now
            if outage == "restart":
                server.stop(kill=True)
                server.start()
            await kill_clients(server.url, kill=outage == "client kill", before=2)
            # Redis is back: not one request fails (each idle connection failed one).
            await every_kind_of_request(store, 4)
            assert (await store.info("s0")).length == 2


@pytest.mark.redis
async def test_a_cluster_node_connection_closed_while_idle_is_opened_again(
    redis_cluster_url: str,
) -> None:
    # redis-py lends a cluster node's connections without looking at them: the
    # store's look before each use opens one the node closed again, as above.
    store = RedisStore(redis_cluster_url, prefix=f"idle{uuid.uuid4().hex[:8]}:")
    async with store:
        await store.append("s", Event("e1"))
        await store.end("s")
        await every_kind_of_request(store, 4)  # connections to every node, idle now
        for node in store.redis.get_nodes():  # type: ignore[union-attr]
            await kill_clients(f"redis://{node.host}:{node.port}", kill=True, before=1)
        # Not one request fails (each idle connection failed one).
        await every_kind_of_request(store, 4)
        assert (await store.info("s0")).length == 2


def test_a_cluster_client_not_as_expected_is_left_as_it_is() -> None:
    # The look is set where redis-py 8 keeps a cluster's connection class; elsewhere
    # the client is not touched (and connections are lent unlooked-at, as before).
    assert _look_before_use(object()) is False  # type: ignore[arg-type]
    own = RedisCluster.from_url("redis://127.0.0.1:1")
    own.nodes_manager.connection_kwargs["connection_class"] = mine = type("Mine", (Connection,), {})
    assert _look_before_use(own) is False
    assert own.nodes_manager.connection_kwargs["connection_class"] is mine
    for url, base, looked in (
        ("redis://127.0.0.1:1", Connection, "_LookedAt"),
        ("rediss://127.0.0.1:1", SSLConnection, "_LookedAtSSL"),
    ):
        cluster = RedisCluster.from_url(url)
        assert _look_before_use(cluster) is True
        kind = cluster.nodes_manager.connection_kwargs["connection_class"]
        assert (kind.__name__, kind.__mro__[2]) == (looked, base)
        for node in cluster.nodes_manager.startup_nodes.values():
            assert node.connection_class is kind


async def test_constructor_errors() -> None:
    with pytest.raises(ValueError, match="Redis URL"):
        RedisStore("http://localhost:6379")
    with pytest.raises(TypeError, match="URL or a redis"):
        RedisStore(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="prefix"):
        RedisStore(prefix="{x}")


@needs_redis_server
async def test_unreachable_redis_is_store_unavailable() -> None:
    server = RedisServer()  # never started: nothing listens on its port
    try:
        async with RedisStore(server.url) as store:
            with pytest.raises(StoreUnavailable, match="cannot be reached"):
                await store.append("s", Event("x"))
            with pytest.raises(StoreUnavailable):
                await store.end("s")
    finally:
        server.close()


async def test_events_written_by_one_client_are_read_by_another(
    redis_url: str, redis_prefix: str
) -> None:
    async with (
        RedisStore(redis_url, prefix=redis_prefix) as writer,
        RedisStore(redis_url, prefix=redis_prefix) as reader,
    ):
        first = await writer.append("x", Event("hi", event="token", retry=10))
        _id = Ids.of(first)
        assert first == _id(1)
        assert (await reader.info("x")).epoch == _id.epoch
        await writer.end("x", "cancelled")
        assert await collect(reader.read("x")) == [
            Event("hi", event="token", id=_id(1), retry=10),
            End("cancelled", _id(2)),
        ]


async def test_a_client_that_decodes_responses_is_refused(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        with pytest.raises(ValueError, match="decode_responses"):
            RedisStore(client)
    finally:
        await client.aclose()


async def test_entry_ids_are_the_number_then_the_epoch_even_past_the_padding(
    redis_url: str, redis_prefix: str
) -> None:
    async with RedisStore(redis_url, prefix=redis_prefix, max_len=2) as store:
        _id = Ids.of(await store.append("n", Event("a")))
        log, meta = store._keys("n")
        epoch = int(_id.epoch, 16)
        assert await store.redis.hget(meta, "epoch") == str(epoch).encode()
        assert [entry_id for entry_id, _ in await store.redis.xrange(log)] == [
            f"1-{epoch}".encode()
        ]
        await store.redis.hset(meta, "last", 10**12 - 2)  # jump close to the width limit
        got = [await store.append("n", Event("b")) for _ in range(3)]
        assert got == [_id(999999999999), _id(1000000000000), _id(1000000000001)]
        await store.end("n")
        assert await collect(store.read("n", _id(999999999999))) == [
            Event("b", id=_id(1000000000000)),
            Event("b", id=_id(1000000000001)),
            End(DONE, _id(1000000000002)),
        ]


async def _drain(items: AsyncIterator[StreamItem]) -> None:
    async with aclosing(items):  # type: ignore[type-var]
        async for _ in items:
            pass


@pytest.mark.parametrize("made_from", ["url", "client"])
async def test_the_writer_and_a_hub_hold_a_connection_only_of_the_stores_own_pool(
    redis_url: str, redis_prefix: str, made_from: str
) -> None:
    # A call through the pool costs a take and a give-back: the writer's appends
    # and a hub's waits hold a connection of their own, where the store made
    # the pool. A caller's pool lends its connections call by call, as before.
    client = aioredis.Redis.from_url(redis_url)
    store = RedisStore(redis_url if made_from == "url" else client, prefix=redis_prefix)
    pool = store.redis.connection_pool
    try:
        async with store, Hub(store) as hub:
            waker = hub._waker
            assert isinstance(waker, _RedisWaker)
            got: list[StreamItem] = []

            async def follow() -> None:
                async with aclosing(hub.read("s", missing_ok=True)) as items:
                    async for item in items:
                        got.append(item)
                        if isinstance(item, End):
                            return

            async with anyio.create_task_group() as tg:
                tg.start_soon(follow)
                ids = [await store.append("s", Event(f"e{i}")) for i in range(3)]
                await store.end("s")
            assert got == [
                *(Event(f"e{i}", id=ids[i]) for i in range(3)),
                End(DONE, ids[0][:-1] + "4"),
            ]
            if made_from == "url":
                # The hub may have had all of "s" handed over by the writer, never
                # reading Redis: a stream with nothing in it makes it read and wait.
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_drain, hub.read("idle", missing_ok=True))
                    client = waker.client
                    await until(lambda: client.connection is not None, "the hub on Redis")
                    held = [store._writer.connection, client.connection]  # type: ignore[union-attr]
                    assert all(c is not None for c in held)
                    assert held[0] is not held[1]
                    assert all(c in pool._in_use_connections for c in held)  # type: ignore[attr-defined]
                    tg.cancel_scope.cancel()
            else:
                assert store._writer is store.redis
                assert waker.client is store.redis
        assert not pool._in_use_connections  # type: ignore[attr-defined]
    finally:
        await client.aclose()


async def test_appends_go_on_the_writers_connection_and_on_after_redis_forgets_the_script(
    redis_url: str, redis_prefix: str
) -> None:
    # Once the writer holds its connection, an append call is sent and read on
    # it, not through the client's command machinery; Redis having forgotten
    # the script (a restart, SCRIPT FLUSH), the call loads it and goes on.
    async with RedisStore(redis_url, prefix=redis_prefix) as store:
        first = await store.append("s", Event("a"))
        commands: list[object] = []
        writer = store._writer
        through_client = writer.execute_command

        async def counted(*args: object, **options: object) -> object:
            commands.append(args[0])
            return await through_client(*args, **options)

        writer.execute_command = counted  # type: ignore[method-assign]
        second = await store.append("s", Event("b"))
        assert commands == []
        admin = aioredis.Redis.from_url(redis_url)
        try:
            await admin.script_flush()
        finally:
            await admin.aclose()
        third = await store.append("s", Event("c"))
        assert commands == ["SCRIPT LOAD", "EVALSHA"]
        fourth = await store.append("s", Event("d"))
        assert commands == ["SCRIPT LOAD", "EVALSHA"]
        # A call too big to be sure the socket takes it at once is sent with
        # redis-py's write timeout; the connection keeps its timeout either way.
        big = await store.append("s", Event("x" * 40_000))
        assert commands == ["SCRIPT LOAD", "EVALSHA"]
        assert writer.connection.socket_timeout == store.poll_interval + 10.0  # type: ignore[union-attr]
        _id = await ids_of(store, "s")
        assert [first, second, third, fourth, big] == [_id(n) for n in range(1, 6)]
        page = await store._page("s", 4, 10)
        assert [event.data for event in page.events] == ["x" * 40_000]
