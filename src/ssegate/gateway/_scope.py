"""A generation's cancel scope and events on asyncio, without anyio's per-use work.

Each generation has a cancel scope (entered by its task, cancelled by a stop, the
grace period or the shutdown) and two events (accepted, finished). anyio's
``CancelScope`` on asyncio looks the task up on entering and leaving, keeps a
state per task, and cancels level-triggered: a callback re-cancels the task
each loop turn until the scope is left; its ``Event`` wraps an
``asyncio.Event``, whose ``wait`` looks the running loop up (a ``getpid`` system
call on Python 3.11) and makes a deque, a future and two coroutines. The runner,
on asyncio, makes these instead:

- ``TaskScope``: cancels its task once, as ``asyncio.timeout`` does (the
  cancellation counted with ``Task.cancel``/``uncancel``, so one from outside
  still goes on up), and swallows its own ``CancelledError`` when left. A
  generation's clean-up after the cancellation (closing the upstream's
  connection) is not cancelled again. Only for a generation that waits on
  asyncio alone (an HTTP provider over aiohttp, ``_runner._plain_asyncio``):
  a plain task cancellation goes through anyio's shields, so a wait for a
  worker thread's step (the local model's, ``anyio.to_thread.run_sync``) would
  end at once and the provider clean up while its thread still works; other
  providers keep anyio's scope, which waits for them.
- ``Flag``: set, ``is_set``, ``wait`` on bare futures of the loop.

On other backends (trio) the runner keeps anyio's classes (``_runner.native``).
"""

from __future__ import annotations

import asyncio
from types import TracebackType

__all__ = ["Flag", "TaskScope"]


class TaskScope:
    """What the runner uses of ``anyio.CancelScope`` (``with``, ``cancel()``,
    ``cancel_called``), for one task of ``loop``, entered once."""

    __slots__ = ("_entered", "_loop", "_task", "cancel_called")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._task: asyncio.Task[object] | None = None
        self._entered = False
        self.cancel_called = False

    def __enter__(self) -> TaskScope:
        if self._entered:
            raise RuntimeError("a TaskScope is entered once")
        # The loop given: no look-up of the running loop.
        task = asyncio.current_task(self._loop)
        if task is None:
            raise RuntimeError("a TaskScope is entered in a task")
        self._entered = True
        self._task = task
        if self.cancel_called:  # cancelled before it was entered: at its first wait
            task.cancel()
        return self

    def cancel(self) -> None:
        """Cancel the task while it is inside (at once), or as it enters."""
        if self.cancel_called:
            return
        self.cancel_called = True
        if self._task is not None:
            self._task.cancel()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        task, self._task = self._task, None
        if not self.cancel_called or task is None:
            return False
        # This scope's cancellation withdrawn; swallowed unless another is pending.
        return (
            task.uncancel() == 0
            and exc_type is not None
            and issubclass(exc_type, asyncio.CancelledError)
        )


class Flag:
    """What the runner and routes use of ``anyio.Event`` (``set``, ``is_set``,
    ``wait``), on bare futures of ``loop``."""

    __slots__ = ("_loop", "_set", "_waiters")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._set = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def set(self) -> None:
        if self._set:
            return
        self._set = True
        waiters, self._waiters = self._waiters, None
        if waiters:
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def is_set(self) -> bool:
        return self._set

    async def wait(self) -> None:
        """Return once set (at once if it is)."""
        if self._set:
            return
        waiter = self._loop.create_future()
        waiters = self._waiters
        if waiters is None:
            waiters = self._waiters = []
        waiters.append(waiter)
        try:
            await waiter
        finally:
            waiters = self._waiters  # None once set
            if waiters is not None and waiter in waiters:
                waiters.remove(waiter)  # cancelled while waiting
