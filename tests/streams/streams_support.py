"""Helpers shared by the stream tests."""

from __future__ import annotations

import shutil
from collections.abc import Callable

import anyio
import pytest

from ssegate.streams import StreamStore


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


#: For tests that start and stop a redis-server of their own (the shared one
#: must never be stopped): they need the binary, not just a REDIS_URL.
needs_redis_server = pytest.mark.skipif(
    shutil.which("redis-server") is None,
    reason="needs redis-server on PATH to run a server of its own",
)


class Ids:
    """The ids of one stream (``"<epoch>-<number>"``): ``ids(3)`` is its third event's."""

    def __init__(self, epoch: str) -> None:
        self.epoch = epoch

    def __call__(self, n: int) -> str:
        return f"{self.epoch}-{n:012d}"

    @classmethod
    def of(cls, event_id: str) -> Ids:
        """The ids of the stream ``event_id`` belongs to."""
        return cls(event_id.partition("-")[0])


async def ids_of(store: StreamStore, stream: str) -> Ids:
    epoch = (await store.info(stream)).epoch
    assert epoch is not None, f"{stream!r} does not exist"
    return Ids(epoch)


def seq(event_id: str | None) -> int:
    """The number in an event id."""
    return int((event_id or "0").rpartition("-")[2])


async def until(check: Callable[[], bool], what: str) -> None:
    """Wait for ``check()`` (an outcome, not a duration), up to 10 s."""
    for _ in range(2000):
        if check():
            return
        await anyio.sleep(0.005)
    pytest.fail(f"still not {what} after 10 s")
