"""``EventSource``: the blocking client, a short loop over ``EventSourceBase``."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from types import TracebackType
from typing import Any, Self

import httpx

from .._exceptions import SSEGateError
from .._http import read_capped
from ..protocol import MAX_EVENT_SIZE, Event, ReconnectPolicy
from ._base import (
    DEFAULT_READ_TIMEOUT,
    DEFAULT_RETRY_STATUSES,
    MAX_ERROR_BODY,
    EventSourceBase,
    client_options,
)

__all__ = ["EventSource"]


class EventSource(EventSourceBase):
    """A reconnecting event-stream client over ``httpx.Client``.

    ::

        with EventSource("http://127.0.0.1:8000/v1/topics/news") as events:
            for event in events:
                print(event.event, event.data)

    Like a browser's ``EventSource``, and more: any method, headers and body;
    after a dropped connection, or a stream that ended without saying it is
    finished, it reconnects after the server's ``retry`` (3 s by default) with
    jittered exponential back-off, sending ``Last-Event-ID``; a 204 stops it.

    - ``reconnect=False`` raises the first error instead; ``max_retries`` caps
      consecutive failed attempts (then ``RetriesExhausted``).
    - ``read_timeout`` (seconds without a byte, not even a keep-alive; 60 by
      default, None to wait forever) turns a half-dead socket into a
      reconnect. ``timeout`` bounds connecting and writing the request (10 s
      by default; an ``httpx.Timeout`` gives each part, its read part aside).
    - A non-2xx answer, or one that is not ``text/event-stream``, raises
      ``ResponseError`` with its status, headers and first bytes of body; 429
      and 5xx (``retry_statuses``) are retried, honouring ``Retry-After``.
    - A POST stream is never sent again silently: it resumes with GET when the
      server named an events URL (see ``ssegate.client._base``), else a drop
      raises ``NotResumableError`` unless ``resend=True``.
    - Credentials stay with the URL's origin (scheme, host, port). When a
      ``Link`` to resume or a redirect sends the client to another origin,
      the request there carries no ``Authorization``, ``Cookie`` or
      ``Proxy-Authorization`` header (neither from ``headers`` nor from the
      client's defaults or cookie jar), no ``auth`` of the client's and no
      ``user:password@``, as httpx and browsers do on a cross-origin
      redirect. ``trusted_origins=["https://host:port", ...]`` names the
      other origins that may have them.
    - ``client`` is your own ``httpx.Client`` (auth, proxies, HTTP/2, a
      ``transport`` such as ``httpx.WSGITransport`` in tests); it is left
      open, and its ``follow_redirects`` (off by default in httpx) and
      ``max_redirects`` hold; without one, redirects are followed. A relative
      ``url`` (``"/stream"``) is resolved against its ``base_url`` as httpx
      does, and that absolute URL names the origin credentials belong to.
    - Without ``client``, the httpx client made here takes its proxies from
      ``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY`` and ``NO_PROXY`` and
      checks certificates against ``SSL_CERT_FILE``/``SSL_CERT_DIR`` or the
      system's CA store (certifi's bundle where there is none), as the
      providers' clients do (``ssegate._http.default_ssl_context``).
      ``trust_env=False`` ignores all of these: no proxy, the system store only.
    - ``url`` is checked at once: a URL with no http(s) scheme, no host or a
      port out of range raises ``ValueError`` saying which.
    - ``policy`` is a configured ``ReconnectPolicy``; ``sleep`` and ``clock``
      (Unix time, for ``Retry-After`` dates) are injectable.
    - ``on_response(response)``, ``on_bytes(chunk)`` and ``on_reconnect(delay,
      error)`` observe the connection (the ``ssegate listen`` command uses them).
      ``on_reconnect`` runs before each wait; an exception it raises ends the
      iteration with that exception (a way to give up on errors you know
      cannot go away).
    - A connection that delivered events resets the count of failed attempts;
      ``error`` events do not count as delivered: a stream that opens only to
      report an error is a failed attempt.

    ``close()`` may be called from another thread: a read or a wait in
    progress ends at once (over HTTP/1.1; over HTTP/2 with the next frame); an
    attempt still connecting ends when it gets its answer or times out.
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
        client: httpx.Client | None = None,
        trust_env: bool = True,
        read_timeout: float | None = DEFAULT_READ_TIMEOUT,
        resend: bool = False,
        retry_statuses: Collection[int] = DEFAULT_RETRY_STATUSES,
        policy: ReconnectPolicy | None = None,
        max_event_size: int = MAX_EVENT_SIZE,
        sleep: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.time,
        on_response: Callable[[httpx.Response], None] | None = None,
        on_bytes: Callable[[bytes], None] | None = None,
        on_reconnect: Callable[[float, SSEGateError | None], None] | None = None,
        trusted_origins: Collection[str] = (),
    ) -> None:
        if client is not None and not isinstance(client, httpx.Client):
            raise TypeError(
                f"client must be an httpx.Client, not {type(client).__name__}"
                " (use AsyncEventSource with an httpx.AsyncClient)"
            )
        if client is not None and not trust_env:
            raise ValueError(
                "trust_env=False applies to the client made when client= is not "
                "given: set trust_env (and verify) on your own client instead"
            )
        super().__init__(
            url,
            method=method,
            headers=headers,
            json=json,
            content=content,
            params=params,
            last_event_id=last_event_id,
            reconnect=reconnect,
            max_retries=max_retries,
            timeout=timeout,
            read_timeout=read_timeout,
            resend=resend,
            retry_statuses=retry_statuses,
            policy=policy,
            max_event_size=max_event_size,
            clock=clock,
            on_response=on_response,
            on_bytes=on_bytes,
            on_reconnect=on_reconnect,
            trusted_origins=trusted_origins,
            base_url=client.base_url if client is not None else None,
        )
        self._client = client
        self._own_client = client is None
        self._trust_env = trust_env
        if client is not None:  # its redirect settings hold (followed by the base)
            self._follow_redirects = client.follow_redirects
            self._max_redirects = client.max_redirects
        self._sleep = sleep
        self._wake = threading.Event()  # set by close(): cuts a wait short
        self._lock = threading.Lock()
        self._busy = False  # a thread is inside __next__
        self._response: httpx.Response | None = None
        self._chunks: Iterator[bytes] | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> Event:
        # Fast path: an event already decoded (most calls, on a token stream).
        if self._pending and self._stop_at is None:
            return self._pending.popleft()
        return self._next()

    def _next(self) -> Event:
        with self._lock:
            if self._busy:
                raise RuntimeError("this EventSource is already being iterated in another thread")
            self._busy = True
        try:
            while True:
                event = self._pop()
                if event is not None:
                    return event
                if self._finished or self._closed:
                    self._release()
                    raise StopIteration
                if self._chunks is None:
                    self._connect()
                else:
                    self._read()
        except BaseException:
            self._finish()  # an error ends the iteration, as it ends a generator
            self._release()
            raise
        finally:
            with self._lock:
                self._busy = False
                closed = self._closed
            if closed:
                self._release()

    def close(self) -> None:
        """Stop: end the iteration (from any thread) and release the connection."""
        with self._lock:
            self._closed = True
            self._finish()
            busy = self._busy
            response = self._response
        self._wake.set()
        if busy:
            # The iterating thread may be blocked reading: shutting the socket
            # down wakes it (closing it would not, on Linux); it cleans up.
            _shutdown(response)
        else:
            self._release()

    # -- the loop's steps ----------------------------------------------------

    def _connect(self) -> None:
        if self._client is None:
            self._client = httpx.Client(**client_options(self._trust_env))
        request, auth = self._build(self._client)
        try:
            response = self._client.send(request, stream=True, auth=auth, follow_redirects=False)
        except httpx.HTTPError as exc:
            self._wait(self._connect_failed(exc))
            return
        self._response = response
        verdict = self._accept(response)
        if verdict == "stream":
            self._chunks = response.iter_bytes()
            return
        if verdict in ("stop", "redirect"):
            self._drop_response()
            return
        error = self._response_error(
            response, read_capped(response.iter_bytes(), MAX_ERROR_BODY, errors=(httpx.HTTPError,))
        )
        self._drop_response()
        if verdict == "error":
            raise error
        self._wait(self._refused(error))

    def _read(self) -> None:
        assert self._chunks is not None
        try:
            chunk = next(self._chunks)
        except StopIteration:
            self._drop_response()
            self._wait(self._ended(None))
        except httpx.HTTPError as exc:
            self._drop_response()
            self._wait(self._lost(exc))
        else:
            self._receive(chunk)

    def _wait(self, delay: float | None) -> None:
        if delay is None:
            self._finish()
        elif self._sleep is not None:
            self._sleep(delay)
        else:
            self._wake.wait(delay)

    def _drop_response(self) -> None:
        response, self._response, self._chunks = self._response, None, None
        if response is not None:
            response.close()

    def _release(self) -> None:
        """Close the response and, if we made it, the client (idempotent)."""
        self._drop_response()
        if self._own_client and self._client is not None:
            client, self._client = self._client, None
            client.close()


def _shutdown(response: httpx.Response | None) -> None:
    """Shut down the socket under ``response`` so a blocked read returns now.

    Not for HTTP/2, where the socket carries other streams too: there the read
    ends with the next frame, keep-alive or read timeout.
    """
    if response is None or response.http_version != "HTTP/1.1":
        return
    stream = response.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if isinstance(sock, socket.socket):
        # Already closed means nothing is blocked on it.
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
