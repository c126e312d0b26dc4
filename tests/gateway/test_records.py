"""Stored records: every unified event survives the trip, and the hand-built text
path writes the very bytes the general one would."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from ssegate.gateway._records import LAST_RECORDS, from_record, to_record
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


def _general_record(event: LLMEvent) -> str:
    return json.dumps(event.to_dict(), separators=(",", ":"), ensure_ascii=False)


def _general_event(data: str) -> LLMEvent:
    from ssegate.llm import event_from_dict

    return event_from_dict(json.loads(data))


#: Text with what JSON escapes (quotes, backslashes, controls), non-ASCII and
#: lone surrogates, as well as plain words.
_TEXT = st.one_of(st.text(), st.sampled_from(["", "gpt-4o-mini", 'a"b\\c\n\x00\x1f', "é☃😀"]))
_COUNTS = st.one_of(st.none(), st.integers(min_value=0, max_value=10**30))
_ENDS = st.one_of(
    st.builds(
        Start,
        model=_TEXT,
        provider=_TEXT,
        id=st.one_of(st.none(), _TEXT),
        created=st.one_of(st.none(), st.integers(min_value=-(10**20), max_value=10**20)),
    ),
    st.builds(
        Usage,
        input_tokens=_COUNTS,
        output_tokens=_COUNTS,
        reasoning_tokens=_COUNTS,
        cached_input_tokens=_COUNTS,
        estimated=st.booleans(),
    ),
    st.builds(
        Finish,
        reason=st.sampled_from(["stop", "length", "tool_calls", "content_filter", "other"]),
        raw_reason=st.one_of(st.none(), _TEXT),
    ),
)


@given(_ENDS)
def test_start_usage_and_finish_records_are_the_general_json_and_events(event: LLMEvent) -> None:
    """The hand-built start, usage and finish records are the very text of the
    general path, and read back as the very event it gives."""
    record = to_record(event)
    general = _general_record(event)
    assert (record.data, record.event, record.id, record.retry) == (general, event.type, None, None)
    back = from_record(record)
    assert back == _general_event(general) == event
    assert type(back) is type(event)
    assert [type(getattr(back, name)) for name in event.__dataclass_fields__] == [
        type(getattr(event, name)) for name in event.__dataclass_fields__
    ]


@given(_ENDS, st.sampled_from([(", ", ": "), (",", ": "), (", ", ":")]))
def test_records_written_otherwise_read_as_the_general_path_reads_them(
    event: LLMEvent, separators: tuple[str, str]
) -> None:
    """JSON the hand-built reader does not know (spaced, ASCII-escaped) still reads."""
    for ascii in (True, False):
        data = json.dumps(event.to_dict(), separators=separators, ensure_ascii=ascii)
        assert from_record(Event(data, event.type)) == _general_event(data) == event


def test_unusual_values_take_the_general_path_both_ways() -> None:
    """Values the events do not check (a bool as ``created``, a non-str raw reason,
    a non-bool ``estimated``) are written and read as before."""
    events: list[LLMEvent] = [
        Start(model="m", created=True),  # type: ignore[arg-type]
        Start(model="m", id=7),  # type: ignore[arg-type]
        Start(model="m", created=1.5),  # type: ignore[arg-type]
        Finish("stop", raw_reason=3),  # type: ignore[arg-type]
        Usage(input_tokens=1, estimated=1),  # type: ignore[arg-type]
    ]
    for event in events:
        record = to_record(event)
        assert record.data == _general_record(event)
        back = from_record(record)
        assert back == _general_event(record.data)
        assert back.to_dict() == json.loads(record.data)


def _failure(read: Any, data: str) -> tuple[type[BaseException], str] | None:
    try:
        read(data)
    except ValueError as exc:
        return type(exc), str(exc)
    return None


def test_malformed_end_records_fail_as_the_general_path_fails() -> None:
    """What the general reader refuses, the hand-built one refuses alike."""
    for kind, data in (
        (
            "usage",
            '{"type":"usage","input_tokens":-1,"output_tokens":null,"reasoning_tokens":null,'
            '"cached_input_tokens":null,"estimated":false}',
        ),
        ("finish", '{"type":"finish","reason":"nope","raw_reason":null}'),
        ("start", '{"type":"start","model":"a\x01","provider":"p","id":null,"created":null}'),
        ("start", '{"type":"start","model":"m","provider":"p","id":null,"created":null'),
    ):
        failure = _failure(_general_event, data)
        assert failure is not None
        assert _failure(lambda data: from_record(Event(data, kind)), data) == failure  # noqa: B023


def test_the_last_records_are_those_of_a_finish_and_an_error() -> None:
    """What a reader's push path lets wait a turn for the stream's end
    (``stream_response(ends_after=)``): a generation's terminal events."""
    last = {to_record(Finish("stop")).event, to_record(Error("x", "y")).event}
    assert last == LAST_RECORDS
    assert to_record(TextDelta("a")).event not in LAST_RECORDS
    assert to_record(Start(model="m", provider="p")).event not in LAST_RECORDS
