"""``AsyncEventSource``: the async twin of ``EventSource`` (asyncio or trio, via anyio)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from types import TracebackType
from typing import Any, Self

import anyio
import httpx

from .._exceptions import SSEGateError
from .._http import aread_capped
from ..protocol import MAX_EVENT_SIZE, Event, ReconnectPolicy
from ._base import (
    DEFAULT_READ_TIMEOUT,
    DEFAULT_RETRY_STATUSES,
    MAX_ERROR_BODY,
    EventSourceBase,
    client_options,
)

__all__ = ["AsyncEventSource"]


class AsyncEventSource(EventSourceBase):
    """A reconnecting event-stream client over ``httpx.AsyncClient``.

    ::

        async with AsyncEventSource("http://127.0.0.1:8000/v1/topics/news") as events:
            async for event in events:
                print(event.event, event.data)

    The arguments and behaviour are ``EventSource``'s; ``client`` is an
    ``httpx.AsyncClient`` (a relative ``url`` is resolved against its
    ``base_url``; ``httpx.ASGITransport`` serves an app in-process, for tests)
    and ``sleep`` an async function (``anyio.sleep`` by default). ``close()``
    may be called from another task of the same event loop: the iteration's
    pending read or wait is cancelled and it ends at once. ``aclose()`` also
    releases the connection.
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
        client: httpx.AsyncClient | None = None,
        trust_env: bool = True,
        read_timeout: float | None = DEFAULT_READ_TIMEOUT,
        resend: bool = False,
        retry_statuses: Collection[int] = DEFAULT_RETRY_STATUSES,
        policy: ReconnectPolicy | None = None,
        max_event_size: int = MAX_EVENT_SIZE,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.time,
        on_response: Callable[[httpx.Response], None] | None = None,
        on_bytes: Callable[[bytes], None] | None = None,
        on_reconnect: Callable[[float, SSEGateError | None], None] | None = None,
        trusted_origins: Collection[str] = (),
    ) -> None:
        if client is not None and not isinstance(client, httpx.AsyncClient):
            raise TypeError(
                f"client must be an httpx.AsyncClient, not {type(client).__name__}"
                " (use EventSource with an httpx.Client)"
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
        self._sleep = sleep if sleep is not None else anyio.sleep
        self._scope: anyio.CancelScope | None = None  # around the step in progress
        self._busy = False  # a task is inside __anext__
        self._response: httpx.Response | None = None
        self._chunks: AsyncIterator[bytes] | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Event:
        # Fast path: an event already decoded (most calls, on a token stream).
        if self._pending and self._stop_at is None:
            return self._pending.popleft()
        return await self._next()

    async def _next(self) -> Event:
        if self._busy:
            raise RuntimeError("this AsyncEventSource is already being iterated by another task")
        self._busy = True
        try:
            while True:
                event = self._pop()
                if event is not None:
                    return event
                if self._finished or self._closed:
                    await self._release()
                    raise StopAsyncIteration
                # close() cancels this scope: a read or a wait in progress ends now.
                with anyio.CancelScope() as self._scope:
                    if self._chunks is None:
                        await self._connect()
                    else:
                        await self._read()
                self._scope = None
        except BaseException:
            self._scope = None
            self._finish()  # an error ends the iteration, as it ends a generator
            with anyio.CancelScope(shield=True):
                await self._release()
            raise
        finally:
            self._busy = False

    def close(self) -> None:
        """Stop: end the iteration, even one awaiting in another task, at once."""
        self._closed = True
        self._finish()
        if self._scope is not None:
            self._scope.cancel()

    async def aclose(self) -> None:
        """Stop, and release the connection (and the client, if we made it)."""
        self.close()
        if not self._busy:
            await self._release()

    # -- the loop's steps ----------------------------------------------------

    async def _connect(self) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(**client_options(self._trust_env))
        request, auth = self._build(self._client)
        try:
            response = await self._client.send(
                request, stream=True, auth=auth, follow_redirects=False
            )
        except httpx.HTTPError as exc:
            await self._wait(self._connect_failed(exc))
            return
        self._response = response
        verdict = self._accept(response)
        if verdict == "stream":
            self._chunks = response.aiter_bytes()
            return
        if verdict in ("stop", "redirect"):
            await self._drop_response()
            return
        error = self._response_error(
            response,
            await aread_capped(response.aiter_bytes(), MAX_ERROR_BODY, errors=(httpx.HTTPError,)),
        )
        await self._drop_response()
        if verdict == "error":
            raise error
        await self._wait(self._refused(error))

    async def _read(self) -> None:
        assert self._chunks is not None
        try:
            chunk = await self._chunks.__anext__()
        except StopAsyncIteration:
            await self._drop_response()
            await self._wait(self._ended(None))
        except httpx.HTTPError as exc:
            await self._drop_response()
            await self._wait(self._lost(exc))
        else:
            self._receive(chunk)

    async def _wait(self, delay: float | None) -> None:
        if delay is None:
            self._finish()
        else:
            await self._sleep(delay)

    async def _drop_response(self) -> None:
        response, self._response = self._response, None
        chunks, self._chunks = self._chunks, None
        if chunks is not None:
            await chunks.aclose()  # type: ignore[attr-defined]
        if response is not None:
            await response.aclose()

    async def _release(self) -> None:
        """Close the response and, if we made it, the client (idempotent)."""
        await self._drop_response()
        if self._own_client and self._client is not None:
            client, self._client = self._client, None
            await client.aclose()
