"""``Relay``: the callback path's ``take`` notes and appends each read's events
as the awaiting path does (``read``, then ``to_record`` and ``note`` for each)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from ssegate.gateway._metrics import Metrics
from ssegate.gateway._records import to_record
from ssegate.gateway._relay import NOTED, Relay
from ssegate.gateway._runner import Generation
from ssegate.llm import Error, Finish, LLMEvent, ReasoningDelta, TextDelta, ToolCallStart, Usage
from ssegate.protocol import Event


class Flag:
    def __init__(self) -> None:
        self.is_set = False

    def set(self) -> None:
        self.is_set = True


def _reads(seed: int) -> list[list[LLMEvent]]:
    rng = random.Random(seed)
    kinds: list[Any] = [
        lambda n: TextDelta(f"t{n} é\n\"'"),
        lambda n: ReasoningDelta(f"r{n}"),
        lambda n: ToolCallStart(0, "call_0", "f"),
        lambda n: Usage(input_tokens=n, output_tokens=n),
    ]
    reads = []
    for n in range(60):
        size = rng.choice([1, 1, 1, 1, 2, 3])
        weights = [12, 1, 1, 1]
        reads.append([rng.choices(kinds, weights)[0](n * 10 + i) for i in range(size)])
    reads.append([rng.choice([Finish("stop"), Error("boom", "it broke")])])
    return reads


def _relay(clock: Any) -> tuple[Relay, Generation, Metrics, list[Event]]:
    metrics = Metrics()
    generation = Generation("s", "m", "k", 0.5, event=Flag, cancel_scope=object)  # type: ignore[arg-type]
    relay = Relay(generation, metrics, clock)
    added: list[Event] = []
    return relay, generation, metrics, added


@pytest.mark.parametrize("seed", range(12))
def test_take_notes_and_appends_what_read_and_the_records_do(seed: int) -> None:
    reads = _reads(seed)
    times = [1.0 + 0.05 * n + random.Random(seed + n).random() / 100 for n in range(1_000)]
    taken = _relay(iter(times).__next__)  # the same times, one per read, for both
    general = _relay(iter(times).__next__)
    relay, _, _, added = taken
    relay.taker(added.append)
    for batch in reads:
        relay.take(batch)
    relay, _, _, added = general
    for batch in reads:
        relay.read(batch)
        for event in batch:
            added.append(to_record(event))
            if type(event) in NOTED:
                relay.note(event)

    def seen(run: tuple[Relay, Generation, Metrics, list[Event]]) -> Any:
        relay, generation, metrics, added = run
        exported = [line for line in metrics.export().splitlines() if b"_created" not in line]
        return (
            added,
            exported,
            metrics.live.snapshot(10.0, {"m": 1}),
            (generation.tokens, generation.first_token_at, generation.end_reason),
            (relay.outcome, relay.usage, relay.last_token, relay.accepted),
        )

    assert seen(taken) == seen(general)
    assert taken[1].tokens > 50
