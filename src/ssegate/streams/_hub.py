"""``Hub``: one reader per process, fanning each stream out to every local subscriber.

Without a hub each reader of a ``RedisStore`` blocks in its own ``XREAD`` on its
own connection. With one, a single task waits on all the streams local
subscribers watch at once (the store's ``_wait`` over every cursor; on Redis, a
blocking read of the store's notification stream, then one read of the streams
that advanced) and hands each page of events to every subscriber of that
stream, so Redis sees one reader per process whatever the number of clients.
The reader's cursors are kept as streams are followed, advance and end, and a
newly followed stream is named to the store (``Waker.follow``): a wait costs
what changed, not the number of streams followed (rebuilt per wait, with a set
difference in the memory store, they cost ~5 ms a wait at 10 000 streams).

Each followed stream keeps its recent pages in one shared ring, bounded to
``queue_size`` events; every subscriber is just a position in that ring.
Delivering a page to the ring costs the same whatever the number of
subscribers, and memory per subscriber is a few hundred bytes. While every
subscriber waits at the end of the ring (readers that keep up: the usual case)
a new page replaces the ones before it, which nobody will read again; the ring
keeps history only for subscribers that lag.

What the ring keeps stays out of the cyclic collector's sight. Only its newest
page is kept as it came (caught-up subscribers get its events as they are);
once a newer one arrives, a page becomes one plain tuple of str and int
(``_cold``), which CPython stops tracking at its next collection, and a
subscriber that lags gets its events made again. A full collection walks every
tracked object in the process while the event loop, every stream on it, waits:
kept as they came, pages cost three tracked objects per kept event (the page,
its list, the event), up to ``queue_size`` events per stream, and at 1 000
streams those walks were most of the per-token p99 on Redis. Now none per
kept event, and a full collection costs 6 ns per kept event, was 241 ns
(``benchmarks/redis_store.py --parts kept --baseline TREE``).

Waking them is the one cost that grows with their number, so it is kept to the
bone: on asyncio a waiting subscriber parks on a bare future of its own (one per
waiter is the least there can be: a cancelled task cancels the future it
awaits, so a shared one would wake everybody) and the hub resolves them all in
one pass over a dict. Going through ``anyio.Event`` (and the ``asyncio.Event``
under it) cost two more coroutine objects and frames per subscriber per event:
with 10 000 subscribers a page reached the last of them after ~37 ms, now ~23
ms (benchmarks/fanout.py). On other backends (trio) one ``anyio.Event`` per
stream does the job. A subscriber that wakes takes every page that arrived
meanwhile, and a page that starts right after its cursor (the usual case) is
handed out as it is, without a copy.

Cheaper still is not waking them: a subscriber may bring a ``Tap`` (the push
path, ``stream_response`` does on asyncio), and while it waits at the end of
the ring the events of a page right after its cursor are offered to it
first, one by one, from the task that delivered the page (the appender's, or
the hub's reader for a page read from the store: on Redis, the tokens of a
stream that came together); what it takes it has, so its task stays asleep
and its position and cursor move on (per token, one task step and one future
less for each reader that keeps up). What it refuses (from the first refusal
on) and the end are read as above.

A subscriber joins in three steps that leave no hole and no repeat: take a
position at the end of the ring (from then on everything the hub reads after
its cursor reaches it), replay the history from the store up to the hub's
cursor, then read the ring, skipping what the history already gave (ids are
numbers, so "already seen" is one comparison). Concurrent replays of the same
page share one read of the store (a reconnect storm costs one ``XRANGE``).

A subscriber that falls more than ``queue_size`` events behind finds its
position trimmed off the ring: it is cut loose, so it neither slows the others
nor grows memory. It then re-joins from where it is, replaying from the store;
if the store has trimmed past it meanwhile it gets a ``Gap`` saying how many
events it lost, never a silent skip.

If the store becomes unavailable the hub keeps its cursors and retries with
back-off; subscribers simply wait, and get everything once it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from types import TracebackType

import anyio
from anyio.abc import TaskGroup

from .._exceptions import StoreUnavailable, StreamNotFound
from ..protocol import Event
from ._flat import FIELDS, Flat, events_of, flatten
from ._store import (
    End,
    EventId,
    Page,
    StreamItem,
    StreamStore,
    Waker,
    check_after,
    check_stream_name,
    page_items,
    parse_id,
)

__all__ = ["Hub", "Tap"]

_new = tuple.__new__

logger = logging.getLogger("ssegate.streams")

#: Longest pause between attempts while the store is unavailable.
MAX_RETRY_DELAY = 5.0


class _Flight:
    """One read of history under way; ``done``, made only for a second reader
    of the same page (a reconnect storm), is set when it has finished."""

    __slots__ = ("done", "page")

    def __init__(self) -> None:
        self.done: anyio.Event | None = None
        self.page: Page | None = None

    async def wait(self) -> None:
        if self.done is None:
            self.done = anyio.Event()
        await self.done.wait()

    def finish(self) -> None:
        if self.done is not None:
            self.done.set()


def _cold(page: Page) -> Flat:
    """``page`` as one tuple of str and int only, which the collector stops
    tracking at its next pass: history out of its sight (see the module doc):
    its first number, outcome and epoch, then its events (``flatten``)."""
    events = page.events
    if len(events) == 1:  # the usual page: one token
        return (page[0], page[2], page[5], *events[0])
    return flatten(events, page.first_seq, page.outcome, page.epoch)


def _hot(cold: Flat) -> Page:
    """A page of history as readers take it, its events made again."""
    first, outcome, epoch = cold[:3]
    return Page(first, events_of(cold, 3, len(cold)), outcome, 0, True, epoch)  # type: ignore[arg-type]


def _size(slot: Page | Flat) -> int:
    """How many events a page of the ring holds, hot or cold."""
    return len(slot.events) if isinstance(slot, Page) else (len(slot) - 3) // FIELDS


class Tap:
    """A subscriber that takes live events without its task waking: the push path.

    Given to ``Hub.read(..., tap=)`` (on asyncio). While the subscriber waits at
    the end of the ring, the events of a new page right after its cursor (a
    token, as an appender writes them; several, as a page read back may hold)
    are offered to ``take(event)`` in order, from the task that delivered the
    page (the appender's, usually). ``True``: taken (``read()`` will not yield
    it; the subscriber's cursor moves past it and, once it took the whole page,
    it goes on waiting, its task not woken); ``False``: not taken, nothing
    done, no later event of the page offered, and the subscriber wakes and
    reads it and the rest as it would have. ``take`` must not wait, and should
    not raise (what it raises is logged and counts as ``False``).
    """

    __slots__ = ("cursor", "position")

    def __init__(self) -> None:
        self.position = 0  # the subscriber's ring position while it waits
        self.cursor = 0  # its last event's number while it waits

    def take(self, event: Event) -> bool:
        return False


class _Follow:
    """One followed stream: the hub's cursor and the ring of recent pages."""

    __slots__ = (
        "base",
        "changed",
        "cursor",
        "ended",
        "held",
        "pages",
        "rewake",
        "subscribers",
        "waiters",
        "waking",
    )

    def __init__(self, asyncio_loop: bool) -> None:
        self.cursor: int | None = None  # set by the first subscriber's replay
        self.ended = False
        self.subscribers = 0
        # The newest page as it came (its events handed out as they are), the
        # older ones cold (``_cold``).
        self.pages: deque[Page | Flat] = deque()
        self.base = 0  # ring position of pages[0]
        self.held = 0  # events in pages
        # On asyncio: the futures of waiting subscribers (a dict: ordered, O(1)
        # removal), each with its ``Tap`` if it has one. Elsewhere: one event for all.
        self.waiters: dict[asyncio.Future[None], Tap | None] = {}
        self.changed = None if asyncio_loop else anyio.Event()
        self.waking = False  # offering a page to taps (``_offer``)
        self.rewake = False  # a page came while offering one: no tap waits on

    @property
    def end(self) -> int:
        """The ring position the next page will take."""
        return self.base + len(self.pages)

    def push(self, page: Page, limit: int, offer: bool = True) -> None:
        """Add ``page`` to the ring; its events offered first (unless not
        ``offer``) to the waiting ``Tap``s, and the subscribers that do not
        take them all woken."""
        pages = self.pages
        if pages:
            if len(self.waiters) == self.subscribers:
                # Every subscriber waits at the end (on asyncio: the common case of
                # readers that keep up): none will read these pages again, and a
                # joining one replays from the store. Dropped, not made cold.
                self.base += len(pages)
                pages.clear()
                self.held = 0
            else:
                newest = pages[-1]
                if isinstance(newest, Page):  # as it came (cold ones are plain tuples)
                    pages[-1] = _cold(newest)
        pages.append(page)
        self.held += len(page[1])
        while self.held > limit and len(pages) > 1:
            self.held -= _size(pages.popleft())
            self.base += 1
        # The events of ``page`` (without the end) are first offered to waiting
        # ``Tap``s (on asyncio); the subscribers that do not take them all wake.
        if offer and page[2] is None and not self.waking and self.changed is None:
            waiters = self.waiters
            if len(waiters) != 1:
                self._offer(page)
                return
            # The usual: the stream's one reader. Offered in place: while it
            # takes, its waiters stay as they are (no new dict per token). Its
            # key, then its value: no items view, iterator and pair (~70 ns).
            (waiter,) = waiters
            tap = waiters[waiter]
            slot = self.base + len(pages) - 1  # the ring position of ``page``
            seq = page[0]
            if (
                tap is not None
                and tap.position == slot
                and tap.cursor + 1 == seq
                and not waiter.done()  # cancelled: its subscriber is leaving
            ):
                events = page[1]
                self.waking = True
                try:
                    if len(events) == 1:  # a token: ``_give``, inlined
                        taken = 1 if tap.take(events[0]) else 0
                    else:
                        taken = _give(tap, events)
                except Exception:
                    taken = _refused()
                finally:
                    self.waking = self.rewake = False
                if taken:
                    tap.cursor = seq + taken - 1
                    if taken == len(events):
                        tap.position = slot + 1
                        if not waiter.done():
                            if self.subscribers == 1:
                                # Nobody will read ``page`` (the only one in the
                                # ring, as every subscriber waited): dropped now,
                                # not by the next page, so no page of a stream
                                # that keeps up lives between its tokens (three
                                # objects each collection would walk).
                                pages.clear()
                                self.base = slot + 1
                                self.held = 0
                            return  # it goes on waiting
                        # else woken while taking (a page came from inside take), or cut
        self.wake()

    def keep_refused(self, slot: int, page: Page, limit: int) -> None:
        """``page`` (of one event) that its one waiting subscriber's tap refused
        at ring position ``slot`` (``Hub._deliver_event``, which took that
        place): kept there for its reader, who wakes (as ``push`` does)."""
        self.base = slot
        self.pages.appendleft(page)
        self.held += 1
        while self.held > limit and len(self.pages) > 1:
            self.held -= _size(self.pages.popleft())
            self.base += 1
        self.wake()

    def wake(self) -> None:
        """Wake every waiting subscriber, in one pass."""
        if self.changed is not None:
            changed, self.changed = self.changed, anyio.Event()
            changed.set()
            return
        waiters = self.waiters
        self.waiters = {}
        if self.waking:  # from inside a tap's take: none goes on waiting now
            self.rewake = True
        for waiter in waiters:
            if not waiter.done():  # cancelled: its subscriber is leaving
                waiter.set_result(None)

    def _offer(self, page: Page) -> None:
        """``push``'s offer of ``page``, several subscribers waiting: each
        waiting tap at ``page`` is offered its events, and goes on waiting if
        it took them all; every other subscriber is woken."""
        slot = self.base + len(self.pages) - 1  # the ring position of ``page``
        seq = page[0]
        events = page[1]
        waiters, self.waiters = self.waiters, {}
        self.waking = True
        try:
            for waiter, tap in waiters.items():
                if waiter.done():  # cancelled: its subscriber is leaving
                    continue
                if tap is not None and tap.position == slot and tap.cursor + 1 == seq:
                    taken = _give(tap, events)
                    if taken:
                        tap.cursor = seq + taken - 1
                        if taken == len(events):
                            tap.position = slot + 1
                            if not self.rewake and not waiter.done():
                                self.waiters[waiter] = tap
                                continue
                if not waiter.done():  # else its stream was cut while taking
                    waiter.set_result(None)
        finally:
            self.waking = False
            self.rewake = False


def _give(tap: Tap, events: list[Event]) -> int:
    """How many of ``events``, from the first, ``tap`` takes (up to its first
    refusal); what its ``take`` raises is logged and counts as a refusal."""
    taken = 0
    try:
        for event in events:
            if not tap.take(event):
                break
            taken += 1
    except Exception:
        _refused()
    return taken


def _refused() -> int:
    """What a tap's ``take`` raised (being handled), logged: a refusal (0 taken)."""
    logger.exception("a stream subscriber's tap failed; it reads instead")
    return 0


class Hub:
    """Fan-out of ``store``'s streams to any number of readers in this process.

    Use it as an async context manager (it runs one background task), then call
    ``read()`` exactly like ``StreamStore.read()``::

        async with Hub(store) as hub:
            async for item in hub.read("prices", after=last_id, missing_ok=True):
                ...

    ``queue_size``: events kept per followed stream for subscribers that lag
    (one further behind is cut loose and catches up from the store).
    ``max_replays``: history reads running at once, whatever the number of
    joining subscribers (each may hold a store connection); by default the
    store's ``concurrent_reads`` (4, more where reads share a connection). ``retry_delay``:
    the first pause when the store is unavailable, doubling up to
    ``MAX_RETRY_DELAY``. ``clock`` times the lease checks (every
    ``store.poll_interval``). ``error`` is the store's error while it is
    unavailable, ``None`` otherwise.
    """

    def __init__(
        self,
        store: StreamStore,
        *,
        queue_size: int = 1024,
        max_replays: int | None = None,
        retry_delay: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(store, StreamStore):
            raise TypeError(f"Hub needs a StreamStore, not {type(store).__name__}")
        if type(queue_size) is not int or queue_size < 1:
            raise ValueError(f"queue_size must be a positive int, not {queue_size!r}")
        self.store = store
        self.queue_size = queue_size
        if max_replays is None:
            max_replays = store.concurrent_reads
        if type(max_replays) is not int or max_replays < 1:
            raise ValueError(f"max_replays must be a positive int, not {max_replays!r}")
        self.max_replays = max_replays
        self.retry_delay = retry_delay
        self._clock = clock
        self._follows: dict[str, _Follow] = {}
        #: The reader's cursor of every followed stream that has one and has not
        #: ended, kept as they change (rebuilt per wait it cost O(streams) each time).
        self._cursors: dict[str, int] = {}
        self._flights: dict[tuple[str, int], _Flight] = {}
        self._task_group: TaskGroup | None = None
        self._waker: Waker | None = None
        self._waiting = False
        self._woken = False
        #: The last error of the background reader while the store is unavailable.
        self.error: StoreUnavailable | None = None

    @property
    def streams(self) -> int:
        """How many streams the hub follows now."""
        return len(self._follows)

    @property
    def subscribers(self) -> int:
        """How many subscribers are attached now."""
        return sum(follow.subscribers for follow in self._follows.values())

    async def __aenter__(self) -> Hub:
        if self._task_group is not None:
            raise RuntimeError("this Hub is already running")
        self._waker = self.store._waker()
        self._waker.deliver = self._deliver_local
        self._waker.deliver_event = self._deliver_event
        self._changed = anyio.Event()
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # not asyncio (trio)
            self._loop = None
        # History reads of joining subscribers, at most this many at a time: a
        # burst of joins (a deploy, a reconnect storm) must not open a
        # connection per subscriber.
        self._replays = anyio.Semaphore(self.max_replays)
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._task_group = task_group
        task_group.start_soon(self._run, name="ssegate-hub")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        task_group, self._task_group = self._task_group, None
        assert task_group is not None
        task_group.cancel_scope.cancel()
        for follow in self._follows.values():
            follow.wake()  # subscribers still waiting find the hub stopped
        try:
            return await task_group.__aexit__(exc_type, exc, tb)
        finally:
            if self._waker is not None:
                with (
                    anyio.CancelScope(shield=True),
                    anyio.move_on_after(5),
                    contextlib.suppress(StoreUnavailable),
                ):
                    await self._waker.aclose()
                self._waker = None

    # -- subscribing ------------------------------------------------------

    def read(
        self,
        stream: str,
        after: str | None = None,
        *,
        missing_ok: bool = False,
        tap: Tap | None = None,
    ) -> AsyncIterator[StreamItem]:
        """Like ``StreamStore.read()``, served from the hub's shared reader.

        ``tap``: the subscriber's push path (``Tap``), on asyncio.
        """
        if self._task_group is None:
            raise RuntimeError("start the hub first: `async with Hub(store) as hub: ...`")
        check_stream_name(stream)
        return self._subscribe(stream, parse_id(after), missing_ok, tap)

    async def _subscribe(
        self, stream: str, after: EventId | None, missing_ok: bool, tap: Tap | None
    ) -> AsyncIterator[StreamItem]:
        cursor = 0 if after is None else after.seq
        first = True
        while True:
            follow = self._join(stream)
            position = follow.end
            try:
                page = await self._replay(stream, cursor)
                if first:
                    first = False
                    if not page.exists and not missing_ok:
                        raise StreamNotFound(f"no stream named {stream!r} (or it has expired)")
                    epoch = page.epoch if page.exists else None
                    check_after(stream, after, epoch, page.last_seq, page.outcome is not None)
                if follow.cursor is None:
                    follow.cursor = page.last_seq
                    self._track(stream, follow)
                    if self._waker is not None:
                        self._waker.follow(stream)
                    await self._wake()
                # Replay up to the hub's cursor: everything after the position it
                # had when we joined (never more than now) reaches the ring.
                while True:
                    items, cursor = page_items(page, cursor)
                    for item in items:
                        yield item
                        if type(item) is End:
                            return
                    if cursor >= follow.cursor or not page.exists:
                        break
                    page = await self._replay(stream, cursor)
                # Live.
                pages = follow.pages
                loop = self._loop
                while position >= follow.base:
                    offset = position - follow.base
                    if offset < len(pages):
                        position += 1
                        slot = pages[offset]
                        page = slot if isinstance(slot, Page) else _hot(slot)
                        if page.first_seq == cursor + 1 and page.outcome is None:
                            # The usual page: right after our cursor, no end. As it is.
                            cursor += len(page.events)
                            for item in page.events:
                                yield item
                            continue
                        items, cursor = page_items(page, cursor)
                        for item in items:
                            yield item
                            if type(item) is End:
                                return
                        continue
                    if loop is not None:
                        waiter = loop.create_future()
                        if tap is not None:
                            tap.position = position
                            tap.cursor = cursor
                        follow.waiters[waiter] = tap
                        try:
                            await waiter
                        except BaseException:
                            follow.waiters.pop(waiter, None)
                            raise
                        if tap is not None:  # what it took meanwhile (``wake``)
                            position = tap.position
                            cursor = tap.cursor
                    else:
                        assert follow.changed is not None
                        await follow.changed.wait()
                    if self._task_group is None:
                        raise StoreUnavailable("the hub has stopped")
                # Our position was trimmed off the ring: cut loose, re-join from the store.
            finally:
                self._leave(stream, follow)

    async def _replay(self, stream: str, cursor: int) -> Page:
        """A page of history, shared by every subscriber asking for the same one at once.

        A reconnect storm of 10 000 clients at the same position costs one
        read, not 10 000. The shared page may be slightly older than a
        subscriber's registration; the replay loop then reads on to the hub's
        cursor, so nothing falls between.
        """
        key = (stream, cursor)
        flight = self._flights.get(key)
        if flight is not None:
            await flight.wait()
            if flight.page is not None:
                return flight.page
            # The reader that went to the store failed or was cancelled: our turn.
        flight = self._flights[key] = _Flight()
        replays = self._replays
        try:
            # A free place is taken without the two checkpoints of ``async
            # with`` (each a turn of the loop, for every subscriber that joins).
            try:
                replays.acquire_nowait()
            except anyio.WouldBlock:
                await replays.acquire()
            try:
                flight.page = await self.store._page(stream, cursor, self.store.batch)
            finally:
                replays.release()
            return flight.page
        finally:
            if self._flights.get(key) is flight:
                del self._flights[key]
            flight.finish()

    def _join(self, stream: str) -> _Follow:
        follow = self._follows.get(stream)
        if follow is None or follow.ended:  # ended: a new stream may reuse the name
            follow = self._follows[stream] = _Follow(self._loop is not None)
            self._cursors.pop(stream, None)
        follow.subscribers += 1
        return follow

    def _leave(self, stream: str, follow: _Follow) -> None:
        follow.subscribers -= 1
        if not follow.subscribers and self._follows.get(stream) is follow:
            del self._follows[stream]
            self._cursors.pop(stream, None)
            if self._waker is not None:
                self._waker.unfollow(stream)

    def _track(self, stream: str, follow: _Follow) -> None:
        """Keep ``_cursors`` in step with ``follow``, the stream's current follow."""
        if follow.cursor is None or follow.ended:
            self._cursors.pop(stream, None)
        else:
            self._cursors[stream] = follow.cursor

    async def _wake(self) -> None:
        """Make the reader pick up a newly followed stream now."""
        self._changed.set()
        # One wake per wait is enough (a burst of new streams costs one round
        # trip): the reader takes all the cursors again when the wait returns.
        if self._waiting and not self._woken and self._waker is not None:
            self._woken = True
            # If this fails the reader is failing too, and will rebuild its cursors.
            with contextlib.suppress(StoreUnavailable):
                await self._waker.wake()

    # -- the one reader ---------------------------------------------------

    async def _run(self) -> None:
        store = self.store
        assert self._waker is not None
        failures = 0
        next_lease_check = self._clock() + store.poll_interval
        while True:
            # A copy (C speed) where the wait reads it across awaits, while they change.
            cursors = self._cursors if store.cursors_read_at_once else self._cursors.copy()
            if not cursors:
                self._changed = anyio.Event()
                await self._changed.wait()
                continue
            try:
                self._waiting = True
                self._woken = False
                try:
                    pages = await store._wait(cursors, store.poll_interval, self._waker)
                finally:
                    self._waiting = False
                self.error = None
                for stream, page in pages.items():
                    self._deliver(stream, page)
                if self._clock() >= next_lease_check:
                    next_lease_check = self._clock() + store.poll_interval
                    # Streams whose producer is gone end now; the end arrives next round.
                    await store._expire_leases(list(cursors))
            except StoreUnavailable as exc:
                # Cursors only move on delivery, so nothing is skipped: retry.
                self.error = exc
                failures += 1
                await anyio.sleep(min(self.retry_delay * 2 ** min(failures, 8), MAX_RETRY_DELAY))
                continue
            failures = 0

    def _deliver_local(self, stream: str, page: Page) -> bool:
        """A page the store just wrote from this process: taken if it follows on.

        Taken if it leaves no hole after the hub's cursor; false if it would
        (the hub is behind on the stream: the store must have it read).
        Pages of streams not followed yet (or any more), or with nothing new,
        need nothing: a joining subscriber's replay reads the store anyway.
        """
        follow = self._follows.get(stream)
        if follow is None or follow.ended:
            return True
        cursor = follow.cursor
        if cursor is None:
            return True
        first = page[0]
        if first > cursor + 1:
            return False
        if page[2] is not None:  # the end (perhaps after events)
            self._deliver(stream, page)
            return True
        last = first + len(page[1]) - 1
        if last > cursor:  # the usual page: events right after the cursor, no end
            follow.cursor = self._cursors[stream] = last  # what _deliver and _track do
            follow.push(page, self.queue_size)
        return True

    def _deliver_event(self, stream: str, seq: int, event: Event, epoch: str) -> bool:
        """``_deliver_local`` of the page of ``event`` alone (``Waker.deliver_event``),
        before it is made. Where the stream's one subscriber waits with a
        ``Tap`` at the end of an empty ring (its reader keeps up), the event
        is offered to it, and if taken nothing is kept (the ring moves past
        it, as ``push`` drops such a page); the page is made only if the tap
        refuses it (``_Follow.keep_refused``). Not so alone: False, nothing
        done (the store delivers the page)."""
        follow = self._follows.get(stream)
        if follow is None or follow.ended:
            return True  # nothing to take (as ``_deliver_local``)
        cursor = follow.cursor
        if cursor is None:
            return True
        if cursor + 1 != seq:
            return seq <= cursor  # nothing new; or a hole: the store must have it read
        if follow.pages or follow.subscribers != 1 or follow.waking or follow.changed is not None:
            return False
        waiters = follow.waiters
        if len(waiters) != 1:
            return False
        (waiter,) = waiters  # (as ``push`` takes it)
        tap = waiters[waiter]
        slot = follow.base
        if tap is None or tap.position != slot or tap.cursor != cursor or waiter.done():
            return False
        follow.cursor = self._cursors[stream] = seq  # what _deliver_local does
        # Its place in the ring taken first: a page that came while the tap
        # took (from inside ``take``) goes after it, as after a pushed page.
        follow.base = slot + 1
        follow.waking = True
        try:
            taken = tap.take(event)
        except Exception:
            taken = bool(_refused())
        finally:
            follow.waking = follow.rewake = False
        if taken:
            tap.cursor = seq
            tap.position = slot + 1
            if waiter.done():  # woken while taking (a page came from inside take), or cut
                follow.wake()
            return True
        follow.keep_refused(
            slot, _new(Page, (seq, [event], None, seq, True, epoch)), self.queue_size
        )
        return True

    def _deliver(self, stream: str, page: Page) -> None:
        follow = self._follows.get(stream)
        if follow is None or follow.cursor is None:
            return
        if page.events:
            last = page.first_seq + len(page.events) - 1
            if last <= follow.cursor and page.outcome is None:
                # Nothing new: read back with a cursor from before the store
                # handed these events over (``_deliver_local``); the ring has them.
                return
            follow.cursor = max(follow.cursor, last)
        if page.outcome is not None:
            follow.ended = True
        self._track(stream, follow)
        follow.push(page, self.queue_size)
