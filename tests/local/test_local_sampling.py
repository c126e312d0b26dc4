"""Sampling, and turning tokens into text: stop strings, limits, split characters."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from ssegate.local import Generation, LocalEngine, Sampler, SamplingParams, Tokenizer


def logits(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


def test_greedy_takes_the_highest_and_the_lowest_id_on_ties() -> None:
    sampler = Sampler(SamplingParams.greedy())
    assert sampler.sample(logits(0.1, 3.0, -1.0, 2.9)) == 1
    assert sampler.sample(logits(1.0, 5.0, 5.0)) == 1


def test_top_k_one_is_greedy_whatever_the_temperature() -> None:
    sampler = Sampler(SamplingParams(temperature=5.0, top_k=1, repetition_penalty=1.0, seed=0))
    assert {sampler.sample(logits(0.0, 0.5, 0.4, 0.1)) for _ in range(50)} == {1}


def test_top_p_keeps_the_smallest_nucleus() -> None:
    # probabilities at temperature 1: 0.5, 0.25, 0.125, 0.125
    values = np.log(np.array([0.125, 0.5, 0.125, 0.25], dtype=np.float32))
    sampler = Sampler(SamplingParams(temperature=1.0, top_k=0, top_p=0.7, seed=1))
    seen = {sampler.sample(values) for _ in range(300)}
    assert seen == {1, 3}  # 0.5 + 0.25 >= 0.7; the rest are cut


def test_seed_replays_and_distribution_follows_temperature() -> None:
    values = logits(1.0, 2.0, 0.0, 1.5)
    params = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, repetition_penalty=1.0, seed=7)
    first = [Sampler(params).sample(values) for _ in range(1)]
    a = Sampler(params)
    b = Sampler(params)
    assert [a.sample(values) for _ in range(40)] == [b.sample(values) for _ in range(40)]
    assert first[0] == Sampler(params).sample(values)
    counts = np.bincount([a.sample(values) for _ in range(4000)], minlength=4) / 4000
    expected = np.exp(values) / np.exp(values).sum()
    assert np.abs(counts - expected).max() < 0.04


def test_repetition_penalty_shrinks_positive_and_grows_negative_logits() -> None:
    sampler = Sampler(SamplingParams.greedy())
    assert sampler.sample(logits(2.0, 1.9), history=[0]) == 0  # penalty off in greedy()
    penalised = Sampler(
        SamplingParams(temperature=0.0, repetition_penalty=1.25, repetition_window=2)
    )
    assert penalised.sample(logits(2.0, 1.9), history=[0]) == 1  # 2.0 / 1.25 = 1.6
    assert penalised.sample(logits(-1.0, -1.1), history=[0]) == 1  # -1.0 * 1.25
    assert penalised.sample(logits(2.0, 1.9), history=[0, 1, 1]) == 0  # 0 left the window


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"temperature": -0.1}, "temperature must be between 0 and 100"),
        ({"top_p": 0.0}, r"top_p must be in \(0, 1\]"),
        ({"top_k": -1}, "top_k must be >= 0"),
        ({"repetition_penalty": 0.0}, "repetition_penalty must be in"),
        ({"repetition_window": -1}, "repetition_window must be >= 0"),
        ({"max_tokens": 0}, "max_tokens must be at least 1"),
        ({"stop": "x"}, "stop must be a tuple of non-empty strings"),
        ({"stop": ("",)}, "stop must be a tuple of non-empty strings"),
    ],
)
def test_bad_params(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SamplingParams(**options)


# -- Generation: scripted tokens through the real tokenizer ---------------------------


def scripted(tokenizer: Tokenizer, text: str, *, then: tuple[int, ...] = ()) -> Iterator[int]:
    """The tokens of ``text``, one per step, then ``then``."""
    yield from tokenizer.encode(text)
    yield from then


def run(tok: Tokenizer, tokens: Iterator[int], **params: Any) -> tuple[list[str], str | None]:
    generation = Generation(tok, [1], SamplingParams(**params), tokens)
    pieces = []
    while not generation.done:
        pieces.append(generation.step())
    return pieces, generation.finish_reason


@pytest.fixture(scope="module")
def tok(engine: LocalEngine) -> Tokenizer:
    return engine.tokenizer


def test_control_token_ends_the_answer(tok: Tokenizer) -> None:
    pieces, reason = run(tok, scripted(tok, "Hello world", then=(2, 99)))
    assert pieces == ["Hello", " world", ""]
    assert reason == "stop"


def test_max_tokens_and_running_dry_are_length(tok: Tokenizer) -> None:
    assert run(tok, scripted(tok, "one two three"), max_tokens=2) == (["one", " two"], "length")
    assert run(tok, scripted(tok, "one two")) == (["one", " two", ""], "length")


def test_split_characters_come_out_whole(tok: Tokenizer) -> None:
    ids = tok.encode("🤖 ok")
    pieces, _ = run(tok, iter([*ids, 2]))
    assert [p for p in pieces if p] == ["🤖", " ok"]
    assert "".join(pieces) == "🤖 ok"


def test_unfinished_character_at_the_end(tok: Tokenizer) -> None:
    ids = tok.encode("a🤖")[:-1]
    pieces, reason = run(tok, iter([*ids, 2]))
    assert "".join(pieces) == "a\ufffd"
    assert reason == "stop"


def test_stop_string_across_tokens_is_not_shown(tok: Tokenizer) -> None:
    text = "Answer: yes\n\nUser: more"
    pieces, reason = run(tok, scripted(tok, text, then=(2,)), stop=("\n\nUser:",))
    assert "".join(pieces) == "Answer: yes"
    assert reason == "stop"


def test_stop_string_prefix_that_does_not_complete_is_released(tok: Tokenizer) -> None:
    pieces, reason = run(tok, scripted(tok, "a END b EN", then=(2,)), stop=("ENDX",))
    assert "".join(pieces) == "a END b EN"
    assert reason == "stop"
    held = run(tok, scripted(tok, "a END b"), stop=("ENDX",), max_tokens=2)
    assert held == (["a", " END"], "length")  # " END" held until the limit, then released


def test_step_after_done_is_an_error(tok: Tokenizer) -> None:
    generation = Generation(tok, [1], SamplingParams(), iter([2]))
    assert list(generation) == []
    with pytest.raises(RuntimeError, match="the generation is over"):
        generation.step()


def test_generate_with_stop_and_seed_on_the_real_model(engine: LocalEngine) -> None:
    question = [{"role": "user", "content": "Count from 1 to 9, separated by commas."}]
    params = SamplingParams(seed=3, max_tokens=40, stop=("5",))
    a = engine.generate(question, params)
    text = "".join(a)
    assert a.finish_reason == "stop"
    assert "5" not in text
    assert "4" in text
    assert "".join(engine.generate(question, params)) == text  # the seed replays
