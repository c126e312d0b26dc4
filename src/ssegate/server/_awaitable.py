"""A plain generator dressed as a coroutine: awaiting it awaits the generator itself.

A stream's life is one generator, its session's pump (``Session.pump``). On
asyncio it is the whole life: it awaits ``begin`` (send the headers, start
watching), runs, then awaits ``end`` with what it returned or raised. Before,
a ``run`` coroutine awaited the pump, and kept its frame alive for the
stream's whole life though it only had work before the pump started and after
it ended: 296 bytes of every idle stream (issue 10; what an idle stream keeps
on a Starlette ``Route``, see ``_response.py``).

``GeneratorCoroutine`` is what the response returns. Awaited, as Starlette and
every ASGI server do, it hands the ``await`` the generator itself (and is
dropped), so each resumption of the producer passes through one frame of
ours, the pump's. Run as a task's coroutine, or stepped by hand, it forwards
``send``, ``throw`` and ``close`` to the same generator.

The pump is a plain generator because ``__await__`` may not return a
generator-based coroutine (``types.coroutine``); and this wrapper is a
``collections.abc.Coroutine`` because ``asyncio.create_task`` takes no plain
generator (nor, from Python 3.12, a generator-based coroutine).
"""

from __future__ import annotations

from collections.abc import Coroutine, Generator
from typing import Any, TypeVar

__all__ = ["GeneratorCoroutine"]

T = TypeVar("T")


class GeneratorCoroutine(Coroutine[Any, Any, T]):
    """``life``, a generator that yields what it awaits, as a coroutine.

    ``first``: a coroutine ``life`` awaits first, closed with it if it is
    closed before it started (as closing a coroutine that never ran is silent).
    """

    __slots__ = ("awaited", "first", "life")

    def __init__(
        self, life: Generator[Any, Any, T], first: Coroutine[Any, Any, Any] | None = None
    ) -> None:
        self.life = life
        self.first = first
        self.awaited = False

    def __await__(self) -> Generator[Any, Any, T]:
        if self.awaited:
            raise RuntimeError("cannot reuse already awaited coroutine")
        self.awaited = True
        self.first = None
        return self.life

    def send(self, value: Any) -> Any:
        self.awaited = True
        self.first = None
        return self.life.send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        self.awaited = True
        self.first = None
        try:
            if val is None and tb is None:
                return self.life.throw(typ)
            return self.life.throw(typ, val, tb)
        finally:
            # What was thrown in would otherwise stay in this frame, which its
            # traceback holds: a reference cycle.
            typ = val = tb = None

    def close(self) -> None:
        self.life.close()
        if self.first is not None:  # never started: nor did it
            self.first.close()
            self.first = None
