"""The Hub: shared reader, bounded queues, slow subscribers cut loose without loss."""

from __future__ import annotations

import contextlib
import gc
import random
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing

import anyio
import anyio.lowlevel
import pytest
import redis.asyncio as aioredis
from redis.asyncio import BlockingConnectionPool
from streams_support import ids_of, seq

from ssegate import Event, StoreUnavailable
from ssegate.streams import DONE, End, Gap, Hub, MemoryStore, StreamItem, StreamStore
from ssegate.streams._store import Page
from ssegate.streams.redis import PIPELINED_READS, RedisStore

pytestmark = pytest.mark.anyio


def ids(items: list[StreamItem]) -> list[int]:
    return [seq(item.id) for item in items if isinstance(item, Event)]


@contextlib.asynccontextmanager
async def lagging_after(hub: Hub, first: Event) -> AsyncIterator[AsyncIterator[StreamItem]]:
    """A subscriber of ``s`` that has read its first item (``first``) and reads
    no further until told: it lags from there."""
    items = hub.read("s")
    async with aclosing(items):  # type: ignore[type-var]
        assert await items.__anext__() == first
        yield items


async def collect(items: AsyncIterator[StreamItem]) -> list[StreamItem]:
    with anyio.fail_after(20):
        async with aclosing(items) as it:  # type: ignore[type-var]
            return [item async for item in it]


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def make_store(
    request: pytest.FixtureRequest, redis_url: str, redis_prefix: str
) -> Callable[..., StreamStore]:
    if request.param == "memory":
        return lambda **kw: MemoryStore(poll_interval=0.05, **kw)
    return lambda **kw: RedisStore(redis_url, prefix=redis_prefix, poll_interval=0.05, **kw)


async def test_many_subscribers_get_every_event_once(
    make_store: Callable[..., StreamStore],
) -> None:
    async with make_store() as store, Hub(store) as hub:
        results: dict[tuple[str, int], list[StreamItem]] = {}

        async def subscribe(stream: str, n: int) -> None:
            results[stream, n] = await collect(hub.read(stream, missing_ok=True))

        async with anyio.create_task_group() as tg:
            for stream in ("a", "b", "c"):
                for n in range(50):
                    tg.start_soon(subscribe, stream, n)
            for i in range(1, 31):
                for stream in ("a", "b", "c"):
                    await store.append(stream, Event(f"{stream}{i}"))
                if i % 10 == 0:
                    await anyio.sleep(0.01)
            for stream in ("a", "b", "c"):
                await store.end(stream)
        for (stream, _), items in results.items():
            _id = await ids_of(store, stream)
            expected = [Event(f"{stream}{i}", id=_id(i)) for i in range(1, 31)]
            assert items == [*expected, End(DONE, _id(31))]
        assert hub.streams == 0
        assert hub.subscribers == 0
        assert hub._cursors == {}  # what the reader follows is kept as it changes, not rebuilt


async def test_a_slow_subscriber_is_cut_loose_and_catches_up_from_the_store(
    make_store: Callable[..., StreamStore],
) -> None:
    async with make_store(max_len=1000) as store, Hub(store, queue_size=4) as hub:
        await store.create("s")
        _id = await ids_of(store, "s")
        fast: list[StreamItem] = []
        slow = hub.read("s")
        async with aclosing(slow):  # type: ignore[type-var]
            async with anyio.create_task_group() as tg:

                async def run_fast() -> None:
                    fast.extend(await collect(hub.read("s")))

                tg.start_soon(run_fast)
                await store.append("s", Event("0"))
                assert await slow.__anext__() == Event("0", id=_id(1))
                # The slow one stops reading; 40 more arrive, ten times its queue.
                for i in range(1, 41):
                    await store.append("s", Event(str(i)))
                    await anyio.lowlevel.checkpoint()
                await store.end("s")
            rest = await collect(slow)
        expected = [Event(str(i), id=_id(i + 1)) for i in range(41)]
        assert fast == [*expected, End(DONE, _id(42))]
        assert rest == [*expected[1:], End(DONE, _id(42))]  # nothing lost, nothing twice


async def test_a_cut_loose_subscriber_gets_a_gap_when_the_store_trimmed_past_it(
    make_store: Callable[..., StreamStore],
) -> None:
    async with make_store(max_len=5) as store, Hub(store, queue_size=2) as hub:
        await store.append("s", Event("1"))
        _id = await ids_of(store, "s")
        slow = hub.read("s")
        async with aclosing(slow):  # type: ignore[type-var]
            assert await slow.__anext__() == Event("1", id=_id(1))
            for i in range(2, 31):
                await store.append("s", Event(str(i)))
                await anyio.lowlevel.checkpoint()
            await store.end("s")
            rest = await collect(slow)
        gaps = [item for item in rest if isinstance(item, Gap)]
        assert len(gaps) >= 1
        seen = set(ids(rest)) | {1}
        for gap in gaps:
            missed = set(range(seq(gap.after) + 1, seq(gap.first_id)))
            assert len(missed) == gap.missed
            assert not missed & seen
            seen |= missed
        assert sorted(seen) == list(range(1, 31))  # every event read or reported missing
        assert len(ids(rest)) == len(set(ids(rest)))  # none twice
        assert ids(rest)[-5:] == [26, 27, 28, 29, 30]
        assert rest[-1] == End(DONE, _id(31))


async def test_the_ring_keeps_history_out_of_the_collectors_sight(
    make_store: Callable[..., StreamStore],
) -> None:
    """Pages a subscriber lags behind are kept as plain tuples of str and int,
    which the cyclic collector stops tracking (a full collection walks none of
    them: it walked three objects per kept event), and are read back as they were."""
    sent = [
        Event("a", event="token", retry=250),
        Event("b"),
        Event("two\nlines", event="token"),
        Event("", event="ping"),
    ]
    async with make_store() as store, Hub(store) as hub:
        await store.append("s", Event("0"))
        _id = await ids_of(store, "s")
        async with lagging_after(hub, Event("0", id=_id(1))) as lagging:
            follow = hub._follows["s"]
            with anyio.fail_after(10):
                for n, event in enumerate(sent, 2):
                    await store.append("s", event)
                    while follow.cursor != n:  # noqa: ASYNC110 (one page per append)
                        await anyio.sleep(0.001)
            gc.collect()
            tracked = [gc.is_tracked(page) for page in follow.pages]
            assert tracked == [False] * (len(sent) - 1) + [True]  # the newest as it came
            await store.end("s")
            rest = await collect(lagging)
        assert rest == [
            *(Event(e.data, e.event, _id(n), e.retry) for n, e in enumerate(sent, 2)),
            End(DONE, _id(6)),
        ]
        assert all(type(item) is Event for item in rest[:-1])


async def test_pages_every_subscriber_has_read_are_dropped_not_kept(
    make_store: Callable[..., StreamStore],
) -> None:
    """While every subscriber waits at the end of the ring, a new page replaces
    the ones before it (nobody reads them again: a joining subscriber replays
    from the store); one that lags keeps them, and both get every event once."""
    async with make_store() as store, Hub(store) as hub:
        await store.append("s", Event("0"))
        _id = await ids_of(store, "s")
        got: list[list[StreamItem]] = [[], []]

        async def keep_up(n: int) -> None:
            async with aclosing(hub.read("s")) as items:  # type: ignore[type-var]
                async for item in items:
                    got[n].append(item)

        async def parked(count: int) -> None:  # both have `count` items, and wait
            while not (  # noqa: ASYNC110 (polls what the hub keeps)
                len(got[0]) == len(got[1]) == count
                and "s" in hub._follows
                and len(hub._follows["s"].waiters) == 2
            ):
                await anyio.sleep(0.001)

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(keep_up, 0)
                tg.start_soon(keep_up, 1)
                await parked(1)
                for n in range(2, 6):
                    await store.append("s", Event(str(n - 1)))
                    await parked(n)
                    follow = hub._follows["s"]
                    assert len(follow.pages) == 1  # only the newest
                    assert follow.pages[0].events == [Event(str(n - 1), id=_id(n))]
                async with lagging_after(hub, Event("0", id=_id(1))) as lagging:
                    for n in range(6, 9):  # it does not wait: the pages stay for it
                        await store.append("s", Event(str(n - 1)))
                        while follow.cursor != n:  # noqa: ASYNC110 (one page per append)
                            await anyio.sleep(0.001)
                    assert len(follow.pages) >= 3
                    await store.end("s")
                    rest = await collect(lagging)
        want = [Event(str(n - 1), id=_id(n)) for n in range(1, 9)]
        assert rest == [*want[1:], End(DONE, _id(9))]
        assert got[0] == got[1] == [*want, End(DONE, _id(9))]


async def test_a_page_read_back_with_nothing_new_is_not_kept_again() -> None:
    """The hub's own reader may read, with a cursor from before, events the store
    handed it already (a write from this process): nothing new, so no page."""
    async with MemoryStore() as store, Hub(store) as hub:
        await store.append("s", Event("0"))
        _id = await ids_of(store, "s")
        async with lagging_after(hub, Event("0", id=_id(1))) as lagging:
            await store.append("s", Event("1"))
            follow = hub._follows["s"]
            assert (follow.cursor, len(follow.pages)) == (2, 1)
            epoch = _id(1).partition("-")[0]
            hub._deliver("s", Page(1, [Event("0", id=_id(1)), Event("1", id=_id(2))], epoch=epoch))
            assert (follow.cursor, len(follow.pages)) == (2, 1)
            await store.end("s")
            assert await collect(lagging) == [Event("1", id=_id(2)), End(DONE, _id(3))]


async def test_the_memory_store_hands_its_end_to_a_caught_up_hub_at_once() -> None:
    """The end reaches a hub that is caught up as an append does, from the
    store's own call (``Waker.deliver``): the hub's task is not woken for it."""
    async with MemoryStore() as store, Hub(store) as hub:
        await store.append("s", Event("0"))
        _id = await ids_of(store, "s")
        async with lagging_after(hub, Event("0", id=_id(1))) as lagging:
            follow = hub._follows["s"]
            await store.end("s")
            epoch = _id(1).partition("-")[0]
            assert follow.ended  # before any other task ran
            assert list(follow.pages) == [Page(2, [], DONE, 1, True, epoch)]
            assert "s" not in hub._cursors
            assert await collect(lagging) == [End(DONE, _id(2))]


async def test_hub_must_be_running() -> None:
    hub = Hub(MemoryStore())
    with pytest.raises(RuntimeError, match="async with Hub"):
        hub.read("s")
    with pytest.raises(TypeError, match="StreamStore"):
        Hub(object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="queue_size"):
        Hub(MemoryStore(), queue_size=0)


@pytest.mark.redis
async def test_redis_connections_do_not_grow_with_subscribers(
    redis_url: str, redis_prefix: str
) -> None:
    name = f"ssegate-hub-{uuid.uuid4().hex[:8]}"
    pool = BlockingConnectionPool.from_url(redis_url, max_connections=3, client_name=name)
    client = aioredis.Redis(connection_pool=pool)
    admin = aioredis.Redis.from_url(redis_url)
    store = RedisStore(client, prefix=redis_prefix, poll_interval=0.2)
    try:
        async with Hub(store) as hub:
            received: list[int] = []

            async def subscribe(stream: str) -> None:
                items = await collect(hub.read(stream, missing_ok=True))
                received.append(len(items))

            async with anyio.create_task_group() as tg:
                for n in range(600):
                    tg.start_soon(subscribe, f"t{n % 30}")
                await anyio.sleep(0.1)
                for i in range(5):
                    for s in range(30):
                        await store.append(f"t{s}", Event(str(i)))
                clients = await admin.client_list()
                ours = [c for c in clients if c.get("name") == name]
                assert 1 <= len(ours) <= 3  # 600 subscribers, at most the pool's 3
                for s in range(30):
                    await store.end(f"t{s}")
            assert received == [6] * 600
    finally:
        await client.aclose(close_connection_pool=True)
        await admin.aclose()


async def test_subscribers_joining_while_events_flow_miss_nothing(
    make_store: Callable[..., StreamStore],
) -> None:
    # Joins race the publisher and each other (and share history reads): whatever
    # the interleaving, each subscriber gets every event after its id exactly once.
    rng = random.Random(5)
    async with make_store() as store, Hub(store, max_replays=2) as hub:
        for i in range(1, 6):  # so that resuming after ids 1..5 is valid from the start
            await store.append("r", Event(str(i)))
        _id = await ids_of(store, "r")
        results: list[tuple[int, list[StreamItem]]] = []

        async def subscribe(delay: int, after: int) -> None:
            for _ in range(delay):
                await anyio.lowlevel.checkpoint()
            after_id = _id(after) if after else None
            results.append((after, await collect(hub.read("r", after_id))))

        async with anyio.create_task_group() as tg:
            for n in range(120):
                tg.start_soon(subscribe, rng.randrange(300), 0 if n % 3 else min(n // 3, 5))
            for i in range(6, 61):
                await store.append("r", Event(str(i)))
                for _ in range(rng.randrange(6)):
                    await anyio.lowlevel.checkpoint()
            await store.end("r")
        assert len(results) == 120
        for after, items in results:
            expected = [Event(str(i), id=_id(i)) for i in range(after + 1, 61)]
            assert items == [*expected, End(DONE, _id(61))]


class GatedStore(MemoryStore):
    """A store whose history reads wait for ``gate`` (as Redis's do for the
    network), counting them by position."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = anyio.Event()
        self.reads: list[int] = []

    async def _page(self, stream: str, after: int, limit: int) -> Page:
        self.reads.append(after)
        await self.gate.wait()
        return await super()._page(stream, after, limit)


async def test_history_reads_of_one_page_are_shared_and_bounded() -> None:
    """Joins at the same position share one read; reads at other positions
    wait for a place (``max_replays``), and every one gets its page."""
    store = GatedStore()
    for data in "abc":
        await store.append("s", Event(data))
    pages: dict[str, Page] = {}
    async with Hub(store, max_replays=1) as hub, anyio.create_task_group() as tasks:

        async def replay(name: str, cursor: int) -> None:
            pages[name] = await hub._replay("s", cursor)

        for name, cursor in (("first", 0), ("same", 0), ("later", 2), ("also", 0)):
            tasks.start_soon(replay, name, cursor)
        await anyio.wait_all_tasks_blocked()
        assert store.reads == [0]  # one read for three, the other waits for a place
        store.gate.set()
    assert store.reads == [0, 2]
    assert pages["first"] is pages["same"] is pages["also"]
    assert [e.data for e in pages["first"].events] == ["a", "b", "c"]
    assert [e.data for e in pages["later"].events] == ["c"]


async def test_history_reads_run_as_many_at_once_as_the_store_allows() -> None:
    """By default a hub runs as many history reads at once as its store allows
    (``concurrent_reads``): a burst of joins at different positions is not
    queued four at a time where reads hold no connection each."""

    class FourAtOnce(GatedStore):
        concurrent_reads = 4

    for store, running in ((GatedStore(), 10), (FourAtOnce(), 4)):
        for data in "abcdefghij":
            await store.append("s", Event(data))
        pages: dict[int, Page] = {}
        async with Hub(store) as hub, anyio.create_task_group() as tasks:
            assert hub.max_replays == store.concurrent_reads

            async def replay(cursor: int, hub: Hub = hub, pages: dict[int, Page] = pages) -> None:
                pages[cursor] = await hub._replay("s", cursor)

            for cursor in range(10):
                tasks.start_soon(replay, cursor)
            await anyio.wait_all_tasks_blocked()
            assert sorted(store.reads) == list(range(running))
            store.gate.set()
        assert sorted(store.reads) == list(range(10))
        assert {c: [e.data for e in p.events] for c, p in pages.items()} == {
            c: list("abcdefghij"[c:]) for c in range(10)
        }


@pytest.mark.redis
async def test_a_redis_store_allows_many_reads_at_once_where_they_are_pipelined(
    redis_url: str, redis_cluster_url: str
) -> None:
    # One connection carries a loop turn's reads (``ScriptCalls``); on Redis
    # Cluster each read is a call of its own, on a connection of its own.
    async with RedisStore(redis_url) as single, RedisStore(redis_cluster_url) as cluster:
        assert single.concurrent_reads == PIPELINED_READS == 256
        assert cluster.concurrent_reads == StreamStore.concurrent_reads == 4
    assert MemoryStore.concurrent_reads == 256


async def test_subscribers_still_waiting_when_the_hub_stops_get_an_error() -> None:
    store = MemoryStore()
    await store.create("s")
    errors: list[BaseException] = []

    async def subscribe(hub: Hub) -> None:
        try:
            await collect(hub.read("s"))
        except StoreUnavailable as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg, Hub(store) as hub:
        tg.start_soon(subscribe, hub)
        tg.start_soon(subscribe, hub)
        for _ in range(1000):
            if hub.subscribers == 2:
                break
            await anyio.sleep(0.001)
        await store.append("s", Event("x"))
    assert [str(e) for e in errors] == ["the hub has stopped"] * 2


async def test_a_subscriber_cancelled_while_waiting_leaves_the_others_waiting() -> None:
    # On asyncio each waiting subscriber parks on a future of its own: cancelling
    # one must neither wake nor cancel the others, and must leave nothing behind.
    store = MemoryStore()
    await store.create("s")
    _id = await ids_of(store, "s")
    got: list[StreamItem] = []
    async with Hub(store) as hub, anyio.create_task_group() as tg:

        async def stay() -> None:
            got.extend(await collect(hub.read("s")))

        async def leave(scope: anyio.CancelScope) -> None:
            with scope:
                await collect(hub.read("s"))

        scope = anyio.CancelScope()
        tg.start_soon(stay)
        tg.start_soon(leave, scope)
        for _ in range(1000):
            follow = hub._follows.get("s")
            if follow is not None and len(follow.waiters) == 2:
                break
            await anyio.sleep(0.001)
        scope.cancel()
        for _ in range(1000):
            if hub.subscribers == 1:
                break
            await anyio.sleep(0.001)
        assert len(hub._follows["s"].waiters) == 1
        await store.append("s", Event("x"))
        await store.end("s")
    assert got == [Event("x", id=_id(1)), End(DONE, _id(2))]
