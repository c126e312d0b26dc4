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
"""

from __future__ import annotations

from typing import Any

__all__ = ["body_writer", "write_body"]

#: uvicorn's httptools ``send`` (module, qualified name), whose body parts are
#: written as in ``write_body`` (h11's go through h11's own state machine).
_SEND = ("uvicorn.protocols.http.httptools_impl", "RequestResponseCycle.send")

#: What ``write_body`` reads of the request cycle.
_FIELDS = ("transport", "flow", "disconnected", "response_complete", "chunked_encoding", "scope")


def body_writer(send: object) -> Any:
    """uvicorn's request cycle that ``send`` writes a started response's body
    to, if it is shaped as expected and the body is chunked; else ``None``.
    Call it once the response has started (the framing is decided then)."""
    target = getattr(send, "body_send", send)
    function = getattr(target, "__func__", None)
    name = (getattr(function, "__module__", None), getattr(function, "__qualname__", None))
    if name != _SEND:
        return None
    cycle: Any = getattr(target, "__self__", None)
    if (
        not all(hasattr(cycle, field) for field in _FIELDS)
        or not callable(getattr(cycle.transport, "write", None))
        or type(getattr(cycle.flow, "write_paused", None)) is not bool
        or getattr(cycle, "response_started", False) is not True
        or cycle.chunked_encoding is not True
        or cycle.scope.get("method") == "HEAD"
    ):
        return None
    return cycle


def write_body(cycle: Any, data: bytes) -> bool:
    """Write ``data`` as the next part of ``cycle``'s chunked body, exactly as
    uvicorn's ``send`` would (``more_body``: the response goes on), if ``send``
    would write it at once; ``False``, with nothing done, if it would not."""
    if cycle.flow.write_paused or cycle.disconnected or cycle.response_complete:
        return False
    if data:  # an empty part writes nothing (a zero size would end the body)
        cycle.transport.write(b"%x\r\n%s\r\n" % (len(data), data))
    return True
