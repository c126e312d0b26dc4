"""Two gateway-like replicas sharing Redis: resume on one what the other served."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from streams_support import ids_of

from ssegate import Decoder, Event
from ssegate.streams import Hub, stream_response
from ssegate.streams.redis import RedisStore
from ssegate.testing import UvicornThread, serve

pytestmark = [pytest.mark.redis, pytest.mark.anyio]


def replica(url: str, prefix: str) -> Starlette:
    """One replica: its own RedisStore and Hub, in its own event loop."""
    hubs: list[Hub] = []

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with RedisStore(url, prefix=prefix, poll_interval=0.1) as store, Hub(store) as hub:
            hubs.append(hub)
            yield

    async def follow(request: Request) -> Response:
        return await stream_response(hubs[0], request.path_params["name"], request, ping=None)

    return Starlette(routes=[Route("/s/{name}", follow)], lifespan=lifespan)


@pytest.fixture
def replicas(redis_url: str, redis_prefix: str) -> Iterator[tuple[UvicornThread, UvicornThread]]:
    with ExitStack() as stack:
        a = stack.enter_context(serve(replica(redis_url, redis_prefix), lifespan="on"))
        b = stack.enter_context(serve(replica(redis_url, redis_prefix), lifespan="on"))
        yield a, b


async def test_a_client_resumes_on_another_replica_exactly_once(
    replicas: tuple[UvicornThread, UvicornThread], redis_url: str, redis_prefix: str
) -> None:
    a, b = replicas
    async with (
        RedisStore(redis_url, prefix=redis_prefix) as producer,
        httpx.AsyncClient(timeout=20) as client,
    ):
        await producer.create("gen")
        _id = await ids_of(producer, "gen")
        received: list[Event] = []
        decoder = Decoder()
        with anyio.fail_after(20):
            # Connect to replica A and read the first three tokens live.
            async with client.stream("GET", f"{a.url}/s/gen") as response:
                assert response.status_code == 200
                for i in range(1, 4):
                    await producer.append("gen", Event(f"t{i}", event="token"))
                chunks = response.aiter_bytes()
                while len(received) < 3:
                    received += decoder.feed(await chunks.__anext__())
            # The network blinks; meanwhile the generation goes on and finishes.
            for i in range(4, 8):
                await producer.append("gen", Event(f"t{i}", event="token"))
            await producer.end("gen")
            # The client reconnects, to replica B this time, with its Last-Event-ID.
            last = decoder.last_event_id
            resumed = await client.get(f"{b.url}/s/gen", headers={"Last-Event-ID": last})
            received += Decoder().feed(resumed.content)
            # Once more after the end: 204, so a browser stops reconnecting.
            again = await client.get(f"{a.url}/s/gen", headers={"Last-Event-ID": _id(7)})
        assert received == [Event(f"t{i}", event="token", id=_id(i)) for i in range(1, 8)]
        assert again.status_code == 204
