"""The runner's two ways of relaying (``Runner._produce``): appended from the
upstream connection's callback (a memory store, an HTTP provider) or awaited
(any other store or provider). The same records and the same exported
metrics either way; stopping closes the upstream connection on both."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import anyio
import pytest

from ssegate.gateway._echo import EchoProvider
from ssegate.gateway._metrics import Metrics
from ssegate.gateway._models import Route
from ssegate.gateway._relay import http_provider
from ssegate.gateway._runner import Runner
from ssegate.llm import ChatRequest, LLMEvent
from ssegate.llm.providers import HTTPClient
from ssegate.llm.providers.openai import OpenAIProvider
from ssegate.protocol import Event
from ssegate.streams import CANCELLED, MemoryStore, StreamStore
from ssegate.streams.redis import RedisStore
from ssegate.testing import FakeUpstream, Reply

pytestmark = pytest.mark.anyio

CAPTURES = Path(__file__).parents[1] / "llm" / "captures"
REQUEST = ChatRequest(model="m", messages=[{"role": "user", "content": "Hi"}])


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # aiohttp's client: asyncio only


class AwaitedStore(MemoryStore):
    """A memory store whose ``append`` is its own: the runner awaits it."""

    async def append(self, stream: str, event: Event) -> str:
        return await super().append(stream, event)


async def records(store: StreamStore, stream: str) -> list[tuple[str, str]]:
    """The stream's events (it has ended): (type, data) of each."""
    with anyio.fail_after(10):
        return [(e.event, e.data) async for e in store.read(stream) if isinstance(e, Event)]


async def run_one(
    store: StreamStore, url: str, name: str
) -> tuple[list[tuple[str, str]], list[bytes]]:
    """One generation from the upstream at ``url``: its records and the metrics
    (but the times of creation of the series, wall-clock time)."""
    metrics = Metrics()
    client = HTTPClient()
    provider = OpenAIProvider(url + "/v1", "k", client=client)
    # One time for everything: the figures cannot depend on how reads were cut.
    async with Runner(store, metrics, grace=60.0, clock=lambda: 5.0) as runner:
        generation = await runner.start(name, Route("m", provider, "m"), REQUEST, key_id="k")
        await generation.finished.wait()
    await client.aclose()
    exported = metrics.export().splitlines()
    return await records(store, name), [line for line in exported if b"_created" not in line]


@pytest.mark.parametrize(
    "capture", ["openai_text.http", "openai_truncated.http", "openai_error_midstream.http"]
)
async def test_the_callback_path_stores_and_counts_what_the_awaiting_path_does(
    capture: str,
) -> None:
    reply = replace(Reply.load(CAPTURES / capture), interval=0.002)
    fake = FakeUpstream().add("/v1/chat/completions", reply, reply)
    with fake.run() as url:
        pushed = await run_one(MemoryStore(), url, "s1")
        awaited = await run_one(AwaitedStore(), url, "s1")
    assert pushed == awaited
    assert pushed[0][0][0] == "start"


@pytest.mark.redis
@pytest.mark.parametrize(
    "capture", ["openai_text.http", "openai_truncated.http", "openai_error_midstream.http"]
)
async def test_on_redis_the_callback_path_stores_and_counts_what_the_awaiting_path_does(
    capture: str, redis_url: str, redis_prefix: str
) -> None:
    # Redis's appender queues at add(): the callback path appends to Redis too.
    reply = replace(Reply.load(CAPTURES / capture), interval=0.002)
    fake = FakeUpstream().add("/v1/chat/completions", reply, reply)
    with fake.run() as url:
        async with RedisStore(redis_url, prefix=redis_prefix) as redis_store:
            pushed = await run_one(redis_store, url, "s1")
        awaited = await run_one(AwaitedStore(), url, "s1")
    assert pushed == awaited
    assert pushed[0][0][0] == "start"


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def store(
    request: pytest.FixtureRequest, redis_url: str, redis_prefix: str
) -> AsyncIterator[StreamStore]:
    if request.param == "memory":
        yield MemoryStore()
        return
    async with RedisStore(redis_url, prefix=redis_prefix) as redis_store:
        yield redis_store


async def test_stopping_on_the_callback_path_closes_the_upstream_connection(
    store: StreamStore,
) -> None:
    reply = Reply.load(CAPTURES / "openai_text.http")
    fake = FakeUpstream().add(
        "/v1/chat/completions", replace(reply, chunks=reply.chunks[:2], hold=True)
    )
    client = HTTPClient()
    provider = OpenAIProvider("http://unused/v1", "k", client=client)
    with fake.run() as url:
        provider = OpenAIProvider(url + "/v1", "k", client=client)
        async with Runner(store, Metrics(), grace=60.0) as runner:
            generation = await runner.start("s", Route("m", provider, "m"), REQUEST, key_id="k")
            reading = store.read("s")
            await anext(reading)
            await anext(reading)  # the first token
            await reading.aclose()  # type: ignore[attr-defined]
            await runner.stop("s")
            assert generation.finished.is_set()
            assert generation.end_reason == "stopped"
            closed = await anyio.to_thread.run_sync(fake.wait_disconnected, 1.0)
    await client.aclose()
    assert closed
    info = await store.info("s")
    assert (info.ended, info.outcome) == (True, CANCELLED)
    assert [kind for kind, _ in await records(store, "s")] == ["start", "text"]


def test_the_callback_path_is_taken_only_where_both_sides_allow_it() -> None:
    assert MemoryStore().sync_append() is not None
    assert MemoryStore().appender("s").immediate
    assert AwaitedStore().sync_append() is None  # its own append: awaited
    assert not AwaitedStore().appender("s").immediate
    assert not hasattr(RedisStore, "sync_append")  # appends over the network: never at once
    # ... but queued at once for the next group-committed write: pushed too.
    assert RedisStore("redis://127.0.0.1:1/0").appender("s").immediate
    provider = OpenAIProvider("http://127.0.0.1:1/v1", "k")
    assert http_provider(provider) is provider
    assert http_provider(EchoProvider()) is None  # reads its own way

    class Batching(OpenAIProvider):
        async def stream_batches(self, request: ChatRequest) -> AsyncIterator[list[LLMEvent]]:
            yield []

    assert http_provider(Batching("http://127.0.0.1:1/v1", "k")) is None


async def test_a_stream_ended_elsewhere_stops_the_callback_path_and_its_upstream() -> None:
    # The generation's lease is held in a task scope of its own (LeaseKeeper.add):
    # a stop on another replica cancels it at the next renewal, as hold()'s did.
    reply = Reply.load(CAPTURES / "openai_text.http")
    fake = FakeUpstream().add(
        "/v1/chat/completions", replace(reply, chunks=reply.chunks[:2], hold=True)
    )
    client = HTTPClient()
    store = MemoryStore()
    metrics = Metrics()
    with fake.run() as url:
        provider = OpenAIProvider(url + "/v1", "k", client=client)
        async with Runner(store, metrics, grace=60.0, lease_ttl=1.0, lease_renew=0.05) as runner:
            generation = await runner.start("s", Route("m", provider, "m"), REQUEST, key_id="k")
            reading = store.read("s")
            await anext(reading)
            await anext(reading)  # the first token
            await reading.aclose()  # type: ignore[attr-defined]
            await store.end("s", CANCELLED)  # a DELETE handled by another replica
            with anyio.fail_after(5):
                await generation.finished.wait()
            assert generation.end_reason == "stopped"
            assert len(runner._leases) == 0
            closed = await anyio.to_thread.run_sync(fake.wait_disconnected, 1.0)
    await client.aclose()
    assert closed
    assert metrics.cancellations.labels("stopped")._value.get() == 1
    info = await store.info("s")
    assert (info.ended, info.outcome) == (True, CANCELLED)
    assert [kind for kind, _ in await records(store, "s")] == ["start", "text"]
