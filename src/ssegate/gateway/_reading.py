"""Serving a generation's stream to a reader, in the format it asks for.

``serve_generation()`` answers with ``stream_response`` over the process's
``Hub`` (replay after ``Last-Event-ID``, then live; 404/400/204/503 decided
before the first byte) and renders each stored event (``_records``) with a
formatter from ``ssegate.llm.formats``. Every event rendered from a stored
event carries an id (``_with_ids``), so a reader resumes in any format at any point.

Formatters keep state (OpenAI's ``role`` goes in the first delta only, the AI
SDK opens and closes blocks), so a reader that resumes first feeds the
formatter, silently, the events it already has: what it then sends is exactly
what it would have sent on the first connection.

One stored event may become several on the wire (OpenAI's finish chunk and
``[DONE]``, the AI SDK's ``text-start`` and first ``text-delta``). Only the
last of them carries the stored event's id; the ones before it carry that id
with the count sent so far (``<id>.1``, ``<id>.2``). A reader cut in between
resumes after ``<id>.1``: the stored event is rendered again and its first
part not re-sent. One id for all of them would lose the rest (``[DONE]``
after a cut: the stream looks finished to the server) and no id on the first
would repeat them.

``Reader`` wraps a response to count the reader while it streams: the runner's
detach grace and the ``subscribers``/``disconnects`` metrics hear of it.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping, MutableMapping
from contextlib import aclosing
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from .._exceptions import StreamError
from ..llm import Error
from ..llm.formats import Formatter, create_formatter
from ..protocol import Event, encode
from ..server import CloseReason, EventSourceResponse
from ..streams import (
    DONE,
    Gap,
    StreamItem,
    default_transform,
    format_id,
    last_event_id,
    parse_id,
    stream_response,
)
from ._errors import api_error
from ._gateway import Gateway
from ._records import LAST_RECORDS, TEXT_HEAD, TEXT_RECORD, from_record

__all__ = ["FAREWELL", "RAW_SEND_KEY", "Reader", "Renderer", "openai_error", "serve_generation"]

#: Where the app leaves the ``send`` it was called with, when its middleware
#: leaves body messages alone (``_app._GatewayApp``): a stream's body goes there.
RAW_SEND_KEY = "ssegate.raw_send"

#: What every open stream gets when the gateway shuts down, before it closes:
#: reconnect in a second (to another replica, behind a balancer), and why, as a
#: comment; no event, so no client (the OpenAI SDK neither) sees anything else.
FAREWELL = b"retry: 1000\n: the gateway is shutting down; reconnect to resume\n\n"


class Renderer:
    """The ``transform`` of ``stream_response``: stored events -> one format's events."""

    def __init__(self, name: str, *, include_usage: bool = False, sent_part: int = 0) -> None:
        options = {"include_usage": include_usage} if name == "openai" else {}
        self.format = name
        self.formatter: Formatter = create_formatter(name, **options)
        self.headers = dict(self.formatter.headers)
        self.sent = 0
        #: Of the first stored event to render, how many wire events the reader has.
        self.sent_part = sent_part
        #: A text record's wire bytes now, around its id and its text's JSON (``_frame``).
        self._frame: tuple[str, str, str] | None = None
        self._reframe()

    def skip(self, record: Event) -> None:
        """Feed an event the reader already has (no output)."""
        self.formatter.format(from_record(record))
        self._reframe()

    def _reframe(self) -> None:
        """After the formatter changed: how it renders a text record now, if in
        one event (its ``text_frame``), as the wire's text around the record's
        id and text: ``[event: <type>\n]id: `` <id> ``\ndata: <before>`` <text>
        ``<after>\n\n`` (what ``encode`` writes: formats make one line of
        data, and the store's ids are valid)."""
        frame = None if self.sent_part else self.formatter.text_frame()
        if frame is None:
            self._frame = None
            return
        kind, before, after = frame
        head = "id: " if kind == "message" else f"event: {kind}\nid: "
        self._frame = (head, "\ndata: " + before, after + "\n\n")

    def __call__(self, item: StreamItem) -> bytes | Event | None:
        frame = self._frame
        if frame is not None and type(item) is Event and item[1] == TEXT_RECORD:
            # Nearly every event: the text goes from the record's JSON to the
            # format's as it is, never decoded and encoded again.
            data = item[0]
            if data.startswith(TEXT_HEAD):
                self.sent += 1
                return f"{frame[0]}{item[2]}{frame[1]}{data[_TEXT_AT:-1]}{frame[2]}".encode()
        if isinstance(item, Event):
            out = self.formatter.format(from_record(item))
            skip, self.sent_part = self.sent_part, 0
            self._reframe()
            self.sent += len(out) - min(skip, len(out))
            return _with_ids(out, item.id, skip) if len(out) > skip else None
        if isinstance(item, Gap):
            return default_transform(item)  # type: ignore[no-any-return]
        if item.outcome == DONE or getattr(self.formatter, "done", False):
            return None
        # The stream ended without its own last event (stopped, or its replica
        # died): say so in this format. On a copy: a transform has no side effects.
        said = default_transform(item)
        error = json.loads(said.data)
        out = copy.copy(self.formatter).format(Error(error["code"], error["message"]))
        return _with_ids(out, item.id, self.sent_part) if len(out) > self.sent_part else None


_new = tuple.__new__
_TEXT_AT = len(TEXT_HEAD)


def _with_ids(events: list[Event], event_id: str | None, skip: int = 0) -> bytes:
    """``events`` (rendered from the stored event ``event_id``) from number ``skip``
    on, the last with ``event_id``, each before it with ``<event_id>.<n>``."""
    # Formatters make valid events and the store's ids are valid: no checks again.
    last = len(events) - 1
    if last == 0:
        e = events[0]
        return encode(_new(Event, (e.data, e.event, event_id, e.retry)))
    return b"".join(
        encode(
            _new(
                Event, (e.data, e.event, event_id if n == last else f"{event_id}.{n + 1}", e.retry)
            )
        )
        for n, e in enumerate(events)
        if n >= skip
    )


_PART = re.compile(r"([0-9a-f]{8})-([0-9]{1,20})\.([0-9]{1,3})\Z")


def _split_part(after: str) -> tuple[str, int]:
    """A resume id ``<id>.<n>`` as (the id before ``<id>``, ``n``); others as they are."""
    if not after:  # a first reader (a stream start's): nothing to match
        return after, 0
    match = _PART.match(after)
    if match is None or int(match[2]) == 0 or int(match[3]) == 0:
        return after, 0
    return format_id(match[1], int(match[2]) - 1), int(match[3])


async def _skip_seen(gateway: Gateway, stream: str, after: str, renderer: Renderer) -> None:
    """Feed ``renderer`` the events up to ``after`` (a resuming reader has them)."""
    try:
        target = parse_id(after)
        info = await gateway.store.info(stream)
    except (StreamError, ValueError):
        return  # stream_response answers the bad id or the missing stream
    if target is None or info.last_id is None or parse_id(info.last_id).seq < target.seq:  # type: ignore[union-attr]
        return
    async with aclosing(gateway.store.read(stream)) as items:  # type: ignore[type-var]
        async for item in items:
            if not isinstance(item, Event) or parse_id(item.id).seq > target.seq:  # type: ignore[union-attr]
                return
            renderer.skip(item)
            if item.id == after:
                return


async def serve_generation(
    gateway: Gateway,
    stream: str,
    request: Request,
    *,
    format: str = "native",
    include_usage: bool = False,
    headers: Mapping[str, str] | None = None,
    attached: bool = False,
    new: bool = False,
) -> Response:
    """Answer ``request`` with ``stream`` rendered in ``format``.

    ``attached``: the caller already counted this reader (``runner.attach``).
    ``new``: the caller has just started ``stream`` (``stream_response``'s).
    """
    after, part = _split_part(last_event_id(request) or "")
    renderer = Renderer(format, include_usage=include_usage, sent_part=part)
    if after:
        gateway.metrics.resumes.inc()
        await _skip_seen(gateway, stream, after, renderer)
    response = await stream_response(
        gateway.hub,
        stream,
        request,
        after=after,
        transform=renderer,
        ping=gateway.settings.keep_alive,
        send_timeout=gateway.settings.send_timeout,
        farewell=FAREWELL,
        headers={**renderer.headers, **(headers or {})},
        new=new,
        ends_after=LAST_RECORDS,
    )
    if not isinstance(response, EventSourceResponse):
        if attached:
            gateway.runner.detach(stream)
        return openai_error(response)
    return Reader(response, gateway, stream=stream, attached=attached, renderer=renderer)


def openai_error(response: Response) -> Response:
    """``stream_response``'s JSON errors in OpenAI's shape (other answers as they are)."""
    if response.status_code < 400:
        return response
    error = json.loads(bytes(response.body))["error"]
    headers = {k: v for k, v in response.headers.items() if k.lower() == "retry-after"}
    return api_error(response.status_code, error["message"], code=error["code"], headers=headers)


class Reader(Response):
    """``inner`` (an event stream), counting its reader while it runs.

    For a generation's ``stream`` the runner (detach grace) and the presence
    marks hear of it; ``attached``: the caller counted it with the runner already.
    """

    def __init__(
        self,
        inner: EventSourceResponse,
        gateway: Gateway,
        *,
        stream: str | None = None,
        attached: bool = False,
        renderer: Renderer | None = None,
    ) -> None:
        # Not Response.__init__: the inner response renders everything.
        self.inner = inner
        self.status_code = inner.status_code
        self.raw_headers = inner.raw_headers
        self.background = None
        self._gateway = gateway
        self._stream = stream
        self._attached = attached
        self._renderer = renderer

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        gateway, stream = self._gateway, self._stream
        metrics = gateway.metrics
        if stream is not None:
            if not self._attached:
                gateway.runner.attach(stream)
            gateway.presence.add(stream)
        kind = "topic" if stream is None else "stream"
        metrics.live.readers[kind] += 1  # (what ``metrics.subscribers`` reports)
        raw = scope.get(RAW_SEND_KEY)
        try:
            await self.inner(scope, receive, send if raw is None else _BodyStraight(send, raw))
        finally:
            metrics.live.readers[kind] -= 1
            if self.inner.close_reason in (CloseReason.CLIENT_GONE, CloseReason.SEND_TIMEOUT):
                metrics.disconnects.inc()
            if stream is not None:
                gateway.presence.remove(stream)
                gateway.runner.detach(stream)
            renderer = self._renderer
            if renderer is not None:
                metrics.events_sent_of[renderer.format].inc(renderer.sent)
        if self.background is not None:
            await self.background()


class _BodyStraight:
    """A ``send`` passing ``http.response.start`` through the middleware
    (``through``) and body messages straight to the server's ``send``
    (``body_send``, which the session may write past, ``server._direct``):
    the middleware only looks at the start (see ``_app._GatewayApp``).

    Not a coroutine function: it returns the coroutine of the ``send`` it
    picks, so a body message costs one call and no frame of its own.
    """

    __slots__ = ("body_send", "through")

    def __init__(self, through: Any, body_send: Any) -> None:
        self.through = through
        self.body_send = body_send

    def __call__(self, message: MutableMapping[str, Any]) -> Any:
        if message["type"] == "http.response.body":
            return self.body_send(message)
        return self.through(message)
