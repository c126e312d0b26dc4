"""The ``echo`` model: a simulated stream that costs no compute.

It answers with the last user message, word by word (a word and the space
before it make one token), at ``tokens_per_second``. Asked for more tokens
than that (``max_tokens`` beyond the message's length) it goes on with a fixed
lorem text until ``max_tokens``, as a long answer would; asked for fewer it
stops there. Either way ``finish_reason`` is ``length`` when ``max_tokens``
cut or filled the answer, ``stop`` otherwise. Usage counts words.

Front-end work, demos and load tests use it: the stream looks like a model's
and nothing is computed. ``sleep`` is injected so tests pace it in virtual time.

Pacing is what it costs, so on asyncio with the real clock (the default
``sleep``) every echo stream of the event loop shares one ticker: a token is due
an interval after the one before it was taken (as a sleep would have it, so a
loaded gateway gets no bursts of catching up), rounded to a ``TICK``, and the
streams due in the same tick are woken by one timer, each from a bare future. 10 000
streams at 0.5 tokens/s are 100 timers a second, not 5 000 sleeps each with
its own timer, and the tokens of a tick reach the store together (one wake-up
of the hub's reader for all of them). Elsewhere (trio, an injected ``sleep``)
each stream sleeps ``1 / tokens_per_second`` between its tokens.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing

import anyio

from ..llm import ChatRequest, Finish, LLMEvent, Start, TextDelta, Usage

__all__ = ["LOREM", "EchoProvider", "words"]

LOREM = (
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor "
    "incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud "
    "exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat."
)

_WORD = re.compile(r"\s*\S+|\s+")

#: The shared ticker's resolution, seconds: a token is due at most half of it
#: off its exact time.
TICK = 0.01


def words(text: str) -> list[str]:
    """``text`` cut into tokens of one word each, with the whitespace before it."""
    return _WORD.findall(text)


#: What a long answer goes on with: after the message's words, and alone.
_LOREM_AFTER = tuple(words(" " + LOREM))
_LOREM_ALONE = tuple(words(LOREM))


class EchoProvider:
    """A provider (``name``, ``stream``, ``aclose``) that echoes, paced, for free."""

    name = "echo"

    def __init__(
        self,
        *,
        tokens_per_second: float = 20.0,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if tokens_per_second < 0:
            raise ValueError(f"tokens_per_second must be >= 0, not {tokens_per_second!r}")
        self.interval = 1 / tokens_per_second if tokens_per_second else 0.0
        self._sleep = sleep
        self._clock = clock
        self._ticker: _Ticker | None = None

    def tokens(self, request: ChatRequest) -> tuple[list[str], bool]:
        """The answer's tokens, and whether ``max_tokens`` decided its length."""
        last = next((m for m in reversed(request.message_list) if m.role == "user"), None)
        tokens = words(last.content if last is not None else "")
        limit = request.max_tokens
        if limit is None:
            return tokens, False
        if limit > len(tokens):
            lorem = itertools.cycle(_LOREM_AFTER if tokens else _LOREM_ALONE)
            tokens += list(itertools.islice(lorem, limit - len(tokens)))
        return tokens[:limit], True

    async def stream_batches(self, request: ChatRequest) -> AsyncIterator[list[LLMEvent]]:
        """The answer's events, one list per tick (what a relay writes at once):
        ``Start``, each token, then ``Usage`` and ``Finish`` together. The runner
        reads this (``providers.stream_batches``), one layer less per token than
        ``stream`` wrapped."""
        tokens, limited = self.tokens(request)
        prompt = sum(len(words(m.content)) for m in request.message_list)
        yield [
            Start(
                model=request.model,
                provider="echo",
                id=f"echo-{uuid.uuid4().hex}",
                created=int(self._clock()),
            )
        ]
        pace = self._pace()
        for token in tokens:
            if pace is not None:
                await pace()
            yield [TextDelta(token)]
        yield [
            Usage(input_tokens=prompt, output_tokens=len(tokens)),
            Finish("length" if limited else "stop"),
        ]

    async def stream(self, request: ChatRequest) -> AsyncIterator[LLMEvent]:
        """``stream_batches`` event by event."""
        async with aclosing(self.stream_batches(request)) as batches:  # type: ignore[type-var]
            async for batch in batches:
                for event in batch:
                    yield event

    async def aclose(self) -> None:
        """Nothing to release."""

    def _pace(self) -> Callable[[], Awaitable[None]] | None:
        """What a stream awaits before each token (``None``: no pace)."""
        interval = self.interval
        if not interval:
            return None
        loop = _running_loop() if self._sleep is anyio.sleep else None
        if loop is None:
            return lambda: self._sleep(interval)
        ticker = self._ticker
        if ticker is None or ticker.loop is not loop:
            ticker = self._ticker = _Ticker(loop)
        return lambda: ticker.wait(loop.time() + interval)


class _Ticker:
    """One timer per ``TICK`` for every echo stream of an event loop that is due then."""

    __slots__ = ("due", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.due: dict[int, list[asyncio.Future[None]]] = {}  # tick -> its waiters

    def wait(self, when: float) -> asyncio.Future[None]:
        """A future resolved at ``when`` (loop time), to the nearest tick; soon if past."""
        tick = round(when / TICK)
        waiters = self.due.get(tick)
        if waiters is None:
            waiters = self.due[tick] = []
            self.loop.call_at(tick * TICK, self._fire, tick)
        # One future per waiter: a cancelled task cancels the future it awaits.
        future = self.loop.create_future()
        waiters.append(future)
        return future

    def _fire(self, tick: int) -> None:
        for future in self.due.pop(tick):
            if not future.done():  # else cancelled: its stream is gone
                future.set_result(None)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:  # not asyncio (trio)
        return None
