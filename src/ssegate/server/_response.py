"""``EventSourceResponse``: the event-stream core dressed as a Starlette ``Response``.

Being a ``Response`` is what lets FastAPI accept it as a return value and as
``response_class`` (for the OpenAPI content type); everything it does happens
in the plain-ASGI core, ``_stream.py``.

Compression: Starlette's ``GZipMiddleware`` leaves ``text/event-stream`` alone
(it is in ``DEFAULT_EXCLUDED_CONTENT_TYPES``); keep it in the list if you pass
``exclude_content_types``. If a compressing middleware wraps the stream anyway,
it still works: the first (empty) body message is sent with the headers, so a
middleware that holds the headers until it sees a body releases them at once,
and Starlette's compressor flushes every message (``Z_SYNC_FLUSH``).

The cyclic garbage collector (issue 10). Returned from a Starlette ``Route``,
streams were 2-6x later (p99) than Starlette's own ``StreamingResponse`` on
the same route, and ``gc.disable()`` in the server made that go away. What
was found, with ``gc.callbacks`` timing each collection in the benchmark's
server, ``gc.get_objects()`` counted by type per open stream and
``gc.DEBUG_SAVEALL`` after streams ended every possible way
(``tests/server/test_gc.py``):

* Collections run only while connections open. A stream's events die by
  reference count (no collection ran in steady state), but each new stream
  adds tracked objects (ours, Starlette's route, uvicorn's), a collection of
  generation 0 runs every 700 of them, of generation 1 every tenth, and a full
  one whenever what was promoted since the last one passes a quarter of the
  long-lived heap; a full collection walks everything, start-up objects
  included (~28 000 in a Starlette app, ~55 000 in FastAPI), and stopped the
  loop for 35-150 ms at 300-1 000 streams on the benchmark machine. So each
  object a stream keeps costs in how often and how long the loop stops.
* Per stream, ssegate's own share was 26 tracked objects, then 17, then 14,
  and is 13 (pinned in the test): a finished aside task was kept with its
  coroutine, context and weak reference; every task and timer copied the
  context; a bound clock, a bound ``__anext__``, a list for the batch, this
  response's own ``__call__`` frame and the session's ``run`` frame were kept
  for the stream's life. Now the watcher and the timers share one context,
  the batch is a ``bytearray`` (not tracked) made only while items come
  ready, ``__call__`` returns the session's coroutine, on asyncio the pump's
  generator (``_awaitable``), and a response with the default headers keeps
  no header list.
  The keep-alives of all streams on a loop share one loop timer
  (``_keepalive``: a set entry per stream where a ``TimerHandle``, a libuv
  timer and a bound method were ~410 bytes). Under uvicorn the watcher is no
  task and runs no coroutine: it waits among the request cycle's message event
  waiters (``_watch``), where a ``receive()`` and an ``Event.wait()``
  coroutine with a future were ~650 bytes; and it is no object either: the
  session itself waits there.
* On a FastAPI endpoint behind CORS, GZip and a timing middleware, under
  uvicorn, a stream keeps ~120 tracked objects, ~116 of which any response
  keeps there (a hand-written one that only forwards the producer's items):
  the chain of ~22 middleware and routing coroutines awaiting the response,
  their closures and bound methods, two ``Request`` objects, three
  ``AsyncExitStack``s, uvicorn's connection. Ours over that floor: the
  session and one context (pinned in ``tests/server/test_fastapi_gc.py``; it
  was 3 with a ``Watch`` object). The FastAPI rows' full collections walk
  ~175 000 objects at 1 000 streams (56 000 of them start-up), 3-4x raw
  ASGI's; they and their timing are the same with the hand-written response
  (``hand-written@fastapi`` in ``benchmarks/server.py``), so what is left of
  their lateness is not the response's to cut (see docs/benchmarks.md).
* What an idle stream on a Starlette ``Route`` keeps, measured in one uvicorn
  process holding 1 000 of them (``tracemalloc`` grouped by traceback and
  ``gc.get_objects()`` by type for the attribution, RSS growth per stream in
  ``benchmarks/server.py --only memory``): 9.1 KiB is uvicorn's connection (a
  raw ASGI app holding the connection open: 9.1), 5.3 the ``Route`` and its
  Starlette frames, closures and two ``Request`` objects, ~1.6 the
  benchmark's idle producer (its frames, ``asyncio.sleep``'s future and
  timer). A hand-written response that only awaits the producer and sends
  (no disconnect watch, no keep-alive; the ``hand-written@route`` row) holds
  16.8-17.8 KiB: 0.40x sse-starlette. ssegate held 17.4-17.6 (0.42x), ~0.9 KB
  (traced) above that floor: its session, its ``run`` coroutine and the
  pump's frame, the watcher, a context, its wheel entry. Three cuts took it
  below the floor: uvicorn's request cycle and flow control each keep an
  ``asyncio.Event`` whose waiters are a 760-byte ``deque``, which the watcher
  replaces with a list (``_watch``; ~1.4 KB); the pump's generator is the
  stream's whole life on asyncio, with no ``run`` coroutine awaiting it (its
  frame was 296 bytes; ``_awaitable``), and the wheel entry keeps no float of
  its own. Traced per stream: 17 190 bytes before, 15 520 after (the
  hand-written response: 16 320). In one run (1 000 and 10 000 streams,
  medians of 3 and 1, load average ~6 on 2 cores) ssegate held 15.7 and 15.9
  KiB per stream, sse-starlette 41.8 and 41.8, the hand-written response 17.8
  and 16.8: 0.38x sse-starlette (was 0.42x), below the hand-written response.
* Per event, an item was made into a validated ``Event`` before encoding:
  1.5 us of ~3.8 us per event. ``str`` and ``dict`` items are now encoded
  directly (0.2 us). In-process, 200 streams x 200 events that each come after
  a wait, uvloop: 3.8 -> 2.6 us per event bare, 6.7 -> 4.7 us on a ``Route``
  (``StreamingResponse`` on the same route: 3.6 us, with no keep-alives, no
  disconnect watcher and no batching).
* Under load, producers fall behind and their items come ready together:
  each such batch was handed to a new aside task (a task, its coroutine,
  context and weak reference, an event, a future), alive while it sent, so
  promoted by the collections it triggered. The pump now sends the batch
  itself when the send needs no waiting (uvicorn's, and pure-ASGI
  middleware's, unless the socket is full); a task only finishes a send that
  must wait. In-process, 300 streams, bursts of 3 ready items on a ``Route``:
  117 collections and 0.26 s of CPU before, 36 and 0.15 s after
  (``StreamingResponse``: 54, 0.12 s). On trio a wait cannot change tasks,
  so a task must send while the pump waits on the producer: the stream
  starts one sender task at its first hand-over and keeps it for every later
  one (and for keep-alives), where it started a task per batch.
* Reference cycles: none on asyncio, on any path, before or after. On trio, a
  stream cancelled (client gone, shutdown) left one: the pump's frame held the
  ``Outcome`` trio sent in, whose exception's traceback held the frame
  (~85 objects per stream); the pump now drops it.

A long-lived server may also take its start-up objects out of every later
collection: ``ssegate.server.freeze_startup_objects()`` at the end of start-up.
In ``benchmarks/server.py`` (300 streams connecting at once, medians of 5
runs on a shared 2-core machine) the longest collection in the FastAPI app was
9.5 ms frozen (row ``ssegate@fastapi+frozen``); unfrozen, runs that had a full
collection stalled 63-158 ms (``ssegate@route`` 70, ``streaming@route`` 63,
``sse-starlette@fastapi`` 158).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterable, Coroutine, Iterable, Mapping, MutableMapping
from typing import Any

from starlette.background import BackgroundTask
from starlette.responses import Response

from ._options import (
    DEFAULT_OPTIONS,
    DEFAULT_PING_S,
    CloseReason,
    ErrorEvent,
    OnClose,
    StreamOptions,
    check_content,
    default_error_event,
)
from ._session import Pusher, Receive, Send
from ._shutdown import Shutdown
from ._stream import open_session

__all__ = ["SSE_HEADERS", "EventSourceResponse"]

# Sent with every event stream (the WSGI helper uses them too). X-Accel-Buffering
# stops nginx from buffering (BerriAI/litellm#28384); no Connection header, which
# HTTP/2 forbids.
SSE_HEADERS: Mapping[str, str] = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}
_RAW_SSE_HEADERS = tuple(
    (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in SSE_HEADERS.items()
)


#: The options last made by ``_options`` and what they were made from.
_last_options: tuple[tuple[Any, ...], StreamOptions] | None = None


def _options(
    ping: float | None,
    send_timeout: float | None,
    retry: int | None,
    farewell: Any,
    shutdown_grace: float,
) -> StreamOptions:
    """``StreamOptions`` of these (the rest default), shared with the last
    response made from the very same objects: a server passes the same settings
    to every stream (``StreamOptions`` is shared by design)."""
    global _last_options
    last = _last_options
    if last is not None:
        was = last[0]
        if (
            was[0] is ping
            and was[1] is send_timeout
            and was[2] is retry
            and was[3] is farewell
            and was[4] is shutdown_grace
        ):
            return last[1]
    options = StreamOptions(
        ping=ping,
        send_timeout=send_timeout,
        retry=retry,
        farewell=farewell,
        shutdown_grace=shutdown_grace,
    )
    _last_options = ((ping, send_timeout, retry, farewell, shutdown_grace), options)
    return options


class EventSourceResponse(Response):
    """Stream ``content`` to the client as Server-Sent Events.

    ``content`` is a sync iterable (pulled in worker threads), an async
    iterable or an async generator of items: ``Event``, ``str`` (the data of a
    ``message`` event), ``dict`` (JSON data) or ``bytes`` (already encoded).

    * ``ping``: seconds of silence before a keep-alive comment, from the very
      start (a model may think for a minute before its first token); ``None``
      turns keep-alives off.
    * ``send_timeout``: a client that accepts no bytes for that many seconds
      (half-open socket, stalled proxy) is dropped.
    * ``retry``: milliseconds to send as the ``retry:`` field first.
    * ``on_close(reason)``: called once, sync or async, with the ``CloseReason``.
    * ``error_event(exc)``: the item sent when the producer raises (the
      traceback goes to the ``ssegate.server`` log); ``None`` sends nothing.
    * ``shutdown``: the ``Shutdown`` to obey (default: the one
      ``GracefulShutdown`` put in the scope, if any). When set, the producer has
      ``shutdown_grace`` seconds to finish, then it is cancelled, ``farewell``
      (if given) is sent and the response ends; a client that cannot take it
      within ``SHUTDOWN_SEND_S`` more seconds is cut off.

    A stream leaves no reference cycles on any path it can end by, and keeps
    few objects for the cyclic collector to walk (see the module docstring):
    nothing needs tuning in the app, though a long-lived server may call
    ``freeze_startup_objects()`` once started.
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        content: AsyncIterable[Any] | Iterable[Any],
        *,
        ping: float | None = DEFAULT_PING_S,
        headers: Mapping[str, str] | None = None,
        status_code: int = 200,
        send_timeout: float | None = None,
        retry: int | None = None,
        on_close: OnClose | None = None,
        error_event: ErrorEvent | None = default_error_event,
        farewell: Any = None,
        shutdown: Shutdown | None = None,
        shutdown_grace: float = 0.0,
        background: BackgroundTask | None = None,
    ) -> None:
        check_content(content)
        self.content = content
        if (
            ping == DEFAULT_PING_S
            and send_timeout is None
            and retry is None
            and on_close is None
            and error_event is default_error_event
            and farewell is None
            and shutdown is None
            and shutdown_grace == 0
        ):
            self.options = DEFAULT_OPTIONS
        elif on_close is None and error_event is default_error_event and shutdown is None:
            self.options = _options(ping, send_timeout, retry, farewell, shutdown_grace)
        else:
            self.options = StreamOptions(
                ping=ping,
                send_timeout=send_timeout,
                retry=retry,
                on_close=on_close,
                error_event=error_event,
                farewell=farewell,
                shutdown=shutdown,
                shutdown_grace=shutdown_grace,
            )
        self.status_code = status_code
        self.background = background
        if headers is not None and type(self) is EventSourceResponse:
            # Starlette's init_headers and the defaults in one pass, the same
            # list: the pairs given, then each default not given (Starlette's
            # content-type for this class is the default's).
            raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
            present = {name for name, _ in raw}
            raw += [pair for pair in _RAW_SSE_HEADERS if pair[0] not in present]
            self._raw_headers = raw
        elif headers is not None or type(self) is not EventSourceResponse:
            self.init_headers(headers)
            present = {name for name, _ in self.raw_headers}
            self.raw_headers += [pair for pair in _RAW_SSE_HEADERS if pair[0] not in present]
        self.close_reason: CloseReason | None = None

    def __call__(
        self, scope: MutableMapping[str, Any], receive: Receive, send: Send
    ) -> Coroutine[Any, Any, Any]:
        # Not a coroutine function: it returns the session's own coroutine (on
        # asyncio, the pump's generator, the stream's whole life), so a stream
        # keeps no frame of the response's alive and every resumption of the
        # producer passes through fewer frames (see the module docstring).
        if scope.get("method") == "HEAD":
            return self._head(send)
        session = open_session(scope, receive, send, self.content, self.options)
        session.pusher = self.pusher
        headers = self._raw_headers
        if headers is None:  # a list only for the start message, not kept
            headers = list(_RAW_SSE_HEADERS)
        return session.run(self.status_code, headers, self)

    #: The producer's push path (``Session.take``), set by ``stream_response``
    #: for a read through a hub.
    pusher: Pusher | None = None

    # The header pairs: made on first use. With no headers given, a stream
    # keeps no list of its own for its whole life (only its start message had one).
    _raw_headers: list[tuple[bytes, bytes]] | None = None

    @property
    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        headers = self._raw_headers
        if headers is None:
            headers = self._raw_headers = list(_RAW_SSE_HEADERS)
        return headers

    @raw_headers.setter
    def raw_headers(self, value: list[tuple[bytes, bytes]]) -> None:
        self._raw_headers = value

    async def finished(self, reason: CloseReason) -> None:
        """Called by the session once the stream has ended (not if cancelled)."""
        self.close_reason = reason
        if self.background is not None:
            await self.background()

    async def _head(self, send: Send) -> None:
        """A HEAD answer: the headers, no body. Nothing is produced; the producer
        is closed unstarted (its ``finally`` runs) and ``on_close`` hears COMPLETED."""
        start = {"type": "http.response.start", "status": self.status_code}
        await send({**start, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        content: Any = self.content
        if hasattr(content, "aclose"):
            await content.aclose()
        elif hasattr(content, "close"):
            content.close()
        self.close_reason = CloseReason.COMPLETED
        on_close = self.options.on_close
        if on_close is not None:
            result = on_close(CloseReason.COMPLETED)
            if inspect.isawaitable(result):
                await result
