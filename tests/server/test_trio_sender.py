"""On trio, a stream's hand-overs are sent by one sender task, not one task each.

A task is the only way anyio offers to send while the pump holds a half-run
step of the producer (trio ties every wait to its task), so the stream starts
one at its first hand-over and keeps it: a producer with many batches starts
no more tasks than one with a single batch.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import trio
import trio.lowlevel

from ssegate.server import CloseReason
from ssegate.server._options import StreamOptions
from ssegate.server._stream import stream_events

from .conftest import Peer

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "trio"


class Spawned(trio.abc.Instrument):
    def __init__(self) -> None:
        self.names: list[str] = []

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self.names.append(task.name.rsplit(".", 1)[-1])


async def pairs(n: int) -> AsyncIterator[Any]:
    """Two items ready together, then a wait: one hand-over per pair."""
    for i in range(n):
        yield f"a{i}"
        yield f"b{i}"
        await anyio.lowlevel.checkpoint()


async def spawned_for(n: int) -> list[str]:
    peer = Peer()
    spawned = Spawned()
    trio.lowlevel.add_instrument(spawned)
    try:
        reason = await stream_events(
            peer.scope, peer.receive, peer.send, pairs(n), StreamOptions(ping=None)
        )
    finally:
        trio.lowlevel.remove_instrument(spawned)
    assert reason is CloseReason.COMPLETED
    assert peer.body == b"".join(f"data: a{i}\n\ndata: b{i}\n\n".encode() for i in range(n))
    return spawned.names


async def test_one_sender_task_for_every_hand_over() -> None:
    assert await spawned_for(1) == ["watch", "sender"]
    assert await spawned_for(8) == ["watch", "sender"]
