"""The one async driver every HTTP provider adapter runs on.

An adapter is two pure pieces: ``build_request(ChatRequest) -> HTTPRequest`` and
a ``FrameParser`` (bytes in, unified events out). ``drive()`` is the short loop
that connects them over HTTP (``_client``: aiohttp by default, or httpx):

- send the request; a non-2xx answer, or no answer at all, raises a typed
  ``ProviderError`` (nothing has been yielded yet, so the caller may retry);
- feed every chunk of the body to the parser and yield what it returns;
- once the answer has started, failures are *events*: a broken connection, a
  read timeout or an unparseable frame end the stream with one ``Error``;
- end of body without a finish is a truncated stream, also an ``Error``.

Stopping early (``break``, ``aclose()``, a cancelled task) leaves the
``async with`` around the response, which closes the upstream connection at
once: the provider sees the client go away and stops generating (and billing).
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from .._exceptions import (
    AuthenticationError,
    BadRequestError,
    ProtocolError,
    ProviderError,
    RateLimitError,
    ReadTimeout,
    TransportError,
    UpstreamUnavailable,
)
from .._http import aread_capped, retry_after
from ..protocol import MAX_EVENT_SIZE, Decoder, Event, NDJSONDecoder
from ._client import HTTPClient, Response, _origin, open_stream
from ._events import Error, Finish, FinishReason, LLMEvent, Start
from ._request import ChatRequest

__all__ = [
    "MAX_ERROR_BODY",
    "RETRYABLE_CODES",
    "FrameParser",
    "HTTPRequest",
    "NDJSONFrameParser",
    "SSEFrameParser",
    "drive",
    "drive_batches",
    "drive_into",
    "error_details",
    "frame_json",
    "is_retryable",
    "provider_error",
]

#: How much of an error response's body is read and kept: enough for any JSON
#: error object, not enough for a misconfigured proxy to make us buffer megabytes.
MAX_ERROR_BODY = 64 * 1024

#: The standard library's C scanner, the one under ``json.loads``.
_scan: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def frame_json(text: str) -> Any:
    """``json.loads(text)`` for a stream's frame, a JSON value with nothing around it.

    Once per token of every stream: the scanner called directly spares ``loads``'
    layers of Python and its two whitespace searches (a 170-byte chunk: 1.5-1.8
    against 2.8-3.1 µs on the benchmark machine). Anything else (whitespace
    around the value, extra data) goes through ``json.loads``, which decides;
    malformed JSON raises ``ValueError`` either way.
    """
    try:
        value, end = _scan(text, 0)
    except StopIteration:
        return json.loads(text)
    if end != len(text):
        return json.loads(text)
    return value


@dataclass(frozen=True, slots=True)
class HTTPRequest:
    """The request an adapter wants sent (no I/O has happened yet)."""

    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    content: bytes = b""

    def json(self) -> Any:
        """The body parsed as JSON (for tests and logging)."""
        return json.loads(self.content)


class FrameParser(ABC):
    """Turns one response body into unified events; keeps the stream's invariants.

    Subclasses implement the framing (``feed``/``close`` of bytes) and report
    with the helpers below, which guarantee that ``Start`` comes first, exactly
    once, and that exactly one ``Finish`` or ``Error`` comes last. After the
    terminal event ``done`` is true and further input is ignored.
    """

    __slots__ = ("done", "model", "provider", "started")

    def __init__(self, provider: str, model: str = "") -> None:
        self.provider = provider
        self.model = model
        self.started = False
        self.done = False

    def is_done(self) -> bool:
        """The terminal event has been emitted (a method: handlers change ``done``)."""
        return self.done

    @abstractmethod
    def feed(self, chunk: bytes) -> list[LLMEvent]:
        """The events completed by the next bytes of the body."""

    def close(self) -> list[LLMEvent]:
        """End of body. A stream that did not finish was cut short: that is an error."""
        out: list[LLMEvent] = []
        if not self.done:
            self.end_of_body(out)
        if not self.done:
            self.error(
                out,
                "truncated",
                f"{self.provider} stream ended before the generation finished",
                retryable=True,
            )
        return out

    def end_of_body(self, out: list[LLMEvent]) -> None:  # noqa: B027  (optional hook)
        """Hook: the body ended; a parser may flush or finish here."""

    def limit(self, max_event_size: int) -> None:  # noqa: B027  (optional hook)
        """Hook: refuse (``protocol_error``) any event or line over ``max_event_size``
        bytes. Called before the first ``feed``."""

    def fail(self, code: str, message: str, *, retryable: bool) -> list[LLMEvent]:
        """End the stream with an error from outside (a broken connection)."""
        out: list[LLMEvent] = []
        if not self.done:
            self.error(out, code, message, retryable=retryable)
        return out

    # -- helpers for subclasses --------------------------------------------

    def start(
        self,
        out: list[LLMEvent],
        *,
        id: str | None = None,
        created: int | None = None,
        model: str | None = None,
    ) -> None:
        """Emit ``Start`` unless it was emitted already."""
        if not self.started:
            self.started = True
            if model:
                self.model = model
            out.append(Start(model=self.model, provider=self.provider, id=id, created=created))

    def finish(self, out: list[LLMEvent], reason: FinishReason, raw: str | None) -> None:
        if not self.done:
            self.start(out)
            self.done = True
            out.append(Finish(reason, raw))

    def error(
        self,
        out: list[LLMEvent],
        code: str,
        message: str,
        *,
        retryable: bool = False,
        status: int | None = None,
    ) -> None:
        if not self.done:
            self.start(out)
            self.done = True
            out.append(Error(code, message, retryable, status))


class SSEFrameParser(FrameParser):
    """A parser for event-stream bodies: subclasses implement ``event()``."""

    __slots__ = ("decoder", "event_limit")

    def __init__(
        self, provider: str, model: str = "", *, max_event_size: int = MAX_EVENT_SIZE
    ) -> None:
        super().__init__(provider, model)
        self.decoder = Decoder(max_event_size=max_event_size)
        self.event_limit = max_event_size

    def limit(self, max_event_size: int) -> None:
        # A parser made with this limit (its provider's) keeps its decoder: not
        # made twice per stream.
        if max_event_size != self.event_limit:
            self.decoder = Decoder(max_event_size=max_event_size)
            self.event_limit = max_event_size

    def feed(self, chunk: bytes) -> list[LLMEvent]:
        out: list[LLMEvent] = []
        if self.done:
            return out
        failure: ProtocolError | None = None
        try:
            events = self.decoder.feed(chunk)
        except ProtocolError as exc:  # the events before the bad input still count
            events, failure = exc.events, exc
        event = self.event
        for ev in events:
            event(ev, out)
            if self.is_done():
                return out
        if failure is not None:
            self.error(out, "protocol_error", str(failure))
        return out

    def close(self) -> list[LLMEvent]:
        if not self.done:
            self.decoder.close()
        return super().close()

    @abstractmethod
    def event(self, ev: Event, out: list[LLMEvent]) -> None:
        """Handle one server-sent event, appending unified events to ``out``."""


class NDJSONFrameParser(FrameParser):
    """A parser for NDJSON bodies: subclasses implement ``value()``."""

    __slots__ = ("decoder",)

    def __init__(self, provider: str, model: str = "") -> None:
        super().__init__(provider, model)
        self.decoder = NDJSONDecoder()

    def limit(self, max_event_size: int) -> None:
        self.decoder = NDJSONDecoder(max_line_size=max_event_size)

    def feed(self, chunk: bytes) -> list[LLMEvent]:
        out: list[LLMEvent] = []
        if self.done:
            return out
        failure: ProtocolError | None = None
        try:
            values = self.decoder.feed(chunk)
        except ProtocolError as exc:  # the lines before the bad one still count
            values, failure = exc.events, exc
        for value in values:
            self.value(value, out)
            if self.is_done():
                return out
        if failure is not None:
            self.error(out, "protocol_error", str(failure))
        return out

    def close(self) -> list[LLMEvent]:
        out: list[LLMEvent] = []
        if not self.done:
            try:
                values = self.decoder.close()
            except ProtocolError as exc:
                self.error(out, "protocol_error", str(exc))
                values = []
            for value in values:
                self.value(value, out)
                if self.is_done():
                    break
        out.extend(super().close())
        return out

    @abstractmethod
    def value(self, value: Any, out: list[LLMEvent]) -> None:
        """Handle one decoded JSON line, appending unified events to ``out``."""


# -- errors before the first byte ------------------------------------------------


def provider_error(
    provider: str,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    message: str | None = None,
    code: str | None = None,
    answered: int | None = None,
    url: str | None = None,
) -> ProviderError:
    """The typed exception for an HTTP error answer (status ≥ 300, before the stream).

    401/403 → ``AuthenticationError``; 429 → ``RateLimitError`` (retryable);
    408/409 and 5xx (Anthropic's 529 too) → ``UpstreamUnavailable`` (retryable);
    other statuses → ``BadRequestError``. An ``x-should-retry`` header overrides
    retryability, as the official SDKs honour it. ``answered`` is the status to
    name in the message when it differs (an error object inside a 200); ``url``
    the address asked (``safe_url``: no credentials, no query), named in the message.
    A ``Retry-After`` the provider sent is named too.
    """
    if message is None or code is None:
        found_message, found_code, _ = error_details(body)
        message = message or found_message
        code = code or found_code
    text = message or body[:500].decode("utf-8", "replace").strip() or f"HTTP {status}"
    cls: type[ProviderError]
    if status in (401, 403):
        cls, retryable = AuthenticationError, False
    elif status == 429:
        cls, retryable = RateLimitError, True
    elif status >= 500 or status in (408, 409):
        cls, retryable = UpstreamUnavailable, True
    else:
        cls, retryable = BadRequestError, False
    should = headers.get("x-should-retry")
    if should == "true":
        retryable = True
    elif should == "false":
        retryable = False
    wait = retry_after(headers, time.time())
    where = f" at {url}" if url else ""
    text += f" (Retry-After: {wait:g} s)" if wait is not None else ""
    return cls(
        f"{provider}{where} answered {status if answered is None else answered}: {text}",
        status=status,
        provider=provider,
        code=code,
        retryable=retryable,
        retry_after=wait,
        body=body,
    )


def safe_url(url: str) -> str:
    """``url`` fit for a message: without ``user:password@``, query and fragment."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


class _Adapter(ABC):
    """What ``drive`` needs from an adapter (see ``providers.HTTPProvider``)."""

    name: str
    #: Content types that cannot be the stream this adapter reads: a 2xx answer
    #: with one of them (a proxy's HTML page, a non-streaming JSON answer) is
    #: refused before the first event instead of ending as an empty "truncated"
    #: stream. Other types are read anyway: some servers label SSE wrongly.
    not_a_stream: tuple[str, ...] = ("text/html",)

    @abstractmethod
    def build_request(self, request: ChatRequest) -> HTTPRequest: ...

    @abstractmethod
    def parser(self, request: ChatRequest) -> FrameParser: ...

    @abstractmethod
    def error_from_response(
        self, status: int, headers: Mapping[str, str], body: bytes, *, url: str | None = None
    ) -> ProviderError: ...


def _not_a_stream(
    name: str, status: int, ctype: str, headers: Mapping[str, str], body: bytes, url: str
) -> ProviderError:
    message, code, err_status = error_details(body)
    if message is not None or code is not None:  # an error object, despite the 2xx
        as_status = err_status or (502 if is_retryable(code) else 400)
        return provider_error(name, as_status, headers, body, answered=status, url=url)
    excerpt = body[:200].decode("utf-8", "replace")
    return UpstreamUnavailable(
        f"{name} at {url} answered {status} with {ctype!r}, not a stream: {excerpt!r}",
        status=status,
        provider=name,
        code="not_a_stream",
        retryable=False,
        body=body,
    )


#: Failures of the connection once it was asked for (``_client`` translates both
#: clients' errors to these); a bad compressed body is a ``ProtocolError``.
_FAILURES = (TransportError, ProtocolError)


async def _parser_for(
    adapter: _Adapter, request: ChatRequest, req: HTTPRequest, response: Response
) -> FrameParser:
    """A fresh parser for ``response``'s body; ``ProviderError`` for an answer
    that is not a stream (what ``drive_batches`` documents)."""
    status = response.status_code
    ctype = response.headers.get("content-type", "").partition(";")[0].strip().lower()
    if not 200 <= status < 300 or ctype in adapter.not_a_stream:
        body = await aread_capped(response.aiter_bytes(), MAX_ERROR_BODY, errors=_FAILURES)
        where = safe_url(req.url)
        if 200 <= status < 300:
            raise _not_a_stream(adapter.name, status, ctype, response.headers, body, where)
        raise adapter.error_from_response(status, response.headers, body, url=where)
    parser = adapter.parser(request)
    max_event_size = getattr(adapter, "max_event_size", None)
    if max_event_size is not None:
        parser.limit(max_event_size)
    return parser


def _unanswered(name: str, req: HTTPRequest, exc: Exception) -> UpstreamUnavailable:
    """The refusal for no answer at all (``exc``: one of ``_FAILURES``), to raise from it."""
    if isinstance(exc, ReadTimeout):
        return UpstreamUnavailable(
            f"{name} did not answer in time: {exc}", provider=name, retryable=True
        )
    return UpstreamUnavailable(
        f"could not reach {name} at {_origin(req.url)}: {exc}", provider=name, retryable=True
    )


def _cut(parser: FrameParser, name: str, exc: Exception) -> list[LLMEvent]:
    """The stream's last events when reading its body failed with ``exc`` (``_FAILURES``)."""
    if isinstance(exc, ReadTimeout):
        return parser.fail("timeout", f"{name} stopped sending: {exc}", retryable=True)
    if isinstance(exc, ProtocolError):
        return parser.fail(
            "protocol_error", f"{name} sent a body that cannot be read: {exc}", retryable=False
        )
    return parser.fail("upstream_disconnected", f"{name} connection broke: {exc}", retryable=True)


async def drive_batches(
    client: HTTPClient | httpx.AsyncClient, adapter: _Adapter, request: ChatRequest
) -> AsyncGenerator[list[LLMEvent], None]:
    """Send ``request`` through ``adapter``; yield the answer's events, one list per read.

    Each list holds what one read of the body completed (never empty). A relay
    that writes one list with one ``send`` makes one syscall per upstream read
    instead of one per token, and a relay that falls behind catches up: the
    reads it was late for have piled up into one. ``drive`` is the flat version.

    ``client`` is ssegate's ``HTTPClient`` (aiohttp) or an ``httpx.AsyncClient``
    (``_client.py`` says why both exist); the loop is the same for both. Header
    values with CR/LF/NUL raise ``ValueError`` before anything is sent.

    Raises ``ProviderError`` subclasses before the first event; afterwards every
    failure is the final ``Error`` event. Use it under ``contextlib.aclosing`` (or
    let the task be cancelled) so stopping early closes the upstream request.
    """
    req = adapter.build_request(request)
    try:
        async with open_stream(client, req.method, req.url, req.headers, req.content) as response:
            parser = await _parser_for(adapter, request, req, response)
            feed = parser.feed
            tail: list[LLMEvent]
            try:
                async for chunk in response.aiter_bytes():
                    events = feed(chunk)
                    if events:
                        yield events
                    # Not kept while the next read waits: the collector would
                    # walk it (and what it holds) at every collection meanwhile.
                    del events
                    if parser.done:
                        return
                tail = parser.close()
            except _FAILURES as exc:
                tail = _cut(parser, adapter.name, exc)
            if tail:
                yield tail
    except _FAILURES as exc:
        raise _unanswered(adapter.name, req, exc) from exc


async def drive_into(
    client: HTTPClient | httpx.AsyncClient,
    adapter: _Adapter,
    request: ChatRequest,
    sink: Callable[[list[LLMEvent]], object],
) -> None:
    """``drive_batches`` handing each list to ``sink`` instead of yielding it.

    Where the client can (``Response.push``: aiohttp, an uncompressed body),
    ``sink`` is called from the connection's ``data_received``: a read costs no
    task step, and this coroutine wakes only at the end. Elsewhere it is called
    from this coroutine, read by read. Either way it must not wait, and it is
    called with the same lists in the same order as ``drive_batches`` yields.
    What ``sink`` raises ends the answer (the connection is closed) and is
    raised here as it is. Cancelling this coroutine closes the upstream
    connection at once, as leaving ``drive_batches`` does.
    """
    req = adapter.build_request(request)
    feeder: _Feed | None = None
    try:
        async with open_stream(client, req.method, req.url, req.headers, req.content) as response:
            parser = await _parser_for(adapter, request, req, response)
            feeder = _Feed(parser, sink)
            tail: list[LLMEvent] = []
            try:
                pushed = response.push(feeder.take)
                if pushed is None:
                    async for chunk in response.aiter_bytes():
                        if feeder.take(chunk):
                            break
                    else:
                        tail = parser.close()
                else:
                    await pushed
                    if not (parser.done or feeder.failure):
                        tail = parser.close()
            except _FAILURES as exc:
                tail = _cut(parser, adapter.name, exc)
            if feeder.failure is not None:
                raise feeder.failure
            if tail:
                sink(tail)
    except _FAILURES as exc:
        if feeder is not None and exc is feeder.failure:
            raise  # the sink's, as it is
        raise _unanswered(adapter.name, req, exc) from exc


class _Feed:
    """``drive_into``'s way from each read to ``sink``: the parser's events of it,
    handed on. What the parser or the sink raise is kept (``failure``) to be
    raised by ``drive_into``, not into the connection's callback; the body is
    not read on."""

    __slots__ = ("failure", "feed", "parser", "sink")

    def __init__(self, parser: FrameParser, sink: Callable[[list[LLMEvent]], object]) -> None:
        self.parser = parser
        self.feed = parser.feed
        self.sink = sink
        self.failure: Exception | None = None

    def take(self, chunk: bytes) -> bool:
        """One read of the body; whether no more is wanted (the stream ended)."""
        try:
            events = self.feed(chunk)
            if events:
                self.sink(events)
        except Exception as exc:
            self.failure = exc
            return True
        return self.parser.done


async def drive(
    client: HTTPClient | httpx.AsyncClient, adapter: _Adapter, request: ChatRequest
) -> AsyncGenerator[LLMEvent, None]:
    """``drive_batches`` flattened: the unified events of the answer, one by one."""
    async with aclosing(drive_batches(client, adapter, request)) as batches:
        async for batch in batches:
            for event in batch:
                yield event


# -- reading providers' error objects ----------------------------------------------

#: Error codes/types that mean "the provider is struggling; the same request may
#: work later" across OpenAI, Anthropic, GLM, DeepSeek, vLLM and llama.cpp.
RETRYABLE_CODES = frozenset(
    {
        "server_error",
        "api_error",
        "overloaded",
        "overloaded_error",
        "rate_limit_exceeded",
        "rate_limit_error",
        "timeout",
        "timeout_error",
        "internal_error",
        "service_unavailable",
        "network_error",
        "insufficient_system_resource",
    }
)


def error_details(value: Any) -> tuple[str | None, str | None, int | None]:
    """``(message, code, status)`` from any provider's error JSON.

    Knows ``{"error": {"message", "type", "code"}}`` (OpenAI, vLLM, llama.cpp,
    GLM with string codes), ``{"type": "error", "error": {"type", "message"}}``
    (Anthropic), ``{"error": "text"}`` (Ollama) and ``{"object": "error",
    "message", "code"}`` (old vLLM). Unknown shapes give ``(None, None, None)``.
    """
    if isinstance(value, (bytes, str)):
        try:
            value = json.loads(value)
        except ValueError:
            return None, None, None
    if not isinstance(value, dict):
        return None, None, None
    err = value.get("error", value if value.get("object") == "error" else None)
    if isinstance(err, str):
        return err, None, None
    if not isinstance(err, dict):
        return None, None, None
    message = err.get("message")
    code = err.get("code")
    kind = err.get("type")
    status: int | None = None
    if isinstance(code, int) and not isinstance(code, bool):
        status = code if 100 <= code <= 599 else None
        code = None
    chosen = code if isinstance(code, str) and code else kind
    return (
        message if isinstance(message, str) else None,
        chosen if isinstance(chosen, str) and chosen else None,
        status,
    )


def is_retryable(code: str | None, status: int | None = None) -> bool:
    """Whether an error with this code (or HTTP status) is worth retrying."""
    if code in RETRYABLE_CODES:
        return True
    return status is not None and (status >= 500 or status in (408, 409, 429))
