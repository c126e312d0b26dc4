"""The Ollama (NDJSON) and Anthropic (typed SSE events) adapters, from their captures."""

from __future__ import annotations

from typing import Any

import pytest
from llm_support import REQUEST, Upstream, capture, collect

from ssegate import AuthenticationError, BadRequestError, UpstreamUnavailable
from ssegate.llm import (
    ChatRequest,
    Error,
    Finish,
    LLMEvent,
    ReasoningDelta,
    ReasoningEnd,
    Start,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    Usage,
)
from ssegate.llm.providers import create_provider
from ssegate.llm.providers.anthropic import AnthropicParser, AnthropicProvider
from ssegate.llm.providers.ollama import OllamaParser, OllamaProvider

pytestmark = pytest.mark.anyio

OLLAMA: dict[str, list[LLMEvent]] = {
    "ollama_chat.http": [
        Start(model="qwen3", provider="ollama"),
        ReasoningDelta("User greets."),
        ReasoningEnd(),
        TextDelta("Hel"),
        TextDelta("lo"),
        Usage(input_tokens=11, output_tokens=3),
        Finish("stop", "stop"),
    ],
    "ollama_tool_call.http": [
        Start(model="llama3.2", provider="ollama"),
        ToolCallStart(0, "call_0", "weather"),
        ToolCallDelta(0, "call_0", '{"city": "Zürich"}'),
        ToolCallEnd(0, "call_0", "weather", '{"city": "Zürich"}'),
        ToolCallStart(1, "call_k2", "time"),
        ToolCallDelta(1, "call_k2", "{}"),
        ToolCallEnd(1, "call_k2", "time", "{}"),
        Usage(input_tokens=0, output_tokens=21),
        Finish("tool_calls", "stop"),
    ],
    "ollama_error_midstream.http": [
        Start(model="qwen3", provider="ollama"),
        TextDelta("Hi"),
        Error("upstream_error", "an error was encountered while running the model", True),
    ],
    "ollama_truncated.http": [
        Start(model="qwen3", provider="ollama"),
        TextDelta("Long"),
        TextDelta(" story"),
        Error("truncated", "ollama stream ended before the generation finished", True),
    ],
    "ollama_length.http": [
        Start(model="qwen3", provider="ollama"),
        TextDelta("One"),
        Usage(input_tokens=4, output_tokens=1),
        Finish("length", "length"),
    ],
}

ANTHROPIC: dict[str, list[LLMEvent]] = {
    "anthropic_thinking_tool.http": [
        Start(model="claude-x", provider="anthropic", id="msg_1"),
        Usage(input_tokens=121, output_tokens=1, cached_input_tokens=100),
        ReasoningDelta("User wants weather."),
        ReasoningEnd(signature="EtYD..."),
        ToolCallStart(0, "toolu_1", "weather"),
        ToolCallDelta(0, "toolu_1", '{"city": "Par'),
        ToolCallDelta(0, "toolu_1", 'is"}'),
        ToolCallEnd(0, "toolu_1", "weather", '{"city": "Paris"}'),
        Usage(input_tokens=121, output_tokens=57, cached_input_tokens=100),
        Finish("tool_calls", "tool_use"),
    ],
    "anthropic_text.http": [
        Start(model="claude-y", provider="anthropic", id="msg_2"),
        Usage(input_tokens=9, output_tokens=1),
        TextDelta("Hello"),
        TextDelta(" world"),
        Usage(input_tokens=9, output_tokens=3),
        Finish("stop", "end_turn"),
    ],
    "anthropic_error_midstream.http": [
        Start(model="claude-y", provider="anthropic", id="msg_3"),
        Usage(input_tokens=9, output_tokens=1),
        TextDelta("Par"),
        Error("overloaded_error", "Overloaded", retryable=True, status=529),
    ],
    "anthropic_truncated.http": [
        Start(model="claude-y", provider="anthropic", id="msg_4"),
        Usage(input_tokens=9, output_tokens=1),
        TextDelta("Par"),
        Error("truncated", "anthropic stream ended before the generation finished", True),
    ],
    "anthropic_redacted.http": [
        Start(model="claude-x", provider="anthropic", id="msg_5"),
        Usage(input_tokens=5, output_tokens=1),
        ReasoningEnd(redacted="EmwKAhgBEgy3va3pzix"),
        TextDelta("Done."),
        Usage(input_tokens=5, output_tokens=2),
        Finish("length", "max_tokens"),
    ],
}


def _pieces(body: bytes, mode: str) -> list[bytes]:
    return [body] if mode == "whole" else [body[i : i + 1] for i in range(len(body))]


@pytest.mark.parametrize("mode", ["whole", "bytewise"])
@pytest.mark.parametrize("name", sorted(OLLAMA))
def test_ollama_parser(name: str, mode: str) -> None:
    parser = OllamaParser("ollama", "m1")
    events: list[LLMEvent] = []
    for piece in _pieces(capture(name).body, mode):
        events += parser.feed(piece)
    assert events + parser.close() == OLLAMA[name]


@pytest.mark.parametrize("mode", ["whole", "bytewise"])
@pytest.mark.parametrize("name", sorted(ANTHROPIC))
def test_anthropic_parser(name: str, mode: str) -> None:
    parser = AnthropicParser("anthropic", "m1")
    events: list[LLMEvent] = []
    for piece in _pieces(capture(name).body, mode):
        events += parser.feed(piece)
    assert events + parser.close() == ANTHROPIC[name]


@pytest.mark.parametrize("name", sorted(OLLAMA))
async def test_ollama_over_http(upstream: Upstream, name: str, client: Any) -> None:
    base = upstream.replay("/api/chat", capture(name))
    async with OllamaProvider(base, client=client) as provider:
        assert await collect(provider, REQUEST) == OLLAMA[name]


@pytest.mark.parametrize("name", sorted(ANTHROPIC))
async def test_anthropic_over_http(upstream: Upstream, name: str, client: Any) -> None:
    base = upstream.replay("/v1/messages", capture(name))
    async with AnthropicProvider(base, "sk-ant", client=client) as provider:
        assert await collect(provider, REQUEST) == ANTHROPIC[name]


TOOL_CHAT = ChatRequest(
    model="m2",
    messages=[
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
    ],
    tools=[{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
    temperature=0.2,
    max_tokens=100,
    stop=["\n\n"],
)


async def test_ollama_request(upstream: Upstream, client: Any) -> None:
    base = upstream.replay("/api/chat", capture("ollama_chat.http"))
    request = ChatRequest(
        model=TOOL_CHAT.model,
        messages=TOOL_CHAT.messages,
        tools=TOOL_CHAT.tools,
        temperature=0.2,
        max_tokens=100,
        stop=["\n\n"],
        extra={"think": True, "options": {"seed": 1}},
    )
    async with OllamaProvider(base, client=client) as provider:
        await collect(provider, request)
    [sent] = upstream.requests_to(base)
    assert "authorization" not in sent.headers
    assert sent.json() == {
        "model": "m2",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"function": {"name": "weather", "arguments": {"city": "Paris"}}}],
            },
            {"role": "tool", "content": "18C"},
        ],
        "stream": True,
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "weather",
                    "description": "",
                    "parameters": {"type": "object"},
                },
            }
        ],
        "options": {"temperature": 0.2, "num_predict": 100, "stop": ["\n\n"], "seed": 1},
        "think": True,
    }


async def test_anthropic_request(upstream: Upstream, client: Any) -> None:
    base = upstream.replay("/v1/messages", capture("anthropic_text.http"))
    async with AnthropicProvider(base, "sk-ant", beta=("b1", "b2"), client=client) as provider:
        await collect(provider, TOOL_CHAT)
    [sent] = upstream.requests_to(base)
    assert sent.headers["x-api-key"] == "sk-ant"
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.headers["anthropic-beta"] == "b1,b2"
    assert "authorization" not in sent.headers
    assert sent.json() == {
        "model": "m2",
        "max_tokens": 100,
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "tool_use",
                        "id": "call_1",
                        "name": "weather",
                        "input": {"city": "Paris"},
                    }
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "18C"}],
            },
        ],
        "stream": True,
        "system": "Be brief.",
        "tools": [{"name": "weather", "description": "", "input_schema": {"type": "object"}}],
        "temperature": 0.2,
        "stop_sequences": ["\n\n"],
    }


async def test_errors_before_the_stream(upstream: Upstream, client: Any) -> None:
    base = upstream.replay("/api/chat", capture("ollama_error_404.http"))
    async with OllamaProvider(base, client=client) as ollama:
        with pytest.raises(BadRequestError) as missing:
            await collect(ollama, REQUEST)
    assert (missing.value.status, missing.value.retryable) == (404, False)
    assert str(missing.value) == f"ollama at {base}/api/chat answered 404: model 'qwen9' not found"

    base = upstream.replay(
        "/v1/messages", capture("anthropic_error_529.http"), capture("anthropic_error_401.http")
    )
    async with AnthropicProvider(base, "k", client=client) as anthropic:
        with pytest.raises(UpstreamUnavailable) as overloaded:
            await collect(anthropic, REQUEST)
        with pytest.raises(AuthenticationError) as auth:
            await collect(anthropic, REQUEST)
    assert (overloaded.value.status, overloaded.value.code, overloaded.value.retryable) == (
        529,
        "overloaded_error",
        True,
    )
    assert (auth.value.status, auth.value.code, str(auth.value)) == (
        401,
        "authentication_error",
        f"anthropic at {base}/v1/messages answered 401: invalid x-api-key",
    )


def test_factory_builds_them() -> None:
    assert isinstance(create_provider("ollama", base_url="http://h:1"), OllamaProvider)
    assert isinstance(create_provider("anthropic", api_key="k"), AnthropicProvider)


def test_a_line_that_is_not_json_ends_the_stream_with_a_protocol_error() -> None:
    parser = OllamaParser("ollama", "m1")
    events = parser.feed(b'{"model":"q","message":{"content":"a"},"done":false}\n')
    events += parser.feed(b"<html>\n")
    assert events[:2] == [Start(model="q", provider="ollama"), TextDelta("a")]
    last = events[-1]
    assert isinstance(last, Error)
    assert last.code == "protocol_error"
    assert last.message.startswith("NDJSON line is not valid JSON")
    assert parser.feed(b'{"done":true}\n') == []
    assert parser.close() == []


def test_anthropic_frame_that_is_not_json() -> None:
    parser = AnthropicParser()
    assert parser.feed(b"event: message_start\ndata: {oops\n\n") == [
        Start(provider="anthropic"),
        Error("protocol_error", "anthropic sent a frame that is not JSON"),
    ]
