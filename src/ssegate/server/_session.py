"""One event stream on one connection: the decisions, whatever the event loop.

Per stream there is the request's own task, the *pump*, and one *watcher*:

* the pump pulls items from the producer, encodes and sends them. Items that are
  ready together (the producer did not wait between them) leave in one
  ``http.response.body`` message of up to ``MAX_BATCH_SIZE``; an item that came
  after a wait is sent at once. Nothing is held back for a later item: when the
  producer starts to wait, what was collected is sent *aside*: on asyncio by
  the pump itself when the send needs no waiting, else by a short-lived task
  that finishes it; on trio by the stream's one sender task;
* the watcher only waits on ``receive()`` for ``http.disconnect``: a task of its
  own, except on asyncio under uvicorn, whose ``receive`` awaits a plain
  ``asyncio.Event``: there the watcher waits on that event with no task and no
  coroutine at all (``_watch``).

How the pump knows an item is ready: Python offers no ``ready()`` on an async
iterator, but a coroutine answers the question when it is stepped once: it
either finishes at once (``StopIteration`` carries the item) or yields what it
waits for to the event loop. In the second case the pump passes that yield up
to the task, and every value, exception and cancellation back down, exactly as
``await`` would. While it holds such a half-run step it must not await anything
else in the same task (trio and anyio tie waiters and cancel scopes to the
task), which is why the collected batch is sent by the aside task.

Keep-alive and shutdown grace are timers (callbacks, no task; on asyncio the
keep-alives of all streams share one loop timer, ``_keepalive``), and a
keep-alive comment is handed over like a batch. There is no lock: the pump
waits for a running aside send before it sends, and pings are skipped while the
pump is sending (bytes are on their way anyway).

The push path: a producer read through a hub (``streams.stream_response``)
may hand the session a live item from another task, the one that produced it
(``take``, bound to the producer's ``Pusher`` while the stream runs, on
asyncio). Taken only while the pump waits for the producer with nothing
collected and no send of its own on its way (else the producer yields it
as usual): then the item is rendered there, and sent by ``flush``, which one
loop callback calls for every stream that took items since the last (on
asyncio, ``_loops.Flusher``); the request task is not woken at all (per token,
one task step, one future and the resumption of three frames less). Items taken
together (several tokens of one upstream read) leave in one message, and the
writes of a loop turn go together, as they did from the woken tasks (sent
from the appender at once, one write per token and interleaved with the
upstream's reads, relayed tokens cost 10-15 % more CPU). A flush that must
wait is finished aside, as ``send_now``'s; a pump that wakes first (the end,
a cancellation) sends what was taken before anything else: with what the
producer gives it then, or with the response's end, in one write (the flush
leaves a stream whose pump it sees waking to the pump). The last events of a
stream (a hint of the producer's, ``Taker.linger``) wait a loop turn for the
end, which usually comes in that turn, to leave with it: a write less per
stream (the end of the body was a write of its own, ~1.5 % of a relayed
start's CPU).

Under uvicorn (httptools), once the response has started, the body's parts
are written straight to its transport where its ``send`` would write them at
once (``write``, ``_direct``: per part, no message, no coroutine); a part
that would wait (a client reading slowly) goes by ``send`` as before, and so
do the first and last messages and the keep-alives. And on asyncio the head
``send`` writes is held for the first part, to go out in one write with it
(``_direct.hold_head``; alone in the same loop turn if nothing comes).

Whatever ends the stream (the producer finishing or failing, the client leaving,
a client that stopped reading for ``send_timeout`` seconds, a server shutdown),
the producer is closed (``aclose``, so its ``finally`` runs) and ``on_close`` is
told why. The event-loop specific parts (tasks, timers, cancelling the pump)
live in two subclasses: native asyncio, which is what uvicorn runs and is
several times cheaper per stream than anyio's task groups, and anyio for trio.
"""

from __future__ import annotations

import inspect
import logging
import types
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Generator, MutableMapping
from types import AsyncGeneratorType
from typing import Any, Protocol, cast

from ssegate.protocol import encode_retry

from ._direct import HeldHead, body_writer, write_body
from ._items import encode_item
from ._options import MAX_BATCH_SIZE, PING, SHUTDOWN_SEND_S, CloseReason, StreamOptions
from ._shutdown import Shutdown

__all__ = ["After", "Cut", "Ends", "Pusher", "Receive", "Send", "Session", "Taker"]

logger = logging.getLogger("ssegate.server")

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class Cancellable(Protocol):
    def cancel(self) -> Any: ...


class Signal(Protocol):
    def set(self) -> Any: ...

    def wait(self) -> Awaitable[Any]: ...


class Taker(Protocol):
    """What takes a producer's live item on the push path: the session
    (``Session.take``). ``linger``: set by the producer once it took an item
    after which its stream usually ends at once (a hint only): where the
    session's flushes are gathered (asyncio), that one waits a loop turn for
    the end, so that the item and the response's end leave in one write."""

    linger: bool

    def take(self, render: Callable[[Any], object], item: Any) -> bool: ...


class Pusher(Protocol):
    """A producer's push path: while the stream runs (on asyncio) its ``session``
    is the stream's (for ``take``; the session itself, not a bound method: one
    object less per stream), else ``None``."""

    session: Taker | None


class After(Protocol):
    """Told how the stream ended, once it has (the response, for its
    ``close_reason`` and background task: called by the session itself, so a
    stream has no frame of the response's own while it runs)."""

    async def finished(self, reason: CloseReason) -> None: ...


class Ends(Protocol):
    """A session whose pump is its whole life (``pump(begin)``) ends it here."""

    def end(self, tail: bytes, error: BaseException | None) -> Coroutine[Any, Any, CloseReason]: ...


class Cut(Exception):
    """Raised inside the pump when the stream must stop for a reason of ours."""

    def __init__(self, reason: CloseReason) -> None:
        super().__init__(reason.value)
        self.reason = reason


def _more(data: bytes) -> Message:
    """The body message that sends ``data``, more to come."""
    return {"type": "http.response.body", "body": data, "more_body": True}


@types.coroutine
def _carry_on(step: Any, yielded: Any) -> Generator[Any, Any, Any]:
    """Finish a half-run awaitable in the current task: pass what it yields up
    and what comes back down, as ``await`` would."""
    try:
        while True:
            try:
                sent = yield yielded
            except GeneratorExit:
                step.close()
                raise
            except BaseException as exc:
                yielded = step.throw(exc)
            else:
                yielded = step.send(sent)
    except StopIteration as done:
        return done.value


class Session(ABC):
    """The state and decisions of one stream (see the module docstring)."""

    __slots__ = (
        "aside_done",
        "aside_task",
        "closed",
        "cut",
        "direct",
        "finished",
        "grace_timer",
        "hard_stopped",
        "hard_timer",
        "linger",
        "options",
        "parked",
        "pending",
        "producer",
        "pump_busy",
        "pushed",
        "pusher",
        "quiet_since",
        "receive",
        "send",
        "shutdown",
        "shutting_down",
        "stop",
        "timer",
        "unsent",
        "unsubscribe",
        "waits_on",
    )

    def __init__(
        self,
        receive: Receive,
        send: Send,
        producer: AsyncIterator[object],
        options: StreamOptions,
        shutdown: Shutdown | None,
    ) -> None:
        self.receive = receive
        self.send = send
        self.producer = producer
        self.options = options
        self.shutdown = shutdown
        self.pending: bytes | None = None  # handed over, for an aside task to send
        self.aside_done: Signal | None = None  # set when the running aside task ends
        self.aside_task: Cancellable | None = None  # the running one, where tasks are objects
        self.unsent = b""  # what the pump had collected when it was interrupted
        self.pump_busy = False
        self.parked = False  # the pump waits for the producer, nothing collected
        self.waits_on: Any = None  # what it waits for, while parked (``_loops.Flusher``)
        self.linger = False  # what was taken ends the stream, likely (``Taker``)
        self.pusher: Pusher | None = None  # the producer's push path, if it has one
        self.pushed: bytes | None = None  # taken by ``take``, not sent yet
        self.cut: CloseReason | None = None  # client gone / send timeout
        self.stop = False  # the pump must stop now
        self.shutting_down = False
        self.finished = False  # the pump is done: no more keep-alives
        self.closed = False  # the whole stream is done
        self.hard_stopped = False
        self.quiet_since = 0.0
        self.timer: Cancellable | None = None
        self.grace_timer: Cancellable | None = None
        self.hard_timer: Cancellable | None = None
        self.unsubscribe: Callable[[], None] | None = None
        self.direct: Any = None  # uvicorn's request cycle, to write the body to (``_direct``)

    # -- what each event loop provides -------------------------------------

    @abstractmethod
    def now(self) -> float:
        """The clock timers use."""

    @abstractmethod
    def call_at(self, when: float, callback: Callable[[], None]) -> Cancellable: ...

    @abstractmethod
    def new_signal(self) -> Signal: ...

    @abstractmethod
    def spawn_aside(self) -> None: ...

    def write(self, data: bytes) -> bool:
        """Write ``data`` straight to the server's transport, exactly as ``send``
        would, if ``send`` would do it at once (``_direct``); ``False``, with
        nothing done, if not (or if the server is not one we know): then send
        it. What the transport raises goes to the caller, as from ``send``."""
        direct = self.direct
        return direct is not None and write_body(direct, data)

    def send_now(self, data: bytes) -> bool:
        """From inside the pump, while it holds a half-run step of the producer:
        send ``data`` if that needs no waiting, and say whether it was taken
        care of. Where the event loop allows it (asyncio), this spares the
        aside task (and the objects it allocates) in the common case."""
        return False

    def take(self, render: Callable[[Any], object], item: Any) -> bool:
        """The push path (see the module docstring): from another task, while
        the pump waits for the producer with nothing to send, render ``item``
        and have it sent soon (``flush``), as the pump would have sent what the
        producer gave it; ``False``, with nothing done, if the pump is not so
        idle (the producer then yields ``item`` as usual). What ``render`` or
        the encoding raise goes to the caller, nothing taken."""
        if not self.parked or self.stop or self.aside_done is not None:
            return False
        out = render(item)
        if out is not None:
            data = out if type(out) is bytes else encode_item(out)
            pushed = self.pushed
            if pushed is None:
                self.pushed = data
                self.flush_soon()
            else:
                self.pushed = pushed + data
        return True

    def flush_soon(self) -> None:
        """Have ``flush`` called soon, before anything else of this stream runs.
        Here: at once; asyncio (the loop that binds ``take``) gathers the flushes
        of a loop turn into one callback for all streams."""
        self.flush()

    def flush(self) -> None:
        """Send what ``take`` took, if it is not sent yet: now, finishing aside
        if the send must wait; after a keep-alive that went aside meanwhile.
        Called by the loop's flusher, or first thing by a pump that wakes."""
        data = self.pushed
        if data is None:
            return
        self.pushed = None
        if self.aside_done is None:
            self.send_aside(data)
        else:
            self.hand_over(data)

    def send_aside(self, data: bytes) -> None:
        """From outside the pump, while it waits: send ``data``, finishing in
        an aside task if it must wait. Here: by the aside task; asyncio starts
        the send at once and needs the task only if it must wait."""
        self.hand_over(data)

    @abstractmethod
    def cancel_pump(self) -> None:
        """Interrupt the pump wherever it waits (it is never running when this is called)."""

    @abstractmethod
    def abort(self) -> None:
        """Cancel everything the stream still waits for (it then ends as SHUTDOWN)."""

    async def carry_on_timed(self, step: Any, yielded: Any) -> bool:
        """Finish a send ``send_now`` began; ``False`` if it did not complete within
        ``send_timeout`` seconds. (Only asyncio begins sends that way.)"""
        await _carry_on(step, yielded)
        return True

    @abstractmethod
    async def send_timed(self, message: Message) -> bool:
        """Send; ``False`` if it did not complete within ``send_timeout`` seconds."""

    @abstractmethod
    async def checkpoint(self) -> None: ...

    @abstractmethod
    def run(
        self, status: int, headers: list[tuple[bytes, bytes]], after: After | None = None
    ) -> Coroutine[Any, Any, CloseReason]:
        """Serve the stream: ``open``, watcher, pump, ``complete``; always ``close``;
        then, unless cancelled, ``after.finished(reason)``."""

    @abstractmethod
    async def close_producer(self) -> None: ...

    @abstractmethod
    async def notify(self, reason: CloseReason) -> None: ...

    # -- the request task ----------------------------------------------------

    async def open(
        self, status: int, headers: list[tuple[bytes, bytes]], held: HeldHead | None = None
    ) -> None:
        """Send the headers, start the keep-alive timer, listen for shutdown.
        ``held``: the head is held for the first part (``_direct.hold_head``)."""
        send = self.send
        await send({"type": "http.response.start", "status": status, "headers": headers})
        # Where the headers reached uvicorn itself, the body is written straight
        # to its transport from now on (``_direct``).
        self.direct = body_writer(send, held)
        # A first body message right away pushes the headers through any
        # middleware that holds http.response.start until it sees a body
        # (GZipMiddleware does), so EventSource's onopen fires now. (Written
        # straight, the headers are out: an empty first part is nothing.)
        retry = self.options.retry
        head = b"" if retry is None else encode_retry(retry)
        if not self.write(head):
            await send(_more(head))
        self.quiet_since = self.now()
        ping = self.options.ping
        if ping is not None:
            self.schedule_ping(self.quiet_since + ping, ping)
        if self.shutdown is not None:
            self.unsubscribe = self.shutdown.subscribe(self._on_shutdown)

    async def close(self, reason: CloseReason) -> None:
        """Stop the timers, stop listening for shutdown, tell ``on_close``."""
        self.finished = True
        self.closed = True
        self.pushed = None
        pusher = self.pusher
        if pusher is not None:
            pusher.session = None  # it and the session referred to each other
        self.stop_pings()
        for timer in (self.grace_timer, self.hard_timer):
            if timer is not None:
                timer.cancel()
        if self.unsubscribe is not None:
            self.unsubscribe()
        await self.notify(reason)

    async def complete(self, reason: CloseReason, tail: bytes) -> CloseReason:
        """After the pump: let the aside task finish, then end the response."""
        if self.cut is None:
            while (done := self.aside_done) is not None:
                await done.wait()
        self.finished = True
        if self.cut is not None and reason is not CloseReason.SEND_TIMEOUT:
            reason = self.cut
        if reason is CloseReason.CLIENT_GONE or reason is CloseReason.SEND_TIMEOUT:
            # After a send timeout the response stays incomplete and the server
            # closes the connection (uvicorn logs "ASGI callable returned
            # without completing response"): what a stuck client needs.
            return reason
        message = {"type": "http.response.body", "body": tail, "more_body": False}
        await self.send_timed(message)
        return reason

    def stopped(self, reason: CloseReason | None, tail: bytes) -> tuple[CloseReason, bytes]:
        """The reason and last bytes of a pump that was told to stop."""
        if reason is None:
            reason = self.cut or CloseReason.SHUTDOWN
        if reason is CloseReason.SHUTDOWN and self.options.farewell is not None:
            tail += encode_item(self.options.farewell)
        return reason, tail

    def failed(self, exc: Exception) -> tuple[CloseReason, bytes]:
        """The reason and last bytes after the producer raised ``exc``."""
        if self.cut is not None:
            return self.cut, b""  # it failed while being cancelled: not its fault
        logger.error("event stream producer failed", exc_info=exc)
        make = self.options.error_event
        error = b""
        if make is not None:
            try:
                item = make(exc)
                error = b"" if item is None else encode_item(item)
            except Exception:
                logger.exception("error_event failed; no error event sent")
        return CloseReason.ERROR, self.unsent + error

    def pump(self, begin: Coroutine[Any, Any, None] | None = None) -> Generator[Any, Any, Any]:
        """Move items from the producer to the client; returns the unsent last batch.

        A generator, awaited through ``GeneratorCoroutine`` (``_awaitable``;
        a plain generator, not a generator-based coroutine, which ``__await__``
        may not return; so it awaits coroutines through their ``__await__``):
        it takes the first step of each
        ``__anext__`` by hand to learn whether the item is ready (see the module
        docstring), and when it is not, passes what the producer yields up to
        the event loop and what comes back down itself, as ``await`` would, with
        no extra frame per resumption (this is the hot path of every stream).

        With ``begin`` (asyncio, see ``_awaitable``), this is the stream's whole
        life in one frame: it awaits ``begin`` first and, once the loop has
        returned or raised, hands that to the session's ``end`` and returns
        what ``end`` returns. No coroutine awaiting the pump stays alive for
        the stream's life (that frame was 296 bytes of each idle stream).
        """
        whole = begin is not None
        error: BaseException | None = None
        if begin is not None:
            try:
                yield from begin.__await__()
            except BaseException as exc:
                error = exc
            begin = None  # finished: not kept for the stream's life
            if error is not None:
                ending = cast("Ends", self).end(b"", error)
                error = None  # handed on: no cycle through its traceback and this frame
                return (yield from ending.__await__())
        producer = self.producer
        # An async generator's asend object is its own iterator; others need __await__.
        native = type(producer) is AsyncGeneratorType
        send = self.send
        untimed = self.options.send_timeout is None
        # A bytearray, not a list of parts: it is not tracked by the cyclic
        # collector; made when an item comes ready and dropped once sent, so a
        # stream whose items come after waits (or not at all) keeps none.
        batch: bytearray | None = None
        try:
            while True:
                if self.stop:
                    raise Cut(self.cut or CloseReason.SHUTDOWN)
                try:
                    awaiting: Any = anext(producer) if native else anext(producer).__await__()
                    yielded = awaiting.send(None)
                except StopIteration as ready:
                    # Ready without waiting: more may be, so collect them.
                    data = encode_item(ready.value)
                    if batch is None:
                        batch = bytearray(data)
                    else:
                        batch += data
                    if len(batch) >= MAX_BATCH_SIZE:
                        data = bytes(batch)
                        batch = None
                        yield from self.send_body(data).__await__()
                        # A producer that never waits would otherwise keep the
                        # event loop (and every other stream) until backpressure.
                        yield from self.checkpoint().__await__()
                    continue
                except StopAsyncIteration:
                    break
                # The producer waits: what was collected goes now, aside.
                if batch is not None:
                    data = bytes(batch)
                    batch = None
                    if not (self.aside_done is None and self.send_now(data)):
                        self.hand_over(data)
                try:
                    while True:  # wait for it, exactly as `await` would
                        self.parked = True  # the push path may send meanwhile (``take``)
                        self.waits_on = yielded
                        try:
                            sent = yield yielded
                        except GeneratorExit:
                            self.parked = False
                            self.pushed = None
                            awaiting.close()
                            raise
                        except BaseException as exc:  # cancellation included
                            self.parked = False
                            if self.pushed is not None:  # taken, not sent yet: first
                                self.flush()
                            yielded = awaiting.throw(exc)
                        else:
                            self.parked = False
                            pushed = self.pushed
                            if pushed is not None:
                                if self.aside_done is None:
                                    # Taken, not sent yet (a flusher leaves it to
                                    # a pump it sees waking): it goes with what
                                    # the producer gives now, or with the end.
                                    self.pushed = None
                                    batch = bytearray(pushed)
                                else:
                                    self.flush()
                            try:
                                yielded = awaiting.send(sent)
                            except StopIteration as done:
                                item = done.value
                                break
                            except BaseException:
                                # On trio what was sent is an Outcome holding the
                                # exception now raised, whose traceback holds this
                                # frame: drop it, or the three form a cycle.
                                sent = None
                                raise
                            if batch is not None:  # it waits on: what was taken goes now
                                data = bytes(batch)
                                batch = None
                                if not (self.aside_done is None and self.send_now(data)):
                                    self.hand_over(data)
                except StopIteration as done:
                    item = done.value
                except StopAsyncIteration:
                    break
                if self.stop:  # it swallowed our cancellation
                    raise Cut(self.cut or CloseReason.SHUTDOWN)
                # It came after a wait, so the next one probably will too: send
                # it now rather than risk holding it while the producer waits.
                data = encode_item(item)
                if batch is not None:  # taken before it (the wake's, above)
                    data = bytes(batch) + data
                    batch = None
                if self.aside_done is None:
                    self.pump_busy = True  # the common case of send_body, inlined
                    try:
                        if not self.write(data):
                            message = _more(data)
                            if untimed:
                                yield from send(message).__await__()
                            elif not (yield from self.send_timed(message).__await__()):
                                raise Cut(CloseReason.SEND_TIMEOUT)
                    except OSError:
                        raise Cut(CloseReason.CLIENT_GONE) from None
                    finally:
                        self.pump_busy = False
                    self.quiet_since = self.now()
                else:
                    yield from self.send_body(data).__await__()
        except BaseException as exc:
            self.unsent = b"" if batch is None else bytes(batch)
            if not whole:
                raise
            error = exc
        tail = b"" if batch is None else bytes(batch)
        if not whole:
            return tail
        ending = cast("Ends", self).end(tail, error)
        error = None  # handed on: no cycle through its traceback and this frame
        return (yield from ending.__await__())

    async def send_body(self, data: bytes) -> None:
        """The pump's own send, after any aside send (order is kept)."""
        self.pump_busy = True
        try:
            while (done := self.aside_done) is not None:
                await done.wait()
            if not self.write(data) and not await self.send_timed(_more(data)):
                raise Cut(CloseReason.SEND_TIMEOUT)
        except OSError:
            raise Cut(CloseReason.CLIENT_GONE) from None
        finally:
            self.pump_busy = False
        self.quiet_since = self.now()

    async def call_on_close(self, reason: CloseReason) -> None:
        on_close = self.options.on_close
        if on_close is None:
            return
        try:
            result = on_close(reason)
            if inspect.isawaitable(result):
                await result
        except Exception:
            logger.exception("on_close callback failed")

    # -- the watcher, the aside task and the timers ----------------------------

    async def watch(self) -> None:
        try:
            receive = self.receive
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    self.gone(CloseReason.CLIENT_GONE)
                    return
        except Exception:
            logger.exception("event stream watcher failed; closing the stream")
            self.gone(CloseReason.CLIENT_GONE)

    def hand_over(self, data: bytes) -> None:
        pending = self.pending
        self.pending = data if pending is None else pending + data
        if self.aside_done is None:
            self.aside_done = self.new_signal()
            self.spawn_aside()

    async def aside(self, started: Any = None, yielded: Any = None) -> None:
        """Send what was handed over; first, finish ``started``, a send that
        ``send_now`` began, which yielded ``yielded``."""
        try:
            if started is not None:
                try:
                    finished = await self.carry_on_timed(started, yielded)
                except OSError:
                    self.gone(CloseReason.CLIENT_GONE)
                    return
                except Exception:
                    logger.exception("event stream send failed; closing the stream")
                    self.gone(CloseReason.CLIENT_GONE)
                    return
                if not finished:
                    self.gone(CloseReason.SEND_TIMEOUT)
                    return
                self.quiet_since = self.now()
            while (data := self.pending) is not None:
                self.pending = None
                message = {"type": "http.response.body", "body": data, "more_body": True}
                try:
                    sent = await self.send_timed(message)
                except OSError:
                    self.gone(CloseReason.CLIENT_GONE)
                    return
                except Exception:
                    logger.exception("event stream send failed; closing the stream")
                    self.gone(CloseReason.CLIENT_GONE)
                    return
                if not sent:
                    self.gone(CloseReason.SEND_TIMEOUT)
                    return
                self.quiet_since = self.now()
        finally:
            self.aside_task = None  # a finished task (and its coroutine) is not kept
            done = self.aside_done
            self.aside_done = None
            if done is not None:
                done.set()

    def schedule_ping(self, when: float, interval: float) -> None:
        """Have ``ping_due`` called at ``when`` (a timer of the stream's own)."""
        self.timer = self.call_at(when, self.ping_due)

    def stop_pings(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def ping_due(self) -> None:
        self.timer = None
        ping = self.options.ping
        if self.finished or ping is None:
            return
        now = self.now()
        if now >= self.quiet_since + ping:
            if not self.pump_busy and self.aside_done is None:
                self.hand_over(PING)
            # else bytes are already on their way (or stuck, for send_timeout)
            self.quiet_since = now
        self.schedule_ping(self.quiet_since + ping, ping)

    def gone(self, reason: CloseReason) -> None:
        if self.cut is None:
            self.cut = reason
        self.stop_pump()

    def stop_pump(self) -> None:
        if not self.stop:
            self.stop = True
            self.cancel_pump()

    def _on_shutdown(self) -> None:
        # Called on our event loop by Shutdown.set().
        if self.closed or self.shutting_down:
            return
        self.shutting_down = True
        grace = self.options.shutdown_grace
        if grace <= 0:
            self.stop_pump()
        else:
            self.grace_timer = self.call_at(self.now() + grace, self.stop_pump)
        # Whatever still waits then (a client that stopped reading) is cut off.
        self.hard_timer = self.call_at(self.now() + grace + SHUTDOWN_SEND_S, self._hard_stop)

    def _hard_stop(self) -> None:
        if not self.closed:
            self.hard_stopped = True
            self.abort()
