"""Telling open streams that the server is going down, without patching the server.

uvicorn (like most ASGI servers) waits for open connections to finish *before*
it sends ``lifespan.shutdown``, so an endless event stream keeps it from exiting
("Waiting for connections to close", sysid/sse-starlette#73, #124, #132). The
app cannot see the signal the server caught, and patching the server's signal
handling at import time is what broke sse-starlette twice.

Instead, a ``Shutdown`` is a plain object the application owns. Streams subscribe
to it; ``set()`` tells each of them, on its own event loop, to send its farewell
and close. ``GracefulShutdown`` is an ASGI middleware that shares one with every
request (``scope["ssegate.shutdown"]``) and sets it when the process is asked to
stop: it chains SIGINT/SIGTERM handlers during lifespan startup (the server's own
handlers still run) and also sets it on ``lifespan.shutdown``, for servers that
send that first.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import signal
import threading
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from contextlib import contextmanager, suppress
from types import FrameType
from typing import Any

import anyio.lowlevel

from ._running import running_loop

__all__ = ["SCOPE_KEY", "GracefulShutdown", "Shutdown"]

logger = logging.getLogger("ssegate.server")

# Where GracefulShutdown puts its Shutdown in each request's scope.
SCOPE_KEY = "ssegate.shutdown"

_Scope = MutableMapping[str, Any]
_Message = MutableMapping[str, Any]
_Receive = Callable[[], Any]
_Send = Callable[[_Message], Any]
_Handler = Callable[[int, FrameType | None], Any] | int | None


def _scheduler() -> Callable[[Callable[[], None]], Any]:
    """A thread-safe (and signal-handler-safe) 'call soon' for the running loop."""
    try:  # asyncio's first (no getpid where serve has it known), where anyio's finds the backend
        return running_loop().call_soon_threadsafe
    except RuntimeError:
        pass
    native = anyio.lowlevel.current_token().native_token
    if isinstance(native, asyncio.AbstractEventLoop):
        return native.call_soon_threadsafe
    return native.run_sync_soon  # type: ignore[attr-defined, no-any-return]


class Shutdown:
    """A one-way switch: once ``set()``, every subscribed stream winds down.

    ``set()`` may be called from any thread or from a signal handler: each
    subscriber is called back on its own event loop.
    """

    def __init__(self) -> None:
        self._is_set = False
        self._lock = threading.Lock()
        self._keys = itertools.count()
        self._subscribers: dict[
            int, tuple[Callable[[], None], Callable[[Callable[[], None]], Any]]
        ] = {}

    @property
    def is_set(self) -> bool:
        return self._is_set

    def set(self) -> None:
        """Ask every open stream (and every later one) to finish."""
        with self._lock:
            self._is_set = True
            subscribers = list(self._subscribers.values())
        for callback, call_soon in subscribers:
            with suppress(RuntimeError):  # that loop has closed: nothing to tell
                call_soon(callback)

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` on the current event loop when set; returns an unsubscribe.

        If already set, the callback is scheduled at once.
        """
        call_soon = _scheduler()
        key = next(self._keys)
        with self._lock:
            self._subscribers[key] = (callback, call_soon)
            already = self._is_set
        if already:
            call_soon(callback)
        return _Unsubscribe(self, key)

    def _unsubscribe(self, key: int) -> None:
        with self._lock:
            self._subscribers.pop(key, None)

    @contextmanager
    def signals(self, signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[bool]:
        """Chain handlers for ``signals`` that ``set()`` this, then run the old handler.

        Yields whether the handlers were installed (only possible in the main
        thread); the previous handlers are restored on exit.
        """
        if threading.current_thread() is not threading.main_thread():
            yield False
            return
        previous: dict[int, _Handler] = {}

        def handler(signum: int, frame: FrameType | None) -> None:
            self.set()
            old = previous.get(signum)
            if callable(old):
                old(signum, frame)
            elif old == signal.SIG_DFL:
                signal.signal(signum, signal.SIG_DFL)
                signal.raise_signal(signum)

        for signum in signals:
            previous[signum] = signal.signal(signum, handler)
        try:
            yield True
        finally:
            for signum, old in previous.items():
                if signal.getsignal(signum) is handler:
                    signal.signal(signum, old if old is not None else signal.SIG_DFL)


class _Unsubscribe:
    """What ``subscribe`` returns: one small object per stream, where a closure
    would be a function, its cells and their tuple."""

    __slots__ = ("key", "shutdown")

    def __init__(self, shutdown: Shutdown, key: int) -> None:
        self.shutdown = shutdown
        self.key = key

    def __call__(self) -> None:
        self.shutdown._unsubscribe(self.key)


class GracefulShutdown:
    """ASGI middleware: streams below it close promptly when the server stops.

    ``app = GracefulShutdown(app)``. Every ``EventSourceResponse`` under it finds
    the ``Shutdown`` in its scope; on SIGINT/SIGTERM (chained during lifespan
    startup, main thread only) or on ``lifespan.shutdown`` it is set, each open
    stream sends its farewell event and closes within its grace period, and the
    server's "waiting for connections to close" ends at once.
    """

    def __init__(
        self,
        app: Callable[[_Scope, _Receive, _Send], Any],
        shutdown: Shutdown | None = None,
        *,
        signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM),
    ) -> None:
        self.app = app
        self.shutdown = Shutdown() if shutdown is None else shutdown
        self._signals = tuple(signals)

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        self.share(scope)
        await self.app(scope, receive, send)

    def share(self, scope: _Scope) -> None:
        """What it does to a request's ``scope`` before the app sees it: its
        ``Shutdown`` there, for the streams under it."""
        scope[SCOPE_KEY] = self.shutdown

    async def _lifespan(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        shutdown = self.shutdown
        with shutdown.signals(self._signals) as installed:
            if not installed:
                logger.debug("not in the main thread: no signal handlers chained")

            async def receive_lifespan() -> Any:
                message = await receive()
                if message["type"] == "lifespan.shutdown":
                    shutdown.set()
                return message

            await self.app(scope, receive_lifespan, send)
