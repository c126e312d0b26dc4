"""The three output formats: exact events, the real openai SDK, AI SDK part rules."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import aclosing, contextmanager
from typing import Any

import openai
import pytest
from hypothesis import given
from hypothesis import strategies as st
from llm_support import Upstream, capture

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
from ssegate.llm.formats import (
    AISDKFormatter,
    NativeFormatter,
    OpenAIFormatter,
    create_formatter,
    encode_all,
)
from ssegate.llm.formats.native import usage_dict
from ssegate.llm.formats.openai import openai_usage
from ssegate.llm.providers.anthropic import AnthropicParser
from ssegate.llm.providers.openai import OpenAIProvider
from ssegate.protocol import Decoder, Event
from ssegate.testing import serve

GENERATION: list[LLMEvent] = [
    Start(model="m1", provider="x", id="gen-1", created=1760000000),
    ReasoningDelta("Think."),
    ReasoningEnd(signature="sig"),
    TextDelta("Hi "),
    TextDelta("there"),
    ToolCallStart(0, "call_1", "weather"),
    ToolCallDelta(0, "call_1", '{"city":'),
    ToolCallDelta(0, "call_1", '"Oslo"}'),
    ToolCallEnd(0, "call_1", "weather", '{"city":"Oslo"}'),
    Usage(input_tokens=5, output_tokens=7, reasoning_tokens=2),
    Finish("tool_calls", "tool_calls"),
]


def run(formatter: Any, events: list[LLMEvent]) -> list[Event]:
    return [out for ev in events for out in formatter.format(ev)]


def test_native_events() -> None:
    assert run(NativeFormatter(), GENERATION) == [
        Event('{"text": "Think."}', "reasoning"),
        Event('{"text": "Hi "}', "token"),
        Event('{"text": "there"}', "token"),
        Event(
            json.dumps(
                {"index": 0, "id": "call_1", "name": "weather", "arguments": '{"city":"Oslo"}'}
            ),
            "tool_call",
        ),
        Event(
            '{"input_tokens": 5, "output_tokens": 7, "total_tokens": 12, "reasoning_tokens": 2}',
            "usage",
        ),
        Event('{"finish_reason": "tool_calls"}', "done"),
    ]


def test_native_error_is_last_and_only_once() -> None:
    fmt = create_formatter("native")
    events = run(fmt, [Start(), TextDelta("é"), Error("overloaded", "busy", True), TextDelta("x")])
    assert (
        encode_all(events)
        == (
            'event: token\ndata: {"text": "é"}\n\n'
            'event: error\ndata: {"code": "overloaded", "message": "busy", "retryable": true}\n\n'
        ).encode()
    )


def test_openai_chunks_exact_bytes() -> None:
    fmt = OpenAIFormatter(include_usage=True)
    events = [Start(model="m1", id="c1", created=7), TextDelta("Hi"), Usage(3, 1), Finish()]
    head = '{"id":"c1","object":"chat.completion.chunk","created":7,"model":"m1","choices":'
    tail = ',"logprobs":null,"finish_reason":null}],"usage":null}'
    assert encode_all(run(fmt, events)).decode() == (
        f'data: {head}[{{"index":0,"delta":{{"role": "assistant", "content": ""}}{tail}\n\n'
        f'data: {head}[{{"index":0,"delta":{{"content":"Hi"}}{tail}\n\n'
        f'data: {head}[{{"index":0,"delta":{{}},"logprobs":null,"finish_reason":"stop"}}],'
        '"usage":null}\n\n'
        f'data: {head}[],"usage":{{"prompt_tokens": 3, "completion_tokens": 1, '
        '"total_tokens": 4}}\n\n'
        "data: [DONE]\n\n"
    )


_counts = st.none() | st.integers(min_value=0, max_value=2**70)


@given(
    id=st.text(min_size=1),
    model=st.text(),
    created=st.integers(min_value=0, max_value=2**70),
    usage=st.builds(Usage, _counts, _counts, _counts, _counts),
    include_usage=st.booleans(),
)
def test_openai_start_and_end_chunks_are_the_json_of_their_objects(
    id: str, model: str, created: int, usage: Usage, include_usage: bool
) -> None:
    # Hand-built text (no json.dumps for the chunks a stream starts and ends
    # with): the very text json.dumps gives for each part.
    fmt = OpenAIFormatter(include_usage=include_usage)
    events = [Start(model=model, id=id, created=created), usage, Finish("length")]
    base = (
        f'{{"id":{json.dumps(id)},"object":"chat.completion.chunk","created":{created},'
        f'"model":{json.dumps(model, ensure_ascii=False)}'
    )
    null = ',"usage":null}' if include_usage else "}"
    role = json.dumps({"role": "assistant", "content": ""})
    chunks = [
        f'{base},"choices":[{{"index":0,"delta":{role},"logprobs":null,"finish_reason":null}}]{null}',
        f'{base},"choices":[{{"index":0,"delta":{{}},"logprobs":null,"finish_reason":"length"}}]{null}',
    ]
    if include_usage:
        chunks.append(f'{base},"choices":[],"usage":{json.dumps(openai_usage(usage))}}}')
    assert run(fmt, events) == [Event(chunk) for chunk in [*chunks, "[DONE]"]]


@given(
    message_id=st.none() | st.text(),
    usage=st.none() | st.builds(Usage, _counts, _counts, _counts, _counts),
    reason=st.sampled_from(["stop", "length", "tool_calls", "content_filter", "other"]),
    finish_reason=st.booleans(),
)
def test_aisdk_start_and_end_parts_are_the_json_of_their_objects(
    message_id: str | None, usage: Usage | None, reason: Any, finish_reason: bool
) -> None:
    # Hand-built text (no json.dumps for the parts a stream starts and ends
    # with): the very text json.dumps gives for each part.
    fmt = AISDKFormatter(finish_reason=finish_reason)
    events: list[LLMEvent] = [Start(id=message_id), ReasoningDelta("r"), TextDelta("t")]
    events += [usage] if usage is not None else []
    finish: dict[str, Any] = {"type": "finish"}
    if finish_reason:
        finish["finishReason"] = reason.replace("_", "-")
    if usage is not None:
        counts = [usage.input_tokens, usage.output_tokens, usage.total_tokens]
        names = ["inputTokens", "outputTokens", "totalTokens"]
        finish["messageMetadata"] = {
            "usage": {k: v for k, v in zip(names, counts, strict=True) if v is not None}
        }
    parts: list[dict[str, Any]] = [
        {"type": "start", "messageId": message_id} if message_id else {"type": "start"},
        {"type": "start-step"},
        {"type": "reasoning-start", "id": "r0"},
        {"type": "reasoning-delta", "id": "r0", "delta": "r"},
        {"type": "reasoning-end", "id": "r0"},
        {"type": "text-start", "id": "t1"},
        {"type": "text-delta", "id": "t1", "delta": "t"},
        {"type": "text-end", "id": "t1"},
        {"type": "finish-step"},
        finish,
    ]
    want = [Event(json.dumps(part, ensure_ascii=False)) for part in parts] + [Event("[DONE]")]
    assert run(fmt, [*events, Finish(reason)]) == want


@given(
    usage=st.builds(Usage, _counts, _counts, _counts, _counts, st.booleans()),
    reason=st.sampled_from(["stop", "length", "tool_calls", "content_filter", "other"]),
)
def test_native_start_and_end_events_are_the_json_of_their_objects(
    usage: Usage, reason: Any
) -> None:
    # Hand-built text (no json.dumps for the usage and done events): the very
    # text json.dumps gives for each, and nothing for the start.
    events = [Start(model="m", id="x", created=1), usage, Finish(reason, raw_reason="r")]
    assert run(NativeFormatter(), events) == [
        Event(json.dumps(usage_dict(usage), ensure_ascii=False), "usage"),
        Event(json.dumps({"finish_reason": reason}, ensure_ascii=False), "done"),
    ]


def test_openai_chunks_without_usage_have_no_usage_key() -> None:
    chunks = run(
        OpenAIFormatter(clock=lambda: 99.0), [TextDelta("a"), Usage(1, 1), Finish("other")]
    )
    values = [json.loads(c.data) for c in chunks[:-1]]
    assert all("usage" not in v for v in values)
    assert [v["choices"][0]["finish_reason"] for v in values] == [None, None, "stop"]
    assert {v["created"] for v in values} == {99}
    assert values[0]["id"].startswith("chatcmpl-")
    assert chunks[-1] == Event("[DONE]")


# -- the real openai SDK against a relay: fake upstream -> adapter -> formatter ------------


def relay_app(base: str) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = ChatRequest.from_openai(json.loads(body))
        fmt = OpenAIFormatter(include_usage=request.include_usage)
        headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        async with (
            OpenAIProvider(base, "k") as provider,
            aclosing(provider.stream(request)) as events,
        ):
            async for ev in events:
                for out in fmt.format(ev):
                    chunk = {"type": "http.response.body", "body": out.encode(), "more_body": True}
                    await send(chunk)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


@contextmanager
def sdk_client(upstream: Upstream, name: str, copies: int = 1) -> Iterator[openai.OpenAI]:
    base = upstream.replay("/chat/completions", *[capture(name)] * copies)
    with serve(relay_app(base), lifespan="off") as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="k", max_retries=0)
        try:
            yield client
        finally:
            client.close()


MESSAGES: Any = [{"role": "user", "content": "Hi"}]


def test_openai_sdk_raw_iteration(upstream: Upstream) -> None:
    with sdk_client(upstream, "glm_reasoning_tool.http") as client:
        stream = client.chat.completions.create(
            model="glm-4.6", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        chunks = list(stream)
    roles = [c.choices[0].delta.role for c in chunks if c.choices]
    assert roles == ["assistant"] + [None] * (len(roles) - 1)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Checking."
    reasoning = "".join(
        getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks if c.choices
    )
    assert reasoning == "The user wants the weather."
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == ["tool_calls"]
    assert {c.id for c in chunks} == {"20260105100000abc"}
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (15, 40)


@pytest.mark.parametrize(
    ("name", "content", "calls", "finish", "total"),
    [
        ("openai_text.http", "Bonjour été ✓", [], "stop", 14),
        (
            "openai_tool_call.http",
            "",
            [("call_9", "weather", '{"city":"Paris"}'), ("call_10", "time", "{}")],
            "tool_calls",
            None,
        ),
        (
            "glm_reasoning_tool.http",
            "Checking.",
            [("call_-8a1", "weather", '{"location":"Florence,Italy"}')],
            "tool_calls",
            55,
        ),
        ("deepseek_reasoning.http", "4", [], "stop", 19),
    ],
)
def test_openai_sdk_stream_helper(
    upstream: Upstream,
    name: str,
    content: str | None,
    calls: list[Any],
    finish: str,
    total: int | None,
) -> None:
    with (
        sdk_client(upstream, name) as client,
        client.chat.completions.stream(
            model="m", messages=MESSAGES, stream_options={"include_usage": True}
        ) as stream,
    ):
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == content
    got = [(c.id, c.function.name, c.function.arguments) for c in choice.message.tool_calls or []]  # type: ignore[union-attr]
    assert got == calls
    assert choice.finish_reason == finish
    assert (final.usage.total_tokens if final.usage else None) == total


def test_openai_sdk_sees_a_midstream_error(upstream: Upstream) -> None:
    with sdk_client(upstream, "openai_error_midstream.http") as client:
        stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
        chunks = iter(stream)
        texts = [next(chunks).choices[0].delta.content, next(chunks).choices[0].delta.content]
        with pytest.raises(openai.APIError) as info:
            next(chunks)
    assert texts == ["", "Hel"]
    assert info.value.message == "upstream overloaded"
    assert info.value.code == "overloaded"


# -- AI SDK UI message stream ----------------------------------------------------------

#: Allowed keys of each part type we emit (strict, as AI SDK < 5.0.217 validates).
AISDK_SCHEMA: dict[str, set[str]] = {
    "start": {"type", "messageId", "messageMetadata"},
    "start-step": {"type"},
    "finish-step": {"type"},
    "text-start": {"type", "id"},
    "text-delta": {"type", "id", "delta"},
    "text-end": {"type", "id"},
    "reasoning-start": {"type", "id"},
    "reasoning-delta": {"type", "id", "delta"},
    "reasoning-end": {"type", "id"},
    "tool-input-start": {"type", "toolCallId", "toolName"},
    "tool-input-delta": {"type", "toolCallId", "inputTextDelta"},
    "tool-input-available": {"type", "toolCallId", "toolName", "input"},
    "error": {"type", "errorText"},
    "finish": {"type", "messageMetadata"},
}


def aisdk_parts(body: bytes) -> list[dict[str, Any]]:
    """Parse like the AI SDK client: SSE, [DONE] last, each part validated strictly."""
    decoder = Decoder()
    events = decoder.feed(body) + decoder.close()
    assert events[-1].data == "[DONE]"
    parts = [json.loads(e.data) for e in events[:-1]]
    open_blocks: set[str] = set()
    tools: set[str] = set()
    for part in parts:
        kind = part["type"]
        assert set(part) <= AISDK_SCHEMA[kind], part
        if kind.endswith("-start") and kind != "tool-input-start" and "id" in part:
            assert part["id"] not in open_blocks
            open_blocks.add(part["id"])
        elif kind.endswith(("-delta", "-end")) and "id" in part:
            assert part["id"] in open_blocks, part
            if kind.endswith("-end"):
                open_blocks.discard(part["id"])
        if kind == "tool-input-start":
            tools.add(part["toolCallId"])
        elif kind.startswith("tool-input"):
            assert part["toolCallId"] in tools
    assert not open_blocks
    assert [p["type"] for p in parts].count("finish") == 1
    assert parts[-1]["type"] == "finish"
    return parts


def test_aisdk_parts() -> None:
    fmt = AISDKFormatter()
    assert fmt.headers["x-vercel-ai-ui-message-stream"] == "v1"
    assert aisdk_parts(encode_all(run(fmt, GENERATION))) == [
        {"type": "start", "messageId": "gen-1"},
        {"type": "start-step"},
        {"type": "reasoning-start", "id": "r0"},
        {"type": "reasoning-delta", "id": "r0", "delta": "Think."},
        {"type": "reasoning-end", "id": "r0"},
        {"type": "text-start", "id": "t1"},
        {"type": "text-delta", "id": "t1", "delta": "Hi "},
        {"type": "text-delta", "id": "t1", "delta": "there"},
        {"type": "text-end", "id": "t1"},
        {"type": "tool-input-start", "toolCallId": "call_1", "toolName": "weather"},
        {"type": "tool-input-delta", "toolCallId": "call_1", "inputTextDelta": '{"city":'},
        {"type": "tool-input-delta", "toolCallId": "call_1", "inputTextDelta": '"Oslo"}'},
        {
            "type": "tool-input-available",
            "toolCallId": "call_1",
            "toolName": "weather",
            "input": {"city": "Oslo"},
        },
        {"type": "finish-step"},
        {
            "type": "finish",
            "messageMetadata": {"usage": {"inputTokens": 5, "outputTokens": 7, "totalTokens": 12}},
        },
    ]


@pytest.mark.parametrize(
    "name",
    ["anthropic_thinking_tool.http", "anthropic_error_midstream.http", "anthropic_text.http"],
)
def test_aisdk_from_provider_captures(name: str) -> None:
    parser = AnthropicParser()
    events = parser.feed(capture(name).body) + parser.close()
    parts = aisdk_parts(encode_all(run(AISDKFormatter(), events)))
    if name == "anthropic_error_midstream.http":
        assert parts[-4:] == [
            {"type": "text-delta", "id": "t0", "delta": "Par"},
            {"type": "text-end", "id": "t0"},
            {"type": "error", "errorText": "Overloaded"},
            {"type": "finish"},
        ]


def test_aisdk_finish_reason_only_when_asked() -> None:
    events = [Start(), TextDelta("a"), Finish("content_filter", "refusal")]
    last = json.loads(run(AISDKFormatter(finish_reason=True), events)[-2].data)
    assert last == {"type": "finish", "finishReason": "content-filter"}


def test_create_formatter_refuses_unknown_names() -> None:
    with pytest.raises(ValueError, match="unknown format 'xml'"):
        create_formatter("xml")


@pytest.mark.parametrize("name", ["native", "openai", "aisdk"])
def test_a_text_frame_renders_a_text_delta_as_format_does(name: str) -> None:
    """At every point of a generation (before ``Start``, between blocks of
    text, reasoning and tool calls, after the end), ``text_frame`` is either
    ``None`` or exactly what ``format(TextDelta(text))`` would give."""
    from copy import deepcopy
    from json.encoder import encode_basestring

    events = [*GENERATION[:-2], TextDelta("again"), Usage(1, 1), TextDelta(""), GENERATION[-1]]
    formatter = create_formatter(name)
    framed = 0
    for event in [TextDelta("first"), *events, TextDelta("after")]:
        frame = formatter.text_frame()
        for text in ['é "\n\\ \u2028', ""]:
            expected = deepcopy(formatter).format(TextDelta(text))
            if frame is not None:
                kind, before, after = frame
                assert expected == [Event(before + encode_basestring(text) + after, kind)]
        framed += frame is not None
        formatter.format(event)
    # native: every delta until the end; openai: after Start; aisdk: while text is open
    assert framed == {"native": 14, "openai": 13, "aisdk": 7}[name]
