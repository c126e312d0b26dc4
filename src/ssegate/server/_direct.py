"""Writing a stream's body straight to uvicorn's transport (httptools, asyncio only).

Every part of an event stream's body that goes through ASGI costs a message
dict, a ``send()`` coroutine and uvicorn's checks of what kind of message it
is, which response state and which framing, before its one
``transport.write()``. Once the response has started, for a chunked body that
is always the same: ``<size in hex>\\r\\n<part>\\r\\n``. ``body_writer`` finds
uvicorn's request cycle behind a ``send`` and a session then writes each part
there itself (``write_body``), the same bytes as ``send`` writes, as long as
``send`` would have written them at once; whenever it would not (writing is
paused for a client that reads slowly: ``send`` waits for it; the client left:
``send`` drops the part), ``write_body`` declines and the part goes by
``send`` as before: flow control, disconnects, keep-alives and timeouts are
``send``'s as they were.

Only where the body is uvicorn's unchanged: ``send`` is the bound
``RequestResponseCycle.send`` of httptools' protocol itself, or an object that
says it passes body messages on unchanged to one (``body_send``: the
gateway's, past its middleware); and only where the cycle has every field
used, as uvicorn has them (written against 0.54). Otherwise ``body_writer`` gives ``None``
and every part goes by ``send``.

The response head and the first part in one write (``hold_head``). uvicorn's
``send`` writes the head the moment the response starts, and a stream whose
first event is ready at once (a relayed start: the provider has answered
before the route starts the response) then writes that event right after it,
in the same loop turn: two ``write`` calls, two TCP segments, where one would
do (each ~6-8 % of a relayed start's CPU, system calls included). So, where
``send`` is uvicorn's as above, its request cycle's transport is stood in for
(``HeldHead``) while the response starts: the head uvicorn writes is held, and
goes out with whatever the cycle writes next (the first part, written past
``send`` or by it, or the end), in one write; or alone at ``release()``, which
the session calls soon after (in the same loop turn, after the steps already
due), so the head never waits for the producer: what is on the wire, and when,
is as before, less a write. The cycle has its own transport back after that
one write, whichever comes first. uvicorn's cycle writes to and closes its
``transport`` attribute only (``send``, ``run_asgi``, and ``receive``'s ``100
Continue``, before the response starts); its protocol keeps its own.
"""

from __future__ import annotations

from typing import Any

__all__ = ["HeldHead", "body_writer", "hold_head", "write_body"]

#: uvicorn's httptools ``send`` (module, qualified name), whose body parts are
#: written as in ``write_body`` (h11's go through h11's own state machine).
_SEND = ("uvicorn.protocols.http.httptools_impl", "RequestResponseCycle.send")


def _cycle(send: object) -> Any:
    """uvicorn's request cycle behind ``send``, if it has every field used; else ``None``."""
    target = getattr(send, "body_send", send)
    function = getattr(target, "__func__", None)
    name = (getattr(function, "__module__", None), getattr(function, "__qualname__", None))
    if name != _SEND:
        return None
    cycle: Any = getattr(target, "__self__", None)
    try:  # every field used here and in ``write_body``, read without a call of ours
        transport, flow, scope = cycle.transport, cycle.flow, cycle.scope
        cycle.disconnected, cycle.response_complete, cycle.chunked_encoding  # noqa: B018
    except AttributeError:
        return None
    if (
        not callable(getattr(transport, "write", None))
        or type(getattr(flow, "write_paused", None)) is not bool
        or scope.get("method") == "HEAD"
    ):
        return None
    return cycle


def body_writer(send: object, held: HeldHead | None = None) -> Any:
    """uvicorn's request cycle that ``send`` writes a started response's body
    to, if it is shaped as expected and the body is chunked; else ``None``.
    Call it once the response has started (the framing is decided then).
    ``held``: what ``hold_head(send)`` gave for this response, whose cycle
    is the one behind ``send`` (not looked for again)."""
    cycle = _cycle(send) if held is None else held.cycle
    if (
        cycle is None
        or getattr(cycle, "response_started", False) is not True
        or cycle.chunked_encoding is not True
    ):
        return None
    return cycle


def hold_head(send: object) -> HeldHead | None:
    """Before the response starts: where ``send`` writes to uvicorn's request
    cycle (shaped as ``body_writer`` needs it), stand in for its transport so
    that the head is held for the first part (``HeldHead``); else ``None``.
    The caller must ``release()`` it (soon: the head waits for nothing else)."""
    cycle = _cycle(send)
    if (
        cycle is None
        or getattr(cycle, "response_started", True) is not False
        or cycle.flow.write_paused
        or cycle.disconnected
        or not callable(getattr(cycle.transport, "is_closing", None))
        or not callable(getattr(cycle.transport, "close", None))
    ):
        return None
    held = HeldHead(cycle)
    cycle.transport = held
    return held


class HeldHead:
    """uvicorn's transport in its request cycle while the response head is held
    (see the module docstring): the first write (the head) is kept and goes
    out with the next, in one write of the transport's; ``release()`` writes it
    alone if nothing came. Either way the cycle has its transport back."""

    __slots__ = ("cycle", "head", "transport")

    def __init__(self, cycle: Any) -> None:
        self.cycle = cycle
        self.transport = cycle.transport
        self.head: bytes | None = None

    def write(self, data: Any) -> None:
        head = self.head
        if head is None:  # the head (uvicorn writes it whole, in one call)
            self.head = bytes(data)
            return
        self.head = None
        self.cycle.transport = transport = self.transport
        transport.write(head + data)

    def release(self) -> None:
        """Give the cycle its transport back, first writing the head held, if
        any (unless the client has left: ``send`` writes nothing then)."""
        cycle = self.cycle
        if cycle.transport is not self:
            return
        cycle.transport = transport = self.transport
        head, self.head = self.head, None
        if head and not cycle.disconnected and not transport.is_closing():
            transport.write(head)

    def is_closing(self) -> bool:
        return self.transport.is_closing()  # type: ignore[no-any-return]

    def close(self) -> None:
        self.release()
        self.transport.close()


#: The chunk-size lines of parts under 1 KiB (nearly every part: a token's
#: event or a few), made once: a tuple index and one join per part, where the
#: ``%`` formatting of the whole part was a fifth more work (instructions).
_SIZE_LINES = tuple(b"%x\r\n" % size for size in range(1024))
_CRLF = b"\r\n"


def write_body(cycle: Any, data: bytes) -> bool:
    """Write ``data`` as the next part of ``cycle``'s chunked body, exactly as
    uvicorn's ``send`` would (``more_body``: the response goes on), if ``send``
    would write it at once; ``False``, with nothing done, if it would not."""
    if cycle.flow.write_paused or cycle.disconnected or cycle.response_complete:
        return False
    if data:  # an empty part writes nothing (a zero size would end the body)
        size = len(data)
        if size < 1024:
            cycle.transport.write(b"".join((_SIZE_LINES[size], data, _CRLF)))
        else:
            cycle.transport.write(b"%x\r\n%s\r\n" % (size, data))
    return True
