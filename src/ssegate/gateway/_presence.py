"""``Presence``: whether a generation has readers on *other* replicas.

The runner counts this process's readers of each generation to decide when the
detach grace period starts. With replicas behind a load balancer the reader of
a generation may be on another replica (a chat POST on one, its resume GET on
the next): counted nowhere, the generation would be cancelled as abandoned
while someone reads it. So each replica marks, in Redis, the streams it has
readers of (a key per stream with a short expiry, set at once for a new one and
refreshed every ``refresh`` seconds while it has them: a new reader's stream is
marked without the others, so a burst of N new streams costs N marks, not N
times the streams already read, and those of ``gather`` seconds go out in one
pipeline); a grace period that
runs out with no local reader asks whether the key is there and, if so, waits
another period.

With the memory store there is one process: nothing to share, nobody elsewhere.
The mark lingers up to ``2 * refresh`` seconds after the last reader leaves,
which lengthens a grace period by at most that much.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import anyio

from ..streams import StreamStore

__all__ = ["Presence"]

log = logging.getLogger("ssegate.gateway")


class Presence:
    """Marks of this replica's readers, and the question about the others'."""

    def __init__(
        self,
        store: StreamStore,
        *,
        refresh: float = 1.0,
        gather: float = 0.02,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # RedisStore's own client: no second pool, and its prefix keeps tests apart.
        self._redis: Any = getattr(store, "redis", None)
        self._prefix: str = getattr(store, "prefix", "")
        self.refresh = refresh
        #: How long new readers' streams are gathered before they are marked:
        #: a burst of starts costs a pipeline per ``gather``, not one per stream
        #: (a mark that much later only matters to a grace period running out).
        self.gather = gather
        self._reading: Counter[str] = Counter()
        self._new = anyio.Event()  # a stream got its first reader: mark it now
        self._fresh: list[str] = []  # streams that got their first reader since the last marks
        self._clock = clock
        self._next_all = -math.inf  # when to mark every stream read here again

    @property
    def shared(self) -> bool:
        return self._redis is not None

    def _key(self, stream: str) -> str:
        return f"{self._prefix}readers:{stream}"

    def add(self, stream: str) -> None:
        self._reading[stream] += 1
        if self._reading[stream] == 1 and self._redis is not None:
            self._fresh.append(stream)
            self._new.set()

    def remove(self, stream: str) -> None:
        self._reading[stream] -= 1
        if self._reading[stream] <= 0:
            del self._reading[stream]

    async def elsewhere(self, stream: str) -> bool:
        """Whether some replica has marked ``stream`` as read (lately)."""
        if self._redis is None:
            return False
        try:
            return bool(await self._redis.exists(self._key(stream)))
        except Exception as exc:  # Redis down: do not keep a generation alive on a guess
            log.warning("cannot ask Redis for readers of %s: %s", stream, exc)
            return False

    def due(self) -> list[str]:
        """The streams to mark now (no I/O): every stream read here once per
        ``refresh`` seconds, and in between only those that got their first
        reader since the last call, each once."""
        now = self._clock()
        if now >= self._next_all:
            self._next_all = now + self.refresh
            self._fresh.clear()
            return list(self._reading)
        fresh, self._fresh = self._fresh, []
        return [stream for stream in dict.fromkeys(fresh) if stream in self._reading]

    async def run(self) -> None:
        """Refresh this replica's marks until cancelled (nothing to do without Redis)."""
        if self._redis is None:
            return
        expiry = max(int(self.refresh * 2000), 1)
        while True:
            streams = self.due()
            if streams:
                with contextlib.suppress(Exception):  # a missed refresh only shortens a mark
                    async with self._redis.pipeline(transaction=False) as pipe:
                        for stream in streams:
                            pipe.set(self._key(stream), b"1", px=expiry)
                        await pipe.execute()
            woken = False
            with anyio.move_on_after(max(self._next_all - self._clock(), 0.0)):
                await self._new.wait()
                woken = True
            if woken and self.gather > 0:
                await anyio.sleep(self.gather)  # the others of a burst: marked together
            self._new = anyio.Event()
