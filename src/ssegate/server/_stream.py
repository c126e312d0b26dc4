"""The ASGI streaming core: serve a producer of items as an event stream.

Plain ASGI, no framework: ``EventSourceResponse`` is this plus Starlette's
``Response`` clothes. See ``_session.py`` for how a stream runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, MutableMapping
from typing import Any

from ._loops import AnyioSession, AsyncioSession
from ._options import CloseReason, StreamOptions
from ._running import running_loop
from ._session import Receive, Send, Session
from ._shutdown import SCOPE_KEY, Shutdown
from ._threads import ThreadIterator

__all__ = ["open_session", "stream_events"]


def open_session(
    scope: MutableMapping[str, Any],
    receive: Receive,
    send: Send,
    content: AsyncIterable[object] | Iterable[object],
    options: StreamOptions,
) -> Session:
    """The session that will serve ``content`` on this request (``await session.run(...)``)."""
    if isinstance(content, AsyncIterable):
        producer: AsyncIterator[object] = content.__aiter__()
    else:
        producer = ThreadIterator(content)
    shutdown = options.shutdown
    if shutdown is None:
        found = scope.get(SCOPE_KEY)
        shutdown = found if isinstance(found, Shutdown) else None
    try:
        loop = running_loop()  # (no getpid where serve has it known)
    except RuntimeError:  # not asyncio: trio, through anyio
        return AnyioSession(receive, send, producer, options, shutdown).init_loop()
    return AsyncioSession(receive, send, producer, options, shutdown).init_loop(loop)


async def stream_events(
    scope: MutableMapping[str, Any],
    receive: Receive,
    send: Send,
    content: AsyncIterable[object] | Iterable[object],
    options: StreamOptions,
    *,
    status: int = 200,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> CloseReason:
    """Serve ``content`` as an event stream on one ASGI HTTP request; returns why it ended."""
    session = open_session(scope, receive, send, content, options)
    return await session.run(status, headers or [])
