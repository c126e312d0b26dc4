"""Stopping the consumer closes the upstream request at once (that stops the bill)."""

from __future__ import annotations

from contextlib import aclosing
from dataclasses import replace
from typing import Any

import anyio
import pytest
from llm_support import REQUEST, capture

from ssegate.llm import Start, TextDelta
from ssegate.llm.providers.anthropic import AnthropicProvider
from ssegate.llm.providers.ollama import OllamaProvider
from ssegate.llm.providers.openai import OpenAIProvider
from ssegate.testing import FakeUpstream

pytestmark = pytest.mark.anyio

#: The issue's bound: the upstream sees the close within one second.
CLOSE_WITHIN = 1.0


def _held(name: str, path: str) -> FakeUpstream:
    """The capture's first two chunks, then the connection stays open (a slow model)."""
    reply = capture(name)
    return FakeUpstream().add(path, replace(reply, chunks=reply.chunks[:2], hold=True))


async def _wait_closed(fake: FakeUpstream) -> bool:
    return await anyio.to_thread.run_sync(fake.wait_disconnected, CLOSE_WITHIN)


async def test_breaking_out_closes_the_upstream_connection(client: Any) -> None:
    fake = _held("openai_text.http", "/v1/chat/completions")
    with fake.run() as url:
        async with OpenAIProvider(url + "/v1", "k", client=client) as provider:
            seen = []
            async with aclosing(provider.stream(REQUEST)) as events:
                async for ev in events:
                    seen.append(ev)
                    if isinstance(ev, TextDelta):
                        assert not fake.disconnected.is_set()
                        break
            assert await _wait_closed(fake)
    assert seen == [
        Start(model="m1", provider="openai", id="chatcmpl-a1", created=1760000000),
        TextDelta("Bon"),
    ]


@pytest.mark.parametrize(
    ("name", "path", "cls"),
    [
        ("openai_text.http", "/v1/chat/completions", OpenAIProvider),
        ("ollama_chat.http", "/api/chat", OllamaProvider),
        ("anthropic_text.http", "/v1/messages", AnthropicProvider),
    ],
)
async def test_cancelling_the_consumer_task_closes_the_upstream(
    name: str, path: str, cls: type[OpenAIProvider], client: Any
) -> None:
    fake = _held(name, path)
    with fake.run() as url:
        base = url + "/v1" if cls is OpenAIProvider else url
        async with cls(base, client=client) as provider:
            started = anyio.Event()
            got: list[object] = []

            async def consume() -> None:
                async with aclosing(provider.stream(REQUEST)) as events:
                    async for ev in events:
                        got.append(ev)
                        started.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(consume)
                await started.wait()
                assert not fake.disconnected.is_set()
                tg.cancel_scope.cancel()  # e.g. the browser went away
            assert await _wait_closed(fake)
    assert isinstance(got[0], Start)
