"""``stream_response()``: serve a stream read as an ``EventSourceResponse``.

It resumes where the client left off: the ``Last-Event-ID`` header (what a
browser's ``EventSource`` sends when it reconnects) or, failing that, the
``?last_event_id=`` query parameter (for a first connection that resumes, e.g.
after a page reload; the header wins because the URL of a reconnecting
``EventSource`` never changes).

The store's summary of the stream (``info()``) is checked before the response
starts, so problems become proper HTTP answers instead of a broken stream:

- unknown stream: 404; an id that cannot belong to it (malformed, from another
  stream or an earlier stream of the same name, beyond the end): 400; store
  down: 503 (JSON bodies ``{"error": {"code", "message"}}``);
- a stream that finished with nothing left to tell the client: 204 with no
  body, the one answer that makes a browser's ``EventSource`` stop
  reconnecting, and that a browser takes for "finished normally".

Nothing left to tell means: nothing after the id, and either the stream
succeeded (``"done"``) or the client has already been told it did not. A
stream that did not succeed (its producer died: ``"failed"``; or it ended
``"error"``, ``"cancelled"``, ...) ends on the wire with an ``error`` event
carrying the end's id, also for a client that has every event already, or
none at all: a 204 would tell it all went well. When its ``EventSource``
reconnects after that event it sends the end's id and gets the 204: told once.

On the wire a ``Gap`` becomes a ``gap`` event without an ``id``, so the
client's Last-Event-ID stays on the last real event.

Read through a ``Hub`` on asyncio, a live event usually reaches the client
without the reader's task waking (``_Live``, the hub's ``Tap``): while the
response waits for the next event with nothing being sent, the hub hands the
event over from the task that appended it, which renders it there; it is sent
with what other streams took in that turn of the loop (``Session.take``).
Whenever that cannot be done at once (the response is sending, or a keep-alive
is; the end of the stream; the client left), the reader wakes and reads the
event (and the rest of its page) as before.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from types import FunctionType, MethodType
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .._exceptions import StoreUnavailable, UnknownEventId
from ..protocol import Event
from ..server import EventSourceResponse
from ..server._session import Taker
from ._hub import Hub, Tap
from ._store import (
    CANCELLED,
    DONE,
    ERROR,
    FAILED,
    End,
    Gap,
    StreamItem,
    StreamStore,
    check_after,
    format_id,
    parse_id,
)

__all__ = ["default_transform", "last_event_id", "stream_response"]

log = logging.getLogger("ssegate.streams")

#: A read that fails mid-stream is tried again this often, for this long.
STORE_RETRY_DELAY_S = 0.5
STORE_RETRY_S = 30.0

Transform = Callable[[StreamItem], Any]


def last_event_id(request: Request) -> str | None:
    """The id to resume after: the ``Last-Event-ID`` header, else ``?last_event_id=``."""
    found = None  # the header's first value (Headers.get without a KeyError when absent)
    for name, value in request.headers.raw:
        if name == b"last-event-id":
            found = value.decode("latin-1")
            break
    if found or not request.scope.get("query_string"):
        # No query string: no parameter to parse it for (a stream start's case).
        return found or None
    return request.query_params.get("last_event_id")


#: What the ``error`` event says for each outcome that is not success (others: the
#: outcome is the code).
_OUTCOME_ERRORS = {
    FAILED: ("producer_lost", "The process producing this stream stopped before finishing it."),
    ERROR: ("stream_error", "The stream ended with an error."),
    CANCELLED: ("cancelled", "The stream was cancelled before it finished."),
}


def default_transform(item: StreamItem) -> Any:
    """Events as they are; ``Gap`` as a ``gap`` event; an ``End`` that is not
    ``"done"`` as an ``error`` event with the end's id (``"done"`` sends nothing).

    A producer that writes its own final ``error`` event should pass a transform
    that sends nothing for the ``End`` (clients then get one error, not two).
    """
    if isinstance(item, Event):
        return item
    if isinstance(item, Gap):
        data = {"after": item.after, "first_id": item.first_id, "missed": item.missed}
        return Event(json.dumps(data, separators=(",", ":")), event="gap")
    if item.outcome == DONE:
        return None
    code, message = _OUTCOME_ERRORS.get(
        item.outcome, (item.outcome, f"The stream ended without finishing ({item.outcome}).")
    )
    error = {"code": code, "message": message, "retryable": False}
    return Event(json.dumps(error, separators=(",", ":")), event="error", id=item.id)


def _error(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> Response:
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers=headers)


async def stream_response(
    source: StreamStore | Hub,
    stream: str,
    request: Request,
    *,
    missing_ok: bool = False,
    transform: Transform = default_transform,
    ping: float | None = 15.0,
    headers: Mapping[str, str] | None = None,
    retry: int | None = None,
    send_timeout: float | None = None,
    after: str | None = None,
    farewell: Any = None,
    new: bool = False,
    ends_after: Collection[str] = (),
) -> Response:
    """Answer ``request`` with ``stream`` read from ``source`` (a store, or a running ``Hub``).

    ``transform(item)`` turns each ``Event``/``Gap``/``End`` into what is sent
    (anything ``EventSourceResponse`` accepts); ``None`` sends nothing. It must
    have no side effects: for a finished stream with nothing after the id it is
    also asked, before answering, whether the ``End`` has anything to say (if
    not: 204). ``missing_ok`` lets a client wait for a topic nobody has
    published to yet. ``after`` replaces the id the request names (a caller
    that read it, and resumes from an id of its own making). ``farewell`` is
    sent when the server shuts down (``EventSourceResponse``'s). ``new``: the
    caller has just made ``stream`` and this is its first reader, so it exists,
    and without an id to resume from nothing needs deciding: the store is not
    asked about it first (on Redis, one round trip less before the headers).
    ``ends_after``: the event types after which the stream usually ends at
    once (a hint: on the push path such an event waits up to a loop turn for
    the end, to leave with it in one write; nothing else changes).
    """
    store = source.store if isinstance(source, Hub) else source
    if after is None:
        after = last_event_id(request)
    if not new or after:  # (a new stream's first reader: nothing to decide)
        # Decide the status from the store's summary, not by waiting for a first
        # event: the headers (and keep-alives) must go out at once even when the
        # first token is a minute away.
        try:
            parsed = parse_id(after)
            info = await store.info(stream)
            if not info.exists and not missing_ok:
                return _error(
                    404, "stream_not_found", f"no stream named {stream!r} (or it has expired)"
                )
            last = 0 if info.last_id is None else int(info.last_id.rpartition("-")[2])
            check_after(stream, parsed, info.epoch, last, info.ended)
        except UnknownEventId as exc:
            return _error(400, "unknown_event_id", str(exc))
        except ValueError as exc:
            return _error(400, "invalid_stream", str(exc))
        except StoreUnavailable:
            return _error(
                503, "store_unavailable", "The stream store is unavailable.", {"Retry-After": "1"}
            )
        if info.ended and parsed is not None and parsed.seq > last:
            return Response(status_code=204)  # after the end's id: told of the end already
        if info.ended and (0 if parsed is None else parsed.seq) == last:
            # Nothing after the id: 204 only if the end itself has nothing to say.
            assert info.outcome is not None
            assert info.epoch is not None
            if transform(End(info.outcome, format_id(info.epoch, last + 1))) is None:
                return Response(status_code=204)
    return _live_response(
        source,
        stream,
        transform,
        after,
        missing_ok,
        ping,
        headers,
        retry,
        send_timeout,
        farewell,
        ends_after,
    )


def _live_response(
    source: StreamStore | Hub,
    stream: str,
    transform: Transform,
    after: str | None,
    missing_ok: bool,
    ping: float | None,
    headers: Mapping[str, str] | None,
    retry: int | None,
    send_timeout: float | None,
    farewell: Any,
    ends_after: Collection[str],
) -> EventSourceResponse:
    live = _Live(transform, after, ends_after)
    response = EventSourceResponse(
        _send(source, stream, live, missing_ok),
        ping=ping,
        headers=headers,
        retry=retry,
        send_timeout=send_timeout,
        farewell=farewell,
    )
    if isinstance(source, Hub):
        response.pusher = live
    return response


class _Live(Tap):
    """What a reader has sent, and its push path (the module docstring): an
    event the hub offers (``take``) is rendered and sent by the response's
    session (``Session.take``; ``session`` while the stream runs) if it
    is idle; else, or if rendering it raised (``failure``: raised by the read
    loop when the reader reads the event itself, as it would have been),
    the reader reads it."""

    __slots__ = ("after", "ends_after", "failure", "session", "taken", "transform")

    def __init__(
        self, transform: Transform, after: str | None, ends_after: Collection[str] = ()
    ) -> None:
        super().__init__()
        self.transform = _callable(transform)
        self.after = after  # the last event sent (read again after it, see _send)
        self.session: Taker | None = None
        self.failure: Exception | None = None
        self.taken = 0  # events taken
        self.ends_after = ends_after  # (``stream_response``'s)

    def take(self, event: Event) -> bool:
        session = self.session
        if session is None:
            return False
        try:
            if not session.take(self.transform, event):
                return False
        except Exception as exc:
            self.failure = exc
            return False
        self.after = event[2]  # its id (not by the property: once per event taken)
        self.taken += 1
        ends_after = self.ends_after
        if ends_after and event[1] in ends_after:
            session.linger = True
        return True

    def raise_failure(self) -> None:
        failure, self.failure = self.failure, None
        try:
            raise failure  # type: ignore[misc]
        finally:
            failure = None  # no cycle through its traceback and this frame


def _callable(transform: Transform) -> Transform:
    """``transform``, or where it is an instance of a Python class, its bound
    ``__call__``: the same call, without the type's call slot looking the method
    up and making its arguments' tuple (once per event sent: ~190 against ~60 ns)."""
    for kind in type(transform).__mro__:
        call = vars(kind).get("__call__")
        if call is not None:  # what ``transform(item)`` calls (not a static one)
            if type(call) is FunctionType:
                return MethodType(call, transform)
            break
    return transform


async def _close(items: AsyncIterator[StreamItem]) -> None:
    aclose = getattr(items, "aclose", None)
    if aclose is not None:
        await aclose()


async def _send(
    source: StreamStore | Hub, stream: str, live: _Live, missing_ok: bool
) -> AsyncIterator[Any]:
    """Read and send; if the store fails mid-read, read again after the last
    event sent (the client sees keep-alives meanwhile, nothing twice), for
    ``STORE_RETRY_S`` at most, then end the response (the client reconnects).

    Without this, the first read after Redis restarted (a pooled connection the
    old server closed) ended the stream with an ``error`` event, which readers
    take for the generation failing.
    """
    transform = live.transform
    waited = 0.0
    taken = 0
    while True:
        if isinstance(source, Hub):
            items = source.read(stream, live.after, missing_ok=missing_ok, tap=live)
        else:
            items = source.read(stream, live.after, missing_ok=missing_ok)
        try:
            async for item in items:
                waited = 0.0
                if isinstance(item, Event):
                    live.after = item.id
                if live.failure is not None:  # rendering it on the push path raised
                    live.raise_failure()
                out = transform(item)
                if out is not None:
                    yield out
            return
        except StoreUnavailable as exc:
            if live.taken != taken:  # events came (taken on the push path)
                taken = live.taken
                waited = 0.0
            if waited >= STORE_RETRY_S:
                log.warning("stream %s: the store stayed unavailable; closing: %s", stream, exc)
                return
        finally:
            await _close(items)
        await anyio.sleep(STORE_RETRY_DELAY_S)
        waited += STORE_RETRY_DELAY_S
