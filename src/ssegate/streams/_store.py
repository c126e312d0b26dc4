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
    live events as they are appended, and finally one ``End(outcome)`` once the
    stream has ended. ``after=None`` (or ``""``) means from the beginning.
    If ``after`` is older than the retained history the first item is a
    ``Gap`` saying how many events are gone, never a silent skip; a reader that
    falls behind the retention cap while following gets a ``Gap`` too. An
    ``after`` that cannot belong to the stream (malformed, or beyond its last
    id) raises ``UnknownEventId``; a stream that does not exist raises
    ``StreamNotFound`` unless ``missing_ok`` (topics: wait for the first event).

``end(stream, outcome="done")``
    Marks the stream finished; readers drain what is left, get ``End`` and stop.
    After ``ttl`` seconds the whole stream is gone.

``info(stream) -> StreamInfo``
    Exists, ended (and the outcome), first and last id, retained length.

``create(stream)``
    Makes an empty stream exist (a generation that has not produced yet), so
    readers can start following it.

Producer leases: ``acquire_lease(stream, ttl)`` (which creates the stream) and
``renew_lease`` promise that the producer will renew again, or end the stream,
within ``ttl`` seconds. If the lease runs out (the producer's process died) the
stream ends with outcome ``"failed"``: readers anywhere get ``End("failed")``
instead of waiting forever, and the late producer's appends raise
``StreamEnded``. ``hold_lease()`` renews one in the background.

Retention: at most ``max_len`` events per stream (older ones are trimmed), and
the stream is deleted ``ttl`` seconds after it ends.

**Ids.** Each stream numbers its events 1, 2, 3, ... and writes the number as
at least ``ID_WIDTH`` decimal digits, zero-padded (``"000000000042"``). Both
stores use the same numbering (Redis assigns it atomically with XADD's
``0-*`` ids, the memory store with a counter), so ids increase, compare as
plain strings in the order of the log, and the same appends give the same ids
on every backend. Counters rather than clocks: no skew between replicas, and a
reader can tell exactly how many events a gap swallowed. ``ID_WIDTH`` digits
last for 10**12 events per stream: a thousand a second for thirty years.

Backends implement four primitives (``_page``, ``_wait``, ``_info`` and the
mutations); the read loop below turns them into the contract, so the memory
and Redis stores cannot drift apart, and the ``Hub`` drives the same
primitives for many streams at once.
"""

from __future__ import annotations

import abc
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, NamedTuple, Self, TypeAlias

from .._exceptions import StreamNotFound, UnknownEventId
from ..protocol import Event

__all__ = [
    "CANCELLED",
    "DONE",
    "ERROR",
    "FAILED",
    "ID_WIDTH",
    "End",
    "Gap",
    "Page",
    "StreamInfo",
    "StreamItem",
    "StreamStore",
    "Waker",
    "check_outcome",
    "check_stream_name",
    "format_id",
    "page_items",
    "parse_id",
]

#: Digits in an event id; see "Ids" above.
ID_WIDTH = 12

#: Outcomes of a stream. Any short single-line word is allowed; these are the usual ones.
DONE = "done"
ERROR = "error"
CANCELLED = "cancelled"
FAILED = "failed"  # the producer's lease ran out

# Stream names end up in Redis keys and URLs: keep them to a safe alphabet
# (no braces, which are Redis Cluster hash tags; no spaces or control characters).
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:/@+=-]{0,199}\Z")
_ID = re.compile(rf"[0-9]{{{ID_WIDTH},}}\Z")
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
    """The stream has ended with ``outcome`` (``"done"``, ``"error"``, ``"failed"``, ...)."""

    outcome: str


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


class Page(NamedTuple):
    """A run of consecutive events of one stream, as a backend returns it.

    ``events[i]`` has number ``first_seq + i``. ``outcome`` is set when the end of
    the stream follows the last of ``events``. ``last_seq`` is the stream's last
    number and ``exists`` whether it exists (both only from ``_page``).
    """

    first_seq: int
    events: list[Event]
    outcome: str | None = None
    last_seq: int = 0
    exists: bool = True


def format_id(seq: int) -> str:
    """The event id of event number ``seq``."""
    return str(seq).zfill(ID_WIDTH)


def parse_id(event_id: str | None) -> int:
    """The number of an id this store could have issued; ``None``/``""`` is 0 (the start)."""
    if event_id is None or event_id == "":
        return 0
    if not isinstance(event_id, str):
        raise TypeError(f"an event id must be str or None, not {type(event_id).__name__}")
    if not _ID.match(event_id):
        raise UnknownEventId(
            f"{event_id!r} is not an id of this store (ids are {ID_WIDTH} or more digits)"
        )
    return int(event_id)


def check_stream_name(stream: str) -> str:
    if not isinstance(stream, str):
        raise TypeError(f"a stream name must be str, not {type(stream).__name__}")
    if not _NAME.match(stream):
        raise ValueError(
            f"invalid stream name {stream!r}: use 1-200 of A-Z a-z 0-9 _ . : / @ + = -, "
            "starting with a letter, digit or underscore"
        )
    return stream


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
            items.append(Gap(format_id(cursor), format_id(first), first - cursor - 1))
        if events:
            items.extend(events)
            cursor = first + len(events) - 1
    if page.outcome is not None:
        items.append(End(page.outcome))
    return items, cursor


class Waker(abc.ABC):
    """Interrupts a backend's ``_wait`` from another task (the hub uses it)."""

    @abc.abstractmethod
    async def wake(self) -> None: ...

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release what the waker holds."""


class StreamStore(abc.ABC):
    """The base of every store: the public contract on top of backend primitives."""

    #: Events fetched per round trip when replaying history.
    batch: ClassVar[int] = 512

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

    # -- the contract -----------------------------------------------------

    async def append(self, stream: str, event: Event) -> str:
        """Append ``event`` to ``stream`` (created if new) and return its id."""
        check_stream_name(stream)
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
        return format_id(await self._append(stream, event))

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

    async def _read(self, stream: str, cursor: int, missing_ok: bool) -> AsyncIterator[StreamItem]:
        page = await self._page(stream, cursor, self.batch)
        if not page.exists and not missing_ok:
            raise StreamNotFound(f"no stream named {stream!r} (or it has expired)")
        if cursor > page.last_seq:
            raise UnknownEventId(
                f"{format_id(cursor)!r} is after the last event of {stream!r} "
                f"({format_id(page.last_seq)!r}); it does not belong to this stream"
            )
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

    # -- backend primitives -----------------------------------------------

    @abc.abstractmethod
    async def _append(self, stream: str, event: Event) -> int:
        """Append, return the event's number; ``StreamEnded`` when ended or lease ran out."""

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

    @abc.abstractmethod
    async def _expire_leases(self, streams: Sequence[str] | None) -> list[str]: ...

    @abc.abstractmethod
    def _waker(self) -> Waker: ...


def _check_ttl(ttl: float) -> float:
    if not isinstance(ttl, int | float) or not ttl > 0:
        raise ValueError(f"a lease ttl must be a positive number of seconds, not {ttl!r}")
    return float(ttl)
