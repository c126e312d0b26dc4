"""HTTP details every layer shares, on the standard library only.

- ``parse_retry_after`` / ``retry_after``: how long a server asked us to wait;
- ``check_headers``: header names and values safe to put on the wire;
- ``read_capped`` / ``aread_capped``: the first bytes of a body, never more;
- ``Decompressor``: a ``Content-Encoding`` undone with bounded memory, and a
  truncated compressed body reported instead of accepted as complete;
- ``default_ssl_context``: the CAs trusted, the same for the providers' clients
  (aiohttp, httpx) and the reconnecting ``EventSource``; it resumes TLS sessions
  (``ResumingSSLContext``).

The HTTP clients themselves are well-kept libraries (httpx, aiohttp); these are
the decisions around them that ssegate makes the same way on every path.
"""

from __future__ import annotations

import contextlib
import email.utils
import os
import re
import ssl
import sys
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from datetime import UTC
from typing import Any

from ._exceptions import ProtocolError

__all__ = [
    "DECODED_CHUNK",
    "MAX_DECOMPRESSION_RATIO",
    "MAX_RETRY_AFTER",
    "Decompressor",
    "ResumingSSLContext",
    "aread_capped",
    "check_headers",
    "default_ssl_context",
    "parse_retry_after",
    "read_capped",
    "retry_after",
]

#: The longest wait a ``Retry-After`` can ask for (one day): a larger value, even a
#: 400-digit one, is read as this, so no caller sleeps for ever (or on ``inf``).
MAX_RETRY_AFTER = 86_400.0

_DIGITS = re.compile(r"[0-9]+")
_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]*)?")


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (RFC 9110 § 10.2.3), or None.

    It is whole seconds (``120``) or an HTTP date (IMF-fixdate, RFC 850 or asctime);
    ``now`` is the current Unix time (injected: tests need no clock). A date in the
    past means 0; a date without a zone (``-0000``) is UTC, whatever the local zone;
    anything else (``-5``, ``1.5``, ``soon``) is None; the result is at most
    ``MAX_RETRY_AFTER``.
    """
    if value is None:
        return None
    value = value.strip()
    if _DIGITS.fullmatch(value):
        return MAX_RETRY_AFTER if len(value) > 6 else min(float(value), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000" (RFC 5322: zone unknown); HTTP dates are GMT
        when = when.replace(tzinfo=UTC)
    return min(MAX_RETRY_AFTER, max(0.0, when.timestamp() - now))


def retry_after(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds to wait from ``retry-after-ms`` (OpenAI's, preferred) or ``retry-after``.

    ``headers`` is a case-insensitive mapping (httpx's or aiohttp's). A
    ``retry-after-ms`` that is not a plain non-negative number is ignored.
    """
    ms = headers.get("retry-after-ms")
    if ms is not None and _DECIMAL.fullmatch(ms.strip()):
        return min(float(ms) / 1000.0, MAX_RETRY_AFTER)
    return parse_retry_after(headers.get("retry-after"), now)


# -- header checks -----------------------------------------------------------------

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def check_headers(headers: Mapping[str, str]) -> None:
    """Raise ``ValueError`` naming the first header that cannot be sent safely.

    A name must be an RFC 9110 token; a value must hold no CR, LF, NUL or other
    control character (a tab is allowed): ``"sk-abc\\r\\nX-Injected: yes"`` as an API
    key would otherwise add a header of the attacker's choosing. The value is not
    quoted in the message: it may be a secret.
    """
    for name, value in headers.items():
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise ValueError(f"header {name!r}: not a valid header name (RFC 9110 token)")
        if not isinstance(value, str):
            raise ValueError(f"header {name!r} must be a str, not {type(value).__name__}")
        if _BAD_VALUE.search(value):
            raise ValueError(
                f"header {name!r} has a control character (CR, LF, NUL, ...) in its value; "
                "refused before anything was sent"
            )


# -- capped bodies -----------------------------------------------------------------


class _Capped:
    """The first ``limit`` bytes of a body, gathered chunk by chunk."""

    __slots__ = ("limit", "parts", "size")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[bytes] = []
        self.size = 0

    def add(self, chunk: bytes) -> bool:
        """Keep ``chunk``; True once there is enough."""
        self.parts.append(chunk)
        self.size += len(chunk)
        return self.size >= self.limit

    def value(self) -> bytes:
        return b"".join(self.parts)[: self.limit]


def read_capped(
    chunks: Iterable[bytes], limit: int, *, errors: tuple[type[BaseException], ...] = ()
) -> bytes:
    """At most ``limit`` bytes of a body; an error in ``errors`` ends it with what came.

    For error answers: their status says enough, their body is read for the
    message, and a huge page or a broken connection must not make that fail.
    """
    body = _Capped(limit)
    try:
        for chunk in chunks:
            if body.add(chunk):
                break
    except errors:
        pass  # keep what came
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    return body.value()


async def aread_capped(
    chunks: AsyncIterator[bytes], limit: int, *, errors: tuple[type[BaseException], ...] = ()
) -> bytes:
    """``read_capped`` for an async iterator (closed before returning)."""
    body = _Capped(limit)
    try:
        async for chunk in chunks:
            if body.add(chunk):
                break
    except errors:
        pass  # keep what came
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
    return body.value()


# -- bounded decompression -----------------------------------------------------------

#: The most a ``Decompressor`` produces from one call before handing it on.
DECODED_CHUNK = 64 * 1024

#: Beyond the first MiB, a body inflating to more than this many times its
#: compressed size is refused as a decompression bomb: an event stream
#: compressed as it is sent (a flush per event) stays under ~20x; a gzip bomb
#: is ~1000x. (A whole body compressed at once from one line repeated can pass
#: 200x too; such an answer ends with the bomb error.)
MAX_DECOMPRESSION_RATIO = 200

_FREE_OUTPUT = 1024 * 1024


class Decompressor:
    """Undoes ``gzip`` or ``deflate`` with bounded memory (sans-IO).

    ``feed(data)`` yields the decoded bytes in pieces of at most ``DECODED_CHUNK``;
    the consumer handles each before the next is inflated, so a small body that
    inflates to gigabytes never sits in memory. ``close()`` at the end of the body
    raises ``ProtocolError`` if the compressed stream was cut short. Errors are
    ``ProtocolError`` too (a corrupt stream, a bomb, an unknown encoding).
    """

    __slots__ = ("_d", "_encoding", "_head", "_max_ratio", "_size_in", "_size_out")

    def __init__(self, encoding: str, *, max_ratio: int = MAX_DECOMPRESSION_RATIO) -> None:
        encoding = encoding.strip().lower()
        self._d: Any = None  # for deflate: chosen once the first two bytes are in
        if encoding in ("gzip", "x-gzip"):
            self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding != "deflate":
            raise ProtocolError(f"unsupported Content-Encoding {encoding!r}")
        self._encoding = encoding
        self._head = b""
        self._max_ratio = max_ratio
        self._size_in = 0
        self._size_out = 0

    @staticmethod
    def needed(encoding: str) -> bool:
        """Whether a ``Content-Encoding`` value means the body must be decoded."""
        return encoding.strip().lower() not in ("identity", "")

    def feed(self, data: bytes) -> Iterator[bytes]:
        self._size_in += len(data)
        if self._d is None:  # "deflate": zlib-wrapped (RFC 9110) or raw, as some send it
            data = self._head + data
            if len(data) < 2:
                self._head = data
                return
            zlib_header = data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
            self._d = zlib.decompressobj(zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS)
        while data:
            try:
                out = self._d.decompress(data, DECODED_CHUNK)
            except zlib.error as exc:
                raise ProtocolError(f"bad {self._encoding} body: {exc}") from exc
            if self._d.eof and self._d.unused_data.strip(b"\0"):
                raise ProtocolError(f"bytes after the end of the {self._encoding} body")
            data = self._d.unconsumed_tail
            if out:
                self._size_out += len(out)
                consumed = self._size_in - len(data)  # what zlib has read so far
                if self._size_out > _FREE_OUTPUT and self._size_out > self._max_ratio * consumed:
                    raise ProtocolError(
                        f"the {self._encoding} body inflates more than "
                        f"{self._max_ratio}x: refused as a decompression bomb"
                    )
                yield out

    def close(self) -> None:
        """The body ended: raise if the compressed stream did not."""
        if self._size_in and (self._d is None or not self._d.eof):
            raise ProtocolError(
                f"the {self._encoding} body was cut short (its end marker never came)"
            )


# -- TLS trust -----------------------------------------------------------------------


#: Hosts whose TLS sessions a ``ResumingSSLContext`` keeps (beyond, it starts afresh).
MAX_TLS_SESSION_HOSTS = 256

#: The newest connections per host a ``ResumingSSLContext`` looks at for a ticket.
_PENDING = 8

#: How long (seconds from its ticket) a session is offered without looking for a newer
#: one, while the server accepts it: each look reads a connection's session, which
#: CPython copies (its certificate encoded and parsed again: ~140 µs here, as long as
#: the handshake it saves).
FRESH_TLS_SESSION = 30.0


class ResumingSSLContext(ssl.SSLContext):
    """A client ``SSLContext`` that resumes TLS sessions, per server name.

    A new connection to a host this context has spoken to offers the newest
    session ticket it got from that host (TLS 1.3 PSK resumption, or a TLS 1.2
    ticket): the server proves it holds the secret of that earlier, fully
    verified handshake instead of sending and signing its certificate again,
    and the client skips parsing and checking the chain (OpenSSL 3.0: ~25 % of a
    handshake's CPU). Measured against the benchmarks' upstream (an ECDSA
    certificate from a private CA), client CPU: a blocking handshake 480 µs
    full, 220 µs resumed; on uvloop a whole new connection (connect, handshake,
    one request, close) 530 µs against 445 µs. The gateway opens one such
    connection per stream start whenever its pool has no idle one: in a burst,
    or after 15 s idle (``benchmarks/stream_starts.py --upstream tls``).

    Verification is untouched (``CERT_REQUIRED``, the host name checked on
    every full handshake). A session is only offered to the server name it was
    verified for, only one carrying a ticket (which a server issues after a
    completed handshake) and only while it is valid; a server that declines it
    does a full handshake. Connections made by ``wrap_bio`` (asyncio, uvloop,
    anyio: the async clients) resume; ``wrap_socket`` (blocking clients) does not.

    A ticket arrives after its connection's handshake, so the newest
    connections to each host (``_PENDING``) are kept and looked at when the
    next one starts: the newest that finished its handshake and holds a ticket
    gives its session. (So the very first burst to a host, before any of its
    connections finished, does full handshakes until one has.) Reading a
    connection's session costs as much as the handshake it saves (CPython
    copies it), so it is read only when needed: not while the kept session is
    younger than ``FRESH_TLS_SESSION`` and the newest finished connection
    resumed it (a server that declined it, e.g. after rotating its ticket keys,
    makes the next start look again), and a connection read without a ticket
    is not read again.
    """

    def __init__(
        self, protocol: int = ssl.PROTOCOL_TLS_CLIENT, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._clock = clock  # Unix time, as a session's ``time`` (injected: tests)
        self._sessions: dict[str, ssl.SSLSession] = {}  # server name -> newest session
        self._pending: dict[str, list[ssl.SSLObject]] = {}  # newest connections, oldest first

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        if server_side or session is not None or server_hostname is None:
            return super().wrap_bio(incoming, outgoing, server_side, server_hostname, session)
        # anyio passes the name IDNA-encoded already (bytes), asyncio and uvloop as str
        name = server_hostname if isinstance(server_hostname, str) else server_hostname.decode()
        pending = self._pending.get(name)
        if pending is None:
            if len(self._pending) >= MAX_TLS_SESSION_HOSTS:
                self._pending.clear()
                self._sessions.clear()
            pending = self._pending[name] = []
        session = self._session(name, pending)
        obj = super().wrap_bio(incoming, outgoing, False, server_hostname, session)
        # Each step one list operation: a context may be shared by threads.
        pending.append(obj)
        del pending[: len(pending) - _PENDING]
        return obj

    def _session(self, name: str, pending: list[ssl.SSLObject]) -> ssl.SSLSession | None:
        """The session to offer ``name``: the newest one with a ticket, while valid."""
        now = self._clock()
        kept = self._sessions.get(name)
        if kept is not None:
            age = now - kept.time
            if age < FRESH_TLS_SESSION and age < kept.timeout and _accepted(pending):
                return kept  # no look: every read costs a copy of a session
        for obj in reversed(pending[:]):
            if obj.version() is None:  # its handshake is under way (or failed)
                continue
            try:
                found = obj.session
            except ValueError:  # pragma: no cover - "i2d() failed": not a whole session
                found = None
            if found is not None and found.has_ticket:
                if kept is None or found.time >= kept.time:
                    self._sessions[name] = kept = found
                pending.clear()
                break
            # No ticket (yet): never read again; the next connections will be.
            with contextlib.suppress(ValueError):  # (another thread's trim took it)
                pending.remove(obj)
        if kept is not None and now >= kept.time + kept.timeout:  # (found on an old connection)
            self._sessions.pop(name, None)
            return None
        return kept


def _accepted(pending: list[ssl.SSLObject]) -> bool:
    """Whether the newest connection that finished its handshake (if any) resumed."""
    for obj in reversed(pending[:]):
        if obj.version() is not None:
            return obj.session_reused
    return True


def _client_context() -> ssl.SSLContext:
    """What ``ssl.create_default_context()`` makes for a client, without the CAs,
    as a ``ResumingSSLContext``."""
    ctx = ResumingSSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies, checks the host name
    if sys.version_info >= (3, 13):  # pragma: no cover - what 3.13 adds
        ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN | ssl.VERIFY_X509_STRICT
    return ctx


def default_ssl_context(*, trust_env: bool = True) -> ssl.SSLContext:
    """The CA store every ssegate HTTP client uses unless given a context.

    With ``trust_env`` OpenSSL reads ``SSL_CERT_FILE``/``SSL_CERT_DIR`` (and
    ``SSLKEYLOGFILE`` is honoured, as ``ssl.create_default_context`` does);
    without, only the system's default locations. If that leaves no CA at all
    (some containers, python.org builds on macOS), certifi's bundle is loaded.
    It resumes TLS sessions (``ResumingSSLContext``); otherwise it is what
    ``ssl.create_default_context()`` makes.
    """
    ctx = _client_context()
    if trust_env:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)  # OpenSSL reads SSL_CERT_FILE/DIR
        keylog = os.environ.get("SSLKEYLOGFILE")
        if keylog and not sys.flags.ignore_environment:
            ctx.keylog_filename = keylog
    else:
        paths = ssl.get_default_verify_paths()
        if paths.openssl_cafile and os.path.exists(paths.openssl_cafile):
            ctx.load_verify_locations(cafile=paths.openssl_cafile)
        if paths.openssl_capath and os.path.isdir(paths.openssl_capath):
            ctx.load_verify_locations(capath=paths.openssl_capath)
    has_dir = bool(os.environ.get("SSL_CERT_DIR")) if trust_env else False
    if not ctx.cert_store_stats()["x509_ca"] and not has_dir:
        try:
            import certifi
        except ImportError:  # pragma: no cover - certifi comes with httpx
            pass
        else:
            ctx.load_verify_locations(cafile=certifi.where())
    return ctx
