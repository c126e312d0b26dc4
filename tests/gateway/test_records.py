"""Stored records: every unified event survives the trip, and the hand-built text
path writes the very bytes the general one would."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from ssegate.gateway._records import from_record, to_record
from ssegate.llm import (
    Error,
    Finish,
    ReasoningDelta,
    ReasoningEnd,
    Start,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    Usage,
)
from ssegate.protocol import Decoder, Event, encode


@given(st.text())
def test_text_records_are_the_general_json_and_round_trip(text: str) -> None:
    event = TextDelta(text)
    record = to_record(event)
    general = json.dumps(event.to_dict(), separators=(",", ":"), ensure_ascii=False)
    assert (record.data, record.event) == (general, "text")
    assert from_record(record) == event
    # and through the wire of an event stream (Redis keeps fields; SSE must too)
    (decoded,) = Decoder().feed(encode(Event(record.data, record.event, "1")))
    assert from_record(decoded) == event


def test_every_kind_round_trips() -> None:
    events = [
        Start(model="m", provider="p", id="x", created=1),
        TextDelta("é\n\u2028"),
        ReasoningDelta("think"),
        ReasoningEnd(),
        ToolCallStart(0, "call_1", "f"),
        ToolCallDelta(0, "call_1", '{"a":'),
        ToolCallEnd(0, "call_1", "f", '{"a": 1}'),
        Usage(input_tokens=3, output_tokens=4),
        Finish("length", raw_reason="max_tokens"),
        Error("overloaded", "busy", True, 529),
    ]
    for event in events:
        record = to_record(event)
        assert record.event == event.type
        assert "\n" not in record.data
        assert "\r" not in record.data
        assert from_record(record) == event
