"""The embedded model behind the gateway: /healthz at once, /readyz once loaded, a
request before that waits with keep-alives (it does not fail), then the openai SDK
streaming (raw and ``.stream()``) and not (greedy decoding: exact answers)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio.to_thread
import httpx
import openai
import pytest
from gateway_support import events, settings

from ssegate.gateway import create_app
from ssegate.llm import ChatRequest, LLMEvent
from ssegate.llm.providers import create_provider
from ssegate.testing import UvicornThread, serve

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
ANSWER = "The capital of France is Paris."


class GatedLocal:
    """The real local provider, whose model counts as loaded only once ``gate`` opens."""

    name = "local"

    def __init__(self, real: Any, gate: threading.Event) -> None:
        self.real = real
        self.gate = gate

    async def engine(self) -> Any:
        await anyio.to_thread.run_sync(self.gate.wait)
        return await self.real.engine()

    async def stream(self, request: ChatRequest) -> AsyncIterator[LLMEvent]:
        await self.engine()
        async for event in self.real.stream(request):
            yield event

    async def aclose(self) -> None:
        """The module closes the real provider."""


@pytest.fixture(scope="module")
def gate() -> threading.Event:
    return threading.Event()


@pytest.fixture(scope="module")
def server(gate: threading.Event) -> Iterator[UvicornThread]:
    real = create_provider("local", n_ctx=512)
    values = settings(keep_alive=0.05)
    values = values.model_copy(update={"local": values.local.model_copy(update={"preload": True})})
    app = create_app(values, local=GatedLocal(real, gate))  # type: ignore[arg-type]
    try:
        with serve(app) as running:
            yield running
    finally:
        gate.set()
        asyncio.run(real.aclose())


def test_a_request_before_the_model_is_ready_waits_with_keep_alives(
    server: UvicornThread, gate: threading.Event
) -> None:
    url = server.url
    assert httpx.get(url + "/healthz").json() == {"status": "ok"}
    not_ready = httpx.get(url + "/readyz")
    assert not_ready.status_code == 503
    assert not_ready.json() == {
        "status": "not_ready",
        "checks": {"store": "ok", "default_model": "loading"},
    }
    body = {
        "model": "local",
        "messages": QUESTION,
        "stream": True,
        "temperature": 0,
        "max_tokens": 24,
    }
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=60) as response:
        assert response.status_code == 200  # headers at once, while the model loads
        raw = response.iter_raw()
        first = next(raw)
        assert first.startswith(b": ")  # a keep-alive comment, not an event
        gate.set()  # the model is "loaded" now
        rest = first + b"".join(raw)
    assert httpx.get(url + "/readyz").status_code == 200
    got = events(httpx.Response(200, content=rest))
    text = "".join(
        json.loads(e.data)["choices"][0]["delta"].get("content") or ""
        for e in got[:-1]
        if json.loads(e.data)["choices"]
    )
    assert text == ANSWER  # exactly: greedy decoding gives the same tokens every time
    assert got[-1].data == "[DONE]"


def test_sdk_against_the_local_model(server: UvicornThread, gate: threading.Event) -> None:
    gate.set()
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    raw = client.chat.completions.create(
        model="local",
        messages=QUESTION,
        stream=True,
        temperature=0,
        max_tokens=24,  # type: ignore[arg-type]
    )
    assert "".join(c.choices[0].delta.content or "" for c in raw) == ANSWER
    with client.chat.completions.stream(
        model="local",
        messages=QUESTION,
        temperature=0,
        max_tokens=24,  # type: ignore[arg-type]
    ) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content == ANSWER
    whole = client.chat.completions.create(
        model="local",
        messages=QUESTION,
        temperature=0,
        max_tokens=4,  # type: ignore[arg-type]
    )
    assert whole.choices[0].message.content == "The capital of France"
    assert whole.choices[0].finish_reason == "length"
    assert whole.usage is not None
    assert whole.usage.completion_tokens == 4


def test_the_local_model_refuses_tools_with_400(
    server: UvicornThread, gate: threading.Event
) -> None:
    gate.set()
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    body = {"model": "local", "messages": QUESTION, "stream": True, "tools": [tool]}
    response = httpx.post(server.url + "/v1/chat/completions", json=body)
    assert response.status_code == 400
    assert "cannot call tools" in response.json()["error"]["message"]
