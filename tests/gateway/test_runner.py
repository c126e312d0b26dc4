"""The generation runner in virtual time (trio's MockClock): the detach grace period,
a stop, and the stream's end, asserted to the exact virtual second."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import anyio
import anyio.to_thread
import httpx
import pytest
from trio.testing import MockClock

from ssegate.gateway._echo import EchoProvider
from ssegate.gateway._metrics import Metrics
from ssegate.gateway._models import Route
from ssegate.gateway._records import from_record
from ssegate.gateway._runner import Runner, native
from ssegate.gateway._scope import Flag, TaskScope
from ssegate.llm import ChatRequest, Finish, LLMEvent, Start, TextDelta
from ssegate.llm.providers import HTTPClient
from ssegate.llm.providers.openai import OpenAIProvider
from ssegate.streams import CANCELLED, DONE, ERROR, MemoryStore

pytestmark = pytest.mark.anyio

#: 1000 words at 1 token per second: still running at every time these tests look.
MESSAGE = [{"role": "user", "content": "a b"}]
LONG = ChatRequest(model="echo", messages=[{"role": "user", "content": "w " * 1000}])


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, object]]:
    return ("trio", {"clock": MockClock(autojump_threshold=0)})


def runner(store: MemoryStore, grace: float) -> Runner:
    return Runner(store, Metrics(), grace=grace, sleep=anyio.sleep, clock=anyio.current_time)


def echo() -> Route:
    return Route("echo", EchoProvider(tokens_per_second=1.0), "echo")


async def test_unread_generation_is_cancelled_when_the_grace_period_ends() -> None:
    store = MemoryStore(clock=anyio.current_time)
    async with runner(store, grace=30.5) as run:
        t0 = anyio.current_time()
        generation = await run.start("gen_a", echo(), LONG, key_id="k")
        await generation.finished.wait()
        assert anyio.current_time() - t0 == 30.5
        assert generation.end_reason == "abandoned"
        assert run.running("k") == 0
    info = await store.info("gen_a")
    assert (info.ended, info.outcome) == (True, CANCELLED)
    # the tokens of the first 30 s were written, nothing after the stop
    assert info.length == 1 + 30  # Start, then one token a second


async def test_a_reader_holds_it_and_the_grace_counts_from_its_leaving() -> None:
    store = MemoryStore(clock=anyio.current_time)
    async with runner(store, grace=30.0) as run:
        t0 = anyio.current_time()
        generation = await run.start("gen_b", echo(), LONG, key_id="k")
        await anyio.sleep(10)
        run.attach("gen_b")
        await anyio.sleep(40)  # past the first grace period: the reader holds it
        assert not generation.finished.is_set()
        run.detach("gen_b")
        run.attach("gen_b")  # back at once (a reconnect): no timer may fire
        await anyio.sleep(35)
        assert not generation.finished.is_set()
        run.detach("gen_b")
        await generation.finished.wait()
        assert anyio.current_time() - t0 == 85.0 + 30.0
        assert generation.end_reason == "abandoned"


async def test_a_read_generation_runs_to_its_end() -> None:
    store = MemoryStore(clock=anyio.current_time)
    request = ChatRequest(model="echo", messages=[{"role": "user", "content": "a b c"}])
    async with runner(store, grace=0.0) as run:
        t0 = anyio.current_time()
        generation = await run.start("gen_c", echo(), request, key_id="k")
        run.attach("gen_c")
        await generation.finished.wait()
        assert anyio.current_time() - t0 == 3.0
        run.detach("gen_c")
    assert generation.end_reason == "stop"
    items = [item async for item in store.read("gen_c")]
    llm = [from_record(item) for item in items[:-1]]  # type: ignore[arg-type]
    assert [e.text for e in llm if isinstance(e, TextDelta)] == ["a", " b", " c"]
    assert isinstance(llm[-1], Finish)
    assert (await store.info("gen_c")).outcome == DONE


async def test_stop_cancels_at_once() -> None:
    store = MemoryStore(clock=anyio.current_time)
    async with runner(store, grace=30.0) as run:
        generation = await run.start("gen_d", echo(), LONG, key_id="k")
        run.attach("gen_d")
        await anyio.sleep(5.5)
        t0 = anyio.current_time()
        await run.stop("gen_d")
        assert generation.finished.is_set()
        assert anyio.current_time() == t0
        assert generation.end_reason == "stopped"
    assert (await store.info("gen_d")).outcome == CANCELLED


async def test_shutdown_ends_running_generations_with_a_retryable_error() -> None:
    store = MemoryStore(clock=anyio.current_time)
    async with runner(store, grace=30.0) as run:
        generation = await run.start("gen_e", echo(), LONG, key_id="k")
        run.attach("gen_e")
        await anyio.sleep(2.5)
    assert generation.end_reason == "shutdown"
    items = [item async for item in store.read("gen_e")]
    last = from_record(items[-2])  # type: ignore[arg-type]
    assert last.to_dict() == {
        "type": "error",
        "code": "shutdown",
        "message": "The gateway shut down during the generation.",
        "retryable": True,
        "status": None,
    }


class Broken:
    """A provider with a bug: it raises after its first event."""

    name = "broken"

    async def stream(self, request: ChatRequest) -> AsyncIterator[LLMEvent]:
        yield Start(model="broken", provider="broken")
        raise RuntimeError("a bug")

    async def aclose(self) -> None:
        pass


async def test_a_provider_bug_ends_its_stream_with_an_error_and_nothing_else(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = MemoryStore(clock=anyio.current_time)
    async with runner(store, grace=30.0) as run:
        broken = await run.start("gen_f", Route("b", Broken(), "b"), LONG, key_id="k")  # type: ignore[arg-type]
        await broken.finished.wait()
        fine = await run.start(
            "gen_g", echo(), ChatRequest(model="echo", messages=MESSAGE), key_id="k"
        )
        run.attach("gen_g")
        await fine.finished.wait()
    assert broken.end_reason == "internal_error"
    items = [item async for item in store.read("gen_f")]
    assert from_record(items[-2]).to_dict() == {  # type: ignore[arg-type]
        "type": "error",
        "code": "internal_error",
        "message": "The gateway failed during the generation.",
        "retryable": False,
        "status": None,
    }
    assert (await store.info("gen_f")).outcome == ERROR
    assert fine.end_reason == "stop"
    assert "generation gen_f failed" in caplog.text


async def test_grace_timers_are_not_tasks() -> None:
    store = MemoryStore(clock=anyio.current_time)
    async with runner(store, grace=30.0) as run:
        before = len(anyio.get_running_tasks())
        await run.start("gen_h", echo(), LONG, key_id="k")
        await anyio.sleep(1)
        for n in range(20):  # unread, each with its grace timer running
            await run.start(f"gen_h{n}", echo(), LONG, key_id="k")
        await anyio.sleep(1)
        # One task per generation (its own: the runner's one keeper renews the
        # leases), however many grace timers run: they are entries of one queue.
        assert len(anyio.get_running_tasks()) - before == 21
        assert len(run._timers) == 21


class Reads:
    """Tokens that arrive several to a read, at known virtual times."""

    name = "reads"

    async def stream_batches(self, request: ChatRequest) -> AsyncIterator[list[LLMEvent]]:
        await anyio.sleep(0.25)
        yield [Start(model="r", provider="reads"), TextDelta("a"), TextDelta("b")]
        await anyio.sleep(0.5)
        yield [TextDelta("c")]
        await anyio.sleep(2.0)
        yield [TextDelta("d"), TextDelta("e"), Finish("stop")]

    def stream(self, request: ChatRequest) -> AsyncIterator[LLMEvent]:
        raise AssertionError("the runner reads batches")

    async def aclose(self) -> None:
        pass


async def test_the_tokens_of_one_read_are_counted_as_one_at_a_time_would_be() -> None:
    store = MemoryStore(clock=anyio.current_time)
    metrics = Metrics()
    run = Runner(store, metrics, grace=30.0, sleep=anyio.sleep, clock=anyio.current_time)
    async with run:
        t0 = anyio.current_time()
        generation = await run.start("gen_r", Route("r", Reads(), "r"), LONG, key_id="k")  # type: ignore[arg-type]
        run.attach("gen_r")
        await generation.finished.wait()
        # a second later: the seconds of every token are whole seconds past
        snapshot = metrics.live.snapshot(anyio.current_time() + 1, {})
    assert generation.tokens == 5
    assert generation.first_token_at == t0 + 0.25
    exported = metrics.export().decode().splitlines()
    inter = [line for line in exported if line.startswith("ssegate_inter_token_seconds_")]
    # gaps: 0 (b after a), 0.5 (c), 2.0 (d), 0 (e after d)
    assert [line for line in inter if "_created" not in line] == [
        'ssegate_inter_token_seconds_bucket{le="0.001",model="r"} 2.0',
        'ssegate_inter_token_seconds_bucket{le="0.0025",model="r"} 2.0',
        'ssegate_inter_token_seconds_bucket{le="0.005",model="r"} 2.0',
        'ssegate_inter_token_seconds_bucket{le="0.01",model="r"} 2.0',
        'ssegate_inter_token_seconds_bucket{le="0.025",model="r"} 2.0',
        'ssegate_inter_token_seconds_bucket{le="0.05",model="r"} 2.0',
        'ssegate_inter_token_seconds_bucket{le="0.1",model="r"} 2.0',
        'ssegate_inter_token_seconds_bucket{le="0.25",model="r"} 2.0',
        'ssegate_inter_token_seconds_bucket{le="0.5",model="r"} 3.0',
        'ssegate_inter_token_seconds_bucket{le="1.0",model="r"} 3.0',
        'ssegate_inter_token_seconds_bucket{le="2.5",model="r"} 4.0',
        'ssegate_inter_token_seconds_bucket{le="5.0",model="r"} 4.0',
        'ssegate_inter_token_seconds_bucket{le="+Inf",model="r"} 4.0',
        'ssegate_inter_token_seconds_count{model="r"} 4.0',
        'ssegate_inter_token_seconds_sum{model="r"} 2.5',
    ]
    assert 'ssegate_time_to_first_token_seconds_count{model="r"} 1.0' in exported
    assert 'ssegate_time_to_first_token_seconds_sum{model="r"} 0.25' in exported
    assert 'ssegate_tokens_out_total{model="r"} 5.0' in exported
    (model,) = snapshot["models"]
    assert model["tokens"] == 5
    assert model["ttft_ms"] == {"n": 1, "p50": 250.0, "p90": 250.0, "p99": 250.0}
    assert model["itl_ms"] == {"n": 4, "p50": 0.0, "p90": 2000.0, "p99": 2000.0}


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_generations_make_their_primitives_by_the_backends_own_classes(backend: str) -> None:
    async def main() -> None:
        event, scope = native(anyio.Event), native(anyio.CancelScope)
        assert event is type(anyio.Event())
        assert event is not anyio.Event
        assert scope is type(anyio.CancelScope())
        assert scope is not anyio.CancelScope
        assert isinstance(event(), anyio.Event)
        assert isinstance(scope(), anyio.CancelScope)
        if backend == "asyncio":  # the events without anyio (the echo keeps anyio's scope)
            event = Flag
        async with runner(MemoryStore(), grace=0) as run:
            generation = await run.start("gen_n", echo(), LONG, key_id="k")
            assert type(generation.accepted) is event
            assert type(generation.finished) is event
            assert type(generation.scope) is scope
            await generation.finished.wait()
            assert generation.end_reason == "abandoned"

    anyio.run(main, backend=backend)


@pytest.mark.parametrize("when", ["before its task runs", "while it runs"])
def test_on_asyncio_a_stop_ends_the_generation_at_once(when: str) -> None:
    async def main() -> None:
        store = MemoryStore()
        async with Runner(store, Metrics(), grace=30.0) as run:
            generation = await run.start("gen_s", echo(), LONG, key_id="k")
            run.attach("gen_s")
            if when == "while it runs":
                await generation.accepted.wait()
                await asyncio.sleep(0.01)
            await run.stop("gen_s")
            assert generation.finished.is_set()
            assert generation.end_reason == "stopped"
            assert run.running("k") == 0
            await asyncio.sleep(0)  # the runner's tasks carry on: nothing was left cancelled
        info = await store.info("gen_s")
        assert (info.ended, info.outcome) == (True, CANCELLED)
        items = [from_record(i) for i in [i async for i in store.read("gen_s")][:-1]]  # type: ignore[arg-type]
        # The echo's start comes before its first wait (a token a second), where
        # the stop lands either way.
        assert [type(i).__name__ for i in items] == ["Start"]

    asyncio.run(main())


@pytest.mark.parametrize(
    ("client", "scope"),
    [("aiohttp", TaskScope), ("httpx", "anyio's"), (None, "anyio's")],
)
def test_on_asyncio_only_generations_over_aiohttp_take_a_task_scope(
    client: str | None, scope: object
) -> None:
    async def main() -> tuple[type, type]:
        made: HTTPClient | httpx.AsyncClient | None = None
        route = echo()
        if client is not None:
            made = HTTPClient() if client == "aiohttp" else httpx.AsyncClient()
            provider = OpenAIProvider("http://127.0.0.1:9/v1", "sk-x", client=made)
            route = Route("up/m", provider, "m")
        try:
            async with Runner(MemoryStore(), Metrics(), grace=30.0) as run:
                generation = await run.start("gen_k", route, LONG, key_id="k")
                await run.stop("gen_k")
                assert generation.finished.is_set()
                return type(generation.scope), native(anyio.CancelScope)
        finally:
            if made is not None:
                await made.aclose()

    made, anyios = asyncio.run(main())
    assert made is (anyios if scope == "anyio's" else scope)


class Threaded:
    """A provider whose each step runs in a worker thread (as the local model's)."""

    name = "threaded"

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def stream(self, request: ChatRequest) -> AsyncIterator[LLMEvent]:
        yield Start(model="threaded", provider="threaded")
        try:
            await anyio.to_thread.run_sync(self._step)
            self.seen.append("after the step")
        finally:
            self.seen.append("closed")  # the local model frees its slot here

    def _step(self) -> None:
        time.sleep(0.2)
        self.seen.append("step done")

    async def aclose(self) -> None:
        pass


def test_on_asyncio_a_stop_waits_for_a_worker_threads_step() -> None:
    """The cancellation does not pierce anyio's shield around the thread's step:
    the provider's clean-up never runs while its thread still works."""
    provider = Threaded()

    async def main() -> str:
        async with Runner(MemoryStore(), Metrics(), grace=30.0) as run:
            generation = await run.start("gen_w", Route("t", provider, "t"), LONG, key_id="k")
            await generation.accepted.wait()
            await asyncio.sleep(0.05)  # the step under way
            await run.stop("gen_w")
            await generation.finished.wait()
            return generation.end_reason

    assert asyncio.run(main()) == "stopped"
    assert provider.seen == ["step done", "after the step", "closed"]


def test_on_asyncio_shutdown_ends_running_generations_with_a_retryable_error() -> None:
    async def main() -> None:
        store = MemoryStore()
        async with Runner(store, Metrics(), grace=30.0) as run:
            generation = await run.start("gen_t", echo(), LONG, key_id="k")
            run.attach("gen_t")
            await generation.accepted.wait()
        assert generation.end_reason == "shutdown"
        items = [item async for item in store.read("gen_t")]
        assert from_record(items[-2]).to_dict()["code"] == "shutdown"  # type: ignore[arg-type]

    asyncio.run(main())


class _Made:
    """What ``_Maker`` makes: a class that cannot be made without an argument."""

    def __init__(self, needed: int) -> None:
        self.needed = needed


class _Maker:
    def __new__(cls) -> _Maker:
        return _Made(1)  # type: ignore[return-value]


def test_native_is_the_maker_itself_when_its_product_cannot_be_made_again() -> None:
    assert native(_Maker) is _Maker
    assert native(_Made.__mro__[-1]) is object  # a class making itself: itself


async def test_the_running_count_and_the_active_streams_gauge_follow_each_generation() -> None:
    """``running(bucket)`` and the exported gauge (read from the runner's table
    when exported): up with each start, down with each end, nothing left over."""
    metrics = Metrics()

    def gauge() -> str:
        exported = metrics.export().decode().splitlines()
        return next(line for line in exported if line.startswith("ssegate_active_streams "))

    store = MemoryStore(clock=anyio.current_time)
    run = Runner(store, metrics, grace=30.0, sleep=anyio.sleep, clock=anyio.current_time)
    short = ChatRequest(model="echo", messages=[{"role": "user", "content": "a b c"}])
    async with run:
        assert gauge() == "ssegate_active_streams 0.0"
        a = await run.start("gen_1", echo(), LONG, key_id="k")
        b = await run.start("gen_2", echo(), short, key_id="k")
        c = await run.start("gen_3", echo(), LONG, key_id="j")
        assert (run.running("k"), run.running("j"), run.running("x")) == (2, 1, 0)
        assert gauge() == "ssegate_active_streams 3.0"
        await b.finished.wait()
        assert (run.running("k"), run.running("j")) == (1, 1)
        assert gauge() == "ssegate_active_streams 2.0"
        await run.stop("gen_1")
        await run.stop("gen_3")
        assert a.finished.is_set()
        assert c.finished.is_set()
        assert (run.running("k"), run.running("j")) == (0, 0)
        assert run._per_key == {}
        assert gauge() == "ssegate_active_streams 0.0"
