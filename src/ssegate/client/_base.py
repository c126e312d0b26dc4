"""What both clients share: configuration, request building, response checks, decisions.

``EventSource`` (sync) and ``AsyncEventSource`` (async) are short I/O loops over
this base; every decision is made here, without I/O, so both behave the same:

- the request to send next (the caller's, or the resume request after a drop);
- what a response means (an event stream, 204 "stop", a status worth retrying,
  or an error to raise with the status, headers and first bytes of the body);
- what the bytes received mean (a ``Decoder`` per connection, the
  ``ReconnectPolicy`` remembering the last id and the server's ``retry``);
- what a lost connection means (wait this long, stop, or raise).

Resuming a POST. A POST (or any non-GET) stream is never re-sent silently:
for an LLM that would repeat a paid generation. A server that can resume the
stream says so in the response headers::

    X-Stream-Id: 7f3c...
    Link: </v1/streams/7f3c...>; rel="events"

After a drop the client then sends ``GET <events URL>`` with ``Last-Event-ID``
(a relative URL is resolved against the request URL). ``X-Stream-Id`` alone is
informational (``stream_id``); the ``Link`` with ``rel="events"`` is what makes a
stream resumable. Without it a dropped non-GET stream raises
``NotResumableError``, unless the caller passed ``resend=True``.

Credentials stay with their origin. The caller's URL names the origin
(scheme, host, port) its credentials are meant for: the ``Authorization``,
``Cookie`` and ``Proxy-Authorization`` headers (the caller's, the httpx
client's default headers, cookies from its jar), the client's ``auth=`` and
``user:password@`` in the URL. When the client is sent elsewhere, by a
``Link`` to resume or by a redirect, the request there goes without them (as
httpx and browsers do on a cross-origin redirect), unless the caller named that
origin in ``trusted_origins``. Userinfo in a ``Link`` or ``Location`` URL is
never used. Redirects are followed here, hop by hop, not by httpx, so each hop
gets the same decision (``headers_for``).
"""

from __future__ import annotations

import contextlib
import json as _json
import re
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping
from typing import Any, Literal, NamedTuple, Self

import httpx

from .._exceptions import (
    NotResumableError,
    ProtocolError,
    ReadTimeout,
    ResponseError,
    RetriesExhausted,
    SSEGateError,
    TransportError,
)
from .._http import default_ssl_context, parse_retry_after
from ..protocol import MAX_EVENT_SIZE, Decoder, Event, ReconnectPolicy

__all__ = [
    "CREDENTIAL_HEADERS",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_READ_TIMEOUT",
    "DEFAULT_RETRY_STATUSES",
    "DONE_SENTINEL",
    "EVENTS_REL",
    "MAX_ERROR_BODY",
    "MAX_REDIRECTS",
    "RESEND_ADVICE",
    "STREAM_ID_HEADER",
    "EventSourceBase",
    "Origin",
    "Request",
    "Verdict",
    "client_options",
    "headers_for",
    "http_url",
    "is_event_stream",
    "is_terminal",
    "join_base_url",
    "origin_of",
    "parse_origin",
    "parse_retry_after",
    "resolve",
    "sends_credentials",
]

#: Response header naming a resumable stream (informational; see the module docstring).
STREAM_ID_HEADER = "X-Stream-Id"

#: ``Link: <url>; rel="events"`` names the URL that resumes a non-GET stream with GET.
EVENTS_REL = "events"

#: Seconds to connect (and to write the request) before giving up on an attempt.
DEFAULT_CONNECT_TIMEOUT = 10.0

#: Seconds without a single byte, not even a keep-alive comment, after which the
#: connection counts as dropped. Servers ping every 15 s (ours, sse-starlette,
#: FastAPI); four missed pings means the socket is half dead, not the server slow.
DEFAULT_READ_TIMEOUT = 60.0

#: Statuses retried with back-off: 429 and every 5xx (anything else is the
#: caller's mistake and would fail the same way again).
DEFAULT_RETRY_STATUSES: frozenset[int] = frozenset({429, *range(500, 600)})

#: Statuses that promise the request was not processed ("come back later"), so
#: even a POST may be sent again after them.
_NOT_PROCESSED = frozenset({429, 503})

#: Bytes of an error response's body kept on ``ResponseError.body``: a JSON error
#: fits many times over; an HTML error page is cut short instead of read whole.
MAX_ERROR_BODY = 8 * 1024

#: OpenAI's end-of-stream marker, ``data: [DONE]``.
DONE_SENTINEL = "[DONE]"

_TERMINAL_TYPES = frozenset({"close", "done", "error"})

#: Request headers that carry credentials: sent only to the caller's origin
#: (and to ``trusted_origins``), never where a ``Link`` or a redirect points.
CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})

# Not a credential, but it names the caller's origin: wrong anywhere else.
_ORIGIN_BOUND = CREDENTIAL_HEADERS | {"host"}

#: Redirects followed in a row before giving up (httpx's default).
MAX_REDIRECTS = 20

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

_DEFAULT_PORTS = {"http": 80, "https": 443}

# RFC 9110 § 5.6.2: the characters of a token, such as a header name.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")

#: A host name's characters once httpx has encoded it (IDNA for non-ASCII
#: names): letters, digits, ``-``, ``.`` and the ``_`` of container names.
#: Anything else (a space, say, which httpx percent-encodes) resolves nowhere.
_HOST_NAME = re.compile(r"[A-Za-z0-9._-]+")

#: The end of ``NotResumableError``'s message: what the caller may do. The
#: ``ssegate listen`` command says it with its own option instead.
RESEND_ADVICE = "pass resend=True to allow that"

#: ``(scheme, host, port)``, the port explicit.
Origin = tuple[str, str, int | None]

# Exceptions that mean the request never reached the server, so sending it
# again repeats nothing.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def is_terminal(event: Event) -> bool:
    """True for an event that says the stream is finished.

    ``data: [DONE]`` (OpenAI), and the types ``done`` and ``error`` (the
    gateway's native format) and ``close``.
    """
    return event.data == DONE_SENTINEL or event.event in _TERMINAL_TYPES


def is_event_stream(content_type: str | None) -> bool:
    """True if a ``Content-Type`` value is ``text/event-stream`` (parameters ignored)."""
    if not content_type:
        return False
    return content_type.split(";", 1)[0].strip().lower() == "text/event-stream"


def client_options(trust_env: bool) -> dict[str, Any]:
    """How the httpx client an ``EventSource`` makes for itself is set up.

    Proxies from the environment and the CAs of ``default_ssl_context``, as on
    the providers' path; ``trust_env=False`` turns both off (no proxy, the
    system's CA store only).
    """
    return {"trust_env": trust_env, "verify": default_ssl_context(trust_env=trust_env)}


def origin_of(url: httpx.URL) -> Origin:
    """The origin of ``url``: ``(scheme, host, port)``, a default port made explicit.

    httpx has already lower-cased the scheme and host and decoded IDNA, so
    ``HTTPS://Example.COM:443/x`` and ``https://example.com`` are one origin.
    """
    port = url.port if url.port is not None else _DEFAULT_PORTS.get(url.scheme)
    return (url.scheme, url.host, port)


def http_url(value: str | httpx.URL) -> httpx.URL:
    """``value`` as an absolute http(s) URL; ``ValueError`` saying what is wrong with it if not.

    Checked here, before any connection, what no retry could fix: the scheme
    (``127.0.0.1:8080/v1`` has none), the host (present, and a name or an
    address), the port (1 to 65535: httpx would wrap 99999 around to another
    port). The message quotes the value as given.
    """
    text = str(value)
    try:
        url = httpx.URL(value)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise ValueError(f"{text!r} is not a valid URL: {exc}") from exc
    if url.scheme not in _DEFAULT_PORTS:
        if "://" in text:
            raise ValueError(f"{text!r} is not an http:// or https:// URL")
        if text.startswith("/"):
            raise ValueError(
                f"{text!r} is a path, not a URL: it needs http:// or https:// and a host"
            )
        raise ValueError(
            f"{text!r} is not a URL: it needs http:// or https:// in front "
            f"(did you mean 'http://{text}'?)"
        )
    host = url.raw_host.decode("ascii")
    if not host:
        raise ValueError(f"{text!r} has no host")
    if ":" not in host and not _HOST_NAME.fullmatch(host):  # an IPv6 address is checked by httpx
        raise ValueError(f"{text!r} does not name a valid host")
    if url.port is not None and not 0 < url.port < 65536:
        raise ValueError(f"{text!r} has a port out of range: {url.port} (ports are 1 to 65535)")
    return url


def join_base_url(url: str | httpx.URL, base_url: httpx.URL | None) -> httpx.URL:
    """``url`` made absolute against an httpx client's ``base_url``, as httpx itself does.

    A relative ``url`` (a path, with or without a query) is appended to
    ``base_url`` (httpx ends that with a ``/`` and drops the leading ``/`` of
    ``url``: ``/stream`` against ``http://api/v1`` is ``http://api/v1/stream``),
    so the client goes where ``client.stream("GET", url)`` would. Unlike httpx,
    a URL with a scheme but no host (``http:/x``) or a host but no scheme
    (``//host/x``) is refused rather than merged. Then ``http_url`` checks the
    result.
    """
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        return http_url(url)  # raises, naming what is wrong
    relative = not parsed.scheme and not parsed.host  # "/stream", "stream?x=1"
    if relative and base_url is not None and base_url.is_absolute_url:
        return http_url(
            base_url.copy_with(raw_path=base_url.raw_path + parsed.raw_path.lstrip(b"/"))
        )
    if relative and str(url).startswith("/"):
        raise ValueError(
            f"{str(url)!r} is a relative URL: pass an absolute http:// or https:// URL, "
            "or client=httpx.Client(base_url=...) to resolve it against"
        )
    return http_url(url)


def resolve(base: httpx.URL, ref: str) -> httpx.URL:
    """``ref`` (a ``Link`` or ``Location`` target) resolved against ``base``.

    A relative reference keeps ``base``'s userinfo (same origin, the caller's
    own); userinfo written in ``ref`` itself is dropped: a server does not get
    to hand the client credentials. ``ValueError`` if the result is not an
    http(s) URL (see ``http_url``).
    """
    try:
        url = base.join(ref)
        named = httpx.URL(ref).userinfo
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise ValueError(f"{ref!r} is not a valid URL: {exc}") from exc
    try:
        http_url(url)
    except ValueError as exc:
        raise ValueError(f"{ref!r} resolves to no usable URL: {exc}") from None
    if named:
        url = url.copy_with(username=None, password=None)
    return url


def sends_credentials(origin: httpx.URL, url: httpx.URL, trusted: Collection[Origin] = ()) -> bool:
    """Whether a request the caller addressed to ``origin`` may carry its credentials to ``url``."""
    target = origin_of(url)
    return target == origin_of(origin) or target in trusted


def headers_for(
    origin: httpx.URL,
    url: httpx.URL,
    headers: Mapping[str, str],
    trusted: Collection[Origin] = (),
) -> dict[str, str]:
    """The headers to send to ``url`` for a request the caller addressed to ``origin``.

    All of them on the same origin (or a ``trusted`` one); elsewhere, none of
    ``CREDENTIAL_HEADERS`` (nor ``Host``), whatever their case.
    """
    if sends_credentials(origin, url, trusted):
        return dict(headers)
    return {k: v for k, v in headers.items() if k.lower() not in _ORIGIN_BOUND}


def parse_origin(value: str) -> Origin:
    """An origin given as ``https://host[:port]`` (``trusted_origins``); ``ValueError`` if not."""
    try:
        url = httpx.URL(value)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ValueError(f"trusted origin {value!r} is not a URL: {exc}") from exc
    if (
        url.scheme not in _DEFAULT_PORTS
        or not url.host
        or url.userinfo
        or url.path not in ("", "/")
        or url.query
        or url.fragment
    ):
        raise ValueError(
            f"trusted origin {value!r} must be scheme://host[:port] (http or https), nothing more"
        )
    return origin_of(url)


#: What a response means: read it, stop for good (204), follow a redirect, try
#: again later, or raise.
Verdict = Literal["stream", "stop", "redirect", "retry", "error"]


class Request(NamedTuple):
    """The request to send next, decided by the base and sent by a shell."""

    method: str
    url: httpx.URL
    headers: dict[str, str]
    content: bytes | None
    #: False when ``url`` is on another origin than the caller's: the request
    #: goes without the client's auth and cookies too.
    credentials: bool = True


class EventSourceBase:
    """Configuration, request building, response checks and reconnect decisions.

    Not used directly: ``EventSource`` and ``AsyncEventSource`` subclass it and
    add only the I/O. See ``EventSource`` for the arguments.
    """

    def __init__(
        self,
        url: str | httpx.URL,
        *,
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
        json: Any = None,
        content: str | bytes | None = None,
        params: httpx.QueryParams | Mapping[str, Any] | None = None,
        last_event_id: str | None = None,
        reconnect: bool = True,
        max_retries: int | None = None,
        timeout: float | httpx.Timeout | None = None,
        read_timeout: float | None = DEFAULT_READ_TIMEOUT,
        resend: bool = False,
        retry_statuses: Collection[int] = DEFAULT_RETRY_STATUSES,
        policy: ReconnectPolicy | None = None,
        max_event_size: int = MAX_EVENT_SIZE,
        clock: Callable[[], float] = time.time,
        on_response: Callable[[httpx.Response], None] | None = None,
        on_bytes: Callable[[bytes], None] | None = None,
        on_reconnect: Callable[[float, SSEGateError | None], None] | None = None,
        trusted_origins: Collection[str] = (),
        base_url: httpx.URL | None = None,
    ) -> None:
        try:
            self.url = join_base_url(url, base_url)
        except ValueError as exc:
            raise ValueError(f"EventSource needs an http:// or https:// URL: {exc}") from None
        if params is not None:
            self.url = self.url.copy_merge_params(httpx.QueryParams(params))
        if type(method) is not str or not method.isalpha():
            raise ValueError(f"method must be an HTTP method name such as 'GET', not {method!r}")
        self.method = method.upper()
        if json is not None and content is not None:
            raise ValueError("pass json= or content=, not both")
        body: bytes | None
        if json is not None:
            body = _json.dumps(json, ensure_ascii=False, separators=(",", ":")).encode()
        elif isinstance(content, str):
            body = content.encode()
        else:
            body = content
        if body is not None and self.method in ("GET", "HEAD"):
            raise ValueError(f"a {self.method} request cannot carry a body; use method='POST'")
        self._headers = dict(headers or {})
        for name, value in self._headers.items():
            _check_header(name, value)
        if any(k.lower() == "last-event-id" for k in self._headers):
            raise ValueError(
                "pass last_event_id= instead of a Last-Event-ID header: "
                "the client keeps it up to date across reconnects"
            )
        if json is not None and not any(k.lower() == "content-type" for k in self._headers):
            self._headers["Content-Type"] = "application/json"
        self._body = body
        if policy is None:
            policy = ReconnectPolicy(last_event_id=last_event_id, max_retries=max_retries)
        elif last_event_id is not None or max_retries is not None:
            raise ValueError(
                "with policy= given, set last_event_id and max_retries on the ReconnectPolicy"
            )
        self._policy = policy
        self.reconnect = reconnect
        self.resend = resend
        self.retry_statuses = frozenset(retry_statuses)
        if read_timeout is not None and read_timeout <= 0:
            raise ValueError("read_timeout must be positive seconds, or None to wait forever")
        self.read_timeout = read_timeout
        if isinstance(timeout, httpx.Timeout):
            self._timeout = httpx.Timeout(
                connect=timeout.connect, read=read_timeout, write=timeout.write, pool=timeout.pool
            )
        else:
            seconds = DEFAULT_CONNECT_TIMEOUT if timeout is None else timeout
            self._timeout = httpx.Timeout(seconds, read=read_timeout)
        self._max_event_size = max_event_size
        self._clock = clock
        self._on_response = on_response
        self._on_bytes = on_bytes
        self._on_reconnect = on_reconnect
        if isinstance(trusted_origins, str):
            raise ValueError("trusted_origins is a list of origins, not one string")
        self._trusted = frozenset(parse_origin(o) for o in trusted_origins)
        # Redirects: followed here, one hop at a time (the shells say whether).
        self._follow_redirects = True
        self._max_redirects = MAX_REDIRECTS
        self._hop: Request | None = None  # the request a redirect asked for
        self._hops = 0  # redirects followed since the last request of our own
        self._unstripped: dict[str, str] = {}  # the headers before headers_for

        self._decoder: Decoder | None = None  # set while a stream is open
        self._pending: deque[Event] = deque()
        self._stop_at: Callable[[Event], bool] | None = None
        self._finished = False  # no more events will come (204, terminal event, end)
        self._closed = False  # close() was called
        self._events_url: httpx.URL | None = None
        self._stream_id: str | None = None
        self._received = 0  # events received on the current connection
        self._request = Request(self.method, self.url, {}, None)  # the last one sent
        self._status: int | None = None
        self._response_headers: httpx.Headers | None = None

    # -- public state ------------------------------------------------------

    @property
    def last_event_id(self) -> str:
        """The id the next request sends as ``Last-Event-ID`` (``""``: none yet)."""
        return self._policy.last_event_id

    @property
    def retry(self) -> int:
        """The reconnection time in force, ms: the server's last ``retry`` or the default."""
        return self._policy.retry_ms

    @property
    def status_code(self) -> int | None:
        """The status of the last response (None before the first)."""
        return self._status

    @property
    def response_headers(self) -> httpx.Headers | None:
        """The headers of the last response (None before the first)."""
        return self._response_headers

    @property
    def stream_id(self) -> str | None:
        """The ``X-Stream-Id`` the server named for this stream, if any."""
        return self._stream_id

    @property
    def events_url(self) -> httpx.URL | None:
        """Where a dropped non-GET stream resumes (``Link: <url>; rel="events"``), if named."""
        return self._events_url

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called."""
        return self._closed

    def until_done(self, is_done: Callable[[Event], bool] = is_terminal) -> Self:
        """Iterate only up to the first event for which ``is_done`` is true.

        That event is yielded (a ``done`` or ``error`` event carries the
        outcome), then iteration ends without reconnecting. The bare OpenAI
        marker ``data: [DONE]`` carries nothing and is not yielded. Returns the
        event source itself, so ``for ev in es.until_done():`` reads naturally.
        """
        self._stop_at = is_done
        return self

    # -- decisions for the shells -----------------------------------------

    def _next_request(self) -> Request:
        """The request to send now: a redirect's, the caller's, or the GET that resumes it."""
        if self._hop is not None:
            self._request, self._hop = self._hop, None
            return self._request
        self._hops = 0
        headers = dict(self._headers)
        _drop(headers, "accept")
        headers.update(self._policy.headers())
        if self._events_url is not None:
            _drop(headers, "content-type")
            self._request = self._addressed("GET", self._events_url, headers, None)
        else:
            self._request = self._addressed(self.method, self.url, headers, self._body)
        return self._request

    def _addressed(
        self, method: str, url: httpx.URL, headers: dict[str, str], body: bytes | None
    ) -> Request:
        """The request to ``url``, with credentials only if it is the caller's origin."""
        self._unstripped = headers
        credentials = sends_credentials(self.url, url, self._trusted)
        userinfo = self.url.userinfo if credentials else b""  # the caller's user:password@
        if url.userinfo != userinfo:
            url = url.copy_with(userinfo=userinfo)
        sent = headers_for(self.url, url, headers, self._trusted)
        return Request(method, url, sent, body, credentials)

    def _build(
        self, client: httpx.Client | httpx.AsyncClient
    ) -> tuple[httpx.Request, httpx.Auth | None]:
        """The next request as httpx builds it, and the ``auth`` to send it with.

        httpx adds the client's default headers and its cookie jar here, and
        its ``auth`` on sending: for another origin all of that goes too.
        """
        req = self._next_request()
        request = client.build_request(
            req.method, req.url, headers=req.headers, content=req.content, timeout=self._timeout
        )
        if req.credentials:
            return request, client.auth
        for name in _ORIGIN_BOUND - {"host"}:
            request.headers.pop(name, None)
        return request, None

    def _redirected(self, response: httpx.Response) -> Verdict:
        """A 3xx to follow: decide the next hop (``_next_request`` sends it)."""
        location = response.headers.get("location")
        if not location or self._hops >= self._max_redirects:
            return "error"
        try:
            url = resolve(response.url, location)
        except ValueError:
            return "error"
        self._hops += 1
        req = self._request
        method = req.method
        status = response.status_code
        if (
            (status == 303 and method != "HEAD")
            or (status == 302 and method not in ("GET", "HEAD"))
            or (status == 301 and method == "POST")
        ):
            method = "GET"  # as browsers and httpx do; the body stays behind
        headers = dict(self._unstripped)
        body = req.content
        if method != req.method:
            body = None
            _drop(headers, "content-type")
        self._hop = self._addressed(method, url, headers, body)
        return "redirect"

    def _accept(self, response: httpx.Response) -> Verdict:
        """Judge a response: read it as a stream, stop (204), retry it, or raise."""
        self._status = response.status_code
        self._response_headers = response.headers
        if self._on_response is not None:
            self._on_response(response)
        status = response.status_code
        if status in _REDIRECT_STATUSES and self._follow_redirects:
            return self._redirected(response)
        if status == 204:
            # The server's way to say "do not reconnect" (HTML § 9.2.3).
            self._finish()
            return "stop"
        if 200 <= status < 300:
            if not is_event_stream(response.headers.get("content-type")):
                return "error"
            self._opened(response)
            return "stream"
        if (
            self.reconnect
            and status in self.retry_statuses
            and (self._safe_to_repeat() or status in _NOT_PROCESSED)
        ):
            self._policy.retry_after(
                parse_retry_after(response.headers.get("retry-after"), self._clock())
            )
            return "retry"
        return "error"

    def _response_error(self, response: httpx.Response, body: bytes) -> ResponseError:
        """The error for a response that is not an event stream."""
        status = response.status_code
        content_type = response.headers.get("content-type", "")
        if 200 <= status < 300:
            message = (
                f"expected an event stream (text/event-stream) from {response.request.method} "
                f"{response.url}, got status {status} with content type {content_type!r}"
            )
        else:
            reason = response.reason_phrase or ""
            message = (
                f"{response.request.method} {response.url} answered {status} {reason}".rstrip()
                + " instead of an event stream"
            )
        snippet = body[:200].decode("utf-8", "replace").strip()
        if snippet:
            message += f": {snippet}"
        if status in _REDIRECT_STATUSES and self._follow_redirects:
            location = response.headers.get("location")
            message += (
                f" (gave up after {self._hops} redirects)"
                if location and self._hops >= self._max_redirects
                else f" (cannot follow Location {location!r})"
            )
        elif status in (401, 403, 407) and not self._request.credentials:
            message += (
                f" (the request's credentials stay with {_origin_text(self.url)} and were not "
                f"sent to {_origin_text(response.url)}; trusted_origins= allows that origin)"
            )
        return ResponseError(message, status=status, headers=response.headers, body=body)

    def _opened(self, response: httpx.Response) -> None:
        self._policy.connected()
        self._received = 0
        self._decoder = Decoder(
            max_event_size=self._max_event_size, last_event_id=self._policy.last_event_id
        )
        if self._events_url is None and self.method != "GET":
            self._stream_id = response.headers.get(STREAM_ID_HEADER)
            link = response.links.get(EVENTS_REL)
            if link and link.get("url"):
                # An unusable Link (not http(s)) names nothing to resume.
                with contextlib.suppress(ValueError):
                    self._events_url = resolve(response.url, link["url"])

    def _receive(self, chunk: bytes) -> None:
        """Bytes arrived on the open stream."""
        if self._on_bytes is not None:
            self._on_bytes(chunk)
        decoder = self._decoder
        assert decoder is not None, "bytes received with no stream open"
        events = decoder.feed(chunk)
        policy = self._policy
        if events:
            # One call for the batch: the decoder's state below is the final word
            # on the id and retry; the policy needs only to know progress was made.
            # An ``error`` event is not progress: a stream that opens only to
            # report a failure counts against max_retries like one that never opened.
            if any(event.event != "error" for event in events):
                policy.event(events[-1])
            self._received += len(events)
            self._pending.extend(events)
        # id-only and retry-only blocks dispatch no event but still count.
        policy.set_last_event_id(decoder.last_event_id)
        policy.server_retry(decoder.retry)

    def _pop(self) -> Event | None:
        """The next event to hand to the caller, or None when there is none yet."""
        while self._pending:
            event = self._pending.popleft()
            if self._stop_at is not None and self._stop_at(event):
                self._finish()
                if event.data == DONE_SENTINEL:
                    return None
            return event
        return None

    def _ended(self, error: SSEGateError | None) -> float | None:
        """The open stream ended (``error`` None: cleanly). Return the delay, or None.

        None means stop (nothing more will come); raising means fail.
        """
        decoder, self._decoder = self._decoder, None
        if decoder is not None:
            decoder.close()
            self._policy.server_retry(decoder.retry)
        if self._closed or self._finished:
            return None
        if not self.reconnect:
            if error is not None:
                raise error
            self._finish()
            return None
        if not self._safe_to_repeat():
            if error is None:
                # A POST stream that ended cleanly is an answer that is complete.
                self._finish()
                return None
            raise NotResumableError(
                f"the {self.method} stream from {self.url} broke after "
                f"{self._received} events and the server named no stream to resume "
                f'(no Link: <url>; rel="{EVENTS_REL}" header); reconnecting would send '
                f"the request again (for an LLM, a second paid generation): {RESEND_ADVICE}"
            ) from error
        return self._retry_delay(error)

    def _lost(self, exc: httpx.HTTPError) -> float | None:
        """Reading the open stream failed. Return the delay, or None; raise to fail."""
        return self._ended(None if self._closed else self._translate(exc))

    def _connect_failed(self, exc: httpx.HTTPError) -> float | None:
        """No response came. Return the delay, or None; raise to fail."""
        error = self._translate(exc)
        if self._closed:
            return None
        # A request that never left may be sent again, even a POST.
        if not self.reconnect or (self._was_sent(exc) and not self._safe_to_repeat()):
            raise error
        return self._retry_delay(error)

    def _refused(self, error: ResponseError) -> float | None:
        """A response judged "retry" (429, 5xx). Return the delay, or None; raise to fail."""
        if self._closed:
            return None
        return self._retry_delay(error)

    def _retry_delay(self, error: SSEGateError | None) -> float:
        delay = self._policy.failed()
        if delay is None:
            attempts = self._policy.attempt
            cause = error if error is not None else "the server kept ending the stream"
            raise RetriesExhausted(
                f"gave up on {self.url} after {attempts} failed attempts: {cause}",
                attempts=attempts,
            ) from error
        if self._on_reconnect is not None:
            self._on_reconnect(delay, error)
        return delay

    def _safe_to_repeat(self) -> bool:
        """Whether the next request can be sent without repeating a non-GET request."""
        return self.method == "GET" or self._events_url is not None or self.resend

    def _translate(self, exc: httpx.HTTPError) -> SSEGateError:
        """An httpx error as ours, with the httpx error as its ``__cause__``."""
        error = self._translated(exc)
        error.__cause__ = exc
        return error

    def _translated(self, exc: httpx.HTTPError) -> SSEGateError:
        where = f"{self._request.method} {self._request.url}"
        if isinstance(exc, httpx.ReadTimeout):
            return ReadTimeout(
                f"no data from {where} for {self.read_timeout} s "
                "(not even a keep-alive comment); the connection is presumed dead"
            )
        if isinstance(exc, httpx.DecodingError):
            return ProtocolError(f"could not decode the response body of {where}: {exc}")
        if isinstance(exc, _NOT_SENT):
            return TransportError(f"could not connect to {where}: {exc or type(exc).__name__}")
        return TransportError(f"connection to {where} broke: {exc or type(exc).__name__}")

    @staticmethod
    def _was_sent(exc: httpx.HTTPError) -> bool:
        """False if the request certainly never reached the server."""
        return not isinstance(exc, _NOT_SENT)

    def _finish(self) -> None:
        self._finished = True
        self._pending.clear()


def _check_header(name: object, value: object) -> None:
    """``ValueError`` for a header httpx or the wire would refuse later, mid-connection.

    A name is an RFC 9110 token; a value is ASCII text without CR, LF or NUL
    (httpx encodes ``str`` values as ASCII; a line break would split the header).
    """
    if not isinstance(name, str) or not _TOKEN.fullmatch(name):
        raise ValueError(
            f"{name!r} is not a valid header name (letters, digits and !#$%&'*+-.^_`|~)"
        )
    if not isinstance(value, str):
        raise ValueError(f"the value of header {name} must be a str, not {type(value).__name__}")
    if not value.isascii() or any(c in value for c in "\r\n\0"):
        raise ValueError(
            f"the value of header {name} must be ASCII text without CR, LF or NUL: {value!r}"
        )


def _drop(headers: dict[str, str], name: str) -> None:
    """Remove header ``name`` (lower case) from ``headers``, whatever its case there."""
    for key in [k for k in headers if k.lower() == name]:
        del headers[key]


def _origin_text(url: httpx.URL) -> str:
    scheme, host, port = origin_of(url)
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"
