"""What the hub offers a subscriber's ``Tap`` (the push path), and what it then reads.

A tap is offered the events of a page right after its cursor while its
subscriber waits; what it takes is not read again, what it refuses (or fails
to take) is read as usual, with the rest of its page, and the end is never
offered. Exact items, on the real stores.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import anyio
import anyio.lowlevel
import pytest

from ssegate import Event
from ssegate.streams import DONE, End, Hub, MemoryStore, StreamItem, StreamStore
from ssegate.streams._hub import Tap
from ssegate.streams.redis import RedisStore

pytestmark = pytest.mark.anyio


class Recorder(Tap):
    """Takes what ``decide`` says yes to, records what it was offered."""

    def __init__(self, decide: Callable[[Event], bool] = lambda event: True) -> None:
        super().__init__()
        self.offered: list[str] = []
        self.decide = decide

    def take(self, event: Event) -> bool:
        self.offered.append(event.data)
        return self.decide(event)


async def follow(hub: Hub, stream: str, tap: Tap, tasks: anyio.abc.TaskGroup) -> list[StreamItem]:
    read: list[StreamItem] = []

    async def run() -> None:
        async for item in hub.read(stream, missing_ok=True, tap=tap):
            read.append(item)

    waiting = sum(len(follow.waiters) for follow in hub._follows.values())
    tasks.start_soon(run)
    while sum(len(f.waiters) for f in hub._follows.values()) == waiting:
        await anyio.lowlevel.checkpoint()  # until it waits
    return read


async def publish(store: StreamStore, stream: str, data: Sequence[str]) -> list[str]:
    ids = []
    for item in data:
        ids.append(await store.append(stream, Event(item)))
        await anyio.lowlevel.checkpoint()
    return ids


def datas(items: list[StreamItem]) -> list[object]:
    return [item.data if isinstance(item, Event) else item for item in items]


async def test_taken_events_are_not_read_and_refused_ones_are() -> None:
    store = MemoryStore()
    tap = Recorder(lambda event: event.data != "b")
    async with Hub(store) as hub, anyio.create_task_group() as tasks:
        read = await follow(hub, "s", tap, tasks)
        ids = await publish(store, "s", "abcd")
        await store.end("s", DONE)
    assert tap.offered == ["a", "b", "c", "d"]
    epoch = ids[0].split("-")[0]
    assert datas(read) == ["b", End(DONE, f"{epoch}-000000000005")]


async def test_a_tap_that_raises_is_logged_and_its_subscriber_reads(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(event: Event) -> bool:
        raise RuntimeError("broken tap")

    store = MemoryStore()
    async with Hub(store) as hub, anyio.create_task_group() as tasks:
        read = await follow(hub, "s", Recorder(broken), tasks)
        await publish(store, "s", "ab")
        await store.end("s", DONE)
    assert datas(read)[:2] == ["a", "b"]
    assert [r.getMessage() for r in caplog.records] == [
        "a stream subscriber's tap failed; it reads instead"
    ] * 2


async def test_an_append_from_inside_a_take_is_read_not_lost() -> None:
    """A take that appends to the stream it is offered (a send that writes):
    no tap is offered the new page while the first is being offered; every
    waiting subscriber wakes and reads it."""
    store = MemoryStore()
    appended: list[str] = []

    def echo(event: Event) -> bool:
        if event.data == "a":
            appended.append(store.append_now("s", Event("a-echo")))
        return True

    first, second = Recorder(echo), Recorder()
    async with Hub(store) as hub, anyio.create_task_group() as tasks:
        read1 = await follow(hub, "s", first, tasks)
        read2 = await follow(hub, "s", second, tasks)
        await publish(store, "s", "a")
        await anyio.sleep(0.01)
        await publish(store, "s", "b")
        await store.end("s", DONE)
    assert (first.offered, second.offered) == (["a", "b"], ["a", "b"])
    assert datas(read1)[:-1] == ["a-echo"]  # it took a
    assert datas(read2)[:-1] == ["a-echo"]  # it took a: offered before the echo was read


async def test_a_lone_subscriber_that_appends_from_inside_its_take_reads_that() -> None:
    """The usual case, one subscriber (offered in place): a page that comes
    while it takes wakes it, and it reads that page."""
    store = MemoryStore()

    def echo(event: Event) -> bool:
        if event.data == "a":
            store.append_now("s", Event("a-echo"))
        return True

    tap = Recorder(echo)
    async with Hub(store) as hub, anyio.create_task_group() as tasks:
        read = await follow(hub, "s", tap, tasks)
        await publish(store, "s", "a")
        await anyio.sleep(0.01)
        await publish(store, "s", "b")  # waiting again: offered, taken
        await store.end("s", DONE)
    assert tap.offered == ["a", "b"]
    assert datas(read)[:-1] == ["a-echo"]


async def test_a_subscriber_that_is_leaving_is_offered_nothing() -> None:
    store = MemoryStore()
    tap = Recorder()
    async with Hub(store) as hub:
        async with anyio.create_task_group() as tasks:
            await follow(hub, "s", tap, tasks)
            tasks.cancel_scope.cancel()  # its wait is cancelled at once
            store.append_now("s", Event("a"))
        assert hub.subscribers == 0
    assert tap.offered == []


async def test_redis_pages_of_several_events_are_taken_event_by_event(
    redis_store_factory: Callable[..., RedisStore],
) -> None:
    async with redis_store_factory() as store:
        await store.create("s")
        tap = Recorder(lambda event: event.data != "d")
        async with Hub(store) as hub, anyio.create_task_group() as tasks:
            read = await follow(hub, "s", tap, tasks)
            await store.append("s", Event("a"))  # alone: one write, one page
            # Group commit: b is written at once, alone; c, d and e, which came
            # while it was, go together in the next write: a page of three,
            # whose c is taken and whose d is not: d and e are read.
            await asyncio.gather(*(store.append("s", Event(d)) for d in "bcde"))
            while len(read) < 2:  # noqa: ASYNC110 (the hub hands them over)
                await anyio.sleep(0.001)
            await store.end("s", DONE)
            while len(read) < 3:  # noqa: ASYNC110
                await anyio.sleep(0.001)
        assert tap.offered == ["a", "b", "c", "d"]
        assert datas(read)[:-1] == ["d", "e"]


async def test_redis_hands_a_lone_event_to_the_hub_without_its_page(
    redis_store_factory: Callable[..., RedisStore],
) -> None:
    """A write of one event of a stream is handed to the process's one hub as
    the event (``Waker.deliver_event``, as the memory store does), with the id
    its appender got; a refused one is kept for its subscriber to read."""
    async with redis_store_factory() as store:
        await store.create("s")
        tap = Recorder(lambda event: event.data != "d")
        handed: list[tuple[str, int, str, str, bool]] = []
        async with Hub(store) as hub, anyio.create_task_group() as tasks:
            assert hub._waker is not None
            lone = hub._waker.deliver_event
            assert lone is not None

            def counted(stream: str, seq: int, event: Event, epoch: str) -> bool:
                taken = lone(stream, seq, event, epoch)
                handed.append((stream, seq, event.id or "", epoch, taken))
                return taken

            hub._waker.deliver_event = counted
            read = await follow(hub, "s", tap, tasks)
            ids = await publish(store, "s", "abcd")
            while len(read) < 1:  # noqa: ASYNC110 (the hub hands them over)
                await anyio.sleep(0.001)
            await store.end("s", DONE)
            while len(read) < 2:  # noqa: ASYNC110
                await anyio.sleep(0.001)
        epoch = ids[0].split("-")[0]
        assert handed == [("s", n + 1, ids[n], epoch, True) for n in range(4)]
        assert tap.offered == ["a", "b", "c", "d"]
        assert datas(read)[:-1] == ["d"]
        assert isinstance(read[-1], End)


@pytest.mark.parametrize("seed", range(24))
async def test_events_taken_without_their_page_are_what_the_page_would_give(seed: int) -> None:
    """The memory store hands a lone event to a hub whose one reader keeps up
    without making its page (``Waker.deliver_event``, ``Hub._deliver_event``):
    for any run of takes, refusals, failures, bursts appended in one go, and
    appends from inside a take, the tap is offered and its subscriber reads
    exactly what the page's way (``deliver_event`` unset) gives."""
    import random

    rng = random.Random(seed)
    plan = [rng.choice("tttttrxe") for _ in range(40)]
    bursts = [rng.random() < 0.2 for _ in plan]

    async def run(lean: bool) -> tuple[list[str], list[object], list[tuple[str, str]], int]:
        store = MemoryStore(max_len=8)
        calls = without_page = 0

        def decide(event: Event) -> bool:
            nonlocal calls
            calls += 1
            what = plan[int(event.data.split("-")[0]) % len(plan)]
            if what == "x":
                raise RuntimeError("broken tap")
            if what == "e" and not event.data.endswith("echo"):
                store.append_now("s", Event(f"{event.data}-echo"))
            return what != "r"

        tap = Recorder(decide)
        async with Hub(store) as hub, anyio.create_task_group() as tasks:
            assert hub._waker is not None
            lone = hub._waker.deliver_event
            assert lone is not None

            def counted(stream: str, seq: int, event: Event, epoch: str) -> bool:
                nonlocal without_page
                done = lone(stream, seq, event, epoch)
                without_page += done and not hub._follows["s"].pages
                return done

            hub._waker.deliver_event = counted if lean else None
            read = await follow(hub, "s", tap, tasks)
            for n, burst in enumerate(bursts):
                store.append_now("s", Event(str(n)))
                if not burst:
                    await anyio.sleep(0.001)
            await anyio.sleep(0.01)
            await store.end("s", DONE)
        assert without_page > 0 if lean else without_page == 0
        ends = [(item.outcome, item.id.split("-")[1]) for item in read if isinstance(item, End)]
        events = [item.data for item in read if isinstance(item, Event)]
        return tap.offered, events, ends, calls

    assert await run(lean=True) == await run(lean=False)
