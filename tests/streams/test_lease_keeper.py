"""Every lease of a process renewed in one store call per tick (``LeaseKeeper``), in
virtual time (trio's MockClock): calls counted by a wrapping store, the loop handed
from holder to holder, a stream ended elsewhere, the store away for a tick, the
gateway's runner; and on Redis (one round of calls for a thousand streams)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import anyio
import pytest
from trio.testing import MockClock

from ssegate import Event, StoreUnavailable
from ssegate.gateway._echo import EchoProvider
from ssegate.gateway._metrics import Metrics
from ssegate.gateway._models import Route
from ssegate.gateway._runner import Runner
from ssegate.llm import ChatRequest
from ssegate.streams import CANCELLED, FAILED, Lease, LeaseKeeper, MemoryStore, hold_lease
from ssegate.streams.redis import LEASE_BATCH, RedisStore

pytestmark = pytest.mark.anyio

STREAMS = 100


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, object]]:
    return ("trio", {"clock": MockClock(autojump_threshold=0)})


class CountingStore(MemoryStore):
    """A MemoryStore in virtual time that records its lease calls (and fails when told)."""

    def __init__(self) -> None:
        super().__init__(clock=anyio.current_time)
        #: (virtual time, the streams) of each renew_leases call.
        self.renewals: list[tuple[float, list[str]]] = []
        self.single = 0  # acquire_lease / renew_lease calls
        self.unreachable_at: set[int] = set()  # the renewals (1-based) that fail

    async def _lease(self, stream: str, ttl: float) -> None:
        self.single += 1
        await super()._lease(stream, ttl)

    async def _renew_leases(self, streams: Sequence[str], ttl: float) -> list[str]:
        self.renewals.append((anyio.current_time(), list(streams)))
        if len(self.renewals) in self.unreachable_at:
            raise StoreUnavailable("the store is away for this tick")
        return await super()._renew_leases(streams, ttl)


async def test_a_hundred_leases_cost_one_call_per_tick_and_no_task_each() -> None:
    store = CountingStore()
    names = [f"s{n}" for n in range(STREAMS)]
    lost: list[bool] = []
    tasks: list[int] = []

    async def produce(name: str, until: float) -> None:
        async with hold_lease(store, name, ttl=3, renew_every=1) as lease:
            await anyio.sleep(until - anyio.current_time())
            await store.append(name, Event("last"))
            await lease.end()
        lost.append(lease.lost)

    async def look() -> None:
        await anyio.sleep(0.5)
        tasks.append(len(anyio.get_running_tasks()))

    start = anyio.current_time()
    async with anyio.create_task_group() as tg:
        before = len(anyio.get_running_tasks())
        # The first holder runs the keeper's loop; it leaves at 2.5 s and another takes it.
        tg.start_soon(produce, names[0], start + 2.5)
        for name in names[1:]:
            tg.start_soon(produce, name, start + 9.5)
        tg.start_soon(look)
    # The holders, the keeper's loop and look() itself: no task per lease.
    assert tasks == [before + STREAMS + 1 + 1]
    assert lost == [False] * STREAMS
    assert store.single == STREAMS  # the acquisitions, no renewal of its own
    assert [(at - start, len(streams)) for at, streams in store.renewals] == [
        (1.0, 100),
        (2.0, 100),
        *[(float(t), 99) for t in range(3, 10)],
    ]
    assert sorted(store.renewals[-1][1]) == sorted(names[1:])  # trio starts them in any order
    # Renewed to the end: none ran out (ttl 3 s, 9.5 s of production).
    for name in names:
        assert (await store.info(name)).outcome == "done"
    assert store._lease_keepers == {}  # the last holder took it away


async def test_a_stream_ended_elsewhere_cancels_its_block_at_the_next_tick() -> None:
    store = CountingStore()
    cancelled_at: dict[str, float] = {}
    leases: dict[str, Lease] = {}

    async def produce(name: str) -> None:
        async with hold_lease(store, name, ttl=3, renew_every=1) as lease:
            leases[name] = lease
            try:
                await anyio.sleep(4.5)
                await lease.end()
            finally:
                cancelled_at[name] = anyio.current_time() - start

    start = anyio.current_time()
    async with anyio.create_task_group() as tg:
        for name in ("a", "b", "c"):
            tg.start_soon(produce, name)
        await anyio.sleep(1.5)
        await store.end("b", CANCELLED)  # a DELETE on another replica
    assert cancelled_at == {"b": 2.0, "a": 4.5, "c": 4.5}
    assert [leases[n].lost for n in "abc"] == [False, True, False]
    assert (await store.info("b")).outcome == CANCELLED
    assert [(at - start, sorted(s)) for at, s in store.renewals] == [
        (1.0, ["a", "b", "c"]),
        (2.0, ["a", "b", "c"]),  # finds b ended: its block is cancelled
        (3.0, ["a", "c"]),
        (4.0, ["a", "c"]),
    ]


async def test_a_tick_that_cannot_reach_the_store_is_tried_again_at_the_next() -> None:
    store = CountingStore()
    store.unreachable_at = {2, 3}
    start = anyio.current_time()
    async with hold_lease(store, "g", ttl=3.5, renew_every=1) as lease:
        await anyio.sleep(5.5)
        # Renewed at 1 s, not at 2 and 3 (away), at 4 again: alive at 5.5 s.
        await store.append("g", Event("still here"))
        await lease.end()
    assert not lease.lost
    assert [at - start for at, _ in store.renewals] == [1.0, 2.0, 3.0, 4.0, 5.0]


async def test_a_lease_that_ran_out_while_the_store_was_away_is_lost() -> None:
    store = CountingStore()
    store.unreachable_at = {1, 2, 3}
    start = anyio.current_time()
    async with hold_lease(store, "g", ttl=2.5, renew_every=1) as lease:
        await anyio.sleep(10)
    # The tick at 4 s finds the lease run out (at 2.5 s): the block is cancelled.
    assert anyio.current_time() - start == 4.0
    assert lease.lost
    assert (await store.info("g")).outcome == FAILED
    assert [at - start for at, _ in store.renewals] == [1.0, 2.0, 3.0, 4.0]


async def test_the_keeper_of_one_owner_renews_in_its_task() -> None:
    store = CountingStore()
    keeper = LeaseKeeper(store, 10, renew_every=2, sleep=anyio.sleep, clock=anyio.current_time)
    start = anyio.current_time()
    async with anyio.create_task_group() as tg:
        tg.start_soon(keeper.run)
        async with keeper.hold("x") as x, keeper.hold("y") as y:
            assert len(keeper) == 2
            await anyio.sleep(4.5)
            await x.end()
            await anyio.sleep(2)
            await y.end()
        assert len(keeper) == 0
        await anyio.sleep(4)  # idle: no call
        tg.cancel_scope.cancel()
    assert [(at - start, s) for at, s in store.renewals] == [
        (2.0, ["x", "y"]),
        (4.0, ["x", "y"]),
        (6.0, ["y"]),  # x ended through its lease: not renewed, not lost
    ]
    assert not x.lost
    assert not y.lost


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_loop_moves_to_the_next_holder_on_asyncio_too() -> None:
    store = CountingStore()
    entered, leave = anyio.Event(), anyio.Event()

    async def first() -> None:
        async with hold_lease(store, "a", ttl=5, renew_every=0.01):
            entered.set()
            await leave.wait()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(first)  # its task group runs the keeper's loop
            await entered.wait()
            async with hold_lease(store, "b", ttl=5, renew_every=0.01) as b:
                leave.set()  # the first leaves: its task group is left at once
                # and "b" goes on being renewed, by the loop in this holder's task group
                while [s for _, s in store.renewals[-3:]] != [["b"]] * 3:  # noqa: ASYNC110
                    await anyio.sleep(0.01)
                await b.end()
    assert not b.lost
    assert store._lease_keepers == {}


@pytest.mark.redis
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_redis_renews_a_thousand_leases_in_one_round_of_calls(
    redis_store_factory: Callable[..., RedisStore],
) -> None:
    streams = [f"r{n}" for n in range(2 * LEASE_BATCH + 10)]
    async with redis_store_factory() as store:
        calls = 0
        script = store._lease_many_script

        async def counted(**kwargs: object) -> object:
            nonlocal calls
            calls += 1
            return await script(**kwargs)  # type: ignore[arg-type]

        store._lease_many_script = counted  # type: ignore[assignment]
        for stream in streams:
            await store.acquire_lease(stream, 30)
        await store.end(streams[7], CANCELLED)
        await store.end(streams[LEASE_BATCH + 3], CANCELLED)
        assert await store.renew_leases(streams, 60) == [streams[7], streams[LEASE_BATCH + 3]]
        assert calls == 3  # 500 + 500 + 10 streams, side by side
        # Every live lease now runs out 60 s after the renewal (Redis's clock):
        # more than 30 s from now, which no lease acquired before could.
        seconds, micros = await store.redis.time()
        now_ms = seconds * 1000 + micros // 1000
        async with store.redis.pipeline(transaction=False) as pipe:
            for stream in streams:
                pipe.hget(store._keys(stream)[1], "lease")
            deadlines = await pipe.execute()
        left = {
            s: None if d is None else int(d) - now_ms
            for s, d in zip(streams, deadlines, strict=True)
        }
        assert left.pop(streams[7]) is None  # ended: its lease is gone
        assert left.pop(streams[LEASE_BATCH + 3]) is None
        assert all(30_000 < ms <= 60_000 for ms in left.values()), left


async def test_the_runners_generations_cost_one_renewal_per_tick_and_a_stop_elsewhere() -> None:
    store = CountingStore()
    route = Route("echo", EchoProvider(tokens_per_second=1.0), "echo")
    request = ChatRequest(model="echo", messages=[{"role": "user", "content": "w " * 1000}])
    runner = Runner(
        store, Metrics(), grace=300, lease_renew=0.5, sleep=anyio.sleep, clock=anyio.current_time
    )
    names = [f"gen{n}" for n in range(STREAMS)]
    async with runner:
        start = anyio.current_time()
        generations = [await runner.start(name, route, request, key_id="k") for name in names]
        await anyio.sleep(5.25)
        assert store.single == STREAMS  # start() acquired each lease, nothing renewed alone
        assert [(at - start, sorted(s)) for at, s in store.renewals] == [
            (0.5 * n, sorted(names)) for n in range(1, 11)
        ]
        await store.end("gen7", CANCELLED)  # a DELETE handled by another replica
        await generations[7].finished.wait()
        assert anyio.current_time() - start == 5.5  # the next tick
        assert generations[7].end_reason == "stopped"
        assert not any(g.finished.is_set() for g in generations if g.id != "gen7")
    assert runner.metrics.cancellations.labels("stopped")._value.get() == 1
