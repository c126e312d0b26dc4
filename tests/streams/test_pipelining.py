"""Auto-pipelining (ScriptCalls) against a real Redis: the calls of one loop turn go
out as one pipeline, each gets its own reply or error, scripts Redis forgot are
loaded again, a lost connection fails every call in flight and nothing else."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from streams_support import needs_redis_server

from ssegate.streams._pipelining import ScriptCalls
from ssegate.testing._redis import RedisServer

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

ECHO = (
    "if ARGV[1] == 'fail' then return redis.error_reply('NOPE ' .. KEYS[1]) end "
    "return {KEYS[1], ARGV[1]}"
)


@asynccontextmanager
async def scripts_on(url: str) -> AsyncIterator[tuple[ScriptCalls, aioredis.Redis, list[int]]]:
    """ScriptCalls on a client of ``url``, and the sizes of the pipelines it sent."""
    client = aioredis.Redis.from_url(url)
    sizes: list[int] = []
    calls = ScriptCalls(client)
    pipelined = calls._pipelined

    async def counted(batch: Any) -> Any:
        sizes.append(len(batch))
        return await pipelined(batch)

    calls._pipelined = counted  # type: ignore[method-assign]
    try:
        yield calls, client, sizes
    finally:
        await calls.aclose()
        await client.aclose()


async def test_the_calls_of_one_turn_are_one_pipeline_each_with_its_own_reply(
    redis_url: str,
) -> None:
    async with scripts_on(redis_url) as (calls, client, sizes):
        echo = client.register_script(ECHO)
        await echo(keys=["k"], args=["warm"])  # loaded
        replies = await asyncio.gather(
            *(calls(echo, [f"k{i}"], ["fail" if i == 2 else f"v{i}"]) for i in range(5)),
            return_exceptions=True,
        )
        assert sizes == [5]
        assert replies[:2] == [[b"k0", b"v0"], [b"k1", b"v1"]]
        assert isinstance(replies[2], ResponseError)
        assert str(replies[2]) == "NOPE k2"
        assert replies[3:] == [[b"k3", b"v3"], [b"k4", b"v4"]]
        assert not client.connection_pool._in_use_connections  # type: ignore[attr-defined]
        # A call alone in its turn is sent alone (no pipeline).
        assert await calls(echo, ["alone"], ["x"]) == [b"alone", b"x"]
        assert sizes == [5]
        # Two turns, two pipelines.
        first = asyncio.gather(*(calls(echo, ["a"], [str(i)]) for i in range(2)))
        await asyncio.sleep(0)
        second = asyncio.gather(*(calls(echo, ["b"], [str(i)]) for i in range(3)))
        assert await first == [[b"a", b"0"], [b"a", b"1"]]
        assert await second == [[b"b", b"0"], [b"b", b"1"], [b"b", b"2"]]
        assert sizes == [5, 2, 3]


async def test_calls_are_written_the_turn_after_they_are_made(redis_url: str) -> None:
    # One turn of the event loop from a call to its write, not two (a turn is long
    # under load, and a stream's start makes its calls one after the other).
    async with scripts_on(redis_url) as (calls, client, sizes):
        echo = client.register_script(ECHO)
        await echo(keys=["k"], args=["warm"])  # loaded
        made = [asyncio.ensure_future(calls(echo, ["t"], [str(i)])) for i in range(2)]
        await asyncio.sleep(0)  # this turn the calls are made, after the test's own
        assert sizes == []
        await asyncio.sleep(0)  # the next, they are written
        assert sizes == [2]
        assert await asyncio.gather(*made) == [[b"t", b"0"], [b"t", b"1"]]


async def test_scripts_redis_forgot_are_loaded_again(redis_url: str) -> None:
    async with scripts_on(redis_url) as (calls, client, _):
        echo = client.register_script(ECHO + " -- forgotten")
        await client.script_flush()
        replies = await asyncio.gather(*(calls(echo, [f"k{i}"], ["v"]) for i in range(3)))
        assert replies == [[b"k0", b"v"], [b"k1", b"v"], [b"k2", b"v"]]
        await client.script_flush()
        assert await calls(echo, ["one"], ["v"]) == [b"one", b"v"]


async def test_a_cancelled_caller_leaves_the_others_their_replies(redis_url: str) -> None:
    async with scripts_on(redis_url) as (calls, client, sizes):
        echo = client.register_script(ECHO)
        tasks = [asyncio.ensure_future(calls(echo, [f"k{i}"], ["v"])) for i in range(3)]
        await asyncio.sleep(0)  # all three queued
        tasks[1].cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert results[0] == [b"k0", b"v"]
        assert results[2] == [b"k2", b"v"]
        assert isinstance(results[1], asyncio.CancelledError)
        assert sizes == [3]  # it had been sent: it ran, its reply is dropped


@needs_redis_server
async def test_a_lost_connection_fails_the_calls_in_flight_and_then_calls_work_again() -> None:
    with RedisServer() as server:
        async with scripts_on(server.url) as (calls, client, _):
            echo = client.register_script(ECHO)
            await echo(keys=["k"], args=["warm"])
            server.stop(kill=True)
            replies = await asyncio.gather(
                *(calls(echo, [f"k{i}"], ["v"]) for i in range(3)), return_exceptions=True
            )
            assert [type(r) for r in replies] == [RedisConnectionError] * 3
            server.start()
            await client.connection_pool.disconnect()
            replies = await asyncio.gather(*(calls(echo, [f"k{i}"], ["v"]) for i in range(2)))
            assert replies == [[b"k0", b"v"], [b"k1", b"v"]]


async def test_aclose_waits_for_the_calls_being_sent(redis_url: str, redis_prefix: str) -> None:
    async with scripts_on(redis_url) as (calls, client, _):
        setter = client.register_script("return redis.call('SET', KEYS[1], ARGV[1])")
        key = f"{redis_prefix}closing"
        task = asyncio.ensure_future(calls(setter, [key], ["v"]))
        await asyncio.sleep(0)
        await calls.aclose()
        assert await task == b"OK"
        assert await client.get(key) == b"v"
