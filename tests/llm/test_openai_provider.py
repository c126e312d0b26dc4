"""The OpenAI-compatible adapter: every vendor's captures, over real HTTP and sans-IO."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from llm_support import REQUEST, Upstream, capture, collect

from ssegate import AuthenticationError, BadRequestError, RateLimitError, UpstreamUnavailable
from ssegate.llm import (
    ChatRequest,
    Error,
    Finish,
    LLMEvent,
    ReasoningDelta,
    ReasoningEnd,
    Start,
    TextDelta,
    Tool,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    Usage,
)
from ssegate.llm.providers import create_provider
from ssegate.llm.providers.openai import OpenAIChunkParser, OpenAIProvider, glm_jwt
from ssegate.protocol import MAX_EVENT_SIZE
from ssegate.testing import Reply

pytestmark = pytest.mark.anyio

EXPECTED: dict[str, list[LLMEvent]] = {
    "openai_text.http": [
        Start(model="m1", provider="openai", id="chatcmpl-a1", created=1760000000),
        TextDelta("Bon"),
        TextDelta("jour été ✓"),
        Usage(input_tokens=12, output_tokens=2, reasoning_tokens=0, cached_input_tokens=4),
        Finish("stop", "stop"),
    ],
    "openai_obfuscation.http": [
        Start(
            model="gpt-4o-mini-2024-07-18",
            provider="openai",
            id="chatcmpl-CHx7Rk2aVbT9pLq4mN0sWdE3fGh",
            created=1764518400,
        ),
        *map(TextDelta, ["Hello", "!", " How", " can", " I", " help", " you", " today", "?"]),
        TextDelta(' \u2014 caf\u00e9 "ok"'),
        Usage(input_tokens=19, output_tokens=11, reasoning_tokens=0, cached_input_tokens=0),
        Finish("stop", "stop"),
    ],
    "openai_tool_call.http": [
        Start(model="m1", provider="openai", id="chatcmpl-b2", created=1760000001),
        ToolCallStart(0, "call_9", "weather"),
        ToolCallDelta(0, "call_9", '{"city":"Par'),
        ToolCallStart(1, "call_10", "time"),
        ToolCallDelta(1, "call_10", "{}"),
        ToolCallDelta(0, "call_9", 'is"}'),
        ToolCallEnd(0, "call_9", "weather", '{"city":"Paris"}'),
        ToolCallEnd(1, "call_10", "time", "{}"),
        Finish("tool_calls", "tool_calls"),
    ],
    "openai_error_midstream.http": [
        Start(model="m1", provider="openai", id="chatcmpl-c3", created=1760000002),
        TextDelta("Hel"),
        Error("overloaded", "upstream overloaded", retryable=True),
    ],
    "openai_truncated.http": [
        Start(model="m1", provider="openai", id="chatcmpl-d4", created=1760000003),
        TextDelta("Once upon"),
        TextDelta(" a time"),
        Error("truncated", "openai stream ended before the generation finished", retryable=True),
    ],
    "deepseek_reasoning.http": [
        Start(
            model="deepseek-reasoner",
            provider="openai",
            id="6f1e0c2a-9d1b-4e0a-8f4e-1c2d3e4f5a6b",
            created=1767607200,
        ),
        ReasoningDelta("2+2 is 4."),
        ReasoningEnd(),
        TextDelta("4"),
        Usage(input_tokens=10, output_tokens=9, reasoning_tokens=7, cached_input_tokens=3),
        Finish("stop", "stop"),
    ],
    "deepseek_insufficient.http": [
        Start(model="deepseek-chat", provider="openai", id="7a2b", created=1767607300),
        TextDelta("Par"),
        Error(
            "insufficient_system_resource",
            "openai stopped the generation: finish_reason 'insufficient_system_resource'",
            retryable=True,
        ),
    ],
    "glm_reasoning_tool.http": [
        Start(model="glm-4.6", provider="openai", id="20260105100000abc", created=1767607200),
        ReasoningDelta("The user wants"),
        ReasoningDelta(" the weather."),
        ReasoningEnd(),
        TextDelta("Checking."),
        ToolCallStart(0, "call_-8a1", "weather"),
        ToolCallDelta(0, "call_-8a1", '{"location":"Florence,Italy"}'),
        ToolCallEnd(0, "call_-8a1", "weather", '{"location":"Florence,Italy"}'),
        Usage(input_tokens=15, output_tokens=40, reasoning_tokens=36, cached_input_tokens=0),
        Finish("tool_calls", "tool_calls"),
    ],
    "glm_sensitive.http": [
        Start(model="glm-4.6", provider="openai", id="20260105100001def", created=1767607201),
        TextDelta("I"),
        Usage(input_tokens=9, output_tokens=1),
        Finish("content_filter", "sensitive"),
    ],
    "glm_network_error.http": [
        Start(model="glm-4.6", provider="openai", id="20260105100002ghi", created=1767607202),
        TextDelta("Olá"),
        Error(
            "network_error",
            "openai stopped the generation: finish_reason 'network_error'",
            retryable=True,
        ),
    ],
    "vllm_reasoning.http": [
        Start(model="qwen3", provider="openai", id="chatcmpl-v1", created=1767607400),
        ReasoningDelta("Think."),
        ReasoningEnd(),
        TextDelta("Yes."),
        Usage(input_tokens=5, output_tokens=4),
        Finish("stop", "stop"),
    ],
    "vllm_old_error.http": [
        Start(model="qwen3", provider="openai", id="chatcmpl-v2", created=1767607401),
        TextDelta("Hi"),
        Error("InternalServerError", "The model ran out of KV cache", retryable=True, status=500),
    ],
    "llamacpp_old_error.http": [
        Start(model="m1", provider="openai"),
        Error(
            "exceed_context_size_error",
            "the request exceeds the available context size",
            status=400,
        ),
    ],
    "llamacpp_tool.http": [
        Start(model="gpt-oss", provider="openai", id="chatcmpl-Zx81Kq", created=1767607500),
        ReasoningDelta("Need weather."),
        ReasoningEnd(),
        ToolCallStart(0, "Jq8YkH3vWm2Lx9Rt5Np7Cd4Fg6Bs1Za0", "weather"),
        ToolCallDelta(0, "Jq8YkH3vWm2Lx9Rt5Np7Cd4Fg6Bs1Za0", '{"ci'),
        ToolCallDelta(0, "Jq8YkH3vWm2Lx9Rt5Np7Cd4Fg6Bs1Za0", 'ty":"Oslo"}'),
        ToolCallEnd(0, "Jq8YkH3vWm2Lx9Rt5Np7Cd4Fg6Bs1Za0", "weather", '{"city":"Oslo"}'),
        Usage(input_tokens=80, output_tokens=20),
        Finish("tool_calls", "tool_calls"),
    ],
    "lmstudio_no_usage.http": [
        Start(model="qwen2.5-7b", provider="openai", id="chatcmpl-lm1", created=1767607600),
        TextDelta("Hi"),
        TextDelta("!"),
        Finish("length", "length"),
    ],
}


def parse(body: bytes, pieces: list[bytes] | None = None) -> list[LLMEvent]:
    parser = OpenAIChunkParser("openai", "m1")
    out: list[LLMEvent] = []
    for piece in pieces if pieces is not None else [body]:
        out += parser.feed(piece)
    return out + parser.close()


@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_capture_replayed_over_http(upstream: Upstream, name: str, client: Any) -> None:
    base = upstream.replay("/chat/completions", capture(name))
    async with OpenAIProvider(base, "sk-test", client=client) as provider:
        assert await collect(provider, REQUEST) == EXPECTED[name]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_capture_parsed_whole_and_byte_by_byte(name: str) -> None:
    body = capture(name).body
    if name == "llamacpp_old_error.http":
        # The raw "error:" line is found per chunk (llama.cpp writes it whole).
        assert parse(body) == EXPECTED[name]
        return
    assert parse(body) == EXPECTED[name]
    assert parse(body, [body[i : i + 1] for i in range(len(body))]) == EXPECTED[name]


@pytest.mark.parametrize(
    "name", ["openai_text.http", "openai_obfuscation.http", "glm_reasoning_tool.http"]
)
def test_capture_split_at_every_position(name: str) -> None:
    body = capture(name).body
    for i in range(len(body) + 1):
        assert parse(body, [body[:i], body[i:]]) == EXPECTED[name], i


def _reads(body: bytes) -> list[bytes]:
    """``body`` as a server writes it: one read per event (through its blank line)."""
    parts = [part + b"\n\n" for part in body.replace(b"\r\n", b"\n").split(b"\n\n")]
    parts[-1] = parts[-1][:-2]
    return [part for part in parts if part]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_capture_read_event_by_event(name: str) -> None:
    # One read per event, as servers write them: the text chunks after the
    # first take the parser's fast path (``_learn``).
    body = capture(name).body
    assert parse(body, _reads(body)) == EXPECTED[name]


def _chunk(delta: str, *, created: int = 1, finish: str = "null", extra: str = "") -> bytes:
    return (
        f'{{"id":"c-1","object":"chat.completion.chunk","created":{created},"model":"m\u00e9",'
        f'"choices":[{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":{finish}}}]{extra}}}'
    ).encode()


#: A stream of text chunks with every kind of string, and the chunks around them.
TEXT_STREAM = [
    b"data: " + _chunk('{"role":"assistant","content":""}') + b"\n\n",
    b"data: " + _chunk('{"content":"Hi"}') + b"\n\n",  # learned here
    b"data: " + _chunk('{"content":" th\\"ere\\\\ \\u00e9\\n"}') + b"\n\n",
    b"data: " + _chunk('{"content":"\u00e9t\u00e9 \u2028 \u2713 \U0001f600"}') + b"\n\n",
    b"data: " + _chunk('{"content":""}') + b"\n\n",  # nothing
    b"data: " + _chunk('{"content":"a"}') + b"\r\n\r\n",  # another blank line: the general way
    # a byte that is not UTF-8, decoded as U+FFFD
    b"data: " + _chunk('{"content":"bad @ byte"}').replace(b"@", b"\xff") + b"\n\n",
    b"data: " + _chunk('{"content":"x"}', created=2) + b"\n\n",  # another frame
    b"data: " + _chunk('{"content":"b"}') + b"\n\ndata: " + _chunk('{"content":"c"}') + b"\n\n",
    b"".join(b"data: " + _chunk(f'{{"content":"{t}"}}') + b"\n\n" for t in ("c1", "", "c2")),
    # with a chunk of another frame, or another kind: the general way
    b"data: "
    + _chunk('{"content":"c3"}')
    + b"\n\ndata: "
    + _chunk('{"content":"c4"}', created=3)
    + b"\n\n",
    b"data: " + _chunk('{"content":"c5"}') + b"\n\ndata: " + _chunk('{"reasoning":"r"}') + b"\n\n",
    b"data: " + _chunk('{"content":"c6"}') + b"\n\ndata: " + _chunk('{"content":"c7"}')[:-1],
    b"}\n\n",
    b"data: " + _chunk('{"content":"d"}') + b"\n\n: comment\n\n",
    b"data: " + _chunk('{"content":"e"}')[:-20],  # a chunk in two reads
    _chunk('{"content":"e"}')[-20:] + b"\n\n",
    b"data: " + _chunk('{"content":"f"}') + b"\n\n",
    b"data: " + _chunk('{"reasoning_content":"think"}') + b"\n\n",
    b"data: " + _chunk('{"content":"g"}') + b"\n\n",  # ends the reasoning
    b"data: " + _chunk('{"content":"h"}', extra=',"usage":{"prompt_tokens":1}') + b"\n\n",
    b"data: " + _chunk('{"content":"i","role":"assistant"}') + b"\n\n",  # not one string
    b"data: " + _chunk('{"content":42}') + b"\n\n",
    b"data: " + _chunk("{}", finish='"stop"') + b"\n\n",
    b"data: " + _chunk('{"content":"after the finish reason"}') + b"\n\n",
    b"data: [DONE]\n\n",
]


def test_text_chunks_read_one_by_one_are_parsed_as_the_general_way_does() -> None:
    body = b"".join(TEXT_STREAM)
    parser = OpenAIChunkParser("openai", "m1")
    out: list[LLMEvent] = []
    for read in TEXT_STREAM:
        out += parser.feed(read)
    out += parser.close()
    assert parser._before  # learned: the fast path was there to take
    # Byte by byte, no read is a whole chunk: the general way throughout.
    assert out == parse(body, [body[i : i + 1] for i in range(len(body))])
    assert out == [
        Start(model="m\u00e9", provider="openai", id="c-1", created=1),
        TextDelta("Hi"),
        TextDelta(' th"ere\\ \u00e9\n'),
        TextDelta("\u00e9t\u00e9 \u2028 \u2713 \U0001f600"),
        TextDelta("a"),
        TextDelta("bad \ufffd byte"),
        TextDelta("x"),
        TextDelta("b"),
        TextDelta("c"),
        TextDelta("c1"),
        TextDelta("c2"),
        TextDelta("c3"),
        TextDelta("c4"),
        TextDelta("c5"),
        ReasoningDelta("r"),
        ReasoningEnd(),
        TextDelta("c6"),
        TextDelta("c7"),
        TextDelta("d"),
        TextDelta("e"),
        TextDelta("f"),
        ReasoningDelta("think"),
        ReasoningEnd(),
        TextDelta("g"),
        TextDelta("h"),
        Usage(input_tokens=1),
        TextDelta("i"),
        TextDelta("after the finish reason"),
        Finish("stop", "stop"),
    ]


@pytest.mark.parametrize(
    "learned",
    [
        # the key of another field ends in "content"
        b'{"choices":[{"index":0,"delta":{"content":"a"}}],"x\\"content":"a"}',
        # another object's content after it
        b'{"choices":[{"index":0,"delta":{"content":"a"}}],"y":{"content":"a"}}',
        # two data lines (JSON allows the line end between its values)
        b'{"choices":[{"index":0,\ndata: "delta":{"content":"a"}}]}',
    ],
)
def test_a_frame_that_does_not_hold_the_content_is_not_learned(learned: bytes) -> None:
    parser = OpenAIChunkParser("openai", "m1")
    reads = [b"data: " + learned + b"\n\n"] * 2
    assert parser.feed(reads[0]) + parser.feed(reads[1]) == [
        Start(model="m1", provider="openai"),
        TextDelta("a"),
        TextDelta("a"),
    ]
    assert parser._before == ""


def test_a_parser_of_a_provider_with_a_limit_is_made_with_it() -> None:
    """The provider's parser has its limit from the start: ``limit()`` with the
    same keeps its decoder (one per stream), another makes one anew; either
    way the limit holds, as for a parser given it by ``limit()`` alone."""
    big = b"data: " + _chunk('{"content":"' + "x" * 200 + '"}') + b"\n\n"
    provider = OpenAIProvider(api_key="k", base_url="http://127.0.0.1:1/v1", max_event_size=300)
    parser = provider.parser(REQUEST)
    assert isinstance(parser, OpenAIChunkParser)
    decoder = parser.decoder
    parser.limit(300)
    assert parser.decoder is decoder
    assert (parser.event_limit, parser._max_chunk) == (300, 300)
    refused = parser.feed(big)[-1]
    assert type(refused) is Error
    assert refused.code == "protocol_error"
    parser = provider.parser(REQUEST)
    assert isinstance(parser, OpenAIChunkParser)
    parser.limit(400)
    assert parser.decoder is not decoder
    assert (parser.event_limit, parser._max_chunk) == (400, 400)
    assert type(parser.feed(big)[-1]) is not Error
    default = OpenAIProvider(api_key="k", base_url="http://127.0.0.1:1/v1").parser(REQUEST)
    assert isinstance(default, OpenAIChunkParser)
    assert (default.event_limit, default._max_chunk) == (MAX_EVENT_SIZE, MAX_EVENT_SIZE)


def test_a_text_chunk_over_the_event_limit_is_refused_as_before() -> None:
    small, big = (b"data: " + _chunk(f'{{"content":"{n}"}}') + b"\n\n" for n in ("x", "x" * 200))
    alone = OpenAIChunkParser("openai", "m1")
    alone.limit(300)
    refused = alone.feed(big)[-1]
    assert type(refused) is Error
    assert refused.code == "protocol_error"
    parser = OpenAIChunkParser("openai", "m1")
    parser.limit(300)
    events = parser.feed(small) + parser.feed(small)
    assert parser._before
    assert events + parser.feed(big) == [
        Start(model="m\u00e9", provider="openai", id="c-1", created=1),
        TextDelta("x"),
        TextDelta("x"),
        refused,
    ]


def test_error_word_inside_a_data_line_is_not_an_error_line() -> None:
    chunk = (
        b'data: {"id":"x","choices":[{"index":0,"delta":{"content":"an error: none"}}]}\n\n'
        b'data: {"id":"x","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    )
    cut = chunk.index(b"error:")
    events = parse(chunk, [chunk[:cut], chunk[cut:]])
    assert events == [
        Start(model="m1", provider="openai", id="x"),
        TextDelta("an error: none"),
        Finish("stop", "stop"),
    ]


def test_bad_json_frame_is_an_error_event() -> None:
    assert parse(b"data: {not json\n\n") == [
        Start(model="m1", provider="openai"),
        Error("protocol_error", "openai sent a frame that is not JSON"),
    ]


def test_done_without_finish_reason_is_truncation() -> None:
    body = b'data: {"choices":[{"index":0,"delta":{"content":"a"}}]}\n\ndata: [DONE]\n\n'
    assert parse(body)[-1] == Error(
        "truncated", "openai stream ended ([DONE]) without a finish_reason", retryable=True
    )


def test_nothing_after_the_terminal_event() -> None:
    body = capture("openai_text.http").body
    parser = OpenAIChunkParser("openai", "m1")
    events = parser.feed(body)
    assert parser.done
    assert parser.feed(b'data: {"choices":[{"delta":{"content":"late"}}]}\n\n') == []
    assert parser.close() == []
    assert events == EXPECTED["openai_text.http"]


async def test_request_sent_upstream(upstream: Upstream, client: Any) -> None:
    base = upstream.replay("/chat/completions", capture("openai_text.http"))
    request = ChatRequest(
        model="gpt-4o",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Weather?"}]},
        ],
        tools=[Tool("weather", "Look up weather", {"type": "object", "properties": {}})],
        temperature=0.5,
        max_tokens=50,
        stop="END",
        extra={"seed": 7},
    )
    async with OpenAIProvider(base, "sk-test", headers={"x-extra": "1"}, client=client) as provider:
        await collect(provider, request)
    [sent] = upstream.requests_to(base)
    assert (sent.method, sent.path) == ("POST", base[len(upstream.url) :] + "/chat/completions")
    assert sent.headers["authorization"] == "Bearer sk-test"
    assert sent.headers["content-type"] == "application/json"
    assert sent.headers["x-extra"] == "1"
    assert sent.json() == {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather?"},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "weather",
                    "description": "Look up weather",
                    "parameters": {"type": "object", "properties": {}},
                },
            }
        ],
        "temperature": 0.5,
        "max_tokens": 50,  # not OpenAI's own server: max_completion_tokens is OpenAI's alone
        "stop": ["END"],
        "seed": 7,
    }


async def test_errors_before_the_stream_are_typed(upstream: Upstream, client: Any) -> None:
    base = upstream.replay(
        "/chat/completions",
        capture("openai_error_429.http"),
        capture("openai_error_401.http"),
        capture("openai_error_503.http"),
        capture("glm_error_400.http"),
    )
    async with OpenAIProvider(base, "sk-test", client=client) as provider:
        with pytest.raises(RateLimitError) as rate:
            await collect(provider, REQUEST)
        with pytest.raises(AuthenticationError) as auth:
            await collect(provider, REQUEST)
        with pytest.raises(UpstreamUnavailable) as down:
            await collect(provider, REQUEST)
        with pytest.raises(BadRequestError) as bad:
            await collect(provider, REQUEST)
    e = rate.value
    assert (e.status, e.code, e.retryable, e.retry_after, e.provider) == (
        429,
        "rate_limit_exceeded",
        True,
        7.0,
        "openai",
    )
    url = f"{base}/chat/completions"
    assert (
        str(e) == f"openai at {url} answered 429: Rate limit reached for gpt-4o (Retry-After: 7 s)"
    )
    assert (auth.value.status, auth.value.code, auth.value.retryable) == (
        401,
        "invalid_api_key",
        False,
    )
    assert (down.value.status, down.value.retryable, down.value.retry_after) == (503, True, 1.5)
    assert (bad.value.status, bad.value.code, bad.value.retryable) == (400, "1214", False)
    assert str(bad.value) == f"openai at {url} answered 400: messages 参数非法。请检查文档。"


async def test_unreachable_upstream_is_upstream_unavailable(client: Any) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with OpenAIProvider(f"http://127.0.0.1:{port}/v1", "k", client=client) as provider:
        with pytest.raises(UpstreamUnavailable) as info:
            await collect(provider, REQUEST)
    assert info.value.retryable is True
    assert info.value.status is None


async def test_connection_dropped_mid_body_is_an_error_event(
    upstream: Upstream, client: Any
) -> None:
    reply = capture("openai_truncated.http", abort=True)
    base = upstream.replay("/chat/completions", reply)
    async with OpenAIProvider(base, "k", client=client) as provider:
        events = await collect(provider, REQUEST)
    assert events[:3] == EXPECTED["openai_truncated.http"][:3]
    last = events[-1]
    assert isinstance(last, Error)
    assert (last.code, last.retryable) == ("upstream_disconnected", True)
    assert len(events) == 4


def _b64json(part: str) -> object:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def test_glm_jwt() -> None:
    token = glm_jwt("myid.secret", now_ms=1_700_000_000_000)
    header, payload, signature = token.split(".")
    assert _b64json(header) == {"alg": "HS256", "sign_type": "SIGN", "typ": "JWT"}
    assert _b64json(payload) == {
        "api_key": "myid",
        "exp": 1_700_000_210_000,
        "timestamp": 1_700_000_000_000,
    }
    expected = hmac.new(b"secret", f"{header}.{payload}".encode(), hashlib.sha256).digest()
    assert base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)) == expected
    with pytest.raises(ValueError, match="exactly one dot"):
        glm_jwt("no-dot", now_ms=0)


def test_glm_auth_modes() -> None:
    plain = create_provider("glm", api_key="myid.secret")
    assert isinstance(plain, OpenAIProvider)
    req = plain.build_request(REQUEST)
    assert req.url == "https://open.bigmodel.cn/api/paas/v4/chat/completions"
    assert req.headers["authorization"] == "Bearer myid.secret"
    jwt = create_provider("glm", api_key="myid.secret", glm_auth="jwt", clock=lambda: 1_700_000_000)
    assert isinstance(jwt, OpenAIProvider)
    token = glm_jwt("myid.secret", now_ms=1_700_000_000_000)
    assert jwt.build_request(REQUEST).headers["authorization"] == f"Bearer {token}"
    with pytest.raises(ValueError, match="exactly one dot"):
        create_provider("glm", api_key="bad", glm_auth="jwt")


def test_headers_built_once_still_follow_the_provider() -> None:
    now = [1_700_000_000.0]
    provider = OpenAIProvider(
        "http://up.test/v1", "k1", vendor="generic", headers={"X-Org": "a"}, clock=lambda: now[0]
    )
    first = provider.build_request(REQUEST)
    first.headers["x-mine"] = "changed by a caller"  # type: ignore[index]
    provider.api_key = "k2"
    provider.extra_headers["X-Org"] = "b"
    second = provider.build_request(REQUEST)
    assert dict(second.headers) == {
        "content-type": "application/json",
        "accept": "text/event-stream",
        "accept-encoding": "identity",
        "authorization": "Bearer k2",
        "X-Org": "b",
    }
    assert (
        second.content
        == first.content
        == (
            b'{"model":"m1","messages":[{"role":"user","content":"Hi"}],"stream":true,'
            b'"stream_options":{"include_usage":true}}'
        )
    )
    jwt = OpenAIProvider(
        "http://up.test/v1", "id.secret", vendor="glm", glm_auth="jwt", clock=lambda: now[0]
    )
    tokens = []
    for at in (1_700_000_000.0, 1_700_000_001.0):
        now[0] = at
        tokens.append(jwt.build_request(REQUEST).headers["authorization"])
    assert tokens == [
        f"Bearer {glm_jwt('id.secret', now_ms=1_700_000_000_000)}",
        f"Bearer {glm_jwt('id.secret', now_ms=1_700_000_001_000)}",
    ]


def test_vendor_defaults() -> None:
    urls = {
        name: create_provider(name, api_key="k").build_request(REQUEST).url  # type: ignore[attr-defined]
        for name in ("openai", "deepseek", "vllm", "llamacpp", "lmstudio")
    }
    assert urls == {
        "openai": "https://api.openai.com/v1/chat/completions",
        "deepseek": "https://api.deepseek.com/chat/completions",
        "vllm": "http://127.0.0.1:8000/v1/chat/completions",
        "llamacpp": "http://127.0.0.1:8080/v1/chat/completions",
        "lmstudio": "http://127.0.0.1:1234/v1/chat/completions",
    }
    body = (
        create_provider("deepseek", api_key="k")
        .build_request(  # type: ignore[attr-defined]
            ChatRequest(
                model="deepseek-chat", messages=[{"role": "user", "content": "x"}], max_tokens=5
            )
        )
        .json()
    )
    assert body["max_tokens"] == 5
    with pytest.raises(ValueError, match="needs a base_url"):
        create_provider("openai-compatible")
    with pytest.raises(ValueError, match="unknown provider 'nope'"):
        create_provider("nope")


async def test_a_2xx_answer_that_is_not_a_stream_is_refused(
    upstream: Upstream, client: Any
) -> None:
    html = Reply(200, (("content-type", "text/html"),), (b"<html>Sign in to the proxy</html>",))
    error = Reply(
        200,
        (("content-type", "application/json"),),
        (b'{"error":{"message":"model gpt-9 does not exist","code":"model_not_found"}}',),
    )
    base = upstream.replay("/chat/completions", html, error)
    async with OpenAIProvider(base, "k", client=client) as provider:
        with pytest.raises(UpstreamUnavailable) as page:
            await collect(provider, REQUEST)
        with pytest.raises(BadRequestError) as missing:
            await collect(provider, REQUEST)
    assert (page.value.code, page.value.status, page.value.retryable) == (
        "not_a_stream",
        200,
        False,
    )
    url = f"{base}/chat/completions"
    assert str(page.value) == (
        f"openai at {url} answered 200 with 'text/html', not a stream: "
        "'<html>Sign in to the proxy</html>'"
    )
    assert (missing.value.code, missing.value.status) == ("model_not_found", 400)
    assert str(missing.value) == f"openai at {url} answered 200: model gpt-9 does not exist"


def test_an_openai_stream_with_obfuscation_takes_the_fast_path() -> None:
    # Real OpenAI chunks end with a random "obfuscation" string: the frame
    # learned has it as a second string, after the content's.
    body = capture("openai_obfuscation.http").body
    reads = _reads(body)
    parser = OpenAIChunkParser("openai", "m1")
    assert parser.feed(reads[0]) + parser.feed(reads[1]) == EXPECTED["openai_obfuscation.http"][:2]
    head = (
        '{"id":"chatcmpl-CHx7Rk2aVbT9pLq4mN0sWdE3fGh","object":"chat.completion.chunk",'
        '"created":1764518400,"model":"gpt-4o-mini-2024-07-18","service_tier":"default",'
        '"system_fingerprint":"fp_560af6e559","choices":[{"index":0,"delta":{"content":"'
    )
    assert (parser._before, _frame(parser)) == (
        "data: " + head,
        ("}\n\n", '},"logprobs":null,"finish_reason":null}],"usage":null,"obfuscation":"', False),
    )


def _frame(parser: OpenAIChunkParser) -> tuple[str, str, bool]:
    """The learned frame past its opening (``_rest``): after, between, obfuscation
    first; the lengths kept beside them checked."""
    before_len, after, after_len, between, first = parser._rest
    assert (before_len, after_len) == (len(parser._before), len(after))
    return after, between, first


def _obfuscated(
    content: str, obfuscation: str, *, first: bool = False, finish: str = "null"
) -> bytes:
    """A text chunk with ``obfuscation`` (JSON text) before or after its choices."""
    obf = f'"obfuscation":{obfuscation}'
    return (
        b"data: "
        + _chunk(
            f'{{"content":{content}}}',
            finish=finish,
            extra="" if first else f",{obf}",
        ).replace(b'"choices"', f'{obf},"choices"'.encode() if first else b'"choices"')
        + b"\n\n"
    )


def _json(value: str, ascii_only: bool) -> str:
    return json.dumps(value, ensure_ascii=ascii_only)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    first=st.booleans(),
    chunks=st.lists(
        st.tuples(
            st.text(min_size=0, max_size=8),
            st.text(min_size=0, max_size=12),
            st.booleans(),
            st.sampled_from(
                ["text"] * 4
                + ["reasoning", "frame", "number", "delta", "role", "finish", "index", "ok"]
            ),
        ),
        min_size=1,
        max_size=12,
    ),
    groups=st.lists(st.integers(1, 4), min_size=12, max_size=12),
    cuts=st.lists(st.integers(0, 2000), max_size=3),
)
def test_obfuscated_streams_are_parsed_as_the_general_way_does(
    first: bool,
    chunks: list[tuple[str, str, bool, str]],
    groups: list[int],
    cuts: list[int],
) -> None:
    # Random contents and obfuscation strings (escapes, non-ASCII), either key
    # order, several chunks in a read, reads cut anywhere, and chunks that are
    # not the frame's: the events are those of the general way (byte by byte).
    events = [
        b"data: " + _chunk('{"role":"assistant","content":""}') + b"\n\n",
        _obfuscated('"Hi"', '"o1"', first=first),
    ]
    for content, obfuscation, ascii_only, kind in chunks:
        text, obf = _json(content, ascii_only), _json(obfuscation, not ascii_only)
        if kind == "text":
            events.append(_obfuscated(text, obf, first=first))
        elif kind == "reasoning":
            events.append(b"data: " + _chunk(f'{{"reasoning":{text}}}') + b"\n\n")
        elif kind == "frame":  # the other order
            events.append(_obfuscated(text, obf, first=not first))
        elif kind == "role":  # one more key between the two strings, or after
            events.append(_obfuscated(f'{text},"role":"assistant"', obf, first=first))
        elif kind == "finish":
            events.append(_obfuscated(text, obf, first=first, finish='"length"'))
        elif kind == "index":  # the same length between the strings, or after
            events.append(_obfuscated(text, obf, first=first).replace(b'"index":0', b'"index":1'))
        elif kind == "ok":
            events.append(_obfuscated(text, obf, first=first, finish='"ok"'))
        elif kind == "delta":  # one more obfuscation, in the delta
            events.append(_obfuscated(f'{text},"obfuscation":{obf}', obf, first=first))
        else:
            events.append(_obfuscated(text, "42", first=first))
    events.append(b"data: " + _chunk("{}", finish='"stop"') + b"\n\ndata: [DONE]\n\n")
    reads, at = [], 0
    for size in groups:
        if at < len(events):
            reads.append(b"".join(events[at : at + size]))
            at += size
    reads.append(b"".join(events[at:]))
    body = b"".join(reads)
    for cut in sorted(cut % (len(body) + 1) for cut in cuts):
        done = sum(map(len, reads[:-1]))
        reads[-1:] = [body[done:cut], body[cut:]] if cut > done else reads[-1:]
    assert b"".join(reads) == body
    parser = OpenAIChunkParser("openai", "m1")
    fast = [event for read in reads for event in parser.feed(read)] + parser.close()
    assert _frame(parser)[1]  # learned from the "Hi" chunk
    assert _frame(parser)[2] is first
    assert fast == parse(body, [body[i : i + 1] for i in range(len(body))])


TOP = '}}],"obfuscation":"'


@pytest.mark.parametrize(
    ("frame", "trail"),
    [
        # an obfuscation in the delta before the top one: a part of the frame
        (
            b'{"choices":[{"index":0,"delta":{"content":"@","obfuscation":"o"}}],"obfuscation":"@"}',
            ',"obfuscation":"o"' + TOP,
        ),
        # ... or the last one, not the top one's: a frame of the content only
        (
            b'{"obfuscation":"@","choices":[{"index":0,"delta":{"content":"@","obfuscation":"o"}}]}',
            "",
        ),
        # the first of two obfuscation keys (the last one wins): a part of the frame
        (
            b'{"obfuscation":"@","choices":[{"index":0,"delta":{"content":"@"}}],"obfuscation":"o"}',
            TOP,
        ),
        (
            b'{"obfuscation":"o","choices":[{"index":0,"delta":{"content":"@"}}],"obfuscation":"@"}',
            TOP,
        ),
        # the first of two content keys (the last one wins): a part of the frame
        (b'{"choices":[{"index":0,"delta":{"content":"a","content":"@"}}],"obfuscation":"@"}', TOP),
        # a key that ends in "obfuscation" after the top one: no frame
        (
            b'{"choices":[{"index":0,"delta":{"content":"@"}}],"obfuscation":"@","x\\"obfuscation":"@"}',
            None,
        ),
    ],
)
def test_obfuscation_strings_held_only_where_they_are(frame: bytes, trail: str | None) -> None:
    # "@" marks the strings that differ from one chunk to the next.
    reads = [b"data: " + frame.replace(b"@", text) + b"\n\n" for text in (b"a", b"b", b"c")]
    parser = OpenAIChunkParser("openai", "m1")
    assert [event for read in reads for event in parser.feed(read)] == [
        Start(model="m1", provider="openai"),
        TextDelta("a"),
        TextDelta("b"),
        TextDelta("c"),
    ]
    if trail is None:
        assert parser._before == ""
    else:
        assert parser._before
        assert _frame(parser)[1:] == (trail, False)


@pytest.mark.parametrize(
    ("learned", "other"),
    [
        # not a string: a frame of the content alone, as without one
        (b'"obfuscation":7,', b'"obfuscation":8,'),
        # with escapes, and what the markers of _learn would be
        (b'"obfuscation":"\\u00e9\\"",', b'"obfuscation":"\\u0002",'),
        (b'"obfuscation":"\\u0002",', b'"obfuscation":"\\u0003",'),
    ],
)
def test_obfuscation_frames_of_every_kind(learned: bytes, other: bytes) -> None:
    parser = OpenAIChunkParser("openai", "m1")
    chunk = b'data: {%s"choices":[{"index":0,"delta":{"content":"%s"}}]}\n\n'
    reads = [chunk % (learned, b"\\u0000"), chunk % (learned, b"b"), chunk % (other, b"c")]
    assert [event for read in reads for event in parser.feed(read)] == [
        Start(model="m1", provider="openai"),
        TextDelta("\0"),
        TextDelta("b"),
        TextDelta("c"),
    ]
    frame = 'data: {%s"choices":[{"index":0,"delta":{"content":"'
    if b"7" in learned:  # the number is a part of the frame
        assert (parser._before, _frame(parser)[1:]) == (frame % learned.decode(), ("", False))
    else:
        assert (parser._before, _frame(parser)[1:]) == (
            'data: {"obfuscation":"',
            (frame[7:] % ",", True),
        )
