"""Helpers for the LLM tests: captures, the shared fake upstream, collecting events."""

from __future__ import annotations

import itertools
from contextlib import aclosing
from pathlib import Path
from typing import Any

from ssegate.llm import ChatRequest, LLMEvent
from ssegate.llm.providers import Provider
from ssegate.testing import FakeUpstream, Reply

CAPTURES = Path(__file__).parent / "captures"


def capture(name: str, **options: Any) -> Reply:
    return Reply.load(CAPTURES / name, **options)


class Upstream:
    """One fake upstream server for the session; each test replays under its own prefix."""

    def __init__(self, fake: FakeUpstream, url: str) -> None:
        self.fake = fake
        self.url = url
        self._ids = itertools.count()

    def replay(self, path: str, *replies: Reply) -> str:
        """Serve ``replies`` at ``/<unique>/<path>``; return the base URL ``.../<unique>``."""
        prefix = f"/t{next(self._ids)}"
        self.fake.add(prefix + path, *replies)
        return self.url + prefix

    def requests_to(self, base: str) -> list[Any]:
        prefix = base[len(self.url) :]
        return [r for r in self.fake.requests if r.path.startswith(prefix + "/")]


async def collect(provider: Provider, request: ChatRequest) -> list[LLMEvent]:
    async with aclosing(provider.stream(request)) as events:
        return [ev async for ev in events]


REQUEST = ChatRequest(model="m1", messages=[{"role": "user", "content": "Hi"}])
