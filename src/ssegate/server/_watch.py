"""Waiting for ``http.disconnect`` under uvicorn without a task (asyncio only).

A stream must learn that its client left while its producer is quiet, so
something waits on ``receive()`` for the stream's whole life. uvicorn's
``receive`` awaits its request cycle's ``message_event`` (a plain
``asyncio.Event``) and nothing else: no ``current_task()``, no cancel scope.
So instead of a task, the watcher puts itself among the event's waiters,
where ``Event.wait()`` puts a future (``Event.set()`` calls only ``done()``
and ``set_result()`` on each), and calls ``receive()`` only once the event is
set, when it returns at once. An idle stream then keeps no watcher task (its
coroutine, context and weak reference), no ``receive()`` coroutine, no
``Event.wait()`` coroutine and no future (measured in
``benchmarks/server.py``'s memory rows; see ``_response.py``), and no object
of its own either: the waiter is the session itself (``Watching``, the
asyncio session's base class, keeps its state in the session's slots), where
a ``Watch`` object per stream was one more object for every collection of the
older generations to walk (issue 10, a FastAPI endpoint: see ``_response.py``).

Each ``asyncio.Event`` keeps its waiters in a ``collections.deque``, whose
first block of 64 slots is allocated with it: 760 bytes, for the request
cycle's message event (whose one waiter, while the stream is open, is this
object) and for the connection's flow control (whose one waiter is the
stream's send, while the client reads too slowly). When the watcher starts,
each such empty deque is replaced by a list, which ``Event`` uses the same
way (``append``, ``remove``, iteration): ~1.4 KB less for each open stream,
the largest saving found for issue 10 (what an idle stream keeps on a
Starlette ``Route``; see ``_response.py``). The lists stay with the request
cycle and the connection, and serve any later waiter as the deques would.

If the request cycle is not shaped as expected (another uvicorn version), the
watcher steps ``receive()``'s coroutine from the callbacks of the futures it
waits on instead: still no task, but with its coroutines.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import logging
from collections.abc import Callable
from typing import Any

from ._options import CloseReason
from ._session import Session

__all__ = ["Watching", "plain_receive"]

logger = logging.getLogger("ssegate.server")

#: uvicorn's ``receive`` functions (module, qualified name): they await an
#: ``asyncio.Event`` and nothing else (no ``current_task()``, no cancel scope),
#: so a stream can wait on them without a task of its own.
_PLAIN_RECEIVES = {
    ("uvicorn.protocols.http.httptools_impl", "RequestResponseCycle.receive"),
    ("uvicorn.protocols.http.h11_impl", "RequestResponseCycle.receive"),
}

#: What ``receive()`` reads of its request cycle before it waits.
_CYCLE_FIELDS = ("disconnected", "response_complete", "waiting_for_100_continue", "flow")


def plain_receive(receive: object) -> bool:
    function = getattr(receive, "__func__", None)
    name = (getattr(function, "__module__", None), getattr(function, "__qualname__", None))
    return name in _PLAIN_RECEIVES


def _cycle_of(receive: Callable[[], Any]) -> Any:
    """uvicorn's request cycle behind ``receive``, if it is shaped as expected."""
    cycle: Any = getattr(receive, "__self__", None)
    event = getattr(cycle, "message_event", None)
    if (
        type(event) is asyncio.Event
        and hasattr(event, "_waiters")
        and all(hasattr(cycle, name) for name in _CYCLE_FIELDS)
        and callable(getattr(cycle.flow, "resume_reading", None))
    ):
        return cycle
    return None


def _list_waiters(event: object) -> None:
    """Give ``event`` a list for its waiters in place of an empty deque (see
    the module docstring); any other event or waiters are left as they are."""
    if type(event) is asyncio.Event:
        waiters = getattr(event, "_waiters", None)
        if type(waiters) is collections.deque and not waiters:
            event._waiters = []  # type: ignore[assignment]


class Watching(Session):
    """A session that is its own disconnect watcher (see the module
    docstring): the asyncio session's base. Its callbacks run in the
    session's context; during them ``asyncio.current_task()`` is ``None``."""

    __slots__ = (
        "watch_cycle",  # uvicorn's request cycle, if shaped as expected
        "watch_listening",  # among the message event's waiters
        "watch_step",  # a receive() coroutine being stepped
        "watch_stopped",
        "watch_waiting",  # a future receive() waits on
        "watch_woken",  # the message event was set since it listened
    )

    # the asyncio session's
    context: contextvars.Context
    loop: asyncio.AbstractEventLoop

    def init_watch(self) -> None:
        self.watch_cycle: Any = None
        self.watch_step: Any = None
        self.watch_waiting: asyncio.Future[Any] | None = None
        self.watch_listening = self.watch_woken = self.watch_stopped = False

    def start_watching(self) -> None:
        self.watch_cycle = cycle = _cycle_of(self.receive)
        if cycle is not None:  # see the module docstring
            _list_waiters(cycle.message_event)
            _list_waiters(getattr(cycle.flow, "_is_writable_event", None))
        self.context.run(self.resume_watching, None)

    def resume_watching(self, _done: object) -> None:
        """Read messages until one must be waited for (or the client is gone)."""
        self.forget_waiting()
        while not self.watch_stopped:
            step = self.watch_step
            if step is None:
                if self.wait_for_message():
                    return
                self.watch_step = step = self.receive()
            try:
                yielded = step.send(None)
            except StopIteration as done:
                self.watch_step = None
                if done.value["type"] == "http.disconnect":
                    self.watch_stopped = True
                    self.gone(CloseReason.CLIENT_GONE)
                    return
                continue  # a request body part: read on
            except Exception:
                self.watch_step = None
                self.watch_stopped = True
                logger.exception("event stream watcher failed; closing the stream")
                self.gone(CloseReason.CLIENT_GONE)
                return
            if getattr(yielded, "_asyncio_future_blocking", False):
                yielded._asyncio_future_blocking = False
                self.watch_waiting = yielded
                yielded.add_done_callback(self.resume_watching, context=self.context)
            else:  # a bare yield (sleep(0)): step again on the loop's next turn
                self.loop.call_soon(self.resume_watching, None, context=self.context)
            return

    def wait_for_message(self) -> bool:
        """If ``receive()`` would wait now, wait as it would, without calling it:
        this session among the message event's waiters. Says whether it does."""
        cycle = self.watch_cycle
        if (
            cycle is None
            or cycle.disconnected
            or cycle.response_complete
            or cycle.waiting_for_100_continue
            or cycle.message_event.is_set()
        ):
            return False
        cycle.flow.resume_reading()  # as receive() does before it waits
        cycle.message_event._waiters.append(self)
        self.watch_listening = True
        return True

    # What ``asyncio.Event.set()`` calls on each of its waiters, which
    # ``Event.wait()`` makes futures: the session stands in for one.

    def done(self) -> bool:
        return self.watch_woken or not self.watch_listening

    def set_result(self, _result: object) -> None:
        # Later, as a future's callback would run: the event is iterating its
        # waiters now, so this one cannot leave them yet.
        self.watch_woken = True
        self.loop.call_soon(self.resume_watching, None, context=self.context)

    def forget_waiting(self) -> None:
        if self.watch_listening:
            self.watch_listening = self.watch_woken = False
            with contextlib.suppress(ValueError):
                self.watch_cycle.message_event._waiters.remove(self)
        waiting, self.watch_waiting = self.watch_waiting, None
        if waiting is not None:
            waiting.remove_done_callback(self.resume_watching)

    def stop_watching(self) -> None:
        """Stop for good (once the stream ends); nothing if it never started."""
        self.watch_stopped = True
        self.forget_waiting()
        step, self.watch_step = self.watch_step, None
        if step is not None:
            step.close()
