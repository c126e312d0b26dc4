"""Hostile upstream bodies fuzzed into every provider's frame parser (hypothesis).

Whatever the bytes (arbitrary, or well-framed events and NDJSON lines whose JSON
has the providers' field names with any values, split anywhere), a parser:

- raises nothing: a body it cannot read ends the stream with an ``Error`` event;
- keeps the stream's invariants: ``Start`` first and once, then exactly one
  ``Finish`` or ``Error``, last, once the body is closed;
- makes events the gateway can store and render: ``to_record``/``from_record``
  round-trip them, and the native, OpenAI and AI SDK formatters encode them.

And the NDJSON decoder under them raises nothing but ``ProtocolError`` (the SSE
decoder's twin property is in tests/protocol/test_properties.py).
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ssegate import ProtocolError
from ssegate.gateway._records import from_record, to_record
from ssegate.llm import Error, Finish, Start, TextDelta
from ssegate.llm.formats import create_formatter
from ssegate.llm.providers.anthropic import AnthropicParser
from ssegate.llm.providers.ollama import OllamaParser
from ssegate.llm.providers.openai import OpenAIChunkParser
from ssegate.protocol import NDJSONDecoder, encode

#: The field names the three providers' answers use, and a few strangers.
KEYS = [
    "id", "object", "created", "model", "choices", "index", "delta", "role", "content",
    "reasoning_content", "reasoning", "tool_calls", "function", "name", "arguments",
    "finish_reason", "usage", "prompt_tokens", "completion_tokens", "error", "message",
    "code", "type", "text", "thinking", "partial_json", "content_block", "stop_reason",
    "input_tokens", "output_tokens", "done", "done_reason", "eval_count", "x",
]  # fmt: skip
TYPES = [
    "message_start", "content_block_start", "content_block_delta", "content_block_stop",
    "message_delta", "message_stop", "error", "ping", "text_delta", "thinking_delta",
    "input_json_delta", "tool_use", "text", "thinking", "redacted_thinking",
]  # fmt: skip
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.sampled_from(TYPES)
    | st.text(max_size=6)
)
values: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=5)
    ),
    max_leaves=14,
)
objects = st.dictionaries(st.sampled_from(KEYS), values, max_size=6)


def sse_frame(name: str | None, value: Any) -> bytes:
    head = f"event: {name}\n" if name else ""
    return (head + "data: " + json.dumps(value) + "\n\n").encode()


sse_bodies = st.lists(
    st.one_of(
        st.builds(sse_frame, st.none() | st.sampled_from(TYPES), objects),
        st.just(b"data: [DONE]\n\n"),
        st.binary(max_size=12),
    ),
    max_size=8,
).map(b"".join)
ndjson_bodies = st.lists(
    st.one_of(
        objects.map(lambda value: json.dumps(value).encode() + b"\n"),
        st.binary(max_size=12),
    ),
    max_size=8,
).map(b"".join)
PARSERS = {
    "openai": (lambda: OpenAIChunkParser("openai", "m"), sse_bodies),
    "anthropic": (lambda: AnthropicParser("anthropic", "m"), sse_bodies),
    "ollama": (lambda: OllamaParser("ollama", "m"), ndjson_bodies),
}


def split(body: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(body) + 1) for c in cuts})
    return [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]


def check(kind: str, body: bytes, cuts: list[int]) -> None:
    parser = PARSERS[kind][0]()
    events = []
    for chunk in split(body, cuts):
        events += parser.feed(chunk)
    events += parser.close()
    assert events, "closing a stream always tells how it ended"
    assert isinstance(events[0], Start)
    assert sum(isinstance(e, Start) for e in events) == 1
    assert isinstance(events[-1], (Finish, Error))
    assert sum(isinstance(e, (Finish, Error)) for e in events) == 1
    assert parser.done
    for event in events:
        assert from_record(to_record(event)) == event
    for name in ("native", "openai", "aisdk"):
        formatter = create_formatter(name)
        for event in events:
            for out in formatter.format(event):
                encode(out)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    kind=st.sampled_from(sorted(PARSERS)),
    data=st.data(),
    cuts=st.lists(st.integers(0, 10_000), max_size=4),
)
def test_any_well_framed_body_keeps_the_invariants(
    kind: str, data: st.DataObject, cuts: list[int]
) -> None:
    check(kind, data.draw(PARSERS[kind][1]), cuts)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(
    kind=st.sampled_from(sorted(PARSERS)),
    body=st.binary(max_size=300),
    cuts=st.lists(st.integers(0, 10_000), max_size=4),
)
def test_any_bytes_keep_the_invariants(kind: str, body: bytes, cuts: list[int]) -> None:
    check(kind, body, cuts)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(
    body=st.binary(max_size=300) | ndjson_bodies,
    cuts=st.lists(st.integers(0, 10_000), max_size=4),
    limit=st.integers(1, 64),
)
def test_the_ndjson_decoder_raises_only_protocol_errors(
    body: bytes, cuts: list[int], limit: int
) -> None:
    decoder = NDJSONDecoder(max_line_size=limit)
    with contextlib.suppress(ProtocolError):  # anything else fails the test
        for chunk in split(body, cuts):
            decoder.feed(chunk)
        decoder.close()


GOOD = {
    "openai": b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m",'
    b'"choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n',
    "anthropic": b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"text_delta","text":"Hi"}}\n\n',
    "ollama": b'{"model":"m","message":{"role":"assistant","content":"Hi"},"done":false}\n',
}
START = {
    "openai": b"",
    "anthropic": b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
    b'"content_block":{"type":"text","text":""}}\n\n',
    "ollama": b"",
}


@pytest.mark.parametrize("kind", sorted(PARSERS))
@pytest.mark.parametrize("bad", ["giant", "endless", "garbage"])
def test_events_before_bad_input_in_the_same_read_are_kept(kind: str, bad: str) -> None:
    # One read that completes a token and then breaks a rule: the token is not
    # lost with the bad input, and the stream ends with a protocol_error.
    line = b"data: " if kind != "ollama" else b'{"x":"'
    tail = {
        "giant": line + b"x" * 2000 + b"\n\n",
        "endless": line + b"y" * 2000,
        "garbage": b"{not json\n" if kind == "ollama" else line + b"x" * 2000 + b"\n\n",
    }[bad]
    parser = PARSERS[kind][0]()
    parser.limit(150)
    events = parser.feed(START[kind] + GOOD[kind] + tail) + parser.close()
    texts = [e.text for e in events if isinstance(e, TextDelta)]
    assert texts == ["Hi"]
    assert isinstance(events[-1], Error)
    assert events[-1].code == "protocol_error"


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(max_size=40),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(st.text(max_size=4), inner, max_size=3)
            ),
            max_leaves=8,
        ).map(lambda value: json.dumps(value, ensure_ascii=False)),
    ),
    st.sampled_from(["", " ", "\n", " x", "{}", "\t\r\n"]),
    st.sampled_from(["", " ", "\n"]),
)
def test_frame_json_is_json_loads(text: str, after: str, before: str) -> None:
    # The parsers' per-token JSON (the C scanner, called directly) answers
    # exactly what json.loads answers: the same value, or a ValueError.
    from ssegate.llm._drive import frame_json

    frame = before + text + after
    try:
        expected: Any = json.loads(frame)
    except json.JSONDecodeError:
        with pytest.raises(json.JSONDecodeError):
            frame_json(frame)
        return
    got = frame_json(frame)
    assert json.dumps(got) == json.dumps(expected)  # NaN != NaN: compare as text
