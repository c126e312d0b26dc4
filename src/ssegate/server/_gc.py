"""One optional step for long-lived servers: take start-up objects out of the collector's way.

A streaming server keeps thousands of connections open, and CPython's cyclic
collector, in each full (generation 2) collection, walks every tracked object
in the process: the streams' own (a few dozen each), and everything the app
made while starting (modules, classes, FastAPI's routes and pydantic models:
30 000 to 60 000 objects before the first request). A full collection stops
the event loop, and every stream on it, for as long as the walk takes.

``EventSourceResponse`` leaves no cyclic garbage and keeps few objects per
stream without any of this (see ``_response.py``); the collector still runs as
connections open. ``freeze_startup_objects()``, called once when start-up is
over (the end of the lifespan start-up, or before forking workers), collects
what start-up left, then moves every surviving object to the permanent
generation (``gc.freeze()``), which no collection walks again: each later full
collection walks only what arrived since.

Measured in ``benchmarks/server.py`` (``ssegate@fastapi+frozen`` against
``ssegate@fastapi``, 300 streams connecting at once, medians of 5 runs on a
shared 2-core machine): the longest collection during a run was 9.5 ms
frozen, where unfrozen runs that had a full collection stalled 63-158 ms. The
benchmark's FastAPI app freezes ~55 000 objects, its Starlette one ~28 000.

A second step for servers holding thousands of streams: ``pace_collections()``.
CPython starts a young collection when its count of new objects passes the
first threshold, but that count is new objects *minus any freed*, old ones
included. In a server where streams end as others start, the two balance: the
count stays near zero while the young generation, every object made since the
last collection and still alive, grows without bound (a million objects in a
test of 10 000 churning "streams", with no collection at all), until some burst
of allocations starts a collection that walks it all, every stream stopped for
hundreds of milliseconds. ``pace_collections()`` collects the young generation
on a clock instead (every 0.1 s, and the middle one every tenth time), so each
collection walks what a tenth of a second made; the thresholds stay as the
backstop for bursts.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable

__all__ = ["CollectorPacer", "freeze_startup_objects", "pace_collections"]

#: ``pace_collections()``'s defaults: seconds between young collections, and
#: every how many of them the middle generation is collected too.
PACE_INTERVAL_S = 0.1
PACE_MIDDLE_EVERY = 2


def freeze_startup_objects() -> int:
    """Collect, then exempt every object alive now from later collections.

    Call it once, after the app has started and before it serves (objects
    made later are collected as usual). Returns how many objects were frozen.
    Objects frozen here that later become garbage in a cycle are never freed,
    so call it at the end of start-up, not in the middle of serving.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


class CollectorPacer:
    """Which generation to collect at each tick of ``pace_collections()`` (no I/O).

    The young generation at every tick, the middle one (which includes the young)
    every ``middle_every``-th tick. The oldest is left to CPython's thresholds:
    ``gc.collect(1)`` counts towards them as an automatic middle collection does.
    """

    __slots__ = ("_middle_every", "_ticks")

    def __init__(self, middle_every: int = PACE_MIDDLE_EVERY) -> None:
        if middle_every < 1:
            raise ValueError(f"middle_every must be at least 1, not {middle_every!r}")
        self._middle_every = middle_every
        self._ticks = 0

    def tick(self) -> int:
        """The generation to collect now."""
        self._ticks += 1
        if self._ticks == self._middle_every:
            self._ticks = 0
            return 1
        return 0


async def pace_collections(
    interval: float = PACE_INTERVAL_S,
    middle_every: int = PACE_MIDDLE_EVERY,
    *,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> None:
    """Collect the young generation every ``interval`` seconds until cancelled.

    Run it as a task of the server's event loop for its whole life (``ssegate
    serve`` does, from the end of start-up). See the module docstring for why a
    server with churning streams needs it; ``sleep`` is for tests.
    """
    if not interval > 0:
        raise ValueError(f"interval must be positive, not {interval!r}")
    pacer = CollectorPacer(middle_every)
    while True:
        await sleep(interval)
        gc.collect(pacer.tick())
