"""Sync producers, pulled in worker threads so they never block the event loop."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import anyio.to_thread

__all__ = ["ThreadIterator"]

_DONE: Any = object()


class ThreadIterator:
    """A sync iterable pulled in worker threads, so it never blocks the event loop.

    Cancellation does not wait for a ``next()`` that is blocked in its thread
    (the thread is abandoned); the iterator is closed by that thread as soon as
    its ``next()`` returns, so a generator's ``finally`` still runs.
    """

    __slots__ = ("_closing", "_iterator", "_lock", "_running")

    def __init__(self, iterable: Iterable[object]) -> None:
        self._iterator: Iterator[object] = iter(iterable)
        self._lock = threading.Lock()
        self._running = False
        self._closing = threading.Event()

    def __aiter__(self) -> ThreadIterator:
        return self

    async def __anext__(self) -> object:
        item = await anyio.to_thread.run_sync(self._next, abandon_on_cancel=True)
        if item is _DONE:
            raise StopAsyncIteration
        return item

    def _next(self) -> object:
        with self._lock:
            if self._closing.is_set():
                return _DONE
            self._running = True
        try:
            return next(self._iterator, _DONE)
        finally:
            with self._lock:
                self._running = False
                close_now = self._closing.is_set()
            if close_now:
                self._close()

    def _close(self) -> None:
        close: Callable[[], object] | None = getattr(self._iterator, "close", None)
        if close is not None:
            close()

    async def aclose(self) -> None:
        with self._lock:
            already = self._closing.is_set()
            self._closing.set()
            running = self._running
        if already or running:
            return  # the thread running next() closes it when next() returns
        await anyio.to_thread.run_sync(self._close)
