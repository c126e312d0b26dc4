"""``_runner.log_line``: a generation's log line written without json.dumps where
its values are the usual ones, the same text as json.dumps of its record always
(random values: any strings, times of any size, NaN, odd types)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ssegate.gateway import _runner
from ssegate.gateway._runner import Generation, log_line


def _general(generation: Any, now: float) -> str:
    """The line as it was written: json.dumps of the record."""
    ttft = generation.first_token_at
    record = {
        "stream": generation.id,
        "model": generation.model,
        "key": generation.key_id,
        "ttft_ms": None if ttft is None else round((ttft - generation.started_at) * 1000, 1),
        "tokens": generation.tokens,
        "duration_ms": round((now - generation.started_at) * 1000, 1),
        "end": generation.end_reason,
    }
    return json.dumps(record, separators=(",", ":"))


def _generation(
    texts: tuple[Any, Any, Any, Any], started: float, ttft: float | None, tokens: Any
) -> Generation:
    stream, model, key, end = texts
    generation = Generation(stream, model, key, started, event=object, cancel_scope=object)  # type: ignore[arg-type]
    generation.first_token_at = ttft
    generation.tokens = tokens
    generation.end_reason = end
    return generation


TIMES = st.floats(allow_nan=True, allow_infinity=True) | st.floats(0, 1e10) | st.just(0.0)
TEXTS = st.text() | st.sampled_from(["stop", "gen_" + "0" * 32, "up/m", 'a"b\\c\n\x00é☃'])


@settings(max_examples=500, deadline=None)
@given(
    texts=st.tuples(TEXTS, TEXTS, TEXTS, TEXTS | st.none()),
    started=TIMES,
    after=TIMES,
    waited=st.none() | TIMES,
    tokens=st.integers(0, 10**20) | st.booleans() | st.just(3),
)
def test_the_line_is_json_dumps_of_the_record(
    texts: tuple[Any, Any, Any, Any],
    started: float,
    after: float,
    waited: float | None,
    tokens: Any,
) -> None:
    with_nan = [x for x in (started, after, waited) if x is not None and math.isnan(x)]
    ttft = None if waited is None else started + waited
    generation = _generation(texts, started, ttft, tokens)
    now = started + after
    try:
        expected = _general(generation, now)
    except (OverflowError, ValueError):  # round() of an infinity, of NaN
        return
    assert log_line(generation, now) == expected, with_nan


def test_usual_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    generation = _generation(("gen_1", "up/m", "anonymous", "stop"), 100.0, 100.5199, 1)
    expected = _general(generation, 100.5247)
    monkeypatch.setattr(_runner, "_compact", None)  # json's way not taken
    line = log_line(generation, 100.5247)
    assert line == expected
    assert line == (
        '{"stream":"gen_1","model":"up/m","key":"anonymous","ttft_ms":519.9,'
        '"tokens":1,"duration_ms":524.7,"end":"stop"}'
    )
    generation.first_token_at = None
    expected = _general(generation, 100.0)
    assert log_line(generation, 100.0) == expected
