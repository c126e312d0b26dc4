"""The echo model's shared ticker (asyncio, the real clock): streams due in the
same tick share one timer, a cancelled stream leaves the others paced, and every
stream gets exactly its tokens, on asyncio and on trio (which sleeps per stream)."""

from __future__ import annotations

import asyncio

import anyio
import pytest

from ssegate.gateway._echo import TICK, EchoProvider, _Ticker
from ssegate.llm import ChatRequest, Finish, LLMEvent, Start, TextDelta, Usage

pytestmark = pytest.mark.anyio


def request(words: str, max_tokens: int | None = None) -> ChatRequest:
    return ChatRequest(
        model="echo", messages=[{"role": "user", "content": words}], max_tokens=max_tokens
    )


async def test_waiters_due_in_the_same_tick_share_one_timer() -> None:
    loop = asyncio.get_running_loop()
    ticker = _Ticker(loop)
    # On a tick, an hour away (never reached: the test fires the tick itself).
    later = round((loop.time() + 3600) / TICK) * TICK
    first, second = ticker.wait(later), ticker.wait(later + TICK / 4)
    other = ticker.wait(later + 5 * TICK)
    assert sorted(len(waiters) for waiters in ticker.due.values()) == [1, 2]
    first.cancel()  # its stream was cancelled while it waited
    ticker._fire(round(later / TICK))
    assert first.cancelled()
    assert second.done()
    assert second.result() is None
    assert not other.done()
    assert list(ticker.due) == [round((later + 5 * TICK) / TICK)]
    other.cancel()


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_concurrent_streams_get_their_tokens_and_a_cancelled_one_leaves_them_be(
    anyio_backend: str,
) -> None:
    echo = EchoProvider(tokens_per_second=2000.0)
    results: dict[int, list[LLMEvent]] = {}

    async def one(n: int) -> None:
        results[n] = [event async for event in echo.stream(request(f"w{n} x y", 12))]

    async def cancelled(scope: anyio.CancelScope) -> None:
        with scope:
            async for event in echo.stream(request("gone", 1000)):
                if isinstance(event, TextDelta):
                    scope.cancel()  # mid-stream, while others wait on the same ticks

    async with anyio.create_task_group() as tg:
        tg.start_soon(cancelled, anyio.CancelScope())
        for n in range(20):
            tg.start_soon(one, n)
    lorem = [" Lorem", " ipsum", " dolor", " sit", " amet,", " consectetur", " adipiscing"]
    lorem += [" elit,", " sed"]
    for n in range(20):
        assert isinstance(results[n][0], Start)
        assert results[n][1:] == [
            *(TextDelta(t) for t in [f"w{n}", " x", " y", *lorem]),
            Usage(input_tokens=3, output_tokens=12),
            Finish("length"),
        ]
    assert (echo._ticker is not None) == (anyio_backend == "asyncio")  # trio: per-stream sleeps
