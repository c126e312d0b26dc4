"""``check_stream_store()``: the stream store contract as a runnable suite.

Any ``StreamStore`` implementation runs it against itself (as trio publishes
``check_one_way_stream``)::

    await check_stream_store(lambda **kw: MyStore(**kw))

``store_factory(max_len=..., ttl=..., poll_interval=...)`` must return a new,
empty store (for a shared backend, one with its own key prefix); the suite
closes every store it makes. Every read check runs twice: through
``store.read()`` and through a ``Hub``, which must behave the same.

Leases and time to live need time to pass. Give ``advance(seconds)`` when the
store's clock is injectable (``MemoryStore(clock=...)``) and the suite moves it;
without it the suite uses short real durations and waits for the outcome (with
a deadline), never for a fixed time.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, aclosing
from typing import Any

import anyio
import anyio.lowlevel

from .._exceptions import StreamEnded, StreamNotFound, UnknownEventId
from ..protocol import Event
from ..streams import DONE, FAILED, End, Gap, Hub, StreamInfo, StreamItem, StreamStore

__all__ = ["check_stream_store"]

StoreFactory = Callable[..., StreamStore]
Reader = Callable[..., AsyncIterator[StreamItem]]

#: Every step of the suite must finish well within this (seconds).
STEP_TIMEOUT = 15.0


_ID_FORM = re.compile(r"[0-9a-f]{8}-[0-9]{12,}\Z")


class _Ids:
    """The ids of one stream: ``ids(3)`` is its third event's id."""

    def __init__(self, epoch: str) -> None:
        _check(
            re.match(r"[0-9a-f]{8}\Z", epoch) is not None, f"an epoch is 8 hex digits: {epoch!r}"
        )
        self.epoch = epoch

    def __call__(self, n: int) -> str:
        return f"{self.epoch}-{n:012d}"


async def _ids(store: StreamStore, stream: str) -> _Ids:
    info = await store.info(stream)
    _check(info.epoch is not None, f"info({stream!r}).epoch of an existing stream")
    return _Ids(info.epoch or "")


def _seq(event_id: str) -> int:
    return int(event_id.rpartition("-")[2])


async def _collect(items: AsyncIterator[StreamItem]) -> list[StreamItem]:
    """Everything up to and including the ``End``."""
    out: list[StreamItem] = []
    with anyio.fail_after(STEP_TIMEOUT):
        async with aclosing(items) as iterator:  # type: ignore[type-var]
            async for item in iterator:
                out.append(item)
    return out


async def _take(items: AsyncIterator[StreamItem], n: int) -> list[StreamItem]:
    out: list[StreamItem] = []
    with anyio.fail_after(STEP_TIMEOUT):
        while len(out) < n:
            out.append(await items.__anext__())
    return out


async def _read_all(read: Reader, *args: Any, **kwargs: Any) -> list[StreamItem]:
    """``_collect(read(...))``, where ``read()`` raising at once counts too."""
    return await _collect(read(*args, **kwargs))


async def _raises(exc_type: type[BaseException], awaitable: Awaitable[Any]) -> BaseException:
    try:
        await awaitable
    except exc_type as exc:
        return exc
    raise AssertionError(f"expected {exc_type.__name__}")


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def _eq(actual: Any, expected: Any, what: str) -> None:
    if actual != expected:
        raise AssertionError(f"{what}:\n  expected {expected!r}\n  got      {actual!r}")


class _Suite:
    def __init__(
        self, factory: StoreFactory, advance: Callable[[float], None] | None, hub: bool
    ) -> None:
        self.factory = factory
        self.advance = advance
        self.hub = hub

    async def run(self, check: Callable[..., Awaitable[None]], **options: Any) -> None:
        kwargs: dict[str, Any] = {"max_len": 100, "ttl": 60.0, "poll_interval": 0.05}
        kwargs.update(options)
        async with AsyncExitStack() as stack:
            store = self.factory(**kwargs)
            _check(isinstance(store, StreamStore), "store_factory must return a StreamStore")
            stack.push_async_callback(store.aclose)
            read: Reader = store.read
            if self.hub:
                hub = await stack.enter_async_context(Hub(store))
                read = hub.read
            try:
                with anyio.fail_after(STEP_TIMEOUT * 4):
                    await check(self, store, read)
            except* AssertionError as group:
                where = "via Hub" if self.hub else "via store.read"
                first = group.exceptions[0]
                raise AssertionError(f"{check.__name__} ({where}): {first}") from first

    async def pass_time(self, seconds: float, until: Callable[[], Awaitable[bool]]) -> None:
        """Let ``seconds`` pass (moving the clock if we can), until ``until()`` holds."""
        if self.advance is not None:
            self.advance(seconds)
        deadline = time.monotonic() + STEP_TIMEOUT
        while not await until():
            _check(time.monotonic() < deadline, "the expected outcome never came")
            await anyio.sleep(0.02)


# -- the checks --------------------------------------------------------------


async def check_append_and_read(suite: _Suite, store: StreamStore, read: Reader) -> None:
    got = [await store.append("s", Event(str(i))) for i in range(1, 6)]
    for event_id in got:
        _check(
            _ID_FORM.match(event_id) is not None, f"an id is '<8 hex>-<12 digits>': {event_id!r}"
        )
    _id = await _ids(store, "s")
    _eq(got, [_id(i) for i in range(1, 6)], "ids of the first five appends")
    _check(sorted(got) == got, "ids must sort as strings in append order")
    await store.end("s")
    end = End(DONE, _id(6))
    expected: list[StreamItem] = [Event(str(i), id=_id(i)) for i in range(1, 6)]
    _eq(await _collect(read("s")), [*expected, end], "read from the start")
    _eq(await _collect(read("s", "")), [*expected, end], "read after ''")
    _eq(await _collect(read("s", _id(3))), [*expected[3:], end], "read after id 3")
    _eq(await _collect(read("s", _id(5))), [end], "read after the last id")
    _eq(await _collect(read("s", _id(6))), [end], "read after the end's own id")
    _eq(await _collect(read("s", _id(0))), [*expected, end], "read after number 0")


async def check_epochs(suite: _Suite, store: StreamStore, read: Reader) -> None:
    # The epoch is fixed when the stream is created, however it is created.
    await store.create("a")
    epoch = (await store.info("a")).epoch
    _check(epoch is not None, "a created stream has an epoch")
    _eq((await store.append("a", Event("1"))).split("-")[0], epoch, "epoch of the first append")
    await store.acquire_lease("b", 60)
    epoch_b = (await store.info("b")).epoch
    _eq((await store.append("b", Event("1"))).split("-")[0], epoch_b, "epoch after a lease")
    await store.append("b", Event("2"))
    await store.append("a", Event("2"))
    _eq((await store.info("b")).epoch, epoch_b, "the epoch never changes")
    _check(epoch != epoch_b, "two streams have different epochs")
    a, b = _Ids(epoch or ""), _Ids(epoch_b or "")
    # A well-formed id of stream b, in range for stream a, is not an id of a.
    error = await _raises(UnknownEventId, _read_all(read, "a", b(1)))
    _check("another stream" in str(error), f"the error says whose id it is: {error}")
    async with aclosing(read("a", a(1))) as items:  # type: ignore[type-var]
        _eq(await _take(items, 1), [Event("2", id=a(2))], "resuming after its own id")
    # (Read before the end: the short ttl of this check may run out right after it.)
    await store.end("a")
    await store.end("b")

    # The name expires and is used again: the old ids do not resume the new stream.
    async def gone() -> bool:
        return not (await store.info("a")).exists

    await suite.pass_time(store.ttl + 0.01, gone)
    for i in range(3):
        await store.append("a", Event(f"new {i}"))
    new = await _ids(store, "a")
    _check(new.epoch != a.epoch, "a stream created again under a name has a new epoch")
    for old in (a(1), a(2), a(0)):
        error = await _raises(UnknownEventId, _read_all(read, "a", old))
        _check("earlier stream named 'a'" in str(error), f"the error says so: {error}")
    async with aclosing(read("a", new(2))) as items:  # type: ignore[type-var]
        _eq(await _take(items, 1), [Event("new 2", id=new(3))], "the new stream's own id")
    # An id of a stream that no longer exists belongs to nothing, even for topics.
    await _raises(UnknownEventId, _read_all(read, "b-gone", b(1), missing_ok=True))


async def check_fields_round_trip(suite: _Suite, store: StreamStore, read: Reader) -> None:
    events = [
        Event(""),
        Event("line one\nline two\r\nline three\rfour"),
        Event('{"text": "h\\u00e9llo \u2028 w\u00f6rld \U0001f600"}', event="token"),
        Event("   spaced  ", event="usage", retry=2500),
        Event("data: not a field\n\n: not a comment", event="x:y"),
        Event("retry zero", retry=0),
    ]
    for event in events:
        await store.append("f", event)
    await store.end("f", "error")
    _id = await _ids(store, "f")
    expected = [e.replace(id=_id(i)) for i, e in enumerate(events, 1)]
    _eq(await _collect(read("f")), [*expected, End("error", _id(7))], "events read back")


async def check_live(suite: _Suite, store: StreamStore, read: Reader) -> None:
    await store.create("live")
    _id = await _ids(store, "live")
    results: list[list[StreamItem]] = [[], [], []]

    async def follow(i: int, after: str | None) -> None:
        results[i] = await _collect(read("live", after))

    await store.append("live", Event("before"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(follow, 0, None)
        tg.start_soon(follow, 1, _id(1))
        tg.start_soon(follow, 2, None)
        await anyio.lowlevel.checkpoint()
        for i in range(2, 42):
            await store.append("live", Event(f"e{i}"))
            if i % 7 == 0:
                await anyio.sleep(0.01)  # let readers catch up mid-stream (not required)
        await store.end("live")
    every = [Event("before", id=_id(1))] + [Event(f"e{i}", id=_id(i)) for i in range(2, 42)]
    _eq(results[0], [*every, End(DONE, _id(42))], "live reader from the start")
    _eq(results[1], [*every[1:], End(DONE, _id(42))], "live reader after id 1")
    _eq(results[2], results[0], "second reader from the start")


async def check_concurrent_appends(suite: _Suite, store: StreamStore, read: Reader) -> None:
    got: list[str] = []

    async def produce(name: str) -> None:
        for i in range(20):
            got.append(await store.append("c", Event(f"{name}{i}")))

    async with anyio.create_task_group() as tg:
        for name in "abcd":
            tg.start_soon(produce, name)
    _id = await _ids(store, "c")
    _eq(sorted(got), [_id(i) for i in range(1, 81)], "ids of 80 concurrent appends")
    await store.end("c")
    items = await _collect(read("c"))
    _eq(len(items), 81, "events read")
    for name in "abcd":
        mine = [i.data for i in items if isinstance(i, Event) and i.data.startswith(name)]
        _eq(mine, [f"{name}{i}" for i in range(20)], f"producer {name}'s events, in order")


async def check_info(suite: _Suite, store: StreamStore, read: Reader) -> None:
    _eq(await store.info("nope"), StreamInfo(exists=False), "info of an unknown stream")
    await store.create("i")
    _id = await _ids(store, "i")
    await store.create("i")  # idempotent
    _eq(await store.info("i"), StreamInfo(exists=True, epoch=_id.epoch), "info of a created stream")
    for i in range(5):
        await store.append("i", Event(str(i)))
    _eq(
        await store.info("i"),
        StreamInfo(True, False, None, _id(3), _id(5), 3, _id.epoch),
        "info after 5 appends with max_len=3",
    )
    await store.end("i", "cancelled")
    _eq(
        await store.info("i"),
        StreamInfo(True, True, "cancelled", _id(3), _id(5), 3, _id.epoch),
        "info after end",
    )


async def check_retention_gap(suite: _Suite, store: StreamStore, read: Reader) -> None:
    for i in range(1, 6):
        await store.append("g", Event(str(i)))
    _id = await _ids(store, "g")
    tail: list[StreamItem] = [Event("3", id=_id(3)), Event("4", id=_id(4)), Event("5", id=_id(5))]
    await store.end("g")
    end = End(DONE, _id(6))
    _eq(
        await _collect(read("g")),
        [Gap(_id(0), _id(3), 2), *tail, end],
        "reading from the start after the cap trimmed two",
    )
    _eq(
        await _collect(read("g", _id(1))),
        [Gap(_id(1), _id(3), 1), *tail, end],
        "reading after a trimmed id",
    )
    _eq(await _collect(read("g", _id(2))), [*tail, end], "after the id just before")


async def check_gap_while_following(suite: _Suite, store: StreamStore, read: Reader) -> None:
    await store.append("lag", Event("1"))
    _id = await _ids(store, "lag")
    async with aclosing(read("lag")) as items:  # type: ignore[type-var]
        _eq(await _take(items, 1), [Event("1", id=_id(1))], "first event")
        # The reader stops reading while seven more arrive; the cap is 3.
        for i in range(2, 9):
            await store.append("lag", Event(str(i)))
        await store.end("lag")
        rest = await _collect(items)
    # Through a hub the reader may already hold some in its queue; what it must
    # never do is skip silently: every number 2..8 is either an event or in a gap.
    seen = {1}
    for item in rest:
        if isinstance(item, Gap):
            seen.update(range(_seq(item.after) + 1, _seq(item.first_id)))
        elif isinstance(item, Event):
            _check(item.id is not None and _seq(item.id) not in seen, f"repeat: {item}")
            seen.add(_seq(item.id or "0"))
    _eq(sorted(seen), list(range(1, 9)), "events read or reported as missed")
    _eq(rest[-1], End(DONE, _id(9)), "last item")
    _check(Event("8", id=_id(8)) in rest, "the newest event is delivered")


async def check_missing_and_unknown(suite: _Suite, store: StreamStore, read: Reader) -> None:
    await _raises(StreamNotFound, _read_all(read, "missing"))
    for bad in (
        "abc",
        "12",
        "000000000001",  # the number alone: which stream?
        "0123abcd-00000000001",  # 11 digits
        "0123ABCD-000000000001",  # upper case
        "0123abc-000000000001",
        "0123abcd-000000000001 ",
        "0123abcd--00000000001",
    ):
        await _raises(UnknownEventId, _read_all(read, "missing", bad))
    await store.append("u", Event("1"))
    _id = await _ids(store, "u")
    await _raises(UnknownEventId, _read_all(read, "u", _id(2)))
    await store.end("u")
    await _raises(UnknownEventId, _read_all(read, "u", _id(3)))  # the end is 2
    for name in ("", "a b", "{x}", "x\n", "-x", "a" * 201):
        await _raises(ValueError, _read_all(read, name))
        await _raises(ValueError, store.append(name, Event("x")))
    await _raises(ValueError, store.append("u2", Event("x", id=_id(1))))
    await _raises(TypeError, store.append("u2", "not an event"))  # type: ignore[arg-type]
    await _raises(ValueError, store.append("u2", Event("lone \ud800 surrogate")))
    await _raises(ValueError, store.end("u", "two words"))


async def check_missing_ok(suite: _Suite, store: StreamStore, read: Reader) -> None:
    result: list[StreamItem] = []

    async def follow() -> None:
        result.extend(await _read_all(read, "topic", missing_ok=True))

    async with anyio.create_task_group() as tg:
        tg.start_soon(follow)
        await anyio.sleep(0.05)
        await store.append("topic", Event("first"))
        await store.end("topic")
    _id = await _ids(store, "topic")
    _eq(result, [Event("first", id=_id(1)), End(DONE, _id(2))], "waiting for a topic to start")
    # An id from a previous life of a name that is gone cannot be resumed.
    await _raises(UnknownEventId, _read_all(read, "other", _id(1), missing_ok=True))


async def check_end_rules(suite: _Suite, store: StreamStore, read: Reader) -> None:
    await _raises(StreamNotFound, store.end("never"))
    await store.create("e")
    await store.end("e", "error")
    _id = await _ids(store, "e")
    _eq(await _collect(read("e")), [End("error", _id(1))], "reading an empty ended stream")
    _eq(await _collect(read("e", _id(1))), [End("error", _id(1))], "after its end's id")
    await _raises(UnknownEventId, _read_all(read, "e", _id(2)))
    await _raises(StreamEnded, store.end("e"))
    await _raises(StreamEnded, store.append("e", Event("late")))
    await _raises(StreamEnded, store.acquire_lease("e", 10))
    _eq((await store.info("e")).outcome, "error", "the first outcome stands")


async def check_ttl(suite: _Suite, store: StreamStore, read: Reader) -> None:
    await store.append("t", Event("x"))
    await store.end("t")
    _check((await store.info("t")).exists, "an ended stream exists until its ttl")

    async def gone() -> bool:
        return not (await store.info("t")).exists

    await suite.pass_time(store.ttl + 0.01, gone)
    await _raises(StreamNotFound, _read_all(read, "t"))


async def check_lease(suite: _Suite, store: StreamStore, read: Reader) -> None:
    await store.acquire_lease("held", 60)
    await store.append("held", Event("1"))
    await store.renew_lease("held", 60)
    _eq(await store.expire_leases(["held"]), [], "expire_leases with a live lease")

    lease = 0.3
    await store.acquire_lease("dead", lease)
    await store.append("dead", Event("1"))
    await store.acquire_lease("silent", lease)  # dies before producing anything
    _id = await _ids(store, "dead")
    silent = await _ids(store, "silent")
    result: list[StreamItem] = []
    result_silent: list[StreamItem] = []

    async def follow() -> None:
        result.extend(await _read_all(read, "dead"))

    async def follow_silent() -> None:
        result_silent.extend(await _read_all(read, "silent"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(follow)
        tg.start_soon(follow_silent)

        async def failed() -> bool:
            await store.expire_leases()
            return bool((await store.info("dead")).ended and (await store.info("silent")).ended)

        await suite.pass_time(lease + 0.01, failed)
    end = End(FAILED, _id(2))
    _eq(result, [Event("1", id=_id(1)), end], "reader of a stream whose producer died")
    _eq(result_silent, [End(FAILED, silent(1))], "reader of one that died without events")
    _eq(await _collect(read("dead", _id(1))), [end], "a reader who had every event")
    _eq(await _collect(read("silent")), [End(FAILED, silent(1))], "a new reader, no events")
    await _raises(StreamEnded, store.append("dead", Event("late")))
    await _raises(StreamEnded, store.renew_lease("dead", 10))
    _eq((await store.info("held")).ended, False, "the other stream is untouched")


async def check_renew_leases(suite: _Suite, store: StreamStore, read: Reader) -> None:
    # Many names: on Redis Cluster they span hash slots (the call is split per slot).
    names = [f"batch-{n}" for n in range(24)]
    # Long enough that a busy machine renews them before they run out (on Redis
    # the ttl is real time); taken side by side, in about one round trip.
    lease = 1.0
    await store.acquire_lease("not-renewed", lease)
    await store.acquire_lease("canary", lease)
    async with anyio.create_task_group() as tg:
        for name in names:
            tg.start_soon(store.acquire_lease, name, lease)
    await store.end(names[5], "cancelled")  # stopped elsewhere
    _eq(await store.renew_leases([], 60), [], "renew_leases of no stream")
    await _raises(ValueError, store.renew_leases(["no spaces"], 60))
    await _raises(ValueError, store.renew_leases(names, 0))
    ended = await store.renew_leases(names, 60)
    _eq(ended, [names[5]], "renew_leases returns the streams that have ended")

    async def canary_failed() -> bool:
        return await store.expire_leases(["canary"]) == ["canary"]

    await suite.pass_time(lease + 0.01, canary_failed)
    _eq(await store.expire_leases(names), [], "the renewed leases outlive their first ttl")
    # A lease that ran out is found by the renewal, which ends the stream as failed.
    ended = await store.renew_leases(["not-renewed", names[0]], 60)
    _eq(ended, ["not-renewed"], "renew_leases after a lease ran out")
    _eq((await store.info("not-renewed")).outcome, FAILED, "a lease that ran out")
    _eq((await store.info(names[5])).outcome, "cancelled", "the first outcome stands")
    _eq((await store.info(names[0])).ended, False, "a renewed stream goes on")
    await store.append(names[0], Event("still producing"))


_READ_CHECKS = [
    check_append_and_read,
    check_epochs,
    check_fields_round_trip,
    check_live,
    check_gap_while_following,
    check_missing_and_unknown,
    check_missing_ok,
    check_end_rules,
    check_ttl,
    check_lease,
    check_retention_gap,
]
_OTHER_CHECKS = [check_concurrent_appends, check_info, check_renew_leases]
_OPTIONS: dict[Any, dict[str, Any]] = {
    check_info: {"max_len": 3},
    check_retention_gap: {"max_len": 3},
    check_gap_while_following: {"max_len": 3},
    check_ttl: {"ttl": 0.2},
    check_epochs: {"ttl": 0.2},
}


async def check_stream_store(
    store_factory: StoreFactory, *, advance: Callable[[float], None] | None = None
) -> None:
    """Run the whole contract against stores made by ``store_factory``.

    Raises ``AssertionError`` naming the first check that fails.
    """
    for hub in (False, True):
        suite = _Suite(store_factory, advance, hub)
        for check in _READ_CHECKS if hub else _READ_CHECKS + _OTHER_CHECKS:
            await suite.run(check, **_OPTIONS.get(check, {}))
