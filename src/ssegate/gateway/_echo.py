"""The ``echo`` model: a simulated stream that costs no compute.

It answers with the last user message, word by word (a word and the space
before it make one token), at ``tokens_per_second``. Asked for more tokens
than that (``max_tokens`` beyond the message's length) it goes on with a fixed
lorem text until ``max_tokens``, as a long answer would; asked for fewer it
stops there. Either way ``finish_reason`` is ``length`` when ``max_tokens``
cut or filled the answer, ``stop`` otherwise. Usage counts words.

Front-end work, demos and load tests use it: the stream looks like a model's
and nothing is computed. ``sleep`` is injected so tests pace it in virtual time.
"""

from __future__ import annotations

import itertools
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio

from ..llm import ChatRequest, Finish, LLMEvent, Start, TextDelta, Usage

__all__ = ["LOREM", "EchoProvider", "words"]

LOREM = (
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor "
    "incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud "
    "exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat."
)

_WORD = re.compile(r"\s*\S+|\s+")


def words(text: str) -> list[str]:
    """``text`` cut into tokens of one word each, with the whitespace before it."""
    return _WORD.findall(text)


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

    def tokens(self, request: ChatRequest) -> tuple[list[str], bool]:
        """The answer's tokens, and whether ``max_tokens`` decided its length."""
        last = next((m for m in reversed(request.message_list) if m.role == "user"), None)
        tokens = words(last.content if last is not None else "")
        limit = request.max_tokens
        if limit is None:
            return tokens, False
        if limit > len(tokens):
            lorem = itertools.cycle(words(" " + LOREM) if tokens else words(LOREM))
            tokens += list(itertools.islice(lorem, limit - len(tokens)))
        return tokens[:limit], True

    async def stream(self, request: ChatRequest) -> AsyncIterator[LLMEvent]:
        tokens, limited = self.tokens(request)
        prompt = sum(len(words(m.content)) for m in request.message_list)
        yield Start(
            model=request.model,
            provider="echo",
            id=f"echo-{uuid.uuid4().hex}",
            created=int(self._clock()),
        )
        for token in tokens:
            if self.interval:
                await self._sleep(self.interval)
            yield TextDelta(token)
        yield Usage(input_tokens=prompt, output_tokens=len(tokens))
        yield Finish("length" if limited else "stop")

    async def aclose(self) -> None:
        """Nothing to release."""
