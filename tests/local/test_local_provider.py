"""The ``local`` provider: the engine as unified LLM events."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from ssegate import BadRequestError, UpstreamUnavailable
from ssegate.llm import ChatRequest, Finish, LLMEvent, Start, TextDelta, Usage
from ssegate.llm.providers import Provider, create_provider
from ssegate.llm.providers.local import LocalProvider
from ssegate.local import LocalEngine, SamplingParams

FRANCE = {"role": "user", "content": "What is the capital of France?"}


def request(**fields: Any) -> ChatRequest:
    body = {"model": "local", "messages": [FRANCE], "temperature": 0, **fields}
    return ChatRequest.from_openai(body)


async def events_of(provider: LocalProvider, req: ChatRequest) -> list[LLMEvent]:
    async with contextlib.aclosing(provider.stream(req)) as events:
        return [event async for event in events]


@pytest.fixture
def provider(engine: LocalEngine) -> LocalProvider:
    made = create_provider("local", engine=engine)
    assert isinstance(made, LocalProvider)
    assert isinstance(made, Provider)
    return made


@pytest.mark.anyio
async def test_answer_as_unified_events(provider: LocalProvider) -> None:
    events = await events_of(provider, request(max_tokens=16))
    start = events[0]
    assert isinstance(start, Start)
    assert (start.model, start.provider) == ("local", "local")
    assert start.id is not None
    assert start.id.startswith("local-")
    assert events[1:] == [
        TextDelta("The"),
        TextDelta(" capital"),
        TextDelta(" of"),
        TextDelta(" France"),
        TextDelta(" is"),
        TextDelta(" Paris"),
        TextDelta("."),
        Usage(input_tokens=37, output_tokens=7),
        Finish("stop", raw_reason="stop"),
    ]
    short = await events_of(provider, request(max_tokens=2, stop=[" of"]))
    assert short[1:] == [
        TextDelta("The"),
        TextDelta(" capital"),
        Usage(input_tokens=37, output_tokens=2),
        Finish("length", raw_reason="length"),
    ]


@pytest.mark.anyio
async def test_stop_and_sampling_fields(provider: LocalProvider) -> None:
    events = await events_of(provider, request(stop=" France", max_tokens=16))
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["The", " capital", " of"]
    assert events[-1] == Finish("stop", raw_reason="stop")
    params = provider.params(
        request(temperature=0.7, top_p=0.5, top_k=7, seed=3, repeat_penalty=1.3, max_tokens=9)
    )
    assert params == SamplingParams(
        temperature=0.7,
        top_p=0.5,
        top_k=7,
        seed=3,
        repetition_penalty=1.3,
        max_tokens=9,
    )
    assert provider.params(request(max_tokens=10**9)).max_tokens == 4096
    assert provider.params(ChatRequest("local", [FRANCE])) == SamplingParams(max_tokens=512)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"top_p": 0}, r"top_p must be in \(0, 1\]"),
        ({"top_k": 1.5}, "'top_k' must be an integer"),
        ({"seed": "x"}, "'seed' must be a number"),
        ({"repetition_penalty": True}, "'repetition_penalty' must be a number"),
        ({"temperature": 1000}, "temperature must be between 0 and 100"),
        (
            {"tools": [{"type": "function", "function": {"name": "f"}}]},
            "the local model cannot call tools",
        ),
        ({"messages": [{"role": "user", "content": "word " * 600}]}, "the context holds 512"),
    ],
)
async def test_bad_requests_raise_before_the_first_event(
    provider: LocalProvider, fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(BadRequestError, match=message) as info:
        await events_of(provider, request(**fields))
    assert (info.value.status, info.value.provider) == (400, "local")


@pytest.mark.anyio
async def test_queue_position_is_reported(tiny_path: Path) -> None:
    with LocalEngine.load(tiny_path, n_ctx=64, max_concurrency=1, blas_threads=None) as tiny:
        provider = LocalProvider(engine=tiny)
        running = provider.stream(request(max_tokens=30))
        assert isinstance(await running.__anext__(), Start)
        positions: list[int] = []
        collected: list[LLMEvent] = []

        async def consume() -> None:
            waiting = provider.stream(request(max_tokens=2), on_queued=positions.append)
            collected.extend([event async for event in waiting])

        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            while not positions:  # bounded: the waiter reports at its first step
                await anyio.lowlevel.checkpoint()
            assert collected == []  # no Start while queued
            await running.aclose()  # type: ignore[attr-defined]
        assert positions == [1]
        assert isinstance(collected[0], Start)
        assert isinstance(collected[-1], Finish)


@pytest.mark.anyio
async def test_missing_model_is_upstream_unavailable(tmp_path: Path) -> None:
    provider = LocalProvider(model_path=tmp_path / "nothing.gguf")
    with pytest.raises(UpstreamUnavailable) as info:
        await events_of(provider, request())
    assert (info.value.code, info.value.status, info.value.provider) == (
        "model_not_found",
        503,
        "local",
    )
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\xff" * 30)
    with pytest.raises(UpstreamUnavailable, match="could not be loaded: GGUF version"):
        await events_of(LocalProvider(model_path=broken), request())


@pytest.mark.anyio
async def test_loads_lazily_once_and_closes(tiny_path: Path) -> None:
    provider = LocalProvider(model_path=tiny_path, n_ctx=64)
    first = await provider.engine()
    assert await provider.engine() is first
    events = await events_of(provider, request(max_tokens=3))
    assert isinstance(events[0], Start)
    assert isinstance(events[-1], Finish)
    await provider.aclose()
    with pytest.raises(TypeError, match="stream\\(\\) takes a ChatRequest, not dict"):
        await provider.stream({"model": "local"}).__anext__()  # type: ignore[arg-type]


@pytest.mark.anyio
@pytest.mark.parametrize("threads", [1, 2])
async def test_decode_threads_reach_the_engine(tiny_path: Path, threads: int) -> None:
    provider = LocalProvider(model_path=tiny_path, n_ctx=64, decode_threads=threads)
    engine = await provider.engine()
    assert engine.decode_threads == threads
    events = await events_of(provider, request(max_tokens=3))
    assert isinstance(events[-1], Finish)
    await provider.aclose()
