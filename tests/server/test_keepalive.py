"""The asyncio keep-alive wheel: one loop timer for every stream's keep-alives.

In virtual time (``VirtualTimeLoop``), so the schedules are exact: streams due
together share one bucket, a keep-alive never leaves early and at most one
rounding step late, and a stream that ends leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator

import anyio
import pytest

from ssegate.server import CloseReason
from ssegate.server._keepalive import RESOLUTION_S, KeepAliveWheel, keepalive_wheel
from ssegate.server._options import StreamOptions
from ssegate.server._stream import stream_events

from .conftest import Peer, VirtualTimeLoop

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, object]]:
    return ("asyncio", {"loop_factory": VirtualTimeLoop})


class Stream:
    """What the wheel calls: records the virtual times it was told."""

    def __init__(self, wheel: KeepAliveWheel) -> None:
        self.wheel = wheel
        self.context = contextvars.copy_context()
        self.told: list[float] = []

    def ping_due(self) -> None:
        self.told.append(self.wheel.loop.time())


async def test_streams_due_together_share_one_bucket_and_one_loop_timer() -> None:
    loop = asyncio.get_running_loop()
    wheel = keepalive_wheel(loop)
    assert keepalive_wheel(loop) is wheel
    streams = [Stream(wheel) for _ in range(4)]
    # due at 15.0, 15.1, 15.2 (one bucket: 15.25) and 16.0 (its own)
    buckets = [
        wheel.add(s, when, 15.0) for s, when in zip(streams, [15.0, 15.1, 15.2, 16.0], strict=True)
    ]
    assert [b.moment for b in buckets] == [15.0, 15.25, 15.25, 16.0]
    assert buckets[1] is buckets[2]  # one bucket, held by both streams
    assert {m: len(b) for m, b in wheel.buckets.items()} == {15.0: 1, 15.25: 2, 16.0: 1}
    assert wheel.handle_at == 15.0  # one loop timer, for the earliest
    await anyio.sleep(20)
    assert [s.told for s in streams] == [[15.0], [15.25], [15.25], [16.0]]
    assert wheel.buckets == {}
    assert wheel.handle is None


async def test_a_short_interval_rounds_finer() -> None:
    wheel = keepalive_wheel(asyncio.get_running_loop())
    stream = Stream(wheel)
    # ping=0.5: rounded to 1/16 s, not RESOLUTION_S
    assert wheel.add(stream, 0.53, 0.5).moment == 0.5625
    assert wheel.add(Stream(wheel), 0.53, 15.0).moment == RESOLUTION_S * 3


async def test_a_discarded_stream_is_not_told_and_not_kept() -> None:
    wheel = keepalive_wheel(asyncio.get_running_loop())
    kept, dropped = Stream(wheel), Stream(wheel)
    bucket = wheel.add(kept, 5.0, 15.0)
    wheel.discard(dropped, wheel.add(dropped, 5.0, 15.0))
    assert wheel.buckets == {bucket.moment: {kept}}
    wheel.discard(kept, bucket)
    assert wheel.buckets == {}  # the heap may keep the moment; its bucket is gone
    await anyio.sleep(10)
    assert kept.told == dropped.told == []
    assert wheel.handle is None


async def test_one_failing_stream_does_not_stop_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    wheel = keepalive_wheel(asyncio.get_running_loop())

    class Failing(Stream):
        def ping_due(self) -> None:
            raise RuntimeError("broken")

    ok = Stream(wheel)
    wheel.add(Failing(wheel), 1.0, 15.0)
    wheel.add(ok, 1.0, 15.0)
    await anyio.sleep(2)
    assert ok.told == [1.0]
    assert "event stream keep-alive failed" in caplog.text


async def test_many_streams_ping_on_schedule_and_leave_the_wheel_empty() -> None:
    """Streams opened at odd moments: each keep-alive within one rounding step
    after its silence reached ``ping``, never before; all leave the wheel."""

    async def thinking() -> AsyncIterator[str]:
        await anyio.sleep(40)
        yield "late"

    async def one(peer: Peer, start: float) -> CloseReason:
        await anyio.sleep(start)
        return await stream_events(
            peer.scope, peer.receive, peer.send, thinking(), StreamOptions(ping=15)
        )

    wheel = keepalive_wheel(asyncio.get_running_loop())  # the one the streams will use
    starts = [0.0, 0.1, 0.3, 0.3, 7.0]
    peers = [Peer() for _ in starts]
    t0 = anyio.current_time()
    async with anyio.create_task_group() as tasks:
        for peer, start in zip(peers, starts, strict=True):
            tasks.start_soon(one, peer, start)
    pings = [[t for t, body, _ in peer.bodies(t0=t0) if body == b": ping\n"] for peer in peers]
    assert pings == [
        [15.0, 30.0],
        [15.25, 30.25],
        [15.5, 30.5],
        [15.5, 30.5],
        [22.0, 37.0],
    ]
    assert keepalive_wheel(asyncio.get_running_loop()) is wheel
    assert wheel.buckets == {}
    assert wheel.handle is None
