"""A lean HTTP/1.1 client for long streaming responses, on asyncio and httptools.

Why not httpx here: measured with ``benchmarks/relay.py``, reading a token
stream through httpx costs about 50 µs of CPU per chunk (httpcore, anyio and h11
layers per read), which alone breaks the gateway's budget of 50 µs per relayed
token at 1 000 concurrent streams. This client is an ``asyncio.Protocol`` feeding
the C parser uvicorn already uses (``httptools``): a chunk costs a few µs.

It does just what a provider adapter needs: one request with a body, the status
and headers, the body as it arrives (chunked, Content-Length or close-delimited;
gzip/deflate undone), read timeouts that keep-alive bytes reset, back-pressure,
keep-alive reuse of idle connections, TLS with the system's trust store. It has
no proxies, no HTTP/2, no cookies or redirects: pass an ``httpx.AsyncClient`` to
a provider when you need those, and the driver uses httpx instead.

The response looks like the slice of ``httpx.Response`` the driver uses
(``status_code``, ``headers``, ``aiter_bytes()``), so one driver serves both.
"""

from __future__ import annotations

import asyncio
import ssl
import zlib
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

__all__ = ["WireClient", "WireError", "WireResponse", "WireTimeout"]

#: Bytes buffered before reading from the socket pauses (the consumer is slow).
HIGH_WATER = 256 * 1024


class WireError(Exception):
    """The connection failed or the peer broke HTTP (translated by the driver)."""


class WireTimeout(WireError):
    """Connecting, or waiting for the next bytes, took longer than allowed."""


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection; the httptools parser calls the ``on_*`` methods."""

    def __init__(self, loop: asyncio.AbstractEventLoop, key: tuple[str, str, int]) -> None:
        import httptools

        self.loop = loop
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self._parser_error = httptools.HttpParserError
        self.reset()
        self.lost = False
        self.last_read = loop.time()

    def reset(self) -> None:
        """Ready for the next response on this connection."""
        if getattr(self, "timer", None) is not None:
            self.cancel_timer()
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.headers_done = False
        self.keep_alive = False
        self.complete = False
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.paused = False
        self.error: WireError | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol --------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.last_read = self.loop.time()
        try:
            self.parser.feed_data(data)
        except self._parser_error as exc:
            self.error = WireError(f"invalid HTTP response: {exc}")
            self.close()
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if not self.complete and self.error is None:
            if self.headers_done and self._close_delimited():
                self.complete = True  # the body ends where the connection does
            else:
                detail = f": {exc}" if exc else ""
                self.error = WireError(f"the server closed the connection mid-response{detail}")
        self._wake()

    def pause_writing(self) -> None:  # requests are small; nothing to throttle
        pass

    def resume_writing(self) -> None:
        pass

    # -- httptools callbacks -----------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()  # only valid until the body ends
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        self.complete = True

    # -- helpers -----------------------------------------------------------------

    def _close_delimited(self) -> bool:
        names = {k for k, _ in self.headers}
        return "content-length" not in names and "transfer-encoding" not in names

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def take(self) -> bytes:
        chunks = self.chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self.chunks = []
        self.buffered = 0
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return data

    async def wait(self, silence: float | None) -> None:
        """Until something happens (bytes, the end, an error) or ``silence`` s without bytes.

        One timer per connection, re-armed only when it fires: bytes arriving just
        move ``last_read``, so a busy stream costs no timer churn per chunk.
        """
        self.waiter = self.loop.create_future()
        if silence is not None and self.timer is None:
            self.timer = self.loop.call_at(self.last_read + silence, self._check_timeout, silence)
        await self.waiter

    def _check_timeout(self, silence: float) -> None:
        self.timer = None
        if self.complete or self.lost or self.error is not None:
            return
        quiet = self.loop.time() - self.last_read
        if quiet >= silence:
            if self.waiter is not None and not self.waiter.done():
                self.error = WireTimeout(f"no data from the server for {quiet:.1f} s")
                self.close()
                self._wake()
            return  # nobody is waiting: the next wait() arms a new timer
        self.timer = self.loop.call_at(self.last_read + silence, self._check_timeout, silence)

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def close(self) -> None:
        self.cancel_timer()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    @property
    def reusable(self) -> bool:
        return (
            self.complete
            and not self.lost
            and self.error is None
            and self.keep_alive
            and self.transport is not None
            and not self.transport.is_closing()
        )


class WireResponse:
    """The status, headers and streaming body of one response."""

    def __init__(self, conn: _Connection, read_timeout: float | None) -> None:
        self._conn = conn
        self._timeout = read_timeout
        self.status_code = conn.status
        self.headers: dict[str, str] = {}
        for name, value in conn.headers:
            self.headers[name] = f"{self.headers[name]}, {value}" if name in self.headers else value
        encoding = self.headers.get("content-encoding", "identity").strip().lower()
        self._inflate: Any = None
        if encoding in ("gzip", "x-gzip"):
            self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._inflate = zlib.decompressobj()
        elif encoding not in ("identity", ""):
            raise WireError(f"unsupported Content-Encoding {encoding!r}")

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        conn = self._conn
        inflate = self._inflate
        while True:
            if conn.chunks:
                data = conn.take()
                if inflate is not None:
                    try:
                        data = inflate.decompress(data)
                    except zlib.error as exc:
                        raise WireError(f"bad compressed body: {exc}") from exc
                    if not data:
                        continue
                yield data
                continue
            if conn.error is not None:
                raise conn.error
            if conn.complete:
                return
            await conn.wait(self._timeout)


class WireClient:
    """Streams HTTP/1.1 responses; keeps idle connections for reuse.

    ``read_timeout`` is the longest silence allowed while waiting for bytes
    (keep-alive comments count), ``connect_timeout`` bounds connecting and the
    wait for the response head. Use one client per event loop.
    """

    def __init__(
        self,
        *,
        connect_timeout: float = 10.0,
        read_timeout: float | None = 600.0,
        max_idle_per_host: int = 64,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_idle_per_host = max_idle_per_host
        self._ssl = ssl_context
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._closed = False

    async def _connect(self, key: tuple[str, str, int]) -> _Connection:
        scheme, host, port = key
        loop = asyncio.get_running_loop()
        ctx: ssl.SSLContext | None = None
        if scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            ctx = self._ssl
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop, key),
                    host,
                    port,
                    ssl=ctx,
                    server_hostname=host if ctx else None,
                )
        except TimeoutError as exc:
            raise WireTimeout(f"connecting to {host}:{port} timed out") from exc
        except OSError as exc:
            raise WireError(f"cannot connect to {host}:{port}: {exc}") from exc
        return conn

    def _checkout(self, key: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if not conn.lost and conn.transport is not None and not conn.transport.is_closing():
                conn.reset()
                return conn
        return None

    def _checkin(self, conn: _Connection) -> None:
        conn.cancel_timer()
        idle = self._idle.setdefault(conn.key, [])
        if conn.reusable and not self._closed and len(idle) < self.max_idle_per_host:
            idle.append(conn)
        else:
            conn.close()

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        content: bytes = b"",
    ) -> AsyncIterator[WireResponse]:
        """Send the request; yield the response once its head has arrived."""
        if self._closed:
            raise RuntimeError("the WireClient is closed")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        default_port = 443 if parts.scheme == "https" else 80
        key = (parts.scheme, parts.hostname, parts.port or default_port)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host = parts.hostname if parts.port in (None, default_port) else parts.netloc
        lines = [f"{method} {target} HTTP/1.1", f"host: {host}"]
        given = {k.lower() for k in headers or {}}
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}")
        if "accept-encoding" not in given:
            lines.append("accept-encoding: gzip, deflate")
        if "user-agent" not in given:
            lines.append("user-agent: ssegate")
        lines.append(f"content-length: {len(content)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

        conn = self._checkout(key)
        reused = conn is not None
        while True:
            if conn is None:
                conn = await self._connect(key)
            assert conn.transport is not None
            conn.last_read = conn.loop.time()
            conn.transport.write(head + content)
            try:
                while not conn.headers_done and conn.error is None and not conn.lost:
                    await conn.wait(self.read_timeout)
            except BaseException:
                conn.close()
                raise
            if not conn.headers_done and reused:
                # An idle connection the server had already closed: try a fresh one.
                conn.close()
                conn, reused = None, False
                continue
            if conn.error is not None or not conn.headers_done:
                conn.close()
                raise conn.error or WireError("the server closed the connection without answering")
            break
        try:
            yield WireResponse(conn, self.read_timeout)
        finally:
            if conn.complete and not conn.chunks:
                self._checkin(conn)
            else:
                conn.close()  # unread body: closing is what tells the server to stop

    async def aclose(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
