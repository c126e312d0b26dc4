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
    LLMEvent,
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


#: What a generation may say between its start and its end, text mostly.
_MIDDLE = st.one_of(
    st.builds(TextDelta, st.text()),
    st.builds(TextDelta, st.text()),
    st.builds(ReasoningDelta, st.text()),
    st.just(ReasoningEnd()),
    st.just(ToolCallStart(0, "call_1", "f")),
    st.just(ToolCallDelta(0, "call_1", '{"a":')),
    st.just(Usage(input_tokens=3, output_tokens=4)),
)


@given(st.lists(_MIDDLE, min_size=1, max_size=8), st.sampled_from(["openai", "native", "aisdk"]))
def test_readers_render_text_records_as_the_general_path_does(
    middle: list[LLMEvent], fmt: str
) -> None:
    """The reader's shortcut for text records (the text's JSON taken as it is,
    in the format's frame) sends the very bytes of decoding the record and
    formatting the delta, whatever came before it."""
    from ssegate.gateway._reading import Renderer, _with_ids
    from ssegate.llm.formats import create_formatter

    options = {"include_usage": True} if fmt == "openai" else {}
    events = [Start(model="m", provider="p", id="c", created=1), *middle, Finish("stop")]
    renderer = Renderer(fmt, include_usage=fmt == "openai")
    general = create_formatter(fmt, **options)
    sent = 0
    for seq, event in enumerate(events, 1):
        record = to_record(event)
        stored = Event(record.data, record.event, f"00000001-{seq}")
        out = general.format(event)
        sent += len(out)
        assert renderer(stored) == (_with_ids(out, stored.id) if out else None)
    assert renderer.sent == sent
