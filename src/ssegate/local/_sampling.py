"""Choosing the next token from the logits: temperature, top-k, top-p, repetition penalty.

The order is llama.cpp's: repetition penalty on the raw logits, then top-k,
then temperature and softmax, then top-p (nucleus). ``temperature == 0`` is
greedy: the highest logit after the penalty, with ties going to the lowest id.

The defaults are chosen for a 135M model, which loops under greedy decoding
("la femme, la femme au martyre, la femme...") but turns incoherent when sampled
hot: a low temperature, a nucleus of 0.9 and a mild penalty on the last 64
tokens keep answers short, on topic and out of loops.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

__all__ = ["Sampler", "SamplingParams"]

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """How to pick tokens and when to stop. Validated on construction."""

    temperature: float = 0.2
    top_p: float = 0.9
    top_k: int = 40
    repetition_penalty: float = 1.1
    repetition_window: int = 64
    seed: int | None = None
    max_tokens: int = 512
    stop: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not 0.0 <= self.temperature <= 100.0:
            raise ValueError(f"temperature must be between 0 and 100: {self.temperature!r}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1]: {self.top_p!r}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 turns it off): {self.top_k!r}")
        if not 0.0 < self.repetition_penalty <= 10.0:
            raise ValueError(
                f"repetition_penalty must be in (0, 10] (1 turns it off): "
                f"{self.repetition_penalty!r}"
            )
        if self.repetition_window < 0:
            raise ValueError(f"repetition_window must be >= 0: {self.repetition_window!r}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1: {self.max_tokens!r}")
        stop: object = self.stop
        if not isinstance(stop, tuple) or not all(isinstance(s, str) and s for s in stop):
            raise ValueError(f"stop must be a tuple of non-empty strings: {self.stop!r}")

    @classmethod
    def greedy(cls, max_tokens: int = 512) -> SamplingParams:
        """Deterministic decoding: the most likely token every time, no penalty."""
        return cls(
            temperature=0.0, top_k=0, top_p=1.0, repetition_penalty=1.0, max_tokens=max_tokens
        )


class Sampler:
    """Picks tokens per ``SamplingParams``; holds the seeded random generator."""

    def __init__(self, params: SamplingParams) -> None:
        self.params = params
        self._rng = np.random.default_rng(params.seed)

    def _penalise(self, logits: F32, history: Sequence[int]) -> F32:
        p = self.params
        if p.repetition_penalty == 1.0 or p.repetition_window == 0 or not history:
            return logits
        recent = np.unique(np.asarray(history[-p.repetition_window :], dtype=np.intp))
        out = logits.copy()
        values = out[recent]
        # CTRL's penalty as llama.cpp applies it: shrink positive logits, grow negative
        out[recent] = np.where(
            values > 0, values / p.repetition_penalty, values * p.repetition_penalty
        )
        return out

    def sample(self, logits: F32, history: Sequence[int] = ()) -> int:
        """The next token id, given the logits and the tokens so far."""
        p = self.params
        logits = self._penalise(logits, history)
        if p.temperature == 0.0:
            return int(np.argmax(logits))
        k = p.top_k if 0 < p.top_k < logits.shape[0] else logits.shape[0]
        if k < logits.shape[0]:
            candidates = np.argpartition(logits, -k)[-k:]
        else:
            candidates = np.arange(logits.shape[0])
        # sort by logit, highest first; ties by id so a seed replays exactly
        order = np.lexsort((candidates, -logits[candidates]))
        candidates = candidates[order]
        scaled = logits[candidates].astype(np.float64) / p.temperature
        probs = np.exp(scaled - scaled[0])
        probs /= probs.sum()
        if p.top_p < 1.0:
            cumulative = np.cumsum(probs)
            keep = int(np.searchsorted(cumulative, p.top_p)) + 1
            candidates = candidates[:keep]
            probs = probs[:keep] / probs[:keep].sum()
        return int(candidates[self._rng.choice(len(candidates), p=probs)])
