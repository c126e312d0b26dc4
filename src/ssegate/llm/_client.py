"""The HTTP client under the providers: aiohttp by default, httpx when given one.

Why aiohttp. ``benchmarks/relay.py`` relays N concurrent OpenAI-style streams
(20 tokens/s each, 120 tokens) through ``OpenAIProvider`` in one uvicorn + uvloop
process and measures the relay's CPU per relayed token and the p99 lateness of
tokens against the upstream's schedule, over plain HTTP and over TLS to the
upstream. One run, all clients interleaved, medians of 3, 2 shared CPUs
(2026-11-29; the hand-written client was the one this module replaced):

CPU µs per relayed token (p99 lateness ÷ direct's), by streams and transport:

=====================  ============  ============  ============  ============
client                 100 HTTP      100 TLS       1000 HTTP     1000 TLS
=====================  ============  ============  ============  ============
aiohttp 3.14 (default)  77.5 (2.8x)  112.5 (2.3x)   48.8 (2.5x)   39.9 (1.8x)
httpx 0.28             153.3 (6.9x)  185.0 (12x)    98.9 (2.8x)  137.8 (2.9x)
hand-written (removed)  60.8 (1.7x)   95.0 (1.4x)   20.2 (4.4x)   32.9 (1.5x)
=====================  ============  ============  ============  ============

aiohttp costs half of httpx's CPU in every row (an earlier run, with tests
loading the machine: 102/108/63/82 µs against 174/190/104/147) and holds the
relay's budget of 50 µs per token at 1000 streams; httpx did not (and at 1000
TLS streams it let 0.4 % of the streams time out connecting). The hand-written
client was cheaper still (a C parser with nothing around it), which is no reason
to keep a protocol client of our own. Lateness at 1000 streams is the machine's
more than the client's: the relay process is near one full CPU (20 000 tokens/s
times ~50 µs), the hand-written client's lateness ratio moved from 1.5x to 4.4x
between rows, and over TLS "direct" is slow itself (the benchmark's client does
the 1000 handshakes).

aiohttp's client has a C parser (llhttp) and CONNECT proxies, skips ``1xx``
informational answers, bounds the response head, and never re-sends a POST (an
idle pooled connection the server closed is dropped at checkout; only an
idempotent request is retried, once, on a reused connection that closed
without answering). httpx stays accepted as ``client=`` (trio, HTTP/2, custom
transports); h11 under it gives the same guarantees.

What ssegate adds on both paths (``ssegate._http`` holds the pieces):

- header names and values are checked before anything is sent: a CR, LF or NUL
  (in an API key too) is a ``ValueError`` naming the header;
- ``Content-Length``/``Transfer-Encoding`` given by the caller are dropped (the
  client frames the body itself); a caller's ``Host`` replaces the client's;
  ``user:password@`` in a URL becomes Basic auth (unless the request carries
  ``Authorization`` already) and never reaches ``Host``;
- the body is decompressed here, not by the client: ``gzip``/``deflate`` in
  pieces of at most 64 KiB, a decompression bomb refused, and a compressed body
  cut short is an error instead of a complete answer;
- response heads are bounded: ``MAX_HEADERS`` lines of at most
  ``MAX_HEADER_LINE`` bytes here (aiohttp), 16 KiB on httpx (h11);
- errors are ssegate's: ``ReadTimeout`` (no byte for ``read_timeout`` seconds,
  the wait for the response head included) and ``TransportError``; a bad
  compressed body is a ``ProtocolError``.

Environment. By default (``trust_env=True``) proxies come from ``HTTP_PROXY``,
``HTTPS_PROXY``, ``ALL_PROXY`` and ``NO_PROXY`` (and their lower-case forms),
read when the client is made, and certificates are checked against the
system's CA store, or the files named by ``SSL_CERT_FILE``/``SSL_CERT_DIR``
(certifi's bundle where the system has no store). ``trust_env=False`` ignores
all of these: no proxy, the system store only. ``ssl_context=`` replaces the CA
decision altogether. ``default_http_client`` builds the httpx client the same
way, so both paths trust the same CAs. ``~/.netrc`` is not read (aiohttp's own
``trust_env`` would, on a worker thread per request, and a ``.netrc`` entry for a
provider's host would then clash with its API key).
"""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import ssl
import urllib.request
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx

from .._exceptions import ReadTimeout, TransportError
from .._extras import MissingExtra
from .._http import Decompressor, check_headers, default_ssl_context

if TYPE_CHECKING:
    import aiohttp

__all__ = [
    "MAX_HEADERS",
    "MAX_HEADER_LINE",
    "HTTPClient",
    "Response",
    "default_http_client",
    "default_ssl_context",
    "open_stream",
]

#: The most header lines a response head may have, and the longest line (name
#: and value). The head is therefore bounded by ``MAX_HEADERS * MAX_HEADER_LINE``
#: (512 KiB); a longer head is refused as it arrives, never buffered whole.
MAX_HEADERS = 64
MAX_HEADER_LINE = 8190

#: What we can decode, so what we ask for (``br``/``zstd`` would need more packages).
ACCEPT_ENCODING = "gzip, deflate"

USER_AGENT = "ssegate"

#: Headers the client computes from the body: a caller's copy would duplicate or
#: contradict them (request smuggling), so they are dropped.
_FRAMING = frozenset({"content-length", "transfer-encoding"})


def default_http_client(
    *,
    timeout: float | None = 600.0,
    trust_env: bool = True,
    ssl_context: ssl.SSLContext | None = None,
) -> httpx.AsyncClient:
    """An httpx client set up as providers need it (for trio, or to add HTTP/2).

    No cap on connections (httpx's default of 100 stalls the 101st concurrent
    stream: every generation holds its connection for its whole life), keep-alive
    kept for reuse, a 10 s connect timeout and a long read timeout (reasoning
    models can think for minutes between bytes, keep-alives reset it), proxies and
    CAs from the environment like ``HTTPClient``.
    """
    return httpx.AsyncClient(
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=256),
        timeout=httpx.Timeout(timeout, connect=10.0),
        trust_env=trust_env,
        verify=ssl_context or default_ssl_context(trust_env=trust_env),
    )


class Response:
    """The status, headers and (decoded, bounded) body of one streaming answer."""

    __slots__ = ("_chunks", "_reads", "headers", "status_code")

    def __init__(
        self,
        status_code: int,
        headers: Mapping[str, str],
        chunks: AsyncIterator[bytes],
        reads: _Reads | None = None,
    ) -> None:
        self.status_code = status_code
        self.headers = headers  # case-insensitive (aiohttp's or httpx's mapping)
        self._chunks = chunks
        self._reads = reads

    def aiter_bytes(self) -> AsyncIterator[bytes]:
        """The body as it arrives, decompressed; raises ``ReadTimeout``,
        ``TransportError`` or ``ProtocolError`` if it cannot be read whole."""
        return self._chunks

    def push(self, on_data: Callable[[bytes], bool]) -> asyncio.Future[None] | None:
        """Hand the body to ``on_data`` as it arrives, from the connection's own
        callback (no task wakes per read); ``None`` where that cannot be done
        (httpx, a compressed body, aiohttp's internals not as expected): then
        read ``aiter_bytes()``. See ``_Reads.push``."""
        return None if self._reads is None else self._reads.push(on_data)


def _prepare(url: str, headers: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """The URL without userinfo and the headers to send (checked, see the docstring)."""
    check_headers(headers)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    out: dict[str, str] = {}
    given: set[str] = set()
    for name, value in headers.items():
        low = name.lower()
        if low in _FRAMING:
            continue
        given.add(low)
        out[name] = value
    if "@" in parts.netloc:
        userinfo, _, hostport = parts.netloc.rpartition("@")
        url = urlunsplit(parts._replace(netloc=hostport))
        if "authorization" not in given:
            user, _, password = userinfo.partition(":")
            token = f"{unquote(user)}:{unquote(password)}".encode()
            out["Authorization"] = "Basic " + base64.b64encode(token).decode("ascii")
            given.add("authorization")
    if "accept-encoding" not in given:
        out["Accept-Encoding"] = ACCEPT_ENCODING
    if "user-agent" not in given:
        out["User-Agent"] = USER_AGENT
    return url, out


def _decoder(headers: Mapping[str, str]) -> Decompressor | None:
    encoding = headers.get("content-encoding")
    if encoding is None or not Decompressor.needed(encoding):
        return None
    return Decompressor(encoding)


class HTTPClient:
    """Streams HTTP responses over aiohttp; pools connections. One per event loop.

    ``read_timeout`` is the longest silence allowed while waiting for bytes,
    from the end of the request to the response head and between any two reads
    of the body (keep-alive comments count). ``connect_timeout`` bounds
    connecting (TCP, proxy tunnel and TLS). Connections are not capped: every
    generation holds one for its whole life. See the module docstring for
    ``trust_env`` and ``ssl_context``.
    """

    def __init__(
        self,
        *,
        connect_timeout: float = 10.0,
        read_timeout: float | None = 600.0,
        trust_env: bool = True,
        ssl_context: ssl.SSLContext | None = None,
        keepalive_timeout: float = 15.0,
    ) -> None:
        if importlib.util.find_spec("aiohttp") is None:
            raise MissingExtra("ssegate.llm.HTTPClient (aiohttp)", "gateway", ["aiohttp"])
        import aiohttp  # here, not at the first request: ~0.2 s of CPU

        #: The module, for each request (an import statement costs it ~2 µs).
        self._aiohttp = aiohttp

        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.trust_env = trust_env
        # Reading the CA store takes ~50 ms: once, here.
        self._ssl = ssl_context or default_ssl_context(trust_env=trust_env)
        self._keepalive = keepalive_timeout
        self._proxies = urllib.request.getproxies_environment() if trust_env else {}
        self._proxy_for: dict[tuple[str, str], str | None] = {}
        self._targets: dict[tuple[str, tuple[tuple[str, str], ...]], Any] = {}
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the session's, once open
        self._silences = _Silences(read_timeout or 0.0)
        self._closed = False

    def _open(self) -> aiohttp.ClientSession:
        import aiohttp

        self._loop = asyncio.get_running_loop()
        connector = aiohttp.TCPConnector(
            limit=0, limit_per_host=0, ssl=self._ssl, keepalive_timeout=self._keepalive
        )
        return aiohttp.ClientSession(
            connector=connector,
            trust_env=False,  # proxies are chosen here (see the module docstring)
            auto_decompress=False,  # done here, bounded (see Decompressor)
            timeout=aiohttp.ClientTimeout(
                total=None,
                connect=self.connect_timeout,
                sock_connect=self.connect_timeout,
                sock_read=self.read_timeout,
            ),
            max_headers=MAX_HEADERS,
            max_field_size=MAX_HEADER_LINE,
            max_line_size=MAX_HEADER_LINE,
            # No skip_auto_headers: every request carries its Accept-Encoding and
            # User-Agent already (``_prepare``), so aiohttp adds neither, and a skip
            # list costs each request a sorted copy of its headers (~2 µs).
            cookie_jar=aiohttp.DummyCookieJar(),  # no state shared between users
        )

    def stream(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        content: bytes = b"",
    ) -> AbstractAsyncContextManager[Response]:
        """``async with client.stream(...) as response``: send the request; the
        response once its head has arrived.

        Leaving the block early closes the connection (that is what tells the
        server to stop generating); a body read to its end returns it to the pool.
        """
        return _Exchange(self, method, url, headers, content)

    def _target(
        self, url: str, headers: Mapping[str, str] | None
    ) -> tuple[Any, str, Any, str | None]:
        """The URL (yarl's, and as text), headers (aiohttp's mapping) and proxy of a request:
        checked and built the first time a provider sends them, then reused (a
        provider sends the same URL and headers with every request)."""
        key = (url, tuple(headers.items()) if headers else ())
        found = self._targets.get(key)
        if found is None:
            from multidict import CIMultiDict
            from yarl import URL

            url, sent = _prepare(url, headers or {})
            found = (URL(url), url, CIMultiDict(sent), self._proxy(url))
            if len(self._targets) >= 256:  # bounded: a per-request header (a JWT)
                self._targets.clear()
            self._targets[key] = found
        return found

    def _proxy(self, url: str) -> str | None:
        """The proxy for ``url`` from the environment (None: connect directly)."""
        if not self._proxies:
            return None
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc)
        if key not in self._proxy_for:
            proxy = self._proxies.get(parts.scheme) or self._proxies.get("all")
            bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
            if proxy and bypass(parts.netloc, self._proxies):  # NO_PROXY
                proxy = None
            if len(self._proxy_for) > 1024:
                self._proxy_for.clear()
            self._proxy_for[key] = proxy
        return self._proxy_for[key]

    async def aclose(self) -> None:
        self._closed = True
        self._silences.close()
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


class _Exchange:
    """One request of ``HTTPClient.stream``, as its context manager: a class, not
    ``@asynccontextmanager`` (an async generator, its wrapper and their steps on
    every stream start)."""

    __slots__ = ("client", "content", "headers", "method", "quiet", "reads", "resp", "url")

    def __init__(
        self,
        client: HTTPClient,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        content: bytes,
    ) -> None:
        self.client = client
        self.method = method
        self.url = url
        self.headers = headers
        self.content = content
        self.resp: Any = None
        self.reads: _Reads | None = None
        self.quiet: Any = None

    async def __aenter__(self) -> Response:
        client = self.client
        aiohttp = client._aiohttp
        if client._closed:
            raise RuntimeError("the HTTPClient is closed")
        target, url, sent, proxy = client._target(self.url, self.headers)
        session = client._session
        if session is None:
            session = client._session = client._open()
        try:
            resp = await session.request(
                self.method,
                target,
                headers=sent,
                data=self.content,
                allow_redirects=False,
                proxy=proxy,
            )
        except (TimeoutError, aiohttp.ClientError) as exc:
            connecting = isinstance(exc, aiohttp.ConnectionTimeoutError)
            timeout = not connecting and isinstance(exc, TimeoutError)
            raise _failed(exc, url, timeout=timeout) from exc
        body: AsyncIterator[bytes]
        reads: _Reads | None = None
        if _decoder(resp.headers) is None:  # the usual body: each read as it comes
            body = reads = _Reads(
                resp.content, aiohttp.ClientError, url, client.read_timeout, client._loop
            )
            if client.read_timeout is not None:
                # one timer for all bodies (the loop: set with the session)
                client._silences.watch(resp, reads, client._loop)  # type: ignore[arg-type]
            reads.pushable = _pushable(resp)
            self.quiet = quiet = _quiet_resumes(resp)
            if _timer_off(quiet):
                reads.timerless = quiet
        else:
            body = _body(
                resp.content.iter_any(),
                resp.headers,
                url,
                TimeoutError,
                aiohttp.ClientError,
                read_timeout=client.read_timeout,
            )
        self.resp, self.reads = resp, reads
        return Response(resp.status, resp.headers, body, reads)

    async def __aexit__(self, *exc_info: object) -> None:
        resp, reads, quiet = self.resp, self.reads, self.quiet
        self.resp = self.reads = self.quiet = None
        if reads is not None:
            reads.unpush()
            self.client._silences.forget(reads)
        if quiet is not None:
            _loud_resumes(quiet)
        if resp.content.is_eof():  # the whole body came: the connection can serve again
            resp.release()
        else:
            resp.close()  # unread body: closing is what tells the server to stop


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def _failed(exc: BaseException, url: str, *, timeout: bool) -> TransportError:
    """ssegate's error for a request that got no answer (to raise ``from exc``)."""
    if timeout:
        return ReadTimeout(f"no answer from {_origin(url)} in time: {exc}")
    return TransportError(f"request to {_origin(url)} failed: {type(exc).__name__}: {exc}")


def _read_timeout(url: str, read_timeout: float | None) -> ReadTimeout:
    waited = "too long" if read_timeout is None else f"{read_timeout:g} s (the read timeout)"
    return ReadTimeout(f"no data from {_origin(url)} for {waited}")


def _read_failed(url: str, exc: BaseException) -> TransportError:
    return TransportError(f"reading from {_origin(url)} failed: {type(exc).__name__}: {exc}")


class _Reads:
    """An uncompressed aiohttp body, read by read, with ssegate's errors: what
    ``_body`` does, as one coroutine per read where ``_body`` over ``iter_any``
    stacks two more (every token of every stream passes here). Or pushed
    (``push``): handed over as aiohttp's parser feeds its body reader.

    ``since``: when the read under way started waiting (``None`` between reads;
    pushed: since the last data), for ``_Silences``; ``clock`` is the event
    loop's, once one watches it. ``pushable``: whether ``push`` may push it
    (``_pushable``). ``timerless``: its connection's protocol, whose read timer
    is off (``_timer_off``), or None.
    """

    __slots__ = (
        "clock",
        "content",
        "done",
        "failures",
        "loop",
        "on_data",
        "pushable",
        "read",
        "read_timeout",
        "since",
        "timerless",
        "url",
    )

    def __init__(
        self,
        content: Any,
        failures: type[BaseException],
        url: str,
        read_timeout: float | None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.content = content
        self.read = content.readany
        self.failures = failures
        self.url = url
        self.read_timeout = read_timeout
        self.clock: Any = None
        self.since: float | None = None
        self.pushable = False
        self.timerless: Any = None
        self.on_data: Callable[[bytes], bool] | None = None
        self.done: asyncio.Future[None] | None = None
        #: The session's loop (the client's, set with it), for ``push``'s future:
        #: asyncio's look-up is a ``getpid`` system call on Python 3.11.
        self.loop = loop

    def __aiter__(self) -> _Reads:
        return self

    async def __anext__(self) -> bytes:
        clock = self.clock
        if clock is not None:
            self.since = clock()
        try:
            data: bytes = await self.read()
        except BaseException as exc:
            error = self.translate(exc)
            if error is None:
                raise
            raise error from exc
        finally:
            self.since = None
        if not data:
            raise StopAsyncIteration
        return data

    async def aclose(self) -> None:
        """Nothing to release: leaving ``HTTPClient.stream`` closes the connection."""

    def translate(self, exc: BaseException) -> TransportError | None:
        """ssegate's error for aiohttp's ``exc`` (None: not a failure of the body)."""
        if isinstance(exc, TimeoutError):
            return _read_timeout(self.url, self.read_timeout)
        if isinstance(exc, self.failures):
            return _read_failed(self.url, exc)
        return None

    # -- pushed ---------------------------------------------------------------

    def push(self, on_data: Callable[[bytes], bool]) -> asyncio.Future[None] | None:
        """Call ``on_data(chunk)`` with the body as aiohttp's parser hands it to
        the body reader (in the connection's ``data_received``): each token costs
        no task step (the waiter's future, the task's wake-up, its coroutines'
        resumption) and nothing is buffered. A future that ends with the body:
        ``None`` at its end or once ``on_data`` returned true (it wants no
        more), ``ReadTimeout``/``TransportError`` as reading would raise, or
        what ``on_data`` raised, as it is (never into aiohttp's callback).
        ``None``: not pushable (``pushable`` false); read instead.

        What the reader holds already (what came with the head) is handed over
        here, by its public ``read_nowait``. Then the reader becomes a
        ``_PushedReader`` (aiohttp's class, with the feed methods its parser
        calls turned to ``on_data``) until ``unpush``.
        """
        content = self.content
        if not self.pushable or self.done is not None:
            return None
        loop = self.loop
        if loop is None:
            loop = asyncio.get_running_loop()
        self.done = done = loop.create_future()
        self.on_data = on_data
        try:
            data = content.read_nowait()  # raises the reader's failure, if it has one
        except Exception as exc:
            self.end(exc)
            return done
        if data:
            self.take(data)
        if content.is_eof():
            self.finish()
        if not done.done():
            if self.clock is not None:
                self.since = self.clock()
            _PUSHED[content] = self
            content.__class__ = _pushed_reader(type(content))
            if self.timerless is not None:
                _skip_timer(self.timerless)
        return done

    def take(self, data: bytes) -> None:
        """The next bytes of a pushed body."""
        done = self.done
        if done is None or done.done():
            return  # ended (on_data wanted no more): dropped, the connection is closed
        clock = self.clock
        if clock is not None:
            self.since = clock()
        on_data = self.on_data
        assert on_data is not None
        try:
            enough = on_data(data)
        except Exception as exc:  # not into aiohttp's callback: to the waiter
            done.set_exception(exc)
            return
        if enough:
            done.set_result(None)

    def finish(self) -> None:
        """The pushed body ended."""
        if self.timerless is not None:  # the connection may serve again: its timer back
            _keep_timer(self.timerless)
        done = self.done
        if done is not None and not done.done():
            done.set_result(None)

    def end(self, exc: BaseException) -> None:
        """Fail the pushed body with ssegate's error for ``exc``."""
        if self.timerless is not None:
            _keep_timer(self.timerless)
        done = self.done
        if done is not None and not done.done():
            error = self.translate(exc) or exc
            if error is not exc:
                error.__cause__ = exc
            done.set_exception(error)

    def unpush(self) -> None:
        """Give the body reader its own class back (and drop what refers to it)."""
        if self.timerless is not None:
            _keep_timer(self.timerless)
            self.timerless = None
        done = self.done
        if done is None:
            return
        content = self.content
        if _PUSHED.pop(content, None) is not None:
            content.__class__ = type(content).__mro__[1]
        if done.done():
            if not done.cancelled():
                done.exception()  # seen: not "never retrieved" when no one waited
        else:
            done.cancel()
        self.on_data = None
        self.since = None


#: The pushed body readers, and their bodies (``_Reads.push``).
_PUSHED: dict[Any, _Reads] = {}
#: aiohttp's body reader class -> its pushed subclass (made once).
_PUSHED_CLASSES: dict[type, type] = {}


def _pushed_reader(base: Any) -> type:
    """``base`` (aiohttp's ``StreamReader``) with the methods its HTTP parser feeds
    it by handing the body to its ``_Reads`` instead of buffering it. No slot is
    added: an instance can change class to it and back (``__class__``)."""
    found = _PUSHED_CLASSES.get(base)
    if found is not None:
        return found
    feed_eof, set_exception = base.feed_eof, base.set_exception

    class _PushedReader(base):  # type: ignore[misc]
        __slots__ = ()

        def feed_data(self, data: bytes, size: int = 0) -> bool:
            if data:
                _PUSHED[self].take(data)
            return False  # nothing held back (aiohttp's "more data available")

        # Chunk boundaries are for ``readchunk``, which nobody calls here. The
        # parser calls these around every chunk of a chunked body (every token
        # of a stream): a C callable of no arguments, which returns at once
        # and gets no Python frame, as a function would.
        begin_http_chunk_receiving = end_http_chunk_receiving = staticmethod(tuple)

        def feed_eof(self) -> None:
            feed_eof(self)  # its end noted (the connection can serve again), callbacks run
            _PUSHED[self].finish()

        def set_exception(self, exc: BaseException, *cause: BaseException) -> None:
            set_exception(self, exc, *cause)
            _PUSHED[self].end(exc)

    _PUSHED_CLASSES[base] = _PushedReader
    return _PushedReader


def _pushable(resp: Any) -> bool:
    """Whether ``resp``'s body can be pushed (``_Reads.push``): its reader is
    aiohttp's ``StreamReader`` as this module knows it."""
    known = _KNOWN_READER
    if not known:
        from aiohttp import StreamReader

        known.append(StreamReader if _knows(StreamReader) else None)
    return type(resp.content) is known[0]


def _knows(reader: Any) -> bool:
    """Whether aiohttp's body reader class is as ``_PushedReader`` needs it."""
    if not all(callable(getattr(reader, name, None)) for name in _READER):
        return False
    # Slots, no __dict__: the layout a subclass without slots of its own shares.
    return "__slots__" in vars(reader) and not reader.__dictoffset__


#: aiohttp's body reader class once looked at, or None if it is not as expected.
_KNOWN_READER: list[Any] = []


#: What ``_Reads.push`` and ``_PushedReader`` use of aiohttp's body reader: the
#: public reading methods, and the feed methods its HTTP parser calls.
_READER = (
    "read_nowait",
    "is_eof",
    "feed_data",
    "feed_eof",
    "set_exception",
    "begin_http_chunk_receiving",
    "end_http_chunk_receiving",
)


#: The flags of aiohttp's protocol that say its reading is held (flow control,
#: a buffer it cannot drain yet); ``_quiet_resumes`` relies on them.
_PAUSE_FLAGS = ("_reading_paused", "_buffer_paused")


def _quiet_resumes(resp: Any) -> Any:
    """Make ``resp``'s protocol skip the resumes of reading that was never paused;
    the protocol changed (for ``_loud_resumes``), or None where aiohttp's
    internals are not as expected (then nothing changes: aiohttp's own path).

    aiohttp's body reader calls its protocol's ``resume_reading()`` after every
    read that leaves its buffer below the low-water mark: every read of a token
    stream. That re-enters the protocol (``data_received(b"")``, the HTTP parser
    fed nothing) and the transport (``resume_reading``), four Python calls and
    three C calls a token, for reading that was never paused (only a full buffer
    or a held tail pauses it, and sets one of ``_PAUSE_FLAGS``). Here the
    protocol's ``resume_reading`` goes through to aiohttp's only when a flag is set.
    """
    connection = resp.connection
    protocol = connection.protocol if connection is not None else None
    if protocol is None or not _own_method(protocol, "resume_reading"):
        return None
    reading, buffer = _PAUSE_FLAGS
    if type(getattr(protocol, reading, None)) is not bool:
        return None
    if type(getattr(protocol, buffer, None)) is not bool:
        return None
    resume = protocol.resume_reading

    def resume_reading(resume_parser: bool = True) -> None:
        if protocol._reading_paused or protocol._buffer_paused:  # _PAUSE_FLAGS
            resume(resume_parser)

    try:
        protocol.resume_reading = resume_reading
    except AttributeError:  # no instance attributes (slots)
        return None
    return protocol


def _loud_resumes(protocol: Any) -> None:
    """Undo ``_quiet_resumes`` (the connection may serve another answer; and the
    function and the protocol refer to each other: no cycle is left behind)."""
    _unset(protocol, "resume_reading")
    _keep_timer(protocol)


# The protocol's methods are set on the instance and unset, never through its
# ``__dict__``: an instance's attributes are kept inline until its ``__dict__``
# is asked for, which makes one, and then every attribute that aiohttp's
# protocol reads while it takes a read is looked up in it (~0.1 µs a read,
# measured on CPython 3.11).


def _own_method(protocol: Any, name: str) -> bool:
    """Whether ``protocol.name`` is its class's method (none set on the instance)."""
    bound: Any = getattr(protocol, name, None)
    method = getattr(type(protocol), name, None)
    return (
        method is not None
        and getattr(bound, "__func__", None) is method
        and bound.__self__ is protocol
    )


def _unset(protocol: Any, name: str) -> None:
    """Remove what was set as ``protocol.name`` (its class's method serves again)."""
    try:  # noqa: SIM105 (``suppress`` is three Python calls more, twice a stream)
        delattr(protocol, name)
    except AttributeError:  # nothing was set
        pass


def _timer_off(protocol: Any) -> bool:
    """Whether aiohttp's read timer of ``protocol`` (a protocol ``_quiet_resumes``
    changed, or None) is off, as this module knows it, so that ``_skip_timer``
    changes nothing but the cost.

    aiohttp's protocol moves its read timer (``_reschedule_timeout``) on every
    read, even with none set: with no read timeout (``_Silences`` turns it off
    once the head came, or the client has none) that sets a handle that is
    None to None, a Python call per read of every body (~0.1 µs).
    """
    move, timeout, handle = _TIMER
    return (
        protocol is not None
        and _own_method(protocol, move)
        and getattr(protocol, timeout, 0) is None
        and getattr(protocol, handle, 0) is None
    )


#: What ``_timer_off`` and ``_skip_timer`` use of aiohttp's protocol: the method
#: that moves its read timer, its read timeout, the timer's handle.
_TIMER = ("_reschedule_timeout", "_read_timeout", "_read_timeout_handle")


def _skip_timer(protocol: Any) -> None:
    """Skip the moves of ``protocol``'s read timer (off: ``_timer_off``) while a
    pushed body is read; ``_keep_timer`` undoes it, at the latest when the body
    ends, before the connection can serve another request (which starts the
    timer again for its head)."""
    # A C callable of no arguments: no Python frame (as ``_PushedReader``'s).
    setattr(protocol, _TIMER[0], tuple)


def _keep_timer(protocol: Any) -> None:
    """Undo ``_skip_timer``: aiohttp's own timer moves again."""
    _unset(protocol, _TIMER[0])


class _Silences:
    """The read timeout of every body of one ``HTTPClient``, kept by one task.

    aiohttp keeps a read timeout by cancelling and scheduling a timer on every
    read of every body: with 1 000 streams at 20 tokens/s, 20 000 timers a
    second. Here a body only notes when its read started waiting (``_Reads``),
    and one task looks every ``timeout / 4`` seconds (at most 1 s) for a read
    waiting longer than ``timeout``, which it ends with aiohttp's own timeout
    error (so a read times out after ``timeout`` to ``1.25 * timeout``).
    aiohttp's timer still covers the wait for the response head.
    """

    __slots__ = ("bodies", "task", "timeout")

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.bodies: dict[_Reads, None] = {}
        self.task: asyncio.Task[None] | None = None

    def watch(self, resp: Any, reads: _Reads, loop: asyncio.AbstractEventLoop) -> bool:
        """Watch ``reads`` (the body of ``resp``, on the running ``loop``) instead
        of aiohttp's timer, where aiohttp lets its timer be turned off; whether it does."""
        connection = resp.connection
        protocol = connection.protocol if connection is not None else None
        if protocol is None:
            return False
        drop = getattr(protocol, "_drop_timeout", None)
        if drop is None or not isinstance(getattr(type(protocol), "read_timeout", None), property):
            return False
        protocol.read_timeout = None
        drop()
        reads.clock = loop.time
        self.bodies[reads] = None
        if self.task is None:
            self.task = loop.create_task(self._run(loop))
        return True

    def forget(self, reads: _Reads) -> None:
        self.bodies.pop(reads, None)

    async def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        from aiohttp import SocketTimeoutError

        try:
            while self.bodies:
                await asyncio.sleep(min(1.0, self.timeout / 4))
                due = loop.time() - self.timeout
                for reads in [r for r in self.bodies if r.since is not None and r.since <= due]:
                    self.bodies.pop(reads, None)
                    # (a pushed body's reader hands it on: ``_PushedReader``)
                    reads.content.set_exception(SocketTimeoutError("no data for the read timeout"))
        finally:
            self.task = None

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()


async def _body(
    raw: AsyncIterator[bytes],
    headers: Mapping[str, str],
    url: str,
    timeouts: type[BaseException],
    failures: type[BaseException],
    *,
    read_timeout: float | None,
) -> AsyncIterator[bytes]:
    """The body from ``raw``, decompressed (bounded), with ssegate's errors."""
    try:
        decoder = _decoder(headers)
        async for data in raw:
            if decoder is None:
                yield data
            else:
                for piece in decoder.feed(data):
                    yield piece
        if decoder is not None:
            decoder.close()
    except timeouts as exc:
        raise _read_timeout(url, read_timeout) from exc
    except failures as exc:
        raise _read_failed(url, exc) from exc


@asynccontextmanager
async def _httpx_stream(
    client: httpx.AsyncClient, method: str, url: str, headers: Mapping[str, str], content: bytes
) -> AsyncIterator[Response]:
    url, sent = _prepare(url, headers)
    manager = client.stream(method, url, headers=sent, content=content)
    try:
        resp = await manager.__aenter__()
    except httpx.HTTPError as exc:
        timeout = isinstance(exc, httpx.ReadTimeout | httpx.WriteTimeout)
        raise _failed(exc, url, timeout=timeout) from exc
    body = _body(
        resp.aiter_raw(),
        resp.headers,
        url,
        httpx.TimeoutException,
        httpx.HTTPError,
        read_timeout=client.timeout.read,
    )
    try:
        yield Response(resp.status_code, resp.headers, body)
    finally:
        await manager.__aexit__(None, None, None)


def open_stream(
    client: HTTPClient | httpx.AsyncClient,
    method: str,
    url: str,
    headers: Mapping[str, str],
    content: bytes,
) -> AbstractAsyncContextManager[Response]:
    """``async with open_stream(...) as response``: the same on both clients."""
    if isinstance(client, httpx.AsyncClient):
        return _httpx_stream(client, method, url, headers, content)
    return client.stream(method, url, headers=headers, content=content)
