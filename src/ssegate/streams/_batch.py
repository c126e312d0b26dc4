"""Group commit for appends, sans I/O: what the next write carries, and when it goes.

A store that pays one round trip per append (``RedisStore``: one Lua call per
event) tops out far below what a thousand token streams produce. Databases
solved this long ago with *group commit*: appends wait in a queue, and each
write carries everything queued so far, whatever stream it belongs to. While
one write is in flight the next batch gathers, so under load batches grow by
themselves and the cost per event falls; when idle, an append goes out at once.

``GroupCommit`` holds that queue and makes the decisions, with no I/O and no
clock of its own (``now`` is passed in, so tests drive time by hand):

- ``add()`` queues an append with an opaque ``waiter`` (the store's future),
  ``discard()`` takes it back (its appender was cancelled before it was sent:
  it is then not written at all).
- ``due(now)`` says when the next write should go: ``None`` when nothing is
  queued, else the seconds left of the ``window`` counted from the oldest
  queued append, or of the ``interval`` counted from the last write taken,
  whichever ends later (``0``: now). A full batch, or ``drain()`` (the store
  is closing), makes it due at once.
- ``take(now)`` removes up to ``max_events`` (and about ``max_bytes``) appends in
  queue order and groups them by stream into a ``Batch``: one run per stream,
  in the order its appends were queued, so a stream's events keep the order of
  its ``append()`` calls and take consecutive numbers.
- ``Batch.outcomes(reply)`` turns the write's reply (per stream: the first
  number and the epoch, or how many were written, the epoch and an error)
  into each waiter's own id or error, so a failure reaches exactly the
  appends it concerns.

The wire form of an append is one string, made once by its appender
(``encode_append``): data, event type (``""`` for ``"message"``) and retry
(``""`` for none), each after its length as a 4-byte big-endian number. A write
carries the whole batch as one string too (``Batch.blob()``): the client's cost
per argument of a call (packing, type checks) is then paid once per write, not
once per field, stream and key. The item queued beside it (the event) is handed
back with the outcome, for the store to give its readers without decoding.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Hashable, Sequence
from itertools import islice
from typing import Any, Generic, TypeAlias, TypeVar

from ._store import EPOCH_WIDTH, ID_WIDTH

__all__ = ["Batch", "GroupCommit", "StreamRun", "encode_append"]

W = TypeVar("W", bound=Hashable)

_length = struct.Struct(">I").pack
_stream_head = struct.Struct(">II").pack
#: An event's number in its id (format_id(), inlined: this is once per token).
_SEQ = f"%0{ID_WIDTH}d"
#: The ids of a run before its reply (shared: never appended to).
_NO_IDS: list[str] = []
#: No epoch part (``Batch.outcomes`` has seen none yet).
_NO_PART = object()
#: The lengths of an empty event type and an empty retry (the common case).
_NO_TYPE_NO_RETRY = bytes(8)


def encode_append(data: bytes, event: bytes = b"", retry: bytes = b"") -> bytes:
    """One append on the wire: data, event type, retry, each after its length."""
    if not event and not retry:
        return _length(len(data)) + data + _NO_TYPE_NO_RETRY
    return b"".join(
        (_length(len(data)), data, _length(len(event)), event, _length(len(retry)), retry)
    )


#: A queued append: its waiter, stream, wire form and item (one tuple from
#: ``add()`` to the reply: the collector counts objects that live across its
#: runs, and a write is in flight for a round trip).
Entry: TypeAlias = tuple[W, str, bytes, Any]


class StreamRun(Generic[W]):
    """The appends of one stream in a batch (``entries``), in queue order; once
    the reply is in, the ids of those written (``ids``)."""

    __slots__ = ("entries", "ids", "stream")

    def __init__(self, stream: str, entries: list[Entry[W]]) -> None:
        self.stream = stream
        self.entries = entries
        self.ids: list[str] = _NO_IDS

    @property
    def waiters(self) -> list[W]:
        return [entry[0] for entry in self.entries]

    @property
    def wires(self) -> list[bytes]:
        return [entry[2] for entry in self.entries]

    @property
    def items(self) -> list[Any]:
        return [entry[3] for entry in self.entries]


class Batch(Generic[W]):
    """The appends one write carries, grouped by stream (streams in order of first append)."""

    __slots__ = ("events", "failed", "runs")

    def __init__(self, runs: list[StreamRun[W]], events: int) -> None:
        self.runs = runs
        self.events = events
        #: How many waiters ``outcomes()`` gave an exception.
        self.failed = 0

    @property
    def streams(self) -> list[str]:
        return [run.stream for run in self.runs]

    def waiters(self) -> list[W]:
        return [entry[0] for run in self.runs for entry in run.entries]

    def blob(self) -> bytes:
        """The whole batch as one string: per stream, its name after its length,
        the number of its appends and their size in bytes (4-byte big-endian
        numbers), then its appends (``encode_append``)."""
        parts: list[bytes] = []
        for run in self.runs:
            name = run.stream.encode()
            entries = run.entries
            wires = entries[0][2] if len(entries) == 1 else b"".join(run.wires)
            parts += (_length(len(name)), name, _stream_head(len(entries), len(wires)), wires)
        return b"".join(parts)

    def outcomes(
        self,
        reply: Sequence[object],
        error: Callable[[str, str], BaseException],
    ) -> list[str | BaseException]:
        """Each waiter's id or exception, in the order of ``waiters()``, from a
        reply of two values per stream.

        Per stream the reply holds the number of its first appended event,
        then, if all its appends were written, its epoch as the entry ids
        carry it (decimal); else a list of how many were written, the epoch
        (``None`` if none was) and an error message for the appends not
        written. ``error(stream, message)`` makes the exception. (Two values
        for the usual stream, not four: each costs Redis a conversion and the
        client a parse. No pair per waiter: a write's outcomes are made at
        once, and the collector runs when enough objects are made and alive.)
        """
        runs = self.runs
        if len(reply) != 2 * len(runs):
            raise ValueError(f"a batch of {len(runs)} streams got a reply of {len(reply)} values")
        out: list[str | BaseException] = []
        failed = 0
        # The epoch part seen last, and its prefix (a batch's streams mostly share one).
        part: object = _NO_PART
        prefix = ""
        # Once per token: the common run (one append, written) takes the short way.
        for run, first, state in zip(runs, reply[0::2], reply[1::2], strict=True):
            if type(first) is not int:
                raise ValueError(f"not a number: {first!r}")
            entries = run.entries
            if len(entries) == 1 and type(state) is not list:
                if state != part:
                    prefix = _epoch_prefix(state)
                    part = state
                run.ids = [event_id := prefix + _SEQ % first]
                out.append(event_id)
                continue
            if type(state) is list:  # not all written
                written, epoch_part, message = state
                if type(written) is not int:
                    raise ValueError(f"not a number: {written!r}")
            else:
                written, epoch_part, message = len(entries), state, ""
            if written:
                head = _epoch_prefix(epoch_part)
                if written == 1:
                    run.ids = ids = [head + _SEQ % first]
                else:
                    # format_id(), inlined
                    run.ids = ids = [head + _SEQ % seq for seq in range(first, first + written)]
                out += ids[: len(entries)]  # the written ones
            if written < len(entries):
                text = message.decode() if isinstance(message, bytes) else str(message)
                out += [error(run.stream, text) for _ in entries[written:]]
                failed += len(entries) - written
        self.failed = failed
        return out


class GroupCommit(Generic[W]):
    """The queue of appends waiting for a write, and when and what to write (see module doc)."""

    def __init__(
        self,
        *,
        window: float = 0.0,
        max_events: int = 512,
        max_bytes: int = 1 << 20,
        interval: float = 0.0,
    ):
        if not window >= 0:
            raise ValueError(f"the append window must be >= 0 seconds, not {window!r}")
        if not interval >= 0:
            raise ValueError(f"the interval must be >= 0 seconds, not {interval!r}")
        if type(max_events) is not int or max_events < 1:
            raise ValueError(f"max_events must be a positive int, not {max_events!r}")
        if type(max_bytes) is not int or max_bytes < 1:
            raise ValueError(f"max_bytes must be a positive int, not {max_bytes!r}")
        self.window = float(window)
        self.interval = float(interval)
        # When the last write was taken (``take(now)``): the next is due ``interval`` after.
        self._taken_at = float("-inf")
        self.max_events = max_events
        self.max_bytes = max_bytes
        # Insertion-ordered: the queue, with O(1) discard of a cancelled append.
        self._queue: dict[W, Entry[W]] = {}
        self._bytes = 0
        self._since: float | None = None
        self._draining = False

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, waiter: W, stream: str, wire: bytes, now: float, item: Any = None) -> None:
        """Queue an append (``wire``: ``encode_append()``); ``item`` rides along."""
        if waiter in self._queue:
            raise ValueError("this waiter is already queued")
        self._queue[waiter] = (waiter, stream, wire, item)
        self._bytes += len(wire)
        if self._since is None:
            self._since = now

    def discard(self, waiter: W) -> bool:
        """Take back a queued append (``False`` if it has been taken for a write already)."""
        found = self._queue.pop(waiter, None)
        if found is None:
            return False
        self._bytes -= len(found[2])
        if not self._queue:
            self._since = None
        return True

    def drain(self) -> None:
        """From now on every queued append is due at once (the store is closing)."""
        self._draining = True

    def due(self, now: float) -> float | None:
        """Seconds until the next write should go (0: now), ``None`` when nothing is queued."""
        if self._since is None:
            return None
        if self._draining or len(self._queue) >= self.max_events or self._bytes >= self.max_bytes:
            return 0.0
        return max(0.0, self._since + self.window - now, self._taken_at + self.interval - now)

    def take(self, now: float | None = None) -> Batch[W]:
        """The next write's appends, removed from the queue (at least one if any is
        queued); ``now``, if given, starts the ``interval`` before the next."""
        if now is not None:
            self._taken_at = now
        runs: dict[str, StreamRun[W]] = {}
        get = runs.get
        queue = self._queue
        # All of it, the common case: then no limit is checked per append.
        whole = len(queue) <= self.max_events and self._bytes < self.max_bytes
        taken = size = 0
        for entry in queue.values():
            if not whole and taken and (taken >= self.max_events or size >= self.max_bytes):
                break
            stream = entry[1]
            run = get(stream)
            if run is None:
                runs[stream] = StreamRun(stream, [entry])
            else:
                run.entries.append(entry)
            taken += 1
            size += len(entry[2])
        if whole:
            self._queue = {}
        else:
            for waiter in list(islice(queue, taken)):
                del queue[waiter]
        # What is left has waited as long as what was taken: it is due at
        # once, with the next write (no new window).
        self._since = float("-inf") if self._queue else None
        self._bytes -= size
        return Batch(list(runs.values()), taken)


#: Epochs seen in replies (a few per process: one per batch that created streams).
_prefixes: dict[bytes | str, str] = {}


def _epoch_prefix(part: object) -> str:
    """``"<epoch>-"`` of an epoch as the reply carries it (the decimal entry-id part)."""
    if not isinstance(part, bytes | str):
        raise ValueError(f"not an epoch: {part!r}")
    prefix = _prefixes.get(part)
    if prefix is None:
        if not part.isdigit():
            raise ValueError(f"not an epoch: {part!r}")
        if len(_prefixes) >= 4096:
            _prefixes.clear()
        prefix = _prefixes[part] = f"{int(part):0{EPOCH_WIDTH}x}-"
    return prefix
