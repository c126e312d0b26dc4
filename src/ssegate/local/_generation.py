"""One answer being generated, a token per ``step()``: the engine's sans-IO core.

A ``Generation`` owns no thread and knows no event loop: the caller decides where
``step()`` runs (the calling thread for ``LocalEngine.generate``, a worker thread
per step for ``LocalEngine.stream``), and cancelling is simply not calling it
again. Each step returns the text that may be shown now: split UTF-8 characters
and anything that could be the start of a stop string are held back until the
next token settles them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Literal

from ._sampling import Sampler, SamplingParams
from ._tokenizer import StreamDecoder, Tokenizer

if TYPE_CHECKING:
    from ._model import KVCache, LlamaModel

__all__ = ["Generation", "model_tokens"]

Finish = Literal["stop", "length"]


def _held_back(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest end of ``text`` that begins some stop string."""
    longest = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:n]):
                longest = n
                break
    return longest


def model_tokens(
    model: LlamaModel, cache: KVCache, prompt_ids: list[int], sampler: Sampler
) -> Iterator[int]:
    """The numpy model's tokens: read the prompt, then one forward pass per token.

    Ends when the context is full. Runs lazily: each ``next()`` is one step.
    """
    cache.reset()
    history = list(prompt_ids)
    logits = model.forward(history, cache)
    while True:
        token = sampler.sample(logits, history)
        yield token
        if cache.length >= cache.n_ctx:
            return
        history.append(token)
        logits = model.forward([token], cache)


class Generation:
    """Generate an answer to ``prompt_ids``; iterate it or call ``step()`` until ``done``.

    ``tokens`` supplies the next token id on each ``next()`` (``model_tokens`` for
    the numpy model, llama.cpp's sampler for that engine), or the caller ``feed()``s
    the tokens it computes (the numpy engine's decode loop); this class turns them
    into text and decides when to stop: an end-of-turn control token, a stop
    string, ``max_tokens``, or the token source running dry (context full).
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        prompt_ids: list[int],
        params: SamplingParams,
        tokens: Iterator[int] | None = None,
    ) -> None:
        self._tokenizer = tokenizer
        self._params = params
        self._tokens = tokens
        self._decoder = StreamDecoder(tokenizer)
        self._pending = ""  # decoded text not yet returned (may begin a stop string)
        self.prompt_ids = list(prompt_ids)
        self.output_ids: list[int] = []
        self.finish_reason: Finish | None = None
        self._stop_ids = set(tokenizer.control_ids)
        if tokenizer.eos_id is not None:
            self._stop_ids.add(tokenizer.eos_id)

    @classmethod
    def from_model(
        cls,
        model: LlamaModel,
        tokenizer: Tokenizer,
        prompt_ids: list[int],
        params: SamplingParams,
        cache: KVCache,
    ) -> Generation:
        """A generation by the numpy model, using ``cache`` for its keys and values."""
        if not prompt_ids:
            raise ValueError("the prompt is empty")
        if len(prompt_ids) >= cache.n_ctx:
            raise ValueError(
                f"the prompt has {len(prompt_ids)} tokens; the context holds {cache.n_ctx} "
                "and the answer needs room too"
            )
        tokens = model_tokens(model, cache, prompt_ids, Sampler(params))
        return cls(tokenizer, prompt_ids, params, tokens)

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt_ids)

    @property
    def completion_tokens(self) -> int:
        return len(self.output_ids)

    def step(self) -> str:
        """Compute one token (the first call also reads the prompt); the text now showable."""
        if self.done:
            raise RuntimeError("the generation is over; check .done before calling step()")
        if self._tokens is None:
            raise RuntimeError("this generation has no token source: feed() it tokens")
        return self.feed(next(self._tokens, None))

    def feed(self, token: int | None) -> str:
        """Take the next token (``None``: there are no more: the context is full); the
        text now showable. ``step()`` feeds the token source's tokens; a caller that
        computes tokens itself (the engine's decode loop) feeds them here.
        """
        if self.done:
            raise RuntimeError("the generation is over; check .done before feeding it")
        if token is None:
            return self._finish("length")
        if token in self._stop_ids:
            return self._finish("stop")
        self.output_ids.append(token)
        text = self._emit(self._decoder.feed(token))
        if self.finish_reason is not None:  # a stop string
            return text
        if len(self.output_ids) >= self._params.max_tokens:
            return text + self._finish("length")
        return text

    def _emit(self, piece: str) -> str:
        stops = self._params.stop
        if not stops:
            return piece
        self._pending += piece
        first = min(
            (i for i in (self._pending.find(s) for s in stops) if i >= 0),
            default=-1,
        )
        if first >= 0:
            text = self._pending[:first]
            self._pending = ""
            self.finish_reason = "stop"
            return text
        keep = _held_back(self._pending, stops)
        cut = len(self._pending) - keep
        text, self._pending = self._pending[:cut], self._pending[cut:]
        return text

    def _finish(self, reason: Finish) -> str:
        self.finish_reason = reason
        text = self._emit(self._decoder.flush())  # a stop string may still complete
        text += self._pending  # what was held back can no longer begin one
        self._pending = ""
        return text

    def __iter__(self) -> Iterator[str]:
        """Every non-empty piece of text until the generation ends."""
        while not self.done:
            text = self.step()
            if text:
                yield text
