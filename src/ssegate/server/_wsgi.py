"""Event streams for WSGI frameworks (Django's ``StreamingHttpResponse``, Flask's ``Response``).

``wsgi_stream(items)`` turns a sync iterable of items into the iterable of
bytes those responses take, with the same encoding rules as the ASGI side, and
``SSE_HEADERS`` are the headers to send with it::

    # Django
    return StreamingHttpResponse(wsgi_stream(events()), headers=SSE_HEADERS)
    # Flask
    return Response(wsgi_stream(events()), headers=SSE_HEADERS)

WSGI gives no way to wait for "an item or a timer", so keep-alives need a
thread: with ``ping`` set, the producer runs in its own thread and hands items
over through a small bounded queue, and a comment goes out after ``ping``
seconds without one. When the server closes the response (the client left and a
write failed, or the request ended), ``close()`` stops the producer: its
generator is closed, so its ``finally`` runs, as soon as its current ``next()``
returns. With ``ping=None`` everything happens in the server's thread.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import suppress
from typing import Any

from ssegate.protocol import encode_retry

from ._items import encode_item
from ._options import DEFAULT_PING_S, PING, ErrorEvent, default_error_event

__all__ = ["WSGIEventStream", "wsgi_stream"]

logger = logging.getLogger("ssegate.server")

# Items the producer thread may run ahead of a slow client: memory stays bounded.
QUEUE_SIZE = 64

_END: Any = object()


class WSGIEventStream:
    """An iterable of event-stream bytes with ``close()``, for a WSGI response."""

    def __init__(
        self,
        content: Iterable[Any],
        *,
        ping: float | None = DEFAULT_PING_S,
        retry: int | None = None,
        error_event: ErrorEvent | None = default_error_event,
    ) -> None:
        if isinstance(content, str | bytes | bytearray | dict) or not hasattr(content, "__iter__"):
            raise TypeError(
                f"content must be an iterable of items, not {type(content).__name__}; "
                "wrap a single item in a list"
            )
        if ping is not None and not (isinstance(ping, int | float) and ping > 0):
            raise ValueError(f"ping must be a positive number of seconds or None: {ping!r}")
        self._head = b"" if retry is None else encode_retry(retry)
        self._source = iter(content)
        self._ping = None if ping is None else float(ping)
        self._error_event = error_event
        self._closed = threading.Event()
        self._queue: queue.Queue[Any] | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._running = False  # the producer thread is inside next()
        self._iterator = self._generate()

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        return next(self._iterator)

    def close(self) -> None:
        """Stop: the producer is closed now, or by its thread when its ``next()`` returns."""
        if self._closed.is_set():
            return
        self._closed.set()
        with suppress(ValueError):  # being iterated in another thread right now
            self._iterator.close()
        if self._thread is None:
            self._close_source()
            return
        with self._lock:
            running = self._running
        if not running and not self._thread.is_alive():
            self._close_source()

    # -- internals --------------------------------------------------------

    def _close_source(self) -> None:
        close: Callable[[], object] | None = getattr(self._source, "close", None)
        if close is not None:
            try:
                close()
            except Exception:
                logger.exception("event stream producer failed while closing")

    def _error_bytes(self, exc: Exception) -> bytes:
        logger.error("event stream producer failed", exc_info=exc)
        if self._error_event is None:
            return b""
        item = self._error_event(exc)
        return b"" if item is None else encode_item(item)

    def _generate(self) -> Generator[bytes, None, None]:
        if self._head:
            yield self._head
        if self._ping is None:
            yield from self._direct()
        else:
            yield from self._threaded(self._ping)

    def _direct(self) -> Iterator[bytes]:
        try:
            for item in self._source:
                yield encode_item(item)
        except Exception as exc:
            yield self._error_bytes(exc)

    def _threaded(self, ping: float) -> Iterator[bytes]:
        items: queue.Queue[Any] = queue.Queue(QUEUE_SIZE)
        self._queue = items
        self._thread = threading.Thread(target=self._produce, name="ssegate-wsgi", daemon=True)
        self._thread.start()
        while True:
            try:
                data = items.get(timeout=ping)
            except queue.Empty:
                yield PING
                continue
            if data is _END:
                return
            yield data

    def _produce(self) -> None:
        items = self._queue
        assert items is not None
        try:
            while not self._closed.is_set():
                with self._lock:
                    self._running = True
                try:
                    item = next(self._source, _END)
                finally:
                    with self._lock:
                        self._running = False
                if item is _END:
                    break
                self._put(items, encode_item(item))
        except Exception as exc:
            self._put(items, self._error_bytes(exc))
        finally:
            if self._closed.is_set():
                self._close_source()
            self._put(items, _END)

    def _put(self, items: queue.Queue[Any], data: Any) -> None:
        # Wait for room, but give up once the response is closed.
        while not self._closed.is_set():
            try:
                items.put(data, timeout=0.1)
                return
            except queue.Full:
                continue


def wsgi_stream(
    content: Iterable[Any],
    *,
    ping: float | None = DEFAULT_PING_S,
    retry: int | None = None,
    error_event: ErrorEvent | None = default_error_event,
) -> WSGIEventStream:
    """Encode a sync iterable of items (``Event``, ``str``, ``dict``, ``bytes``) for WSGI."""
    return WSGIEventStream(content, ping=ping, retry=retry, error_event=error_event)
