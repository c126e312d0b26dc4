"""The running asyncio loop, known without asking: no ``getpid`` per look-up.

On CPython 3.11 every ``asyncio.get_running_loop()`` (and what calls it:
``asyncio.create_task``, a ``Future()`` without a loop, ``current_task()``)
makes a ``getpid`` system call, so that a child forked while the loop ran does
not see its parent's loop as running. A stream start looked the loop up a few
times (its session, its shutdown subscription). While ``loop_known()`` is
entered (in the loop, which runs in that thread until it is left: ``serve``
enters it for the app's whole life) ``running_loop()`` answers from a
thread-local instead; and a forked child forgets it (``os.register_at_fork``),
which is what CPython 3.12 does in place of the ``getpid``. Outside it, in other
threads, and on other libraries, ``running_loop()`` is asyncio's own look-up.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from .._fork import forget_in_child

__all__ = ["known_loop", "loop_known", "running_loop"]


class _Known(threading.local):
    loop: asyncio.AbstractEventLoop | None = None


_known = _Known()


def running_loop() -> asyncio.AbstractEventLoop:
    """``asyncio.get_running_loop()``, answered from ``loop_known()`` where it is
    entered; raises ``RuntimeError`` where no asyncio loop runs, as asyncio does."""
    loop = _known.loop
    if loop is None:
        return asyncio.get_running_loop()
    return loop


def known_loop() -> asyncio.AbstractEventLoop | None:
    """The loop ``loop_known()`` knows in this thread, or ``None`` (not entered here)."""
    return _known.loop


@contextmanager
def loop_known() -> Iterator[None]:
    """While inside (in a running asyncio loop, in its thread): ``running_loop()``
    is that loop without a look-up. Nested or elsewhere, nothing changes."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # not asyncio (trio)
        yield
        return
    if _known.loop is not None:
        yield
        return
    forget_in_child(_forget)  # a child forked while the loop ran has none running
    _known.loop = loop
    try:
        yield
    finally:
        _known.loop = None


def _forget() -> None:
    _known.loop = None
