"""A hand-written ASGI peer for driving the streaming core without a server.

It records every message the app sends with the time it was sent; on trio with
``MockClock(autojump_threshold=0)`` that time is virtual, so keep-alive and
timeout schedules are asserted exactly, without sleeping.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import MutableMapping
from typing import Any

import anyio
import pytest
from trio.testing import MockClock


class Peer:
    """The server side of one ASGI HTTP request, as the app sees it."""

    def __init__(self, *, disconnect_at: float = math.inf, block_body_after: int | None = None):
        self.messages: list[tuple[float, MutableMapping[str, Any]]] = []
        self.disconnect_at = disconnect_at
        self.block_body_after = block_body_after
        self.scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "GET",
            "path": "/",
            "headers": [],
        }

    async def receive(self) -> MutableMapping[str, Any]:
        delay = self.disconnect_at - anyio.current_time()
        if delay == math.inf:
            await anyio.sleep_forever()
        await anyio.sleep(max(delay, 0))
        return {"type": "http.disconnect"}

    async def send(self, message: MutableMapping[str, Any]) -> None:
        bodies = sum(1 for _, m in self.messages if m["type"] == "http.response.body")
        if (
            message["type"] == "http.response.body"
            and self.block_body_after is not None
            and bodies >= self.block_body_after
        ):
            await anyio.sleep_forever()  # a client that stopped reading
        self.messages.append((anyio.current_time(), message))

    @property
    def start(self) -> MutableMapping[str, Any]:
        assert self.messages[0][1]["type"] == "http.response.start"
        return self.messages[0][1]

    def bodies(self, *, t0: float = 0.0) -> list[tuple[float, bytes, bool]]:
        """(time since t0, body, more_body) of every body message."""
        return [
            (round(t - t0, 6), m["body"], m["more_body"])
            for t, m in self.messages
            if m["type"] == "http.response.body"
        ]

    @property
    def body(self) -> bytes:
        return b"".join(m["body"] for _, m in self.messages if m["type"] == "http.response.body")


@pytest.fixture
def virtual_clock() -> MockClock:
    return MockClock(autojump_threshold=0)


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An asyncio loop whose clock jumps to the next timer whenever nothing is ready.

    The asyncio twin of trio's ``MockClock(autojump_threshold=0)``: sleeps and
    timeouts take no real time, and ``loop.time()`` reads exact virtual seconds.
    Only for code that does no real I/O and uses no threads.
    """

    def __init__(self) -> None:
        super().__init__()
        self._virtual_now = 0.0

    def time(self) -> float:
        return self._virtual_now

    def _run_once(self) -> None:
        scheduled: list[asyncio.TimerHandle] = self._scheduled  # type: ignore[attr-defined]
        if not self._ready:  # type: ignore[attr-defined]
            pending = [handle.when() for handle in scheduled if not handle.cancelled()]
            if pending and min(pending) > self._virtual_now:
                self._virtual_now = min(pending)
        super()._run_once()  # type: ignore[misc]
