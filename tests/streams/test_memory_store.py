"""MemoryStore specifics: injected time, no leaks, leases held by hold_lease()."""

from __future__ import annotations

import gc
from contextlib import aclosing

import anyio
import pytest
from streams_support import FakeClock, Ids, ids_of

from ssegate import Event, StreamEnded, StreamNotFound, UnknownEventId
from ssegate.streams import DONE, FAILED, End, Gap, Hub, MemoryStore, StreamInfo, hold_lease
from ssegate.streams._flat import FIELDS
from ssegate.streams._memory import CHUNK
from ssegate.streams._store import Page, format_id

pytestmark = pytest.mark.anyio


async def test_ended_streams_are_forgotten_after_their_ttl(clock: FakeClock) -> None:
    store = MemoryStore(ttl=30, clock=clock)
    first = Ids.of(await store.append("a", Event("x")))
    await store.end("a")
    await store.append("b", Event("y"))
    clock.advance(29.9)
    assert (await store.info("a")).exists
    clock.advance(0.1)
    assert await store.info("a") == StreamInfo(exists=False)
    assert store._streams.keys() == {"b"}  # purged, not just hidden
    # The name is free again: a new stream starts from number 1, with a new epoch.
    again = await store.append("a", Event("again"))
    assert again.endswith("-000000000001")
    assert Ids.of(again).epoch != first.epoch
    with pytest.raises(UnknownEventId, match="earlier stream named 'a'"):
        async with aclosing(store.read("a", first(1))) as items:
            await items.__anext__()


async def test_readers_leave_no_waiters_behind() -> None:
    store = MemoryStore(poll_interval=0.01)
    await store.create("s")
    for _ in range(3):
        async with aclosing(store.read("s")) as items:
            with anyio.move_on_after(0.05):
                await items.__anext__()
    assert store._waiters == {}


async def test_a_lease_ends_the_stream_as_failed_when_it_runs_out(clock: FakeClock) -> None:
    store = MemoryStore(clock=clock)
    await store.acquire_lease("g", 10)
    _id = await ids_of(store, "g")
    await store.append("g", Event("1"))
    clock.advance(9.99)
    assert await store.expire_leases() == []
    await store.renew_lease("g", 10)
    clock.advance(9.99)
    await store.append("g", Event("2"))
    clock.advance(0.02)
    # Nobody looked yet, but an append after the deadline is refused all the same.
    with pytest.raises(StreamEnded, match="failed"):
        await store.append("g", Event("3"))
    assert await store.expire_leases() == []  # already ended by the append above
    items = [item async for item in store.read("g")]
    assert items == [Event("1", id=_id(1)), Event("2", id=_id(2)), End(FAILED, _id(3))]


async def test_hold_lease_renews_until_the_block_exits(clock: FakeClock) -> None:
    store = MemoryStore(clock=clock)
    async with hold_lease(store, "p", ttl=10, renew_every=0.001):
        deadline = store._streams["p"].lease_until
        clock.advance(8)
        for _ in range(10_000):  # wait (10 s at most) for one renewal
            if store._streams["p"].lease_until != deadline:
                break
            await anyio.sleep(0.001)
        clock.advance(8)  # 16 s after the first deadline was set: renewed, still alive
        assert await store.expire_leases() == []
        await store.append("p", Event("tok"))
    clock.advance(10.01)  # the block exited without end(): the lease runs out
    assert await store.expire_leases() == ["p"]
    assert (await store.info("p")).outcome == FAILED


async def test_hold_lease_refuses_bad_intervals() -> None:
    store = MemoryStore()
    with pytest.raises(ValueError, match="renew_every"):
        async with hold_lease(store, "p", ttl=1, renew_every=1):
            pass
    with pytest.raises(ValueError, match="ttl"):
        await store.acquire_lease("p", 0)


async def test_ids_keep_sorting_as_strings_past_the_padding() -> None:
    store = MemoryStore(max_len=2)
    state_ids = []
    _id = Ids.of(await store.append("n", Event("a")))
    store._streams["n"].last_seq = 10**12 - 2  # jump close to the width limit
    for _ in range(3):
        state_ids.append(await store.append("n", Event("b")))
    assert state_ids == [_id(999999999999), _id(1000000000000), _id(1000000000001)]
    assert state_ids[1] == f"{_id.epoch}-1000000000000"
    # Past 12 digits ids get longer (documented): numbers still compare correctly.
    items = [item async for item in _until_live(store.read("n", _id(999999999999)))]
    assert items == [Event("b", id=_id(1000000000000)), Event("b", id=_id(1000000000001))]


async def _until_live(items: object) -> object:
    async with aclosing(items) as it:  # type: ignore[type-var]
        for _ in range(2):
            yield await it.__anext__()


async def test_constructor_and_argument_errors() -> None:
    with pytest.raises(ValueError, match="max_len"):
        MemoryStore(max_len=0)
    with pytest.raises(ValueError, match="ttl"):
        MemoryStore(ttl=0)
    store = MemoryStore()
    with pytest.raises(UnknownEventId, match="not an id of this store"):
        store.read("s", "1-0")
    with pytest.raises(TypeError, match="Event"):
        await store.append("s", {"data": "x"})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="outcome"):
        await store.end("s", "")


async def test_gap_reports_exactly_how_many_were_trimmed() -> None:
    store = MemoryStore(max_len=10)
    for i in range(25):
        await store.append("s", Event(str(i)))
    _id = await ids_of(store, "s")
    async with aclosing(store.read("s", _id(7))) as items:
        first = await items.__anext__()
    assert first == Gap(_id(7), _id(16), 8)


async def test_hold_lease_lets_the_blocks_own_error_through() -> None:
    store = MemoryStore()
    with pytest.raises(KeyError, match="boom"):
        async with hold_lease(store, "p", ttl=10):
            raise KeyError("boom")
    with anyio.move_on_after(0.01):  # cancelled from outside: no error, renewals stop
        async with hold_lease(store, "q", ttl=10):
            await anyio.sleep(10)


async def test_ending_the_stream_elsewhere_cancels_the_producer() -> None:
    store = MemoryStore()
    async with (
        anyio.create_task_group() as tg,
        hold_lease(store, "gen", ttl=10, renew_every=0.01) as lease,
    ):
        tg.start_soon(store.end, "gen", "cancelled")  # a DELETE on another replica
        with anyio.fail_after(10):
            await anyio.sleep_forever()  # waiting on the upstream, say
    assert lease.lost
    assert (await store.info("gen")).outcome == "cancelled"


async def test_ending_through_the_lease_is_not_mistaken_for_a_stop() -> None:
    store = MemoryStore()
    steps = []
    async with hold_lease(store, "gen", ttl=10, renew_every=0.001) as lease:
        await store.append("gen", Event("t"))
        await lease.end()
        for _ in range(20):  # renewals run meanwhile, and find the stream ended
            await anyio.sleep(0.001)
            steps.append(1)
    assert not lease.lost
    assert len(steps) == 20
    assert (await store.info("gen")).outcome == "done"


async def test_a_reader_stalled_past_the_ttl_does_not_run_into_the_next_stream(
    clock: FakeClock,
) -> None:
    store = MemoryStore(ttl=10, clock=clock)
    await store.append("s", Event("old 1"))
    _id = await ids_of(store, "s")
    async with aclosing(store.read("s")) as items:
        assert await items.__anext__() == Event("old 1", id=_id(1))
        # The reader stalls while the stream ends, expires and a new one takes the name.
        await store.end("s")
        clock.advance(10)
        await store.append("s", Event("new 1"))
        await store.append("s", Event("new 2"))
        with pytest.raises(StreamNotFound, match="a new stream took its name"):
            await items.__anext__()


async def test_a_stream_followed_during_a_wait_is_looked_at_in_the_next() -> None:
    # The hub names a newly followed stream to the waker while a wait runs with
    # the cursors taken before: that wait has no cursor for it, the next one
    # must look at it even if it never changes again (it has ended).
    store = MemoryStore()
    await store.append("s", Event("a"))
    await store.end("s")
    waker = store._waker()
    waker.follow("s")  # type: ignore[attr-defined]
    assert await store._hub_wait({}, 0.01, waker) == {}  # type: ignore[attr-defined]
    pages = await store._hub_wait({"s": 0}, 0.01, waker)  # type: ignore[attr-defined]
    assert list(pages) == ["s"]
    assert [e.data for e in pages["s"].events] == ["a"]
    assert pages["s"].outcome == "done"
    assert await store._hub_wait({"s": 1}, 0.01, waker) == {}  # type: ignore[attr-defined]


async def test_a_stream_left_before_the_hubs_look_is_forgotten() -> None:
    # Readers that follow a stream and leave before the hub's next wait: that
    # wait has no cursor for it, and it must not keep the name for the next
    # waits (it did: every later wait walked every such stream again, for ever,
    # ~40 % of a busy gateway's CPU).
    store = MemoryStore()
    names = [f"s{n}" for n in range(20)]
    for name in names:
        await store.append(name, Event("a"))
    async with Hub(store) as hub:
        for name in names:
            async with aclosing(hub.read(name)) as items:
                assert (await items.__anext__()).data == "a"
        waker = next(iter(store._hubs))
        assert waker.followed == set()  # type: ignore[attr-defined]
        assert hub.streams == 0
        # The hub's next look (no cursors: it follows nothing) drops them for good.
        assert store._hub_ready({}, waker) == {}  # type: ignore[arg-type]
        assert waker.changed == set()  # type: ignore[attr-defined]


async def test_an_append_is_handed_to_the_hub_as_it_is() -> None:
    # A hub that takes the appended page (``Waker.deliver``) is not woken to read
    # it back: its subscribers get it from the append itself. One that cannot
    # take it (it is behind on the stream) is told the stream changed, as before.
    store = MemoryStore()
    await store.create("s")
    waker = store._waker()
    taken: list[tuple[str, Page]] = []
    answer = True

    def deliver(stream: str, page: Page) -> bool:
        taken.append((stream, page))
        return answer

    waker.deliver = deliver
    first = await store.append("s", Event("a"))
    assert [(s, p.first_seq, p.events, p.outcome) for s, p in taken] == [
        ("s", 1, [Event("a", id=first)], None)
    ]
    assert waker.changed == set()  # type: ignore[attr-defined]
    assert await store._hub_wait({"s": 1}, 0.01, waker) == {}  # type: ignore[attr-defined]
    answer = False
    second = await store.append("s", Event("b"))
    assert taken[-1][1].events == [Event("b", id=second)]
    assert waker.changed == {"s"}  # type: ignore[attr-defined]
    pages = await store._hub_wait({"s": 1}, 0.01, waker)  # type: ignore[attr-defined]
    assert pages["s"].events == [Event("b", id=second)]


async def test_a_hub_wait_woken_for_a_new_follow_looks_and_goes_on_waiting() -> None:
    # The hub wakes its wait for every newly followed stream. Here the wait
    # looks at it there and then, and goes on waiting (the hub hands over its
    # own cursors, as they change: it has nothing to take again), until there
    # is something to read: not one wait of the hub per follow.
    store = MemoryStore()
    await store.append("s", Event("a"))
    await store.append("t", Event("b"))
    waker = store._waker()
    cursors = {"s": 1}
    got: list[dict[str, Page]] = []

    async def wait() -> None:
        got.append(await store._hub_wait(cursors, 10, waker))  # type: ignore[attr-defined]

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            cursors["t"] = 1
            waker.follow("t")  # type: ignore[attr-defined]
            await waker.wake()
            await anyio.wait_all_tasks_blocked()
            assert waker.followed == set()  # type: ignore[attr-defined]  # looked at
            assert got == []  # and waiting still
            appended = await store.append("t", Event("c"))
    assert [(stream, page.events) for stream, page in got[0].items()] == [
        ("t", [Event("c", id=appended)])
    ]


async def test_appends_to_a_held_stream_are_checked_as_any_append() -> None:
    # The per-token shortcut (a stream held here, ASCII text) skips only what
    # holds already: anything else still meets StreamStore.append's checks.
    store = MemoryStore()
    first = await store.append("s", Event("a"))
    with pytest.raises(ValueError, match="lone surrogates"):
        await store.append("s", Event("\ud800"))
    with pytest.raises(ValueError, match="the store assigns ids"):
        await store.append("s", Event("b", id="x"))
    with pytest.raises(TypeError, match="takes an Event"):
        await store.append("s", "c")  # type: ignore[arg-type]
    second = await store.append("s", Event("é", event="ü"))
    async with aclosing(store.read("s")) as items:
        assert [await items.__anext__() for _ in range(2)] == [
            Event("a", id=first),
            Event("é", event="ü", id=second),
        ]


async def test_kept_history_stays_out_of_the_collectors_sight() -> None:
    """Kept events are plain tuples of str and int (one flat tuple per CHUNK of
    them), which the cyclic collector stops tracking: a collection walks none of
    them (an ``Event`` it walked for as long as it was kept), the newest
    included; history reads get exact events back, whatever their type, id,
    retry and data."""
    store = MemoryStore(max_len=100)
    kinds = [
        Event("a", event="token", retry=250),
        Event("b"),
        Event("two\nlines\n", event="token"),
        Event("", event="ping"),
        Event("é", retry=0),
    ]
    sent = [kinds[n % len(kinds)] for n in range(250)]
    ids = [await store.append("s", event) for event in sent]
    kept = [Event(e.data, e.event, i, e.retry) for e, i in zip(sent, ids, strict=True)][-100:]
    state = store._streams["s"]
    gc.collect()
    slots = [*state.cold, *state.recent]
    assert not any(gc.is_tracked(slot) for slot in slots)
    assert len(state.cold) >= 2  # several flat tuples, one of them trimmed at its front
    async with aclosing(store.read("s", ids[-2])) as items:
        newest = await items.__anext__()
    assert newest == kept[-1]
    assert type(newest) is Event
    # Resuming from any id still kept: exactly the events after it, as sent.
    for after in range(150, 250, 7):
        async with aclosing(store.read("s", ids[after - 1])) as items:
            read = [await items.__anext__() for _ in range(250 - after)]
        assert read == kept[after - 150 :]
        assert all(type(item) is Event for item in read)
    # Older than what is kept: a gap, then all of it.
    await store.end("s")
    async with aclosing(store.read("s", ids[10])) as items:
        rest = [item async for item in items]
    assert rest[0] == Gap(ids[10], ids[150], 139)
    _id = await ids_of(store, "s")
    assert rest[1:] == [*kept, End(DONE, _id(251))]
    assert (await store.info("s")).length == 100


@pytest.mark.parametrize("max_len", [1, 2, 5, 31, 32, 33, 70])
async def test_every_range_of_kept_history_is_what_was_appended(max_len: int) -> None:
    """The kept events (laid out flat, every CHUNK of them a flat tuple, the
    oldest trimmed) read back as a plain
    list of them would give, for every range, after every append."""
    store = MemoryStore(max_len=max_len)
    sent: list[Event] = []
    for n in range(150):
        event = Event(f"e{n}", event="token" if n % 3 else "message", retry=n if n % 5 else None)
        event_id = await store.append("s", event)
        sent.append(Event(event.data, event.event, event_id, event.retry))
        kept = sent[-max_len:]
        state = store._streams["s"]
        assert state.length == len(kept)
        for start in range(len(kept) + 1):
            for stop in range(start, len(kept) + 1):
                assert state.events(start, stop) == kept[start:stop], (n, start, stop)
        assert len(state.recent) < CHUNK * FIELDS


@pytest.mark.parametrize("start", [0, 4090, 10**6])
async def test_appended_ids_are_format_ids_below_and_past_the_table(start: int) -> None:
    """``append_now`` writes an id from its table of padded numbers while it
    lasts, formats it after: ``format_id``'s text either way."""
    store = MemoryStore(max_len=3)
    await store.create("s")
    state = store._streams["s"]
    state.last_seq = start
    for seq in range(start + 1, start + 12):
        assert store.append_now("s", Event("x")) == format_id(state.epoch, seq)
