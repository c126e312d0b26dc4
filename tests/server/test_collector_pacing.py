"""``pace_collections()``: the young generation collected on a clock.

CPython counts the young generation's size as objects made minus objects freed
(old ones included), so in a server where streams end as others start the count
stays low while the young generation grows without bound; the first test shows
it, the others hold the pacer to its schedule. Ticks are driven by hand (an
injected ``sleep``), never by the wall clock.
"""

from __future__ import annotations

import gc
import random
import sys
from collections.abc import Generator, Iterator
from typing import Any

import pytest

from ssegate.cli._serve import GC_THRESHOLDS
from ssegate.server import pace_collections
from ssegate.server._gc import PACE_INTERVAL_S, PACE_MIDDLE_EVERY, CollectorPacer

#: ``ssegate serve``'s thresholds (a young collection each 2 000 new objects).
THRESHOLDS = GC_THRESHOLDS


class Stream:
    """A stand-in for one open stream's tracked objects (a few per instance)."""

    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts = [{"state": [0]}, []]


def streams(count: int) -> list[list[Stream]]:
    return [[Stream() for _ in range(5)] for _ in range(count)]


def tracked_per_stream() -> int:
    """How many objects the collector tracks for one stand-in stream."""
    seen: set[int] = set()
    todo: list[object] = [streams(1)[0]]
    while todo:
        obj = todo.pop()
        if gc.is_tracked(obj) and id(obj) not in seen:
            seen.add(id(obj))
            todo.extend(o for o in gc.get_referents(obj) if type(o) in (Stream, list, dict))
    return len(seen)


class _Yield:
    def __await__(self) -> Generator[None, None, None]:
        yield


class HandClock:
    """An injected ``sleep``: notes the interval asked and yields to the test."""

    def __init__(self) -> None:
        self.asked: list[float] = []

    def __call__(self, seconds: float) -> _Yield:
        self.asked.append(seconds)
        return _Yield()


@pytest.fixture
def collections() -> Iterator[list[int]]:
    """The generation of every collection from here on, the automatic ones off."""
    seen: list[int] = []

    def note(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            seen.append(info["generation"])

    was_enabled = gc.isenabled()
    gc.disable()
    gc.callbacks.append(note)
    try:
        yield seen
    finally:
        gc.callbacks.remove(note)
        if was_enabled:
            gc.enable()


@pytest.fixture
def serve_thresholds() -> Iterator[None]:
    """``serve``'s thresholds, and this thread alone allocating (threads other tests
    left running wait for the GIL: the churn below never releases it)."""
    before, switch = gc.get_threshold(), sys.getswitchinterval()
    gc.collect()
    gc.set_threshold(*THRESHOLDS)
    sys.setswitchinterval(60.0)
    try:
        yield
    finally:
        sys.setswitchinterval(switch)
        gc.set_threshold(*before)


def churn(live: list[list[Stream]], replacements: int, rng: random.Random) -> None:
    """``replacements`` streams end, as many start."""
    for _ in range(replacements):
        live[rng.randrange(len(live))] = [Stream() for _ in range(5)]


def test_churning_streams_outgrow_the_young_threshold_without_a_collection(
    serve_thresholds: None,
) -> None:
    """Why the pacer exists: with the thresholds alone, nothing is collected."""
    rng = random.Random(15)
    per_stream = tracked_per_stream()
    live = streams(2_000)
    gc.collect()
    assert len(gc.get_objects(0)) == 0
    ran: list[int] = []

    def note(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            ran.append(info["generation"])

    gc.callbacks.append(note)
    try:
        churn(live, 20_000, rng)
        young = len(gc.get_objects(0))
    finally:
        gc.callbacks.remove(note)
    assert ran == []
    # Almost every stream open now was made since the last collection, and the
    # next young collection would walk them all: 20x the threshold here.
    assert young >= 0.99 * len(live) * per_stream > 20 * THRESHOLDS[0]


def test_paced_collections_bound_the_young_generation(
    serve_thresholds: None, collections: list[int]
) -> None:
    """Each collection walks only what was made since the tick before."""
    rng = random.Random(15)
    per_stream = tracked_per_stream()
    live = streams(2_000)
    gc.collect()
    collections.clear()
    clock = HandClock()
    pacing = pace_collections(sleep=clock)
    pacing.send(None)  # up to its first sleep
    walked = []
    try:
        for _ in range(20):
            churn(live, 1_000, rng)
            walked.append(len(gc.get_objects(0)))
            pacing.send(None)
    finally:
        pacing.close()
    # What 1 000 new streams track between two ticks, and nothing older.
    assert max(walked) <= 1_000 * per_stream + 50
    every = PACE_MIDDLE_EVERY
    assert collections == ([0] * (every - 1) + [1]) * (20 // every)
    assert clock.asked == [PACE_INTERVAL_S] * 21


def test_the_pacer_collects_the_middle_generation_every_nth_tick(
    collections: list[int],
) -> None:
    clock = HandClock()
    pacing = pace_collections(0.25, 3, sleep=clock)
    pacing.send(None)
    try:
        for _ in range(7):
            pacing.send(None)
    finally:
        pacing.close()
    assert collections == [0, 0, 1, 0, 0, 1, 0]
    assert clock.asked == [0.25] * 8


def test_the_pacer_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="middle_every must be at least 1, not 0"):
        CollectorPacer(0)
    for interval in (0, -1.0, float("nan")):
        pacing = pace_collections(interval)
        with pytest.raises(ValueError, match="interval must be positive"):
            pacing.send(None)
    assert [CollectorPacer(1).tick() for _ in range(3)] == [1, 1, 1]
    pacer = CollectorPacer()
    assert [pacer.tick() for _ in range(2 * PACE_MIDDLE_EVERY)] == (
        [0] * (PACE_MIDDLE_EVERY - 1) + [1]
    ) * 2
