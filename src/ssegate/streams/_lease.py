"""``hold_lease()``: keep a producer's lease alive while it produces.

If the process dies the renewals stop, the lease runs out, and the stream ends
as ``"failed"`` for every reader (see ``StreamStore.acquire_lease``).

The renewals double as a stop signal: when the stream is ended by someone else
(a ``DELETE`` handled by another replica calls ``end(stream, "cancelled")``),
the next renewal finds out and cancels the producing block, so the upstream
request is dropped instead of generating (and billing) for nobody.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from .._exceptions import StoreUnavailable, StreamEnded
from ._store import DONE, StreamStore

__all__ = ["Lease", "hold_lease"]


class Lease:
    """A lease held by ``hold_lease()``.

    ``lost`` becomes true when the stream was ended by someone else (or the
    lease ran out); the block has then been cancelled. End the stream through
    ``lease.end()`` so that your own end is not mistaken for that.
    """

    def __init__(self, store: StreamStore, stream: str) -> None:
        self.store = store
        self.stream = stream
        self.lost = False
        self._finished = False
        self._scope: anyio.CancelScope | None = None

    async def end(self, outcome: str = DONE) -> None:
        """End the stream (see ``StreamStore.end``) and stop renewing."""
        self._finished = True
        await self.store.end(self.stream, outcome)

    def _ended_elsewhere(self) -> None:
        if not self._finished:
            self.lost = True
            if self._scope is not None:
                self._scope.cancel()


@asynccontextmanager
async def hold_lease(
    store: StreamStore, stream: str, ttl: float = 10.0, *, renew_every: float | None = None
) -> AsyncIterator[Lease]:
    """Acquire a lease on ``stream`` and renew it every ``renew_every`` seconds
    (``ttl / 3`` by default) until the block exits::

        async with hold_lease(store, stream_id, ttl=10) as lease:
            async for token in generate():
                await store.append(stream_id, Event(token, event="token"))
            await lease.end()
        if lease.lost:
            ...  # stopped from elsewhere: the block was cancelled

    A renewal that cannot reach the store is tried again at the next tick (the
    lease may run out meanwhile; the next append then raises ``StreamEnded``).
    Errors raised in the block come out as themselves.
    """
    interval = ttl / 3 if renew_every is None else renew_every
    if not interval > 0 or interval >= ttl:
        raise ValueError(f"renew_every must be between 0 and ttl ({ttl}), not {interval!r}")
    await store.acquire_lease(stream, ttl)
    lease = Lease(store, stream)

    async def renew() -> None:
        while not lease._finished:
            await anyio.sleep(interval)
            try:
                await store.renew_lease(stream, ttl)
            except StreamEnded:
                lease._ended_elsewhere()
                return
            except StoreUnavailable:
                continue

    # The block's own exception is re-raised as itself, not wrapped in the task
    # group's ExceptionGroup: callers catch what they raised.
    error: BaseException | None = None
    async with anyio.create_task_group() as task_group:
        task_group.start_soon(renew, name=f"ssegate-lease-{stream}")
        try:
            with anyio.CancelScope() as scope:
                lease._scope = scope
                yield lease
        except BaseException as exc:
            error = exc
        finally:
            lease._scope = None
            task_group.cancel_scope.cancel()
    if error is not None:
        raise error
