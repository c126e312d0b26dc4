"""LiveStats: the dashboard's rolling window, driven by made-up times."""

from __future__ import annotations

import pytest

from ssegate.gateway._stats import LiveStats, percentiles


def test_percentiles_are_nearest_rank_in_milliseconds() -> None:
    values = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    assert percentiles(values) == {"n": 100, "p50": 50.0, "p90": 90.0, "p99": 99.0}
    assert percentiles([0.25]) == {"n": 1, "p50": 250.0, "p90": 250.0, "p99": 250.0}
    assert percentiles([]) == {"n": 0, "p50": None, "p90": None, "p99": None}


def test_one_generation_gives_rate_series_and_latencies() -> None:
    stats = LiveStats(window=10, rate_window=2)
    # A request at t=100.0: first token at 100.2, then one every 0.25 s until 102.95.
    stats.token("echo", 100.2, ttft=0.2)
    times = [100.2 + 0.25 * i for i in range(1, 12)]
    for before, now in zip([100.2, *times], times, strict=False):
        stats.token("echo", now, gap=now - before)
    snap = stats.snapshot(103.5, {"echo": 1})
    (model,) = snap["models"]
    # Whole seconds 93..102 (103 is under way): 100 has 4 tokens, 101 has 4, 102 has 4.
    assert model["series"] == [0] * 7 + [4, 4, 4]
    assert model["tokens"] == 12
    assert model["tokens_per_s"] == 4.0  # seconds 101 and 102
    assert model["active"] == 1
    assert model["ttft_ms"] == {"n": 1, "p50": 200.0, "p90": 200.0, "p99": 200.0}
    assert model["itl_ms"]["n"] == 11
    assert model["itl_ms"]["p50"] == pytest.approx(250.0)
    assert snap["series"] == model["series"]
    assert snap["active_streams"] == 1
    assert snap["tokens_per_s"] == 4.0
    assert snap["window_s"] == 10


def test_models_are_apart_and_totals_add_up() -> None:
    stats = LiveStats(window=4, rate_window=1)
    for i in range(3):
        stats.token("a", 10.1 + i / 10)
    stats.token("b", 10.5, ttft=0.5)
    snap = stats.snapshot(11.0, {"a": 1, "c": 2})
    assert [m["model"] for m in snap["models"]] == ["a", "b", "c"]
    a, b, c = snap["models"]
    assert a["series"] == [0, 0, 0, 3]
    assert b["series"] == [0, 0, 0, 1]
    assert b["ttft_ms"]["p50"] == 500.0
    assert c == {
        "model": "c",
        "active": 2,
        "tokens_per_s": 0.0,
        "tokens": 0,
        "ttft_ms": {"n": 0, "p50": None, "p90": None, "p99": None},
        "itl_ms": {"n": 0, "p50": None, "p90": None, "p99": None},
        "series": [0, 0, 0, 0],
    }
    assert snap["series"] == [0, 0, 0, 4]
    assert snap["active_streams"] == 3
    assert snap["tokens_per_s"] == 4.0


def test_old_samples_leave_the_window_and_idle_models_are_forgotten() -> None:
    stats = LiveStats(window=5, rate_window=1)
    stats.token("old", 1.5, ttft=0.1)
    stats.token("old", 2.5, gap=1.0)
    snap = stats.snapshot(4.0, {})
    assert snap["models"][0]["series"] == [0, 0, 1, 1, 0]
    assert snap["models"][0]["itl_ms"]["n"] == 1
    later = stats.snapshot(6.9, {})  # samples: 1.5 left (1.9, 6.9]; 2.5 is in it
    (old,) = later["models"]
    assert old["ttft_ms"]["n"] == 0
    assert old["itl_ms"]["n"] == 1
    assert old["series"] == [1, 1, 0, 0, 0]  # the whole seconds 1..5
    assert stats.snapshot(7.0, {})["models"][0]["series"] == [1, 0, 0, 0, 0]
    assert stats.snapshot(8.0, {})["models"] == []  # nothing left in the window: forgotten


def test_a_running_model_stays_while_idle() -> None:
    stats = LiveStats(window=2, rate_window=1)
    stats.token("slow", 1.0, ttft=1.0)
    assert [m["model"] for m in stats.snapshot(50.0, {"slow": 1})["models"]] == ["slow"]
    assert stats.snapshot(51.0, {})["models"] == []


def test_samples_are_bounded_per_model() -> None:
    stats = LiveStats(window=60, samples=3)
    for i in range(10):
        stats.token("m", 1.0 + i / 100, gap=i / 1000)
    itl = stats.snapshot(2.0, {})["models"][0]["itl_ms"]
    assert itl == {"n": 3, "p50": 8.0, "p90": 9.0, "p99": 9.0}


def test_readers_are_counted_per_kind() -> None:
    stats = LiveStats()
    stats.readers["stream"] += 2
    stats.readers["topic"] += 1
    stats.readers["stream"] -= 1
    snap = stats.snapshot(0.0, {})
    assert (snap["stream_readers"], snap["topic_subscribers"]) == (1, 1)


def test_rate_window_must_fit_the_window() -> None:
    with pytest.raises(ValueError, match="rate_window"):
        LiveStats(window=5, rate_window=6)


def test_tokens_of_one_read_count_as_that_many_tokens_with_gaps_of_zero() -> None:
    one, batched = LiveStats(window=10), LiveStats(window=10)
    one.token("m", 5.25, ttft=0.25)
    one.token("m", 5.25, gap=0.0)
    one.token("m", 5.25, gap=0.0)
    one.token("m", 6.5, gap=1.25)
    one.token("m", 6.5, gap=0.0)
    batched.tokens("m", 5.25, 3, ttft=0.25)
    batched.tokens("m", 6.5, 2, gap=1.25)
    assert batched.snapshot(7.0, {"m": 1}) == one.snapshot(7.0, {"m": 1})
    (model,) = batched.snapshot(7.0, {"m": 1})["models"]
    assert model["series"][-2:] == [3, 2]
    assert model["itl_ms"] == {"n": 4, "p50": 0.0, "p90": 1250.0, "p99": 1250.0}
