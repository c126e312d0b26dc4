"""A second decode thread: the other half of every layer, in step with the caller.

Decode is bound by memory bandwidth, and one core cannot stream the 540 MB of
float32 weights per token as fast as two. ``DecodeWorker`` is a persistent
thread that runs the second shard of a forward pass (its attention heads, its
half of the feed-forward units, its half of the output head) while the calling
thread runs the first; numpy's BLAS releases the GIL, so the two really run at
once, each in a single-threaded BLAS call (no OpenBLAS thread pool spinning).

The threads meet twice per layer to add up their partial sums (``exchange``):
each hands the other its array through a ``queue.SimpleQueue``, the cheapest
blocking handoff the standard library has (a C lock; waiting releases the GIL).
Blocking rather than spinning keeps a busy machine from collapsing it, which is
what OpenBLAS's own threads do when the other core is taken.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from queue import Empty, SimpleQueue
from typing import Any

__all__ = ["DecodeWorker", "Exchange"]


class _Aborted(Exception):
    """The calling thread gave up on the forward pass (it raised)."""


class _WorkerFailed(Exception):
    """The worker's job raised ``error`` and is over."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(error)
        self.error = error


_ABORT = object()
_STOP = object()


@dataclass(frozen=True, slots=True)
class _Failed:
    error: BaseException


@dataclass(frozen=True, slots=True)
class _Result:
    value: Any


class Exchange:
    """One side of the two threads' meeting point: give an array, get the other's."""

    def __init__(self, send: SimpleQueue[Any], receive: SimpleQueue[Any], main: bool) -> None:
        self._send = send
        self._receive = receive
        self.main = main

    def swap(self, value: Any) -> Any:
        self._send.put(value)
        got = self._receive.get()
        if got is _ABORT:
            raise _Aborted
        if isinstance(got, _Failed):
            raise _WorkerFailed(got.error)
        return got


class DecodeWorker:
    """A daemon thread that runs one job at a time beside the calling thread.

    ``try_run(job, own)`` starts ``job(exchange)`` on the worker, runs
    ``own(exchange)`` in the calling thread, and returns ``(own's result, job's
    result)``; when another caller has the worker it returns ``None`` at once, and
    the caller does the work alone. An error on either side ends both and is
    raised in the caller. ``close()`` ends the thread.
    """

    def __init__(self, name: str = "ssegate-decode") -> None:
        self._jobs: SimpleQueue[Any] = SimpleQueue()
        to_worker: SimpleQueue[Any] = SimpleQueue()
        to_main: SimpleQueue[Any] = SimpleQueue()
        self._to_worker = to_worker
        self._to_main = to_main
        self._main_side = Exchange(to_worker, to_main, main=True)
        self._worker_side = Exchange(to_main, to_worker, main=False)
        self._lock = threading.Lock()  # one run at a time
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is _STOP:
                return
            try:
                result = job(self._worker_side)
            except _Aborted:
                self._to_main.put(_Failed(_Aborted()))
            except BaseException as exc:  # reported to the caller, who raises it
                self._to_main.put(_Failed(exc))
            else:
                self._to_main.put(_Result(result))

    def try_run(
        self, job: Callable[[Exchange], Any], own: Callable[[Exchange], Any]
    ) -> tuple[Any, Any] | None:
        """``(own's result, job's result)``, or ``None`` at once if the worker is busy or closed."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            if self._closed:
                return None
            self._jobs.put(job)
            try:
                mine = own(self._main_side)
            except _WorkerFailed as failed:  # the job is over already
                self._drain()  # what we sent that it never read
                raise failed.error from None
            except BaseException:
                self._abort()
                raise
            # the job's last word: its result, or its error
            theirs = self._to_main.get()
            if isinstance(theirs, _Failed):
                raise theirs.error
            assert isinstance(theirs, _Result)
            return mine, theirs.value
        finally:
            self._lock.release()

    def _abort(self) -> None:
        """Stop the worker's job and wait until it has let go of the shared state."""
        self._to_worker.put(_ABORT)
        while not isinstance(self._to_main.get(), _Failed | _Result):
            pass  # partial sums it sent before it saw the abort
        self._drain()  # an abort the job never read (it had already finished)

    def _drain(self) -> None:
        while True:
            try:
                self._to_worker.get_nowait()
            except Empty:
                break

    @property
    def busy(self) -> bool:
        return self._lock.locked()

    def close(self, timeout: float = 10.0) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._jobs.put(_STOP)
        self._thread.join(timeout)
