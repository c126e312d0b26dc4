"""The event-loop specific halves of a stream session: native asyncio, and anyio.

uvicorn runs asyncio, where a stream costs an entry in the loop's keep-alive
wheel and, unless the receive callable is uvicorn's own (then it is waited on
without a task), one extra task;
anyio's task groups and cancel scopes cost several times more per stream (each
cancellation formats the repr of a task), so they are used only on other
backends (trio), where correctness matters more than the last microsecond.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import weakref
from collections.abc import Callable, Coroutine
from types import CoroutineType
from typing import Any

import anyio
import anyio.lowlevel

from ._awaitable import GeneratorCoroutine
from ._direct import hold_head, write_body
from ._keepalive import Bucket, keepalive_wheel, per_loop
from ._options import CLOSE_TIMEOUT_S, CloseReason
from ._session import After, Cancellable, Cut, Message, Session, Signal, _carry_on
from ._watch import Watching, plain_receive

__all__ = ["AnyioSession", "AsyncioSession"]

logger = logging.getLogger("ssegate.server")


class AsyncioSession(Watching):
    """Tasks, timers and cancellation straight from asyncio; under uvicorn the
    session is its own disconnect watcher (``Watching``, no object of its own)."""

    __slots__ = (
        "after",
        "context",
        "flusher",
        "loop",
        "ping_bucket",
        "pump_active",
        "pump_cancelled",
        "task",
        "watcher",
    )

    def init_loop(self, loop: asyncio.AbstractEventLoop) -> AsyncioSession:
        self.loop = loop
        self.ping_bucket: Bucket | None = None  # the keep-alive wheel's bucket this stream is in
        self.task: asyncio.Task[Any] | None = None
        self.watcher: Cancellable | None = None  # a watcher task, where one is needed
        self.init_watch()
        self.after: After | None = None
        self.pump_active = False
        self.pump_cancelled = False
        self.flusher: Flusher | None = None  # the loop's, once a push was taken
        # One copy of the request's context for the watcher task and every
        # timer, where each would otherwise copy its own (one object less per
        # stream, none per keep-alive). Aside tasks copy their own: one may be
        # started by a timer callback, which already runs in this context.
        self.context = contextvars.copy_context()
        return self

    def now(self) -> float:
        return self.loop.time()

    def call_at(self, when: float, callback: Callable[[], None]) -> Cancellable:
        return self.loop.call_at(when, callback, context=self.context)

    def schedule_ping(self, when: float, interval: float) -> None:
        self.ping_bucket = keepalive_wheel(self.loop).add(self, when, interval)

    def stop_pings(self) -> None:
        if self.ping_bucket is not None:
            keepalive_wheel(self.loop).discard(self, self.ping_bucket)
            self.ping_bucket = None

    def new_signal(self) -> Signal:
        return _Done(self.loop.create_future())

    def spawn_aside(self) -> None:
        self.start_aside(self.aside())

    def start_aside(
        self, aside: Coroutine[Any, Any, None], context: contextvars.Context | None = None
    ) -> None:
        task = self.loop.create_task(aside, context=context)
        if not task.done():  # an eager task factory may have run it to the end
            self.aside_task = task

    def send_now(self, data: bytes) -> bool:
        # The first step of the send runs here, in the request task, like any
        # `await send()` that does not wait: uvicorn's send and pure-ASGI
        # middleware finish in it unless the socket is full. Only if it must
        # wait does an aside task carry on with it (a plain asyncio wait can be
        # finished by any task), so the producer's half-run step never waits
        # behind our send in this task. The send runs in a context of its own
        # from its first step to its last, as it would in a task of its own
        # (what Python 3.12's eager tasks do): a middleware that sets a context
        # variable around a send that waits (a tracing span) resets it in the
        # context it set it in, and nothing leaks into the request's context.
        # One difference remains: during the first step asyncio.current_task()
        # is the request task.
        # (Written at once, ``write``, no context is needed: uvicorn's own send
        # behind it, no middleware, none would be set.)
        self.send_aside(data, None if self.direct is not None else contextvars.copy_context())
        return True

    def flush_soon(self) -> None:
        flusher = self.flusher
        if flusher is None:
            flusher = self.flusher = push_flusher(self.loop)
        flusher.streams.append(self)
        if not flusher.scheduled:
            flusher.schedule()

    def send_aside(
        self, data: bytes, context: contextvars.Context | None = None, now: float | None = None
    ) -> None:
        """Send ``data`` in ``context``, unless it can be written at once
        (``_direct``: no context needed); if the send must wait, an aside task
        finishes it. Without ``context`` (the push path, from the task that
        appended), in a copy of the stream's own context, not the appender's.
        ``now``: the loop's time, if the caller has it (the flusher's)."""
        try:
            direct = self.direct
            if direct is not None and write_body(direct, data):  # ``write``, inlined
                self.quiet_since = self.loop.time() if now is None else now
                return
            if context is None:
                context = self.context.copy()
            message = {"type": "http.response.body", "body": data, "more_body": True}
            sending: Any = context.run(self.send, message)
            step = sending if type(sending) is CoroutineType else sending.__await__()
            yielded = context.run(step.send, None)
        except StopIteration:
            self.quiet_since = self.loop.time()
            return
        except OSError:
            self.gone(CloseReason.CLIENT_GONE)  # cancels the pump at its next wait
            return
        except Exception:
            logger.exception("event stream send failed; closing the stream")
            self.gone(CloseReason.CLIENT_GONE)
            return
        self.aside_done = self.new_signal()
        self.start_aside(self.aside(step, yielded), context)

    def start_watch(self) -> Cancellable | None:
        """Wait for ``http.disconnect``: without a task (the session itself
        waits, ``Watching``) where ``receive`` is known to wait on plain asyncio
        futures only (uvicorn's), else in a task, which is returned."""
        if plain_receive(self.receive):
            self.start_watching()
            return None
        return self.loop.create_task(self.watch(), context=self.context)

    def cancel_pump(self) -> None:
        if self.pump_active and not self.pump_cancelled and self.task is not None:
            self.pump_cancelled = True
            self.task.cancel()

    def abort(self) -> None:
        if self.task is not None:
            self.task.cancel()

    async def send_timed(self, message: Message) -> bool:
        timeout = self.options.send_timeout
        if timeout is None:
            await self.send(message)
            return True
        # The timer only for a send that must wait: uvicorn's returns at its
        # first step unless the socket is full, and a timer (scheduled and
        # cancelled) for each of them was ~4 % of the gateway's CPU per token.
        sending: Any = self.send(message)
        step = sending if type(sending) is CoroutineType else sending.__await__()
        try:
            yielded = step.send(None)
        except StopIteration:
            return True
        return await self.carry_on_timed(step, yielded)

    async def carry_on_timed(self, step: Any, yielded: Any) -> bool:
        timeout = self.options.send_timeout
        if timeout is None:
            await _carry_on(step, yielded)
            return True
        try:
            async with asyncio.timeout(timeout):
                await _carry_on(step, yielded)
        except TimeoutError:
            return False
        return True

    async def checkpoint(self) -> None:
        await asyncio.sleep(0)

    def run(
        self, status: int, headers: list[tuple[bytes, bytes]], after: After | None = None
    ) -> Coroutine[Any, Any, CloseReason]:
        # The pump as the stream's whole life, not a coroutine awaiting it: while
        # it runs, the stream keeps no frame but the pump's (see _awaitable).
        self.after = after
        begin = self.begin(status, headers)
        return GeneratorCoroutine(self.pump(begin), begin)

    async def begin(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        """Before the pump: send the headers, start watching for the client leaving."""
        self.task = asyncio.current_task(self.loop)  # the loop given: no look-up
        # Under uvicorn the head is held for the first part, to go in one write
        # with it (``_direct.hold_head``), and written alone soon after, in
        # this loop turn, if nothing came with it: it waits for nothing.
        held = hold_head(self.send)
        if held is None:
            await self.open(status, headers)
        else:
            try:
                await self.open(status, headers, held)
            except BaseException:
                held.release()
                raise
            self.loop.call_soon(held.release, context=self.context)
        self.watcher = self.start_watch()
        self.pump_active = True
        if self.pusher is not None:
            self.pusher.session = self  # unbound in close()

    async def end(self, tail: bytes, error: BaseException | None) -> CloseReason:
        """After the pump returned ``tail`` or raised ``error`` (or ``begin``
        raised it, and the pump never ran): end the response, always ``close``,
        then, unless cancelled, ``after.finished(reason)``. An error that is not
        the stream's own way of ending (a cancellation from outside) goes on up."""
        reason = CloseReason.CANCELLED
        task = self.task
        try:
            if error is not None and not self.pump_active:
                raise error  # from begin
            ended = CloseReason.COMPLETED
            try:
                if error is not None:
                    raise error
            except Cut as cut:
                ended, tail = self.stopped(cut.reason, self.unsent)
            except asyncio.CancelledError:
                if not self.pump_cancelled or task is None:
                    raise
                self.pump_cancelled = False
                if task.uncancel() > 0:
                    raise  # cancelled from outside as well
                ended, tail = self.stopped(None, self.unsent)
            except Exception as exc:
                ended, tail = self.failed(exc)
            finally:
                error = None  # raised on, or handled: no cycle through its traceback
                self.pump_active = False
                if self.pump_cancelled and task is not None:
                    # the producer swallowed our CancelledError
                    self.pump_cancelled = False
                    task.uncancel()
                await self.close_producer()
            reason = await self.complete(ended, tail)
        except OSError:
            reason = CloseReason.CLIENT_GONE  # an ASGI 2.4 server's failed send
        except asyncio.CancelledError:
            if not self.hard_stopped or task is None or task.uncancel() > 0:
                raise
            reason = CloseReason.SHUTDOWN  # cut off after the grace period
        finally:
            error = None
            self.finished = True
            watcher, self.watcher = self.watcher, None
            if watcher is not None:
                watcher.cancel()
            self.stop_watching()
            if self.aside_task is not None:
                self.aside_task.cancel()
            await self.close(reason)
        after, self.after = self.after, None
        if after is not None:
            await after.finished(reason)
        return reason

    async def close_producer(self) -> None:
        producer = self.producer
        aclose = getattr(producer, "aclose", None)
        if aclose is None or getattr(producer, "ag_frame", True) is None:
            return  # nothing to close, or an async generator that has finished
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await aclose()
        except TimeoutError:
            logger.warning("event stream producer took over %.0f s to close", CLOSE_TIMEOUT_S)
        except Exception:
            logger.exception("event stream producer failed while closing")

    async def notify(self, reason: CloseReason) -> None:
        await self.call_on_close(reason)


class Flusher:
    """Sends what the streams of one loop took on the push path (``Session.take``),
    in one loop callback for all of them (see ``_session``)."""

    __slots__ = ("__weakref__", "context", "loop", "scheduled", "streams")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.streams: list[AsyncioSession] = []
        self.scheduled = False
        self.context = contextvars.Context()  # its own (each send runs in its stream's)

    def schedule(self) -> None:
        """Have ``flush`` called soon, once for every stream added to ``streams``
        meanwhile (``AsyncioSession.flush_soon`` adds them)."""
        self.scheduled = True
        self.loop.call_soon(self.flush, context=self.context)

    def flush(self) -> None:
        self.scheduled = False
        streams, self.streams = self.streams, []
        # The time of every write of this callback, read once, not once per
        # stream (uvloop's clock counts milliseconds: the same figure nearly
        # always; a stream's next keep-alive is then due no later than it was).
        now = self.loop.time()
        for stream in streams:
            try:
                # ``Session.flush``'s usual case, inlined (once per token).
                data = stream.pushed
                if data is not None and stream.aside_done is None:
                    if stream.parked and _over(stream.waits_on):
                        # Its pump wakes in this turn and sends it first, with
                        # what wakes it (the stream's end: one write for both).
                        continue
                    if stream.linger:  # the end is probably a turn away: wait for it
                        stream.linger = False
                        self.streams.append(stream)
                        continue
                    stream.pushed = None
                    stream.send_aside(data, None, now)
                else:
                    stream.flush()
            except Exception:
                logger.exception("event stream send failed")
        if self.streams and not self.scheduled:
            self.schedule()  # the ones that wait a turn for their end


# Weak both ways, as the keep-alive wheels (``_keepalive``).
_flushers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, weakref.ref[Flusher]] = (
    weakref.WeakKeyDictionary()
)


def _over(waits_on: Any) -> bool:
    """Whether what a parked pump waits for is over (an asyncio future that is
    done: the task's wake-up is scheduled, so the pump runs in this turn)."""
    return isinstance(waits_on, asyncio.Future) and waits_on.done()


def push_flusher(loop: asyncio.AbstractEventLoop) -> Flusher:
    """The flusher of ``loop``: made on first use, gone when no stream holds it."""
    return per_loop(_flushers, loop, Flusher)


class _Done:
    """A one-shot signal with one waiter at a time (the pump): a bare future,
    where ``asyncio.Event`` allocates a waiter deque and a coroutine and a
    future per wait. A cancelled wait cancels the future, so the next wait
    gets a fresh one."""

    __slots__ = ("future", "is_set")

    def __init__(self, future: asyncio.Future[None]) -> None:
        self.future = future
        self.is_set = False

    def set(self) -> None:
        self.is_set = True
        if not self.future.done():
            self.future.set_result(None)

    def wait(self) -> asyncio.Future[None]:
        future = self.future
        if future.cancelled():
            self.future = future = future.get_loop().create_future()
            if self.is_set:
                future.set_result(None)
        return future


class _Timer:
    __slots__ = ("scope",)

    def __init__(self) -> None:
        self.scope = anyio.CancelScope()

    def cancel(self) -> None:
        self.scope.cancel()


class AnyioSession(Session):
    """Task groups and cancel scopes from anyio: any backend (trio in practice)."""

    __slots__ = ("pump_scope", "sender_wakeup", "tasks")

    def init_loop(self) -> AnyioSession:
        self.pump_scope = anyio.CancelScope()
        self.tasks: anyio.abc.TaskGroup | None = None
        # Set to wake the stream's sender task, once it has started.
        self.sender_wakeup: anyio.Event | None = None
        return self

    def now(self) -> float:
        return anyio.current_time()

    def call_at(self, when: float, callback: Callable[[], None]) -> Cancellable:
        timer = _Timer()

        async def wait_then_call() -> None:
            with timer.scope:
                await anyio.sleep_until(when)
                callback()

        assert self.tasks is not None
        self.tasks.start_soon(wait_then_call)
        return timer

    def new_signal(self) -> Signal:
        return anyio.Event()

    def spawn_aside(self) -> None:
        wakeup = self.sender_wakeup
        if wakeup is not None:
            wakeup.set()
            return
        assert self.tasks is not None
        self.sender_wakeup = anyio.Event()
        self.tasks.start_soon(self.sender)

    async def sender(self) -> None:
        """Send each hand-over (``aside``), one after another: one task for
        the stream's life, started at its first hand-over, where asyncio (whose
        waits any task may finish) starts one only for a send that must wait."""
        while True:
            await self.aside()
            # No checkpoint since aside() ended: no hand-over can come before
            # this event exists, and each one after it sets it.
            wakeup = self.sender_wakeup = anyio.Event()
            await wakeup.wait()

    def cancel_pump(self) -> None:
        self.pump_scope.cancel()

    def abort(self) -> None:
        if self.tasks is not None:
            self.tasks.cancel_scope.cancel()

    async def send_timed(self, message: Message) -> bool:
        timeout = self.options.send_timeout
        if timeout is None:
            await self.send(message)
            return True
        with anyio.move_on_after(timeout) as scope:
            await self.send(message)
        return not scope.cancelled_caught

    async def checkpoint(self) -> None:
        await anyio.lowlevel.checkpoint()

    async def run(
        self, status: int, headers: list[tuple[bytes, bytes]], after: After | None = None
    ) -> CloseReason:
        reason = CloseReason.CANCELLED
        try:
            # Timers are tasks here, so the task group must exist before they start.
            async with anyio.create_task_group() as tasks:
                self.tasks = tasks
                try:
                    await self.open(status, headers)
                    tasks.start_soon(self.watch)
                    ended = CloseReason.COMPLETED
                    tail = b""
                    with self.pump_scope:
                        try:
                            tail = await GeneratorCoroutine(self.pump())
                        except Cut as cut:
                            ended, tail = self.stopped(cut.reason, self.unsent)
                        except Exception as exc:
                            ended, tail = self.failed(exc)
                        finally:
                            await self.close_producer()
                    if self.pump_scope.cancelled_caught:
                        ended, tail = self.stopped(None, self.unsent)
                    reason = await self.complete(ended, tail)
                except OSError:
                    reason = CloseReason.CLIENT_GONE  # an ASGI 2.4 server's failed send
                finally:
                    tasks.cancel_scope.cancel()
            if self.hard_stopped and tasks.cancel_scope.cancelled_caught:
                reason = CloseReason.SHUTDOWN  # cut off after the grace period
        finally:
            await self.close(reason)
        if after is not None:
            await after.finished(reason)
        return reason

    async def close_producer(self) -> None:
        aclose = getattr(self.producer, "aclose", None)
        if aclose is None:
            return
        with anyio.move_on_after(CLOSE_TIMEOUT_S, shield=True) as scope:
            try:
                await aclose()
            except Exception:
                logger.exception("event stream producer failed while closing")
        if scope.cancelled_caught:
            logger.warning("event stream producer took over %.0f s to close", CLOSE_TIMEOUT_S)

    async def notify(self, reason: CloseReason) -> None:
        with anyio.CancelScope(shield=True):
            await self.call_on_close(reason)
