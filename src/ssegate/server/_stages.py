"""A stream's coroutine on asyncio: its three stages awaited in turn, no frame between.

A coroutine that awaits the pump keeps its frame alive for the stream's whole
life, though it only has work before the pump starts and after it ends: that
frame was 296 bytes of every idle stream (issue 10; what an idle stream keeps
on a Starlette ``Route``, see ``_response.py``). ``Stages`` is what the
response returns instead: it awaits ``begin`` (send the headers, start
watching), then the session's pump, then ``end(result, error)`` with what the
pump returned or raised, exactly as one coroutine awaiting the three would
(values, exceptions and cancellation pass down to the stage running, what it
yields passes up), and while the pump runs it is one small object.
"""

from __future__ import annotations

from collections.abc import Coroutine, Generator
from typing import Any, Protocol

from ._options import CloseReason

__all__ = ["Staged", "Stages"]


class Staged(Protocol):
    """The session, as its stages see it."""

    def pump(self) -> Generator[Any, Any, bytes]: ...

    def end(self, tail: bytes, error: BaseException | None) -> Coroutine[Any, Any, CloseReason]: ...


_NEW, _BEGIN, _PUMP, _END, _DONE = range(5)


class Stages(Coroutine[Any, Any, CloseReason]):
    """Await ``begin``, then ``session.pump()``, then ``session.end(tail, error)``.

    If ``begin`` raises, the pump is skipped and ``end`` gets the error; if the
    pump raises, ``end`` gets that error (and decides whether it goes on up).
    """

    __slots__ = ("session", "stage", "step")

    def __init__(self, session: Staged, begin: Coroutine[Any, Any, None]) -> None:
        self.session = session
        self.step: Any = begin
        self.stage = _NEW

    def __await__(self) -> Generator[Any, Any, CloseReason]:
        return self  # type: ignore[return-value]  # an iterator with send and throw

    def send(self, value: Any = None) -> Any:
        # Every resumption of an idle stream's producer passes through here:
        # one comparison before the pump's own step.
        if self.stage != _PUMP:
            self.starting()
        try:
            return self.step.send(value)
        except StopIteration as done:
            return self.advance(done.value, None)
        except BaseException as exc:
            return self.advance(None, exc)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        if self.stage != _PUMP:
            self.starting()
        try:
            if val is None and tb is None:
                return self.step.throw(typ)
            return self.step.throw(typ, val, tb)
        except StopIteration as done:
            return self.advance(done.value, None)
        except BaseException as exc:
            return self.advance(None, exc)
        finally:
            # What was thrown in (an exception, as cancellation throws) would
            # otherwise stay in this frame, which its traceback holds: a cycle.
            typ = val = tb = None

    # A value of None is sent down an await chain by calling __next__.
    __next__ = send

    def starting(self) -> None:
        """Before a step that is not the pump's."""
        if self.stage == _NEW:
            self.stage = _BEGIN
        elif self.stage == _DONE:
            raise RuntimeError("cannot reuse already awaited coroutine")

    def close(self) -> None:
        if self.stage == _NEW:  # never awaited: nothing began, nothing to end
            self.stage = _DONE
            self.step.close()
        elif self.stage != _DONE:
            super().close()  # GeneratorExit thrown in, as into a coroutine

    def advance(self, result: Any, error: BaseException | None) -> Any:
        """The stage running has returned ``result`` or raised ``error``: start
        the next one and take its first step (the caller awaits on)."""
        try:
            while True:
                stage = self.stage
                if stage >= _END:
                    self.stage = _DONE
                    self.step = None
                    if error is not None:
                        raise error
                    raise StopIteration(result)
                if stage == _BEGIN and error is None:
                    self.stage = _PUMP
                    self.step = self.session.pump()
                else:
                    self.stage = _END
                    self.step = self.session.end(b"" if result is None else result, error)
                    error = None  # handed on
                try:
                    return self.step.send(None)
                except StopIteration as done:
                    result = done.value
                except BaseException as exc:
                    result, error = None, exc
        finally:
            error = None  # raised on: no cycle through its traceback and this frame
