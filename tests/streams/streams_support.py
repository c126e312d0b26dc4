"""Helpers shared by the stream tests."""

from __future__ import annotations

import shutil

import pytest


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
