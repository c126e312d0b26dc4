"""The stream store contract, written down once, and the read loop every backend shares.

A *stream* (one LLM generation, or a topic such as ``prices/eurusd``) is an
append-only log of events. Any process that can reach the store can replay it
after a ``Last-Event-ID`` and then follow it live, so a token stream survives a
network blink and a topic works across replicas.

The contract (``check_stream_store()`` in ``ssegate.testing`` checks it):

``append(stream, event) -> id``
    Adds ``event`` (given without an ``id``: the store assigns it) and returns
    the id. The stream is created on first append. Appending to an ended stream
    raises ``StreamEnded``.

``read(stream, after=None, *, missing_ok=False)``
    Yields the retained events after ``after`` (each with its ``id`` set), then
    live events as they are appended, and finally one ``End(outcome, id)`` once
    the stream has ended. ``after=None`` (or ``""``) means from the beginning;
    ``after`` equal to the end's own id yields just the ``End``.
    If ``after`` is older than the retained history the first item is a
    ``Gap`` saying how many events are gone, never a silent skip; a reader that
    falls behind the retention cap while following gets a ``Gap`` too. An
    ``after`` that does not belong to the stream raises ``UnknownEventId``:
    malformed, beyond its last id (or its end), or issued by another stream or
    by an earlier stream of the same name (its epoch differs, see "Ids").
    A stream that does not exist raises ``StreamNotFound`` unless
    ``missing_ok`` (topics: wait for the first event); then any ``after`` is
    unknown. A reader that stalls past the end and the ``ttl`` while a new
    stream takes the name gets ``StreamNotFound``, never the newcomer's events.

``end(stream, outcome="done")``
    Marks the stream finished; readers drain what is left, get ``End`` and stop.
    After ``ttl`` seconds the whole stream is gone.

``info(stream) -> StreamInfo``
    Exists, ended (and the outcome), first and last id, retained length, epoch.

``create(stream)``
    Makes an empty stream exist (a generation that has not produced yet), so
    readers can start following it.

Producer leases: ``acquire_lease(stream, ttl)`` (which creates the stream) and
``renew_lease`` promise that the producer will renew again, or end the stream,
within ``ttl`` seconds. If the lease runs out (the producer's process died) the
stream ends with outcome ``"failed"``: readers anywhere get ``End("failed")``
instead of waiting forever, and the late producer's appends raise
``StreamEnded``. ``renew_leases(streams, ttl)`` renews many in one call (a
backend makes it one round trip; the default renews one by one) and returns
those that have ended. ``hold_lease()`` renews one in the background, every
lease of the process in one ``renew_leases`` per tick (``LeaseKeeper``).

Retention: at most ``max_len`` events per stream (older ones are trimmed), and
the stream is deleted ``ttl`` seconds after it ends.

**Ids.** An id is ``"<epoch>-<number>"``, e.g. ``"9f3c01ab-000000000042"``.

The *epoch* is ``EPOCH_WIDTH`` random hex digits fixed when the stream is
created, in the same atomic step (like Centrifugo's stream epoch; ``info()``
reports it): it tells this stream's ids from those
of any other stream, and from those of an earlier stream of the same name that
expired and was created again. Without it ``"000000000042"`` from another
stream, or from yesterday's generation of the same name, would resume at a
position that means something else; with it such an id raises
``UnknownEventId`` saying where it came from. (32 random bits: two streams
share an epoch once in four billion.)

The *number* counts the stream's events 1, 2, 3, ..., written as at least
``ID_WIDTH`` decimal digits, zero-padded. Both stores number the same way
(Redis in the same Lua script as the XADD, the memory store with a counter),
so within a stream ids increase and compare as plain strings in the order of
the log (the epoch is a common prefix), and the same appends give the same
numbers on every backend. Counters rather than clocks: no skew between
replicas, and a reader can tell exactly how many events a gap swallowed.
``ID_WIDTH`` digits last for 10**12 events per stream: a thousand a second for
thirty years. The end of a stream takes the number after its last event: an
``End`` carries that id, so a client told of the end (the ``error`` event of a
failed stream carries it) can resume after it and learn there is nothing more.

Backends implement four primitives (``_page``, ``_wait``, ``_info`` and the
mutations); the read loop below turns them into the contract, so the memory
and Redis stores cannot drift apart, and the ``Hub`` drives the same
primitives for many streams at once.
"""

from __future__ import annotations

import abc
import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, NamedTuple, Self, TypeAlias

from .._entropy import random_hex
from .._exceptions import StreamEnded, StreamNotFound, UnknownEventId
from ..protocol import Event

if TYPE_CHECKING:
    from ._lease import LeaseKeeper

__all__ = [
    "CANCELLED",
    "DONE",
    "EPOCH_WIDTH",
    "ERROR",
    "FAILED",
    "ID_WIDTH",
    "Appender",
    "End",
    "EventId",
    "Gap",
    "Page",
    "StreamInfo",
    "StreamItem",
    "StreamStore",
    "Waker",
    "check_after",
    "check_event",
    "check_outcome",
    "check_same_stream",
    "check_stream_name",
    "format_id",
    "new_epoch",
    "page_items",
    "parse_id",
]

#: Least digits of the number in an event id; see "Ids" above.
ID_WIDTH = 12
#: Hex digits of the epoch in an event id (32 random bits).
EPOCH_WIDTH = 8

#: Outcomes of a stream. Any short single-line word is allowed; these are the usual ones.
DONE = "done"
ERROR = "error"
CANCELLED = "cancelled"
FAILED = "failed"  # the producer's lease ran out

# Stream names end up in Redis keys and URLs: keep them to a safe alphabet
# (no braces, which are Redis Cluster hash tags; no spaces or control characters).
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:/@+=-]{0,199}\Z")
# At most 19 digits: every number a store issues (Redis's are 64-bit) and never
# a digit string too long for int() (4 300 digits raise).
_ID = re.compile(rf"([0-9a-f]{{{EPOCH_WIDTH}}})-([0-9]{{{ID_WIDTH},19}})\Z")
_EXAMPLE_ID = "9f3c01ab-" + "42".zfill(ID_WIDTH)
_OUTCOME = re.compile(r"[A-Za-z0-9_.:-]{1,64}\Z")


@dataclass(frozen=True, slots=True)
class Gap:
    """Events between ``after`` and ``first_id`` are no longer retained.

    ``missed`` is how many. Readers of the gateway turn this into a ``gap`` event
    (without an ``id``, so the client's Last-Event-ID is not moved by it).
    """

    after: str
    first_id: str
    missed: int


@dataclass(frozen=True, slots=True)
class End:
    """The stream has ended with ``outcome`` (``"done"``, ``"error"``, ``"failed"``, ...).

    ``id`` is the end's own place in the stream, the number after the last
    event: reading after it yields just this ``End`` again, and
    ``stream_response`` answers it with 204.
    """

    outcome: str
    id: str


#: What a read yields.
StreamItem: TypeAlias = Event | Gap | End


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """What a store knows about one stream; ``first_id`` is the oldest retained event."""

    exists: bool
    ended: bool = False
    outcome: str | None = None
    first_id: str | None = None
    last_id: str | None = None
    length: int = 0
    epoch: str | None = None


class Page(NamedTuple):
    """A run of consecutive events of one stream, as a backend returns it.

    ``events[i]`` has number ``first_seq + i``. ``outcome`` is set when the end of
    the stream follows the last of ``events`` (the end then has number
    ``first_seq + len(events)``). ``last_seq`` is the stream's last number and
    ``exists`` whether it exists (both only from ``_page``); ``epoch`` is the
    stream's ("" when it does not exist).
    """

    first_seq: int
    events: list[Event]
    outcome: str | None = None
    last_seq: int = 0
    exists: bool = True
    epoch: str = ""


class EventId(NamedTuple):
    """An id taken apart: the stream's epoch and the event's number."""

    epoch: str
    seq: int


def new_epoch() -> str:
    """A fresh epoch for a new stream: ``EPOCH_WIDTH`` random hex digits."""
    return random_hex(EPOCH_WIDTH // 2)  # os.urandom's bytes, see _entropy


def check_append(stream: str, event: Event) -> None:
    """What ``StreamStore.append`` checks before appending ``event`` to ``stream``."""
    check_stream_name(stream)
    check_event(event)


def format_id(epoch: str, seq: int) -> str:
    """The id of event number ``seq`` of the stream whose epoch is ``epoch``."""
    # zfill, not a nested format spec: the same text in 40 % of the time (per token)
    return f"{epoch}-{str(seq).zfill(ID_WIDTH)}"


def parse_id(event_id: str | None) -> EventId | None:
    """Take apart an id a store could have issued; ``None``/``""`` (the start) is ``None``.

    Only the form is checked here (``UnknownEventId`` if it cannot be an id of
    any stream); ``check_after`` checks that it belongs to a given stream.
    """
    if event_id is None or event_id == "":
        return None
    if not isinstance(event_id, str):
        raise TypeError(f"an event id must be str or None, not {type(event_id).__name__}")
    match = _ID.match(event_id)
    if match is None:
        # A client's garbage is quoted back, but no more than a line of it.
        shown = (
            repr(event_id)
            if len(event_id) <= 64
            else f"{event_id[:48]!r}... ({len(event_id)} characters)"
        )
        raise UnknownEventId(
            f"{shown} is not an id of this store (ids look like {_EXAMPLE_ID!r}: "
            f"{EPOCH_WIDTH} hex digits of epoch, '-', {ID_WIDTH} to 19 digits)"
        )
    return EventId(match[1], int(match[2]))


def check_after(
    stream: str, after: EventId | None, epoch: str | None, last_seq: int, ended: bool
) -> None:
    """``UnknownEventId`` unless ``after`` can be resumed after in the stream described.

    ``epoch`` is ``None`` when the stream does not exist (then no id belongs to
    it). An ended stream also accepts its end's id (``last_seq + 1``).
    """
    if after is None:
        return
    given = format_id(*after)
    if epoch is None:
        raise UnknownEventId(
            f"{given!r} does not belong to stream {stream!r}: there is no such stream "
            "(it may have expired)"
        )
    if after.epoch != epoch:
        raise UnknownEventId(
            f"{given!r} is from another stream, or from an earlier stream named {stream!r}: "
            f"this stream's ids start with {epoch + '-'!r}"
        )
    end = last_seq + 1 if ended else last_seq
    if after.seq > end:
        raise UnknownEventId(
            f"{given!r} is after the {'end' if ended else 'last event'} of {stream!r} "
            f"({format_id(epoch, end)!r}); it does not belong to this stream"
        )


def check_stream_name(stream: str) -> str:
    if not isinstance(stream, str):
        raise TypeError(f"a stream name must be str, not {type(stream).__name__}")
    if not _NAME.match(stream):
        raise ValueError(
            f"invalid stream name {stream!r}: use 1-200 of A-Z a-z 0-9 _ . : / @ + = -, "
            "starting with a letter, digit or underscore"
        )
    return stream


def check_event(event: Event) -> Event:
    """``event`` if a store can append it (an ``Event`` without an id, valid Unicode)."""
    if not isinstance(event, Event):
        raise TypeError(f"append() takes an Event, not {type(event).__name__}")
    if event.id is not None:
        raise ValueError(
            f"the store assigns ids; append the event without one (got id={event.id!r})"
        )
    for text in (event.data, event.event):
        if not text.isascii():
            try:
                text.encode()
            except UnicodeEncodeError:
                raise ValueError(
                    "event data and type must be valid Unicode (no lone surrogates): "
                    "they are sent as UTF-8"
                ) from None
    return event


def check_outcome(outcome: str) -> str:
    if not isinstance(outcome, str) or not _OUTCOME.match(outcome):
        raise ValueError(f"invalid outcome {outcome!r}: use a short word such as 'done'")
    return outcome


def page_items(page: Page, cursor: int) -> tuple[list[StreamItem], int]:
    """The items a reader at ``cursor`` gets from ``page``, and its new cursor.

    Events at or before the cursor are skipped (pages may overlap), and a hole
    between the cursor and the page becomes a ``Gap``.
    """
    items: list[StreamItem] = []
    events = page.events
    first = page.first_seq
    if events:
        skip = cursor + 1 - first
        if skip > 0:
            events = events[skip:]
            first += skip
        elif skip < 0:
            epoch = page.epoch
            items.append(Gap(format_id(epoch, cursor), format_id(epoch, first), first - cursor - 1))
        if events:
            items.extend(events)
            cursor = first + len(events) - 1
    if page.outcome is not None:
        items.append(End(page.outcome, format_id(page.epoch, page.first_seq + len(page.events))))
    return items, cursor


class Waker(abc.ABC):
    """Interrupts a backend's ``_wait`` from another task (the hub uses it).

    ``deliver``, set by the hub, takes a page a store has just written from
    this process (``deliver(stream, page)``): a store that calls it spares its
    hub reading back what it wrote. False means the hub is behind on that
    stream: the store's ``_wait`` must then read it (at once).

    ``deliver_event``, also set by the hub, is ``deliver`` of the usual page
    before it is made: ``deliver_event(stream, seq, event, epoch)`` for one
    event numbered ``seq`` (no end after it) of a stream of that epoch. True:
    taken, as ``deliver`` of its page would have (a store that calls it makes
    no page); False: nothing done, ``deliver`` the page instead.
    """

    deliver: Callable[[str, Page], bool] | None = None
    deliver_event: Callable[[str, int, Event, str], bool] | None = None

    @abc.abstractmethod
    async def wake(self) -> None: ...

    def follow(self, stream: str) -> None:  # noqa: B027 - optional hook
        """The hub follows ``stream`` from now on: a store that reads only what
        changed looks at it in the next wait (what it wrote before may have gone by)."""

    def unfollow(self, stream: str) -> None:  # noqa: B027 - optional hook
        """The hub no longer follows ``stream`` (its last reader left): a store
        that remembered it for the next wait (``follow``) forgets it."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release what the waker holds."""


class Appender:
    """A producer's appends to one stream, in order, without awaiting each.

    ``add()`` takes the next event; ``settle(behind)`` returns once at most
    ``behind`` of those added are still unwritten, raising the first append
    that failed (then the stream takes nothing more from this appender). A
    producer adds a read's events and settles with some slack, so a store that
    writes in batches (Redis) is not waited for token by token; ``settle(0)``
    before the stream ends. This one, every store's unless it has its own,
    appends at ``settle()``, one ``append()`` after another.
    """

    __slots__ = ("_events", "_store", "_stream")

    #: Whether ``add()`` appends (or queues the append) by itself, needing no
    #: ``settle()`` to go: then it may be called from a callback, where nothing
    #: can be awaited (the gateway's producer appends from the upstream
    #: connection's). This one's appends wait for ``settle()``.
    immediate: ClassVar[bool] = False

    def __init__(self, store: StreamStore, stream: str) -> None:
        self._store = store
        self._stream = stream
        self._events: list[Event] = []

    def add(self, event: Event) -> None:
        """Append ``event`` after those added before (checked as ``append()`` checks)."""
        self._events.append(check_event(event))

    async def settle(self, behind: int = 0) -> None:
        """Wait until at most ``behind`` added events are unwritten."""
        events, self._events = self._events, []
        append, stream = self._store.append, self._stream
        for event in events:
            await append(stream, event)


class StreamStore(abc.ABC):
    """The base of every store: the public contract on top of backend primitives."""

    #: Events fetched per round trip when replaying history.
    batch: ClassVar[int] = 512
    #: History reads a ``Hub`` runs at once for joining subscribers, by default: as
    #: many as may each hold a connection of the store's while a burst of joins
    #: (a deploy, a reconnect storm) waits for them. A store whose reads cost no
    #: connection each (in memory, or sent together) allows more.
    concurrent_reads: int = 4

    #: Whether ``_wait`` with a waker (a hub's) reads its cursors only where
    #: it does not wait (never across an ``await``): then the hub hands it its
    #: own, as they change, instead of a copy of every followed stream's per wait.
    cursors_read_at_once: ClassVar[bool] = False

    def __init__(self, *, max_len: int, ttl: float, poll_interval: float) -> None:
        if type(max_len) is not int or max_len < 1:
            raise ValueError(f"max_len must be a positive int, not {max_len!r}")
        if ttl <= 0:
            raise ValueError(f"ttl must be positive (seconds), not {ttl!r}")
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be positive (seconds), not {poll_interval!r}")
        self.max_len = max_len
        self.ttl = float(ttl)
        self.poll_interval = float(poll_interval)
        #: The keepers ``hold_lease()`` shares, per (ttl, interval) (see ``_lease``).
        self._lease_keepers: dict[tuple[float, float], LeaseKeeper] = {}

    # -- the contract -----------------------------------------------------

    async def append(self, stream: str, event: Event) -> str:
        """Append ``event`` to ``stream`` (created if new) and return its id."""
        check_append(stream, event)
        return await self._append(stream, event)

    def appender(self, stream: str) -> Appender:
        """Appends to ``stream`` not awaited one by one (see ``Appender``): what
        a producer uses, token after token, where the ids are not needed."""
        return Appender(self, check_stream_name(stream))

    async def create(self, stream: str) -> None:
        """Make ``stream`` exist with no events yet (nothing happens if it exists)."""
        await self._create(check_stream_name(stream))

    async def end(self, stream: str, outcome: str = DONE) -> None:
        """End ``stream``; ``StreamEnded`` if it has already, ``StreamNotFound`` if unknown."""
        await self._end(check_stream_name(stream), check_outcome(outcome))

    async def info(self, stream: str) -> StreamInfo:
        """What is known about ``stream`` (``exists=False`` if nothing)."""
        return await self._info(check_stream_name(stream))

    def read(
        self, stream: str, after: str | None = None, *, missing_ok: bool = False
    ) -> AsyncIterator[StreamItem]:
        """Replay ``stream`` after ``after``, then follow it live until it ends.

        The arguments are checked at once (``ValueError``, ``UnknownEventId`` for a
        malformed id); whether the stream exists is found out on the first
        iteration. Close the iterator (``contextlib.aclosing``) when you stop early.
        """
        check_stream_name(stream)
        return self._read(stream, parse_id(after), missing_ok)

    async def acquire_lease(self, stream: str, ttl: float) -> None:
        """Promise to append to or end ``stream`` within ``ttl`` seconds (creates it)."""
        await self._lease(check_stream_name(stream), _check_ttl(ttl))

    async def renew_lease(self, stream: str, ttl: float) -> None:
        """Extend the lease; ``StreamEnded`` if the stream ended (or its lease ran out)."""
        await self._lease(check_stream_name(stream), _check_ttl(ttl))

    async def renew_leases(self, streams: Sequence[str], ttl: float) -> list[str]:
        """Renew the leases of ``streams`` together, each as ``renew_lease`` would;
        the streams that have ended (their lease not renewed) are returned.

        ``StoreUnavailable`` if the store cannot be reached: some may have been
        renewed, renew them all again.
        """
        for stream in streams:
            check_stream_name(stream)
        return await self._renew_leases(streams, _check_ttl(ttl))

    async def expire_leases(self, streams: Sequence[str] | None = None) -> list[str]:
        """End (as ``"failed"``) those of ``streams`` (default: all) whose lease ran out."""
        if streams is not None:
            for stream in streams:
                check_stream_name(stream)
        return await self._expire_leases(streams)

    async def aclose(self) -> None:  # noqa: B027 - stores without resources keep this
        """Release the store's resources (connections)."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- the shared read loop ---------------------------------------------

    async def _read(
        self, stream: str, after: EventId | None, missing_ok: bool
    ) -> AsyncIterator[StreamItem]:
        cursor = 0 if after is None else after.seq
        page = await self._page(stream, cursor, self.batch)
        if not page.exists and not missing_ok:
            raise StreamNotFound(f"no stream named {stream!r} (or it has expired)")
        check_after(
            stream,
            after,
            page.epoch if page.exists else None,
            page.last_seq,
            page.outcome is not None,
        )
        epoch = page.epoch
        while True:
            items, cursor = page_items(page, cursor)
            for item in items:
                yield item
                if type(item) is End:
                    return
            waits = {stream: cursor}
            while True:
                pages = await self._wait(waits, self.poll_interval, None)
                if pages:
                    page = pages[stream]
                    break
                # Quiet for a while: is anyone still producing?
                await self._expire_leases([stream])
            check_same_stream(stream, epoch, page)
            epoch = page.epoch

    # -- backend primitives -----------------------------------------------

    @abc.abstractmethod
    async def _append(self, stream: str, event: Event) -> str:
        """Append, return the event's id; ``StreamEnded`` when ended or lease ran out."""

    @abc.abstractmethod
    async def _create(self, stream: str) -> None: ...

    @abc.abstractmethod
    async def _end(self, stream: str, outcome: str) -> None: ...

    @abc.abstractmethod
    async def _info(self, stream: str) -> StreamInfo: ...

    @abc.abstractmethod
    async def _page(self, stream: str, after: int, limit: int) -> Page:
        """Up to ``limit`` retained events after number ``after``, with ``exists``/``last_seq``."""

    @abc.abstractmethod
    async def _wait(
        self, cursors: Mapping[str, int], max_wait: float, waker: Waker | None
    ) -> dict[str, Page]:
        """Pages for the streams with something after their cursor (events or the end).

        Returns at once if there is something, else waits up to ``max_wait``
        seconds (or until ``waker`` is woken) and returns what arrived (maybe ``{}``).
        """

    @abc.abstractmethod
    async def _lease(self, stream: str, ttl: float) -> None: ...

    async def _renew_leases(self, streams: Sequence[str], ttl: float) -> list[str]:
        """``renew_leases`` without the checks: backends make it one round trip;
        this default, for stores that do not, renews one lease at a time."""
        ended = []
        for stream in streams:
            try:
                await self._lease(stream, ttl)
            except StreamEnded:
                ended.append(stream)
        return ended

    @abc.abstractmethod
    async def _expire_leases(self, streams: Sequence[str] | None) -> list[str]: ...

    @abc.abstractmethod
    def _waker(self) -> Waker: ...


def check_same_stream(stream: str, epoch: str, page: Page) -> None:
    """``StreamNotFound`` if the stream a reader follows was replaced by a new one.

    Only possible for a reader that stalled longer than the ttl after the end:
    the stream expired and a new one took its name (and a new epoch).
    """
    if epoch and page.epoch != epoch:
        raise StreamNotFound(
            f"stream {stream!r} expired while being read and a new stream took its name"
        )


def _check_ttl(ttl: float) -> float:
    if not isinstance(ttl, int | float) or not ttl > 0:
        raise ValueError(f"a lease ttl must be a positive number of seconds, not {ttl!r}")
    return float(ttl)
