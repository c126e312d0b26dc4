"""The event model, ChatRequest, batching, the provider interface for in-process engines."""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import FrozenInstanceError, replace
from types import MappingProxyType
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from llm_support import REQUEST, Upstream, capture, collect

from json_values import CHAT_FIELDS, json_values
from ssegate.llm import (
    ChatRequest,
    Error,
    Finish,
    LLMEvent,
    Message,
    ReasoningDelta,
    ReasoningEnd,
    Start,
    TextDelta,
    Tool,
    ToolCall,
    ToolCallEnd,
    Usage,
    event_from_dict,
)
from ssegate.llm.providers import HTTPClient, Provider, default_http_client, stream_batches
from ssegate.llm.providers.openai import OpenAIProvider
from ssegate.testing import FakeUpstream, Reply

ALL_KINDS: list[LLMEvent] = [
    Start(model="m", provider="p", id="x", created=1),
    TextDelta("a"),
    ReasoningEnd(signature="s"),
    ToolCallEnd(0, "c", "f", "{}"),
    Usage(1, 2, 3, 4, estimated=True),
    Finish("length", "max_tokens"),
    Error("c", "m", True, 503),
]


@pytest.mark.parametrize("event", ALL_KINDS, ids=lambda e: e.type)
def test_events_round_trip_through_dicts(event: LLMEvent) -> None:
    as_dict = event.to_dict()
    assert as_dict["type"] == event.type
    assert event_from_dict(as_dict) == event


def test_event_validation() -> None:
    with pytest.raises(ValueError, match=r"Finish\.reason must be one of"):
        Finish("error")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"TextDelta\.text must be str"):
        TextDelta(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-negative int"):
        Usage(input_tokens=-1)
    with pytest.raises(ValueError, match="unknown LLM event type 'nope'"):
        event_from_dict({"type": "nope"})
    with pytest.raises(ValueError, match="bad fields for a 'text' event"):
        event_from_dict({"type": "text", "txt": "a"})
    assert Usage(3, None).total_tokens is None
    assert Usage(3, 4).total_tokens == 7


@pytest.mark.parametrize("cls", [TextDelta, ReasoningDelta])
def test_deltas_with_their_own_init_stay_frozen_values(cls: Any) -> None:
    made = cls("héllo ")
    assert made == cls(text="héllo ") != cls("other")
    assert hash(made) == hash(cls(text="héllo "))
    assert repr(made) == f"{cls.__name__}(text='héllo ')"
    assert replace(made, text="b") == cls("b")
    assert event_from_dict(made.to_dict()) == made
    with pytest.raises(FrozenInstanceError):
        made.text = "other"
    with pytest.raises(TypeError, match=rf"{cls.__name__}\.text must be str, not bytes"):
        cls(b"x")
    with pytest.raises(TypeError):
        cls()


def test_chat_request_from_openai() -> None:
    body = {
        "model": "gpt",
        "messages": [
            {"role": "developer", "content": "sys"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "f", "arguments": {"x": 1}},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "ok"},
        ],
        "tools": [{"type": "function", "function": {"name": "f", "description": "d"}}],
        "max_completion_tokens": 9,
        "stop": "\n",
        "stream": True,
        "stream_options": {"include_usage": True},
        "seed": 3,
    }
    request = ChatRequest.from_openai(body)
    assert request.message_list == (
        Message("system", "sys"),
        Message("user", "ab"),
        Message("assistant", "", (ToolCall("c1", "f", '{"x": 1}'),)),
        Message("tool", "ok", tool_call_id="c1"),
    )
    assert request.tool_list == (Tool("f", "d", {"type": "object", "properties": {}}),)
    assert (request.max_tokens, request.stop, request.include_usage) == (9, ("\n",), True)
    assert request.extra == {"seed": 3}


class _Seq(Sequence[Any]):
    """A sequence that is neither a list nor a tuple (the checks' slower way)."""

    def __init__(self, *items: Any) -> None:
        self.items = items

    def __getitem__(self, i: Any) -> Any:
        return self.items[i]

    def __len__(self) -> int:
        return len(self.items)


def test_chat_request_takes_any_sequence_and_mapping() -> None:
    made = ChatRequest(
        "m",
        _Seq(Message("user", "hi"), MappingProxyType({"role": "assistant", "content": "yo"})),
        tools=_Seq(Tool("f")),
        stop=_Seq("a", "b"),
        extra=MappingProxyType({"seed": 1}),
        max_tokens=2,
        temperature=0,
    )
    assert made.messages == (Message("user", "hi"), Message("assistant", "yo"))
    assert (made.tools, made.stop, made.extra) == ((Tool("f"),), ("a", "b"), {"seed": 1})
    assert type(made.extra) is dict
    plain = ChatRequest("m", (Message("user", "hi"),), stop=["x"], tools=[{"name": "g"}])
    assert (plain.stop, plain.tool_list[0].name) == (("x",), "g")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"model": 5}, "'model' must be a non-empty string"),
        ({"messages": "hi"}, "'messages' must be a list of messages"),
        ({"messages": b"hi"}, "'messages' must be a list of messages"),
        ({"messages": {"role": "user"}}, "'messages' must be a list of messages"),
        ({"messages": []}, "'messages' must not be empty"),
        ({"tools": "f"}, "'tools' must be a list of tools"),
        ({"tools": 3}, "'tools' must be a list of tools"),
        ({"stop": b"x"}, "'stop' must be a string or a list of strings"),
        ({"stop": ("x", 1)}, "'stop' must be a string or a list of strings"),
        ({"max_tokens": True}, "'max_tokens' must be a positive integer: True"),
        ({"max_tokens": 0}, "'max_tokens' must be a positive integer: 0"),
        ({"max_tokens": 2.0}, "'max_tokens' must be a positive integer: 2.0"),
        ({"temperature": True}, "'temperature' must be a non-negative number: True"),
        ({"extra": [("a", 1)]}, "'extra' must be a mapping of body fields"),
        ({"include_usage": 1}, "'include_usage' must be true or false"),
    ],
)
def test_chat_request_refuses_bad_fields(fields: dict[str, Any], message: str) -> None:
    given: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    with pytest.raises(ValueError, match=re.escape(message)):
        ChatRequest(**{**given, **fields})


def test_chat_request_with_model_is_replace_without_rechecking() -> None:
    request = ChatRequest.from_openai(
        {
            "model": "alias",
            "messages": [{"role": "user", "content": "Hi"}],
            "stop": "x",
            "top_p": 0.5,
            "max_tokens": 3,
        }
    )
    renamed = request.with_model("upstream-model")
    assert renamed == replace(request, model="upstream-model")
    assert renamed.messages is request.messages
    assert renamed.extra == request.extra
    assert renamed.extra is not request.extra
    assert request.model == "alias"
    assert request.with_model("alias") is request
    with pytest.raises(ValueError, match="'model' must be a non-empty string"):
        request.with_model("")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "the request body must be a JSON object"),
        ({"messages": [{"role": "user", "content": "x"}]}, "'model' must be a non-empty string"),
        ({"model": "m"}, "'messages' must not be empty"),
        ({"model": "m", "messages": "hi"}, "'messages' must be a list"),
        ({"model": "m", "messages": [{"role": "robot"}]}, r"messages\[0\].role must be one of"),
        (
            {"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            "only text content parts are supported, not 'image_url'",
        ),
        (
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"},
            "'temperature' must be a non-negative number",
        ),
        (
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
            "'max_tokens' must be a positive integer",
        ),
        (
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [{}]},
            r"tools\[0\] needs function.name",
        ),
        (
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "stop": [1]},
            "'stop' must be a string or a list of strings",
        ),
    ],
)
def test_chat_request_refuses_bad_bodies(body: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ChatRequest.from_openai(body)


_OK: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "x"}]}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("stop", 5, "'stop' must be a string or a list of strings"),
        ("stop", {"a": 1}, "'stop' must be a string or a list of strings"),
        ("messages", "x", "'messages' must be a list"),
        ("messages", [5], r"messages\[0\] must be an object"),
        ("messages", [{"role": "user", "content": 5}], r"messages\[0\]: 'content' must be"),
        ("messages", [{"role": "assistant", "tool_calls": [7]}], r"tool_calls\[0\] needs"),
        ("messages", [{"role": "tool", "tool_call_id": 1}], "tool_call_id must be a string"),
        ("temperature", "hot", "'temperature' must be a non-negative number: 'hot'"),
        ("temperature", -0.5, "'temperature' must be a non-negative number: -0.5"),
        ("temperature", float("nan"), "'temperature' must be a non-negative number: nan"),
        ("max_tokens", -1, "'max_tokens' must be a positive integer: -1"),
        ("max_tokens", 1.5, "'max_tokens' must be a positive integer: 1.5"),
        ("max_completion_tokens", True, "'max_completion_tokens' must be a positive integer"),
        ("stream_options", 3, "'stream_options' must be an object"),
        ("stream_options", {"include_usage": "yes"}, "'stream_options.include_usage' must be"),
        ("stream", "yes", "'stream' must be true or false: 'yes'"),
        ("model", ["m"], "'model' must be a non-empty string: \\['m'\\]"),
        ("tools", {"name": "f"}, "'tools' must be a list"),
        ("tools", ["f"], r"tools\[0\] must be an object"),
        ("tools", [{"function": {"name": ""}}], r"tools\[0\] needs function.name"),
        ("tools", [{"function": {"name": "f", "parameters": []}}], "parameters must be an object"),
        ("tools", [{"function": {"name": "f", "description": 0}}], "description must be a str"),
    ],
)
def test_chat_request_names_each_malformed_field(field: str, value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ChatRequest.from_openai({**_OK, field: value})


@settings(max_examples=400, deadline=None)
@given(field=st.sampled_from(CHAT_FIELDS), value=json_values)
def test_chat_request_lets_only_value_errors_escape(field: str, value: Any) -> None:
    # Any JSON value in any field: a request, or a ValueError naming that field.
    message = ""
    try:
        ChatRequest.from_openai({**_OK, field: value})
    except ValueError as exc:
        message = str(exc)
    assert not message or f"'{field}" in message or f"{field}[" in message


@settings(max_examples=200, deadline=None)
@given(value=json_values)
def test_messages_of_any_shape_only_raise_value_errors(value: Any) -> None:
    body = {**_OK, "messages": [value], "tools": [value]}
    with contextlib.suppress(ValueError):
        ChatRequest.from_openai(body)


# -- batches ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_http_providers_batch_per_read(upstream: Upstream) -> None:
    # The whole capture in one chunk: one read, so one batch (then the end of body).
    reply = capture("openai_text.http")
    base = upstream.replay("/chat/completions", replace(reply, chunks=(reply.body,)))
    async with OpenAIProvider(base, "k") as provider:
        batches = [b async for b in stream_batches(provider, REQUEST)]
    assert len(batches) == 1
    assert batches[0][0] == Start(
        model="m1", provider="openai", id="chatcmpl-a1", created=1760000000
    )
    assert batches[0][-1] == Finish("stop", "stop")


class EchoEngine:
    """An in-process provider, as providers/__init__.py describes (the local model's shape)."""

    name = "echo"

    def __init__(self) -> None:
        self.closed_early = False

    async def stream(self, request: ChatRequest) -> AsyncIterator[LLMEvent]:
        yield Start(model=request.model, provider=self.name)
        try:
            for word in request.message_list[-1].content.split():
                yield TextDelta(word)
        except GeneratorExit:
            self.closed_early = True
            raise
        yield Usage(1, 2)
        yield Finish("stop", "stop")

    async def aclose(self) -> None:
        pass


@pytest.mark.anyio
async def test_in_process_providers_fit_the_interface() -> None:
    engine = EchoEngine()
    assert isinstance(engine, Provider)
    request = ChatRequest(model="e", messages=[{"role": "user", "content": "a b"}])
    batches = [b async for b in stream_batches(engine, request)]
    assert batches == [
        [Start(model="e", provider="echo")],
        [TextDelta("a")],
        [TextDelta("b")],
        [Usage(1, 2)],
        [Finish("stop", "stop")],
    ]
    async with aclosing(stream_batches(engine, request)) as events:
        async for batch in events:
            if isinstance(batch[0], TextDelta):
                break
    assert engine.closed_early


# -- timeouts mid-stream ----------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["aiohttp", "httpx"])
async def test_silent_upstream_times_out_as_an_error_event(kind: str) -> None:
    reply = capture("openai_text.http")
    fake = FakeUpstream().add(
        "/v1/chat/completions", replace(reply, chunks=reply.chunks[:2], hold=True)
    )
    client: Any = (
        HTTPClient(read_timeout=0.3) if kind == "aiohttp" else default_http_client(timeout=0.3)
    )
    with fake.run() as url:
        async with OpenAIProvider(url + "/v1", "k", client=client) as provider:
            events = await collect(provider, REQUEST)
        await client.aclose()
    assert events[:2] == [
        Start(model="m1", provider="openai", id="chatcmpl-a1", created=1760000000),
        TextDelta("Bon"),
    ]
    last = events[-1]
    assert isinstance(last, Error)
    assert (last.code, last.retryable, len(events)) == ("timeout", True, 3)


@pytest.mark.anyio
async def test_silence_on_a_reused_connection_times_out_too() -> None:
    """The body's read timeout is kept by the client's one watcher, not a timer
    per read: a whole answer, then a silent one on the same pooled connection."""
    reply = capture("openai_text.http")
    silent = replace(reply, chunks=reply.chunks[:2], hold=True)
    fake = FakeUpstream().add("/v1/chat/completions", reply, silent)
    client = HTTPClient(read_timeout=0.3)
    with fake.run() as url:
        async with OpenAIProvider(url + "/v1", "k", client=client) as provider:
            whole = await collect(provider, REQUEST)
            cut = await collect(provider, REQUEST)
        assert len(client._silences.bodies) == 0
        await client.aclose()
    assert isinstance(whole[-1], Finish)
    assert isinstance(cut[-1], Error)
    assert (cut[-1].code, cut[1]) == ("timeout", TextDelta("Bon"))


def test_reply_from_http_parses_crlf_and_lf_heads() -> None:
    crlf = Reply.from_http(b"HTTP/1.1 201 Created\r\nX-A: 1\r\nContent-Length: 2\r\n\r\nhi")
    lf = Reply.from_http(b"HTTP/1.1 201 Created\nX-A: 1\n\nhi")
    assert crlf == lf == Reply(201, (("x-a", "1"),), (b"hi",))
    assert Reply.from_http(b"HTTP/1.1 200 OK\n\nabcde", chunk_size=2).chunks == (b"ab", b"cd", b"e")
    with pytest.raises(ValueError, match="status line"):
        Reply.from_http(b"200 OK\n\n")


@pytest.mark.parametrize("anyio_backend", ["trio"])
@pytest.mark.anyio
async def test_on_trio_providers_drive_httpx(upstream: Upstream) -> None:
    base = upstream.replay("/chat/completions", capture("lmstudio_no_usage.http"))
    async with OpenAIProvider(base, "k", vendor="lmstudio") as provider:
        events = await collect(provider, REQUEST)
        assert isinstance(provider.client, httpx.AsyncClient)  # aiohttp is asyncio-only
    assert events[-1] == Finish("length", "length")
    assert len(events) == 4


def test_importing_the_event_model_stays_light() -> None:
    import subprocess
    import sys

    code = (
        "import sys, ssegate.llm, ssegate.llm.formats; "
        "print(sorted(m for m in ('httpx', 'httptools', 'anyio', 'ssegate.gateway', "
        "'ssegate.server', 'ssegate.testing') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_registered_provider_builds() -> None:
    from ssegate.llm.providers import PROVIDERS, create_provider

    options: dict[str, dict[str, str]] = {"openai-compatible": {"base_url": "http://127.0.0.1:9"}}
    built = {name: create_provider(name, **options.get(name, {})) for name in PROVIDERS}
    assert all(isinstance(p, Provider) for p in built.values())
    assert {name: p.name for name, p in built.items()} == {
        "anthropic": "anthropic",
        "deepseek": "deepseek",
        "glm": "glm",
        "llamacpp": "llamacpp",
        "lmstudio": "lmstudio",
        "local": "local",
        "ollama": "ollama",
        "openai": "openai",
        "openai-compatible": "openai-compatible",  # as the user typed it
        "vllm": "vllm",
        "zhipu": "zhipu",
    }


@dataclasses.dataclass(frozen=True, slots=True)
class _Constructed(ChatRequest):
    """``ChatRequest`` made by its dataclass ``__init__`` and ``__post_init__``
    (``from_openai`` makes a subclass its general way)."""


def _made(body: Any, kind: type[ChatRequest]) -> tuple[Any, ...]:
    """What ``kind.from_openai(body)`` gives: every field (extra's items in order), or the error."""
    try:
        request = kind.from_openai(body)
    except Exception as exc:  # compared, whatever it is
        return (type(exc), str(exc))
    values = tuple(getattr(request, f.name) for f in dataclasses.fields(ChatRequest))
    return (*values, type(request.extra), list(request.extra.items()))


@settings(max_examples=400, deadline=None)
@given(
    fields=st.dictionaries(
        st.sampled_from([*CHAT_FIELDS, "seed", "top_p"]), json_values, max_size=5
    ),
    messages=st.lists(json_values, max_size=3),
)
def test_from_openai_makes_what_the_dataclass_makes(fields: dict[str, Any], messages: Any) -> None:
    # ChatRequest.from_openai skips the dataclass's init and the checks it made
    # itself: the same request (or error) as the dataclass's own way, always.
    for body in ({**_OK, **fields}, {**_OK, "messages": messages, **fields}, fields):
        assert _made(body, ChatRequest) == _made(body, _Constructed)
    ok = {**_OK, "messages": [{"role": "user", "content": "Hi"}], "stop": ["x"], "seed": 1}
    assert _made(ok, ChatRequest) == _made(ok, _Constructed)
    assert type(ChatRequest.from_openai(ok)) is ChatRequest
    assert type(_Constructed.from_openai(ok)) is _Constructed
