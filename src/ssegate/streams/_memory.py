"""``MemoryStore``: the embedded default, one process, no dependencies.

Each stream is its last ``max_len`` events, a counter and the epoch it was
created with (see "Ids" in ``_store``); readers wait on an ``anyio.Event`` that
the next append or end sets. What a stream keeps stays out of the cyclic
collector's sight, as the hub's ring does (``_flat``): only the newest event is
kept as it came, older ones as their fields laid out flat (str, int and None,
which CPython does not track; every ``CHUNK`` of them one plain tuple, which it
stops tracking at its next collection). Kept as ``Event``s (which it never stops
tracking), every token of every stream was walked by each collection that
reached it, while every stream waited; as a plain tuple each, every token made
an object the next collection walked. Time (lease deadlines and
the time to live of ended streams) comes from an injectable ``clock`` so tests
can move it instead of sleeping.

A hub, which follows thousands of streams, does not register with each of them
nor look at each of them per wake-up: every append or end is handed to each hub
as a page (``Waker.deliver``; a hub that is caught up takes it without its task
waking), and one it cannot take adds its stream to the hub's set of changed
streams (and wakes the hub), and the hub's wait reads just those, plus any
stream it newly follows (looked at without the wait returning to the hub: it
reads the hub's own cursors, ``cursors_read_at_once``). (Registering its event with every
followed stream and scanning them all, per wake-up, cost O(streams) each time a
token was written: with 10 000 streams it took most of the gateway's CPU in the
soak, benchmarks/soak.py.)
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from functools import partial

import anyio

from .._exceptions import StreamEnded, StreamNotFound
from ..protocol import Event
from ._flat import FIELDS, Flat, events_of
from ._store import (
    FAILED,
    ID_WIDTH,
    Appender,
    Page,
    StreamInfo,
    StreamStore,
    Waker,
    check_append,
    check_stream_name,
    format_id,
    new_epoch,
)

__all__ = ["MemoryStore"]

_new = tuple.__new__


#: ``format_id(epoch, seq)`` as ``_ID % (epoch, seq)`` (a test holds them equal).
_ID = f"%s-%0{ID_WIDTH}d"

#: The numbers of a stream's first ``len(_PADDED) - 1`` events as ``format_id``
#: writes them (``_PADDED[seq]``), made once: an id is then its stream's
#: ``"<epoch>-"`` and one of these (38 against 170 ns a token for ``_ID %``);
#: later numbers are formatted. 4 096 of them: ~250 kB.
_PADDED = tuple(f"{seq:0{ID_WIDTH}d}" for seq in range(4096))

#: Events per flat tuple of a stream's history (``_Stream.cold``).
CHUNK = 32
_CHUNK_FIELDS = CHUNK * FIELDS


class _Stream:
    """One stream: its counter, outcome, lease and the events it keeps.

    Kept out of the collector's sight (``_flat``): the events are laid out
    flat, their fields one after the other (``recent``: str, int and None,
    which the collector does not track; as a tuple each, every token kept an
    object that the next collections walked), and every ``CHUNK`` of those
    become one flat tuple (``cold``), the first ``skip`` events of the oldest
    one trimmed off already. A reader that keeps up takes each event as it
    came, from the hub; one that reads them here gets them made again.
    ``MemoryStore.append_now`` keeps each event.
    """

    __slots__ = (
        "cold",
        "epoch",
        "expires_at",
        "id_head",
        "last_seq",
        "lease_until",
        "length",
        "max_len",
        "outcome",
        "recent",
        "skip",
    )

    def __init__(self, max_len: int) -> None:
        self.epoch = new_epoch()
        self.id_head = self.epoch + "-"  # its ids before their number
        self.max_len = max_len
        self.cold: deque[Flat] = deque()
        self.skip = 0
        #: The newest events (fewer than ``CHUNK``): their fields, one after the other.
        self.recent: list[object] = []
        self.length = 0  # events kept
        self.last_seq = 0
        self.outcome: str | None = None
        self.lease_until: float | None = None
        self.expires_at: float | None = None

    @property
    def first_seq(self) -> int:
        return self.last_seq - self.length + 1

    def events(self, start: int, stop: int) -> list[Event]:
        """The kept events from the ``start``-th to before the ``stop``-th (0: the oldest)."""
        start += self.skip
        stop += self.skip
        cold = self.cold
        held = len(cold) * CHUNK
        events: list[Event] = []
        for n in range(start // CHUNK, min(stop, held) // CHUNK + 1):
            if n < len(cold):
                begin = max(start - n * CHUNK, 0)
                end = min(stop - n * CHUNK, CHUNK)
                if begin < end:
                    events += events_of(cold[n], begin * FIELDS, end * FIELDS)
        if stop > held:
            recent = self.recent
            begin, end = max(start - held, 0), stop - held
            if begin < end:
                events += events_of(recent, begin * FIELDS, min(end * FIELDS, len(recent)))  # type: ignore[arg-type]
        return events


class _MemoryWaker(Waker):
    __slots__ = ("changed", "event", "followed", "pending", "store")

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.pending = False
        self.event: anyio.Event | None = None
        #: Streams appended to, ended or newly followed since the hub's last look.
        self.changed: set[str] = set()
        #: Streams newly followed that no look has had a cursor for yet.
        self.followed: set[str] = set()

    def follow(self, stream: str) -> None:
        self.changed.add(stream)
        self.followed.add(stream)

    def unfollow(self, stream: str) -> None:
        # Left before a look had its cursor: else every look would put it back
        # into ``changed`` (for a cursor that never comes) and walk it again.
        self.followed.discard(stream)

    async def wake(self) -> None:
        self.pending = True
        if self.event is not None:
            self.event.set()

    async def aclose(self) -> None:
        hubs = self.store._hubs
        if self in hubs:
            hubs.remove(self)


class MemoryStore(StreamStore):
    """Streams kept in this process's memory (lost when it exits).

    ``max_len`` events are kept per stream, and a stream is forgotten ``ttl``
    seconds after it ends. ``clock`` (seconds, monotonic) measures leases and
    ttl; ``poll_interval`` is how often an idle reader checks the producer's lease.

    Use it from one event loop (like everything async): it is not thread-safe.
    """

    #: A history read is a look-up here: it holds no connection (see ``StreamStore``).
    concurrent_reads = 256
    cursors_read_at_once = True  # _hub_ready and _ready, before and after the wait

    def __init__(
        self,
        *,
        max_len: int = 10_000,
        ttl: float = 3600.0,
        poll_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(max_len=max_len, ttl=ttl, poll_interval=poll_interval)
        self._clock = clock
        self._streams: dict[str, _Stream] = {}
        # Waiters per stream name, kept apart from the streams so that a reader
        # can wait for a topic nobody has published to yet.
        self._waiters: dict[str, set[anyio.Event]] = {}
        self._expiry: list[tuple[float, str]] = []  # heap of (expires_at, stream)
        # A list (a hub is added and removed once): the usual one is taken
        # out of it once per token, ``(hub,) = hubs``, ~6x quicker than of a set.
        self._hubs: list[_MemoryWaker] = []

    # -- helpers ----------------------------------------------------------

    def _get(self, stream: str) -> _Stream | None:
        self._purge()
        return self._streams.get(stream)

    def _purge(self) -> None:
        """Forget ended streams whose time to live is over (amortised O(1))."""
        heap = self._expiry
        if heap and heap[0][0] <= self._clock():
            now = self._clock()
            while heap and heap[0][0] <= now:
                _, name = heapq.heappop(heap)
                state = self._streams.get(name)
                if state is not None and state.expires_at is not None and state.expires_at <= now:
                    del self._streams[name]

    def _notify(self, stream: str, page: Page | None = None) -> None:
        """Wake the readers of ``stream``; ``page``: what was just appended, which
        a hub takes as it is (``Waker.deliver``) instead of reading it back."""
        waiters = self._waiters.pop(stream, None)
        if waiters:
            for waiter in waiters:
                waiter.set()
        for hub in self._hubs:
            deliver = hub.deliver
            if page is not None and deliver is not None and deliver(stream, page):
                continue
            hub.changed.add(stream)
            if hub.event is not None:
                hub.event.set()

    def _lease_ran_out(self, state: _Stream) -> bool:
        return state.lease_until is not None and state.lease_until <= self._clock()

    def _finish(self, stream: str, state: _Stream, outcome: str) -> None:
        state.outcome = outcome
        state.lease_until = None
        state.expires_at = self._clock() + self.ttl
        heapq.heappush(self._expiry, (state.expires_at, stream))
        # The end handed to the hubs as a page too (its number after the last
        # event's): a hub that is caught up takes it without its task waking.
        last = state.last_seq
        self._notify(stream, Page(last + 1, [], outcome, last, True, state.epoch))

    def _writable(self, stream: str) -> _Stream:
        state = self._get(stream)
        if state is None:
            state = self._streams[stream] = _Stream(self.max_len)
        elif state.outcome is None and self._lease_ran_out(state):
            self._finish(stream, state, FAILED)
        if state.outcome is not None:
            raise StreamEnded(f"stream {stream!r} has ended ({state.outcome})")
        return state

    def _page_of(self, state: _Stream, after: int, limit: int) -> Page:
        first = state.first_seq
        # From the event after ``after`` (the oldest retained one if it is gone),
        # at most up to the end (a reader after the end's id gets just the end).
        start = min(max(after + 1 - first, 0), state.length)
        events = state.events(start, min(start + limit, state.length))
        first += start
        outcome = state.outcome if first + len(events) > state.last_seq else None
        return Page(first, events, outcome, state.last_seq, True, state.epoch)

    # -- primitives -------------------------------------------------------

    async def append(self, stream: str, event: Event) -> str:
        return self.append_now(stream, event)

    def sync_append(self) -> Callable[[str, Event], str] | None:
        """This store's append that needs no waiting (``append_now``), for a
        producer that appends from a callback (the gateway's ``Runner``); None
        where a subclass changes ``append`` (then its own is called, awaited)."""
        if type(self).append is MemoryStore.append:
            return self.append_now
        return None

    def append_now(self, stream: str, event: Event) -> str:
        """``append`` without waiting (nothing here waits); it raises what
        ``append`` raises."""
        # ``StreamStore.append``'s checks, cheaper for what a producer appends
        # once per token: a stream held here had its name checked when it was
        # made, and ASCII text needs no Unicode check. One coroutine, not two.
        state = self._streams.get(stream)
        if not (
            type(event) is Event
            and event[2] is None
            and state is not None
            and event[0].isascii()
            and event[1].isascii()
        ):
            check_append(stream, event)
        if (
            state is None
            or state.outcome is not None
            or (state.lease_until is not None and state.lease_until <= self._clock())
        ):
            # New, ended or its lease ran out: what ``_writable`` decides. A
            # stream that is writable needs none of it, nor the purge of others
            # (that the next read, end or lease renewal does).
            state = self._writable(stream)
        seq = state.last_seq = state.last_seq + 1
        # format_id's (a test holds them equal), from the table while it lasts.
        event_id = state.id_head + _PADDED[seq] if seq < 4096 else _ID % (state.epoch, seq)
        # ``event.replace(id=...)`` without checking again what append() checked
        # and the id format_id() made (an Event is the tuple (data, event, id, retry)).
        stored: Event = _new(Event, (event[0], event[1], event_id, event[3]))
        # Kept (``_Stream``): its fields laid out flat, every CHUNK events of
        # them a flat tuple; the oldest dropped beyond ``max_len``. (Here, not
        # in a method: once per token.)
        recent = state.recent
        recent += stored  # its fields: untracked, no new tuple
        if len(recent) == _CHUNK_FIELDS:
            state.cold.append(tuple(recent))
            recent.clear()
        if state.length < state.max_len:
            state.length += 1
        elif state.cold:
            state.skip += 1
            if state.skip == CHUNK:
                state.cold.popleft()
                state.skip = 0
        else:
            del recent[:FIELDS]
        hubs = self._hubs
        if not hubs:
            if stream in self._waiters:
                self._notify(stream)
            return event_id
        if len(hubs) == 1 and stream not in self._waiters:
            # The usual (the process's one hub, no reader of the store's own):
            # ``_notify``'s work, inlined, once per token; the page made only
            # if the hub does not take the event as it is (``deliver_event``).
            (hub,) = hubs
            deliver_event = hub.deliver_event
            if deliver_event is not None and deliver_event(stream, seq, stored, state.epoch):
                return event_id
            page: Page = _new(Page, (seq, [stored], None, seq, True, state.epoch))
            deliver = hub.deliver
            if deliver is None or not deliver(stream, page):
                self._notify(stream)  # the hub must read it
            return event_id
        page = _new(Page, (seq, [stored], None, seq, True, state.epoch))
        self._notify(stream, page)
        return event_id

    async def _append(self, stream: str, event: Event) -> str:
        return self.append_now(stream, event)

    def appender(self, stream: str) -> Appender:
        if self.sync_append() is None:  # a subclass's own append: awaited
            return super().appender(stream)
        return _AppendNow(self, check_stream_name(stream))

    async def _create(self, stream: str) -> None:
        if self._get(stream) is None:
            self._streams[stream] = _Stream(self.max_len)

    async def _end(self, stream: str, outcome: str) -> None:
        state = self._get(stream)
        if state is None:
            raise StreamNotFound(f"no stream named {stream!r} (or it has expired)")
        if state.outcome is None and self._lease_ran_out(state):
            self._finish(stream, state, FAILED)
        if state.outcome is not None:
            raise StreamEnded(f"stream {stream!r} has already ended ({state.outcome})")
        self._finish(stream, state, outcome)

    async def _info(self, stream: str) -> StreamInfo:
        state = self._get(stream)
        if state is None:
            return StreamInfo(exists=False)
        return StreamInfo(
            exists=True,
            ended=state.outcome is not None,
            outcome=state.outcome,
            first_id=format_id(state.epoch, state.first_seq) if state.length else None,
            last_id=format_id(state.epoch, state.last_seq) if state.last_seq else None,
            length=state.length,
            epoch=state.epoch,
        )

    async def _page(self, stream: str, after: int, limit: int) -> Page:
        state = self._get(stream)
        if state is None:
            return Page(after + 1, [], None, 0, False)
        return self._page_of(state, after, limit)

    def _ready(self, cursors: Mapping[str, int]) -> dict[str, Page]:
        pages: dict[str, Page] = {}
        streams = self._streams
        for stream, cursor in cursors.items():
            state = streams.get(stream)
            if state is not None and (state.last_seq > cursor or state.outcome is not None):
                pages[stream] = self._page_of(state, cursor, self.batch)
        return pages

    def _hub_ready(self, cursors: Mapping[str, int], waker: _MemoryWaker) -> dict[str, Page]:
        """Pages of the streams changed since the hub's last look, or newly followed
        (``follow``): O(changes), whatever the number of streams followed."""
        look, waker.changed = waker.changed, set()
        pages: dict[str, Page] = {}
        streams = self._streams
        for stream in look:
            cursor = cursors.get(stream)
            state = streams.get(stream)
            if cursor is None:
                # Followed after the cursors of this wait were taken: looked at
                # in the next one (dropped, it would wait for its next change,
                # for ever if it has ended).
                if stream in waker.followed and state is not None:
                    waker.changed.add(stream)
                continue
            waker.followed.discard(stream)
            if state is None:
                continue
            if state.last_seq > cursor or state.outcome is not None:
                page = pages[stream] = self._page_of(state, cursor, self.batch)
                if page.first_seq + len(page.events) <= state.last_seq:
                    waker.changed.add(stream)  # a full page: more follows
        return pages

    async def _hub_wait(
        self, cursors: Mapping[str, int], max_wait: float, waker: _MemoryWaker
    ) -> dict[str, Page]:
        pages = self._hub_ready(cursors, waker)
        if pages or waker.pending:
            waker.pending = False
            return pages
        try:
            with anyio.move_on_after(max_wait):
                while True:
                    waker.event = event = anyio.Event()
                    await event.wait()
                    waker.pending = False
                    pages = self._hub_ready(cursors, waker)
                    if pages:
                        return pages
                    # Nothing to read (a newly followed stream, looked at now:
                    # the hub's wake): the cursors are the hub's own, as they
                    # change (``cursors_read_at_once``), so it has nothing to
                    # take again; the wait goes on, not a new one per follow.
        finally:
            waker.event = None
            waker.pending = False
        return self._hub_ready(cursors, waker)

    async def _wait(
        self, cursors: Mapping[str, int], max_wait: float, waker: Waker | None
    ) -> dict[str, Page]:
        assert waker is None or isinstance(waker, _MemoryWaker)
        self._purge()
        if waker is not None:
            return await self._hub_wait(cursors, max_wait, waker)
        pages = self._ready(cursors)
        if pages:
            return pages
        event = anyio.Event()
        for stream in cursors:
            self._waiters.setdefault(stream, set()).add(event)
        try:
            with anyio.move_on_after(max_wait):
                await event.wait()
        finally:
            for stream in cursors:
                waiters = self._waiters.get(stream)
                if waiters is not None:
                    waiters.discard(event)
                    if not waiters:
                        del self._waiters[stream]
        return self._ready(cursors)

    async def _lease(self, stream: str, ttl: float) -> None:
        self._writable(stream).lease_until = self._clock() + ttl

    async def _renew_leases(self, streams: Sequence[str], ttl: float) -> list[str]:
        ended = []
        until = self._clock() + ttl
        for stream in streams:
            try:
                self._writable(stream).lease_until = until
            except StreamEnded:
                ended.append(stream)
        return ended

    async def _expire_leases(self, streams: Sequence[str] | None) -> list[str]:
        names = list(self._streams) if streams is None else streams
        expired = []
        for stream in names:
            state = self._get(stream)
            if state is not None and state.outcome is None and self._lease_ran_out(state):
                self._finish(stream, state, FAILED)
                expired.append(stream)
        return expired

    def _waker(self) -> Waker:
        waker = _MemoryWaker(self)
        self._hubs.append(waker)
        return waker


class _AppendNow(Appender):
    """The memory store's appender: ``add()`` appends (or raises) at once.

    ``add`` is ``append_now`` with the stream given (a ``partial``: a C
    callable, no Python frame of its own per token)."""

    __slots__ = ("add",)
    _store: MemoryStore
    immediate = True

    def __init__(self, store: MemoryStore, stream: str) -> None:
        super().__init__(store, stream)
        # The slot stands for the method (its return value, the id, is not
        # ``add``'s: nobody looks at it).
        self.add = partial(store.append_now, stream)  # type: ignore[method-assign, assignment]

    async def settle(self, behind: int = 0) -> None:
        return None  # nothing is ever unwritten
