"""Producer leases, renewed for the whole process in one store call per tick.

A producer holds a lease on its stream (``StreamStore.acquire_lease``) and
renews it within its ttl: if the process dies the renewals stop, the lease runs
out, and the stream ends as ``"failed"`` for every reader.

A ``LeaseKeeper`` holds every lease of its holders and renews them all in one
call per tick (``StreamStore.renew_leases``; on Redis one script call per few
hundred streams, sent side by side). A thousand generations on one replica
cost one renewal every ``renew_every`` seconds, not two thousand store calls a
second and a task each (under load those per-stream renewals fell behind and
leases of live producers ran out).

The renewals double as a stop signal: when a stream is ended by someone else
(a ``DELETE`` handled by another replica calls ``end(stream, "cancelled")``),
the next tick finds out and cancels its producing block, so the upstream
request is dropped instead of generating (and billing) for nobody. A tick that
cannot reach the store is tried again at the next one (a lease may run out
meanwhile; its producer's next append then raises ``StreamEnded``).

``hold_lease()`` holds one lease through the keeper its store shares between
all holders with the same ttl and interval. The keeper's loop runs in the task
group of one of them (handed to another when that one leaves), so a lease
costs no task of its own. The gateway's runner runs a keeper of its own.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import NoReturn, Protocol

import anyio
from anyio.abc import TaskGroup

from .._exceptions import StoreUnavailable
from ._store import DONE, StreamStore

__all__ = ["Lease", "LeaseKeeper", "hold_lease"]

log = logging.getLogger("ssegate.streams")


class _Cancels(Protocol):
    def cancel(self) -> object: ...


class Lease:
    """A lease held by ``hold_lease()`` (or a ``LeaseKeeper``).

    ``lost`` becomes true when the stream was ended by someone else (or the
    lease ran out); the block has then been cancelled. End the stream through
    ``lease.end()`` so that your own end is not mistaken for that.
    """

    def __init__(self, store: StreamStore, stream: str) -> None:
        self.store = store
        self.stream = stream
        self.lost = False
        self._finished = False
        #: What ``_ended_elsewhere`` cancels: the holder's cancel scope around
        #: its work (anyio's ``CancelScope``, or any with such a ``cancel()``).
        self._scope: _Cancels | None = None

    async def end(self, outcome: str = DONE) -> None:
        """End the stream (see ``StreamStore.end``) and stop renewing."""
        self._finished = True
        await self.store.end(self.stream, outcome)

    def _ended_elsewhere(self) -> None:
        if not self._finished:
            self.lost = True
            if self._scope is not None:
                self._scope.cancel()


class LeaseKeeper:
    """Renews the leases it holds on ``store``, all in one call every ``renew_every``
    seconds (``ttl / 3`` by default); run ``run()`` in a task group.

    ``sleep`` and ``clock`` (seconds) are injectable for tests in virtual time.
    """

    def __init__(
        self,
        store: StreamStore,
        ttl: float = 10.0,
        *,
        renew_every: float | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        clock: Callable[[], float] = anyio.current_time,
    ) -> None:
        self.store = store
        self.ttl = float(ttl)
        self.renew_every = _interval(ttl, renew_every)
        self._sleep = sleep
        self._clock = clock
        #: The leases held, each with the task group of its holder that may run
        #: the keeper's loop (``hold_lease()``'s), or None.
        self._held: dict[Lease, TaskGroup | None] = {}
        self._due: float | None = None
        # Where the loop runs for hold_lease() (a holder's task group), and its scope.
        self._host: TaskGroup | None = None
        self._host_scope: anyio.CancelScope | None = None

    def __len__(self) -> int:
        """How many leases it holds."""
        return len(self._held)

    async def run(self) -> NoReturn:
        """Renew the held leases every ``renew_every`` seconds, until cancelled."""
        while True:
            now = self._clock()
            if self._due is None:
                self._due = now + self.renew_every
            if now < self._due:
                await self._sleep(self._due - now)
                continue
            await self.renew()
            # Counted from the tick's start (a slow call does not delay the next
            # one); not set if cancelled mid-call, so the next host renews at once.
            self._due = now + self.renew_every

    async def renew(self) -> None:
        """One tick: renew every held lease in one store call, and cancel the
        blocks of those whose stream was ended elsewhere."""
        held = [lease for lease in self._held if not lease._finished]
        if not held:
            return
        try:
            # The names were checked when the leases were acquired.
            ended = await self.store._renew_leases([lease.stream for lease in held], self.ttl)
        except StoreUnavailable:
            return  # again at the next tick
        except Exception:  # a bug: never take the host (the runner, the app) down with it
            log.exception("renewing %d leases failed", len(held))
            return
        if ended:
            gone = set(ended)
            for lease in held:
                if lease.stream in gone and lease in self._held:
                    lease._ended_elsewhere()

    @asynccontextmanager
    async def hold(
        self, stream: str, *, acquire: bool = True, host: TaskGroup | None = None
    ) -> AsyncIterator[Lease]:
        """Hold a lease on ``stream`` (acquired first unless ``acquire`` is false)
        while the block runs; the block is cancelled if the stream is ended elsewhere.

        ``host``: a task group the keeper's loop may run in while this lease is
        held (``hold_lease()``'s way of running without a task of its own).
        """
        if acquire:
            await self.store.acquire_lease(stream, self.ttl)
        scope = anyio.CancelScope()
        lease = self.add(stream, scope, host)
        try:
            with scope:
                yield lease
        finally:
            self.discard(lease, host)

    def add(self, stream: str, scope: _Cancels, host: TaskGroup | None = None) -> Lease:
        """Hold a lease on ``stream`` (acquired already) until ``discard(lease)``:
        ``hold()`` without its block, for a holder that runs its work in
        ``scope`` (a cancel scope: cancelled if the stream is ended elsewhere).
        The runner's generations hold theirs so, in the scope their task's
        kind takes: an async context manager and anyio's scope cost every
        stream start several µs more."""
        lease = Lease(self.store, stream)
        lease._scope = scope
        self._held[lease] = host
        if host is not None and self._host is None:
            self._start_in(host)
        return lease

    def discard(self, lease: Lease, host: TaskGroup | None = None) -> None:
        """Stop holding ``lease`` (``add``'s, with the same ``host``)."""
        lease._scope = None
        del self._held[lease]
        self._move_from(host)

    def _start_in(self, host: TaskGroup) -> None:
        # The scope exists before the task runs: a hand-over before it starts cancels it.
        scope = anyio.CancelScope()
        self._host, self._host_scope = host, scope
        host.start_soon(self._hosted, host, scope, name="ssegate-leases")

    async def _hosted(self, host: TaskGroup, scope: anyio.CancelScope) -> None:
        try:
            with scope:
                await self.run()
        finally:
            # Cancelled with its host's task group, not handed over: move on.
            self._move_from(host)

    def _move_from(self, host: TaskGroup | None) -> None:
        """Stop the loop running in ``host`` (its holder leaves) and run it in another holder's."""
        if host is None or host is not self._host:
            return
        assert self._host_scope is not None
        self._host_scope.cancel()
        self._host = self._host_scope = None
        for other in self._held.values():
            if other is not None and other is not host:
                self._start_in(other)
                return


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

    The renewals of every lease held this way on ``store`` (same ttl and
    interval) go out together, one call per tick (see ``LeaseKeeper``). A
    renewal that cannot reach the store is tried again at the next tick (the
    lease may run out meanwhile; the next append then raises ``StreamEnded``).
    Errors raised in the block come out as themselves.
    """
    interval = _interval(ttl, renew_every)
    await store.acquire_lease(stream, ttl)
    keepers = store._lease_keepers
    key = (float(ttl), interval)
    keeper = keepers.get(key)
    if keeper is None:
        keeper = keepers[key] = LeaseKeeper(store, ttl, renew_every=interval)
    # The block's own exception is re-raised as itself, not wrapped in the task
    # group's ExceptionGroup: callers catch what they raised.
    error: BaseException | None = None
    try:
        async with anyio.create_task_group() as host:
            try:
                async with keeper.hold(stream, acquire=False, host=host) as lease:
                    yield lease
            except BaseException as exc:
                error = exc
    finally:
        if not keeper and keepers.get(key) is keeper:
            del keepers[key]
    if error is not None:
        raise error


def _interval(ttl: float, renew_every: float | None) -> float:
    interval = ttl / 3 if renew_every is None else renew_every
    if not interval > 0 or interval >= ttl:
        raise ValueError(f"renew_every must be between 0 and ttl ({ttl}), not {interval!r}")
    return float(interval)
