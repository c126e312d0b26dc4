"""The decoder against the rules of HTML § 9.2.5-9.2.6, written from the spec.

The cases live in tests/data/sse_spec_cases.json, which the Node tests of
ssegate.js read too: both decoders pass the same cases. Every case is fed
three ways: whole, one byte at a time, and split in two at every position.
Each must give exactly the same events, last event id and retry.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ssegate import Decoder, Event

#: The cases, shared with the Node tests of ssegate.js (tests/js/decoder.test.mjs).
SPEC_CASES = Path(__file__).parent.parent / "data" / "sse_spec_cases.json"


@dataclass(frozen=True)
class Case:
    name: str
    stream: bytes
    events: list[Event]
    last_event_id: str = ""
    retry: int | None = None
    kwargs: dict[str, object] = field(default_factory=dict)


def ev(data: str, event: str = "message", id: str = "", retry: int | None = None) -> Event:
    return Event(data, event, id, retry)


def load_cases(path: Path) -> list[Case]:
    """The cases of the shared data file (see its ``about``)."""
    cases = []
    for raw in json.loads(path.read_text(encoding="utf-8"))["cases"]:
        if "stream_base64" in raw:
            stream = base64.b64decode(raw["stream_base64"])
        else:
            stream = raw["stream"].encode()
        events = [ev(e["data"], e["event"], e["id"], e["retry"]) for e in raw["events"]]
        cases.append(Case(raw["name"], stream, events, raw["last_event_id"], raw["retry"]))
    return cases


CASES = load_cases(SPEC_CASES)


def test_the_shared_cases_are_all_there() -> None:
    names = [case.name for case in CASES]
    assert len(names) == 72
    assert len(set(names)) == len(names)


def feed_whole(stream: bytes, **kwargs: object) -> tuple[list[Event], Decoder]:
    d = Decoder(**kwargs)  # type: ignore[arg-type]
    events = d.feed(stream)
    events += d.close()
    return events, d


def feed_bytewise(stream: bytes, **kwargs: object) -> tuple[list[Event], Decoder]:
    d = Decoder(**kwargs)  # type: ignore[arg-type]
    events = []
    for i in range(len(stream)):
        events += d.feed(stream[i : i + 1])
    events += d.close()
    return events, d


def feed_split(stream: bytes, at: int, **kwargs: object) -> tuple[list[Event], Decoder]:
    d = Decoder(**kwargs)  # type: ignore[arg-type]
    events = d.feed(stream[:at])
    events += d.feed(stream[at:])
    events += d.close()
    return events, d


def check(case: Case, events: list[Event], d: Decoder) -> None:
    assert events == case.events
    assert d.last_event_id == case.last_event_id
    assert d.retry == case.retry


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_whole(case: Case) -> None:
    check(case, *feed_whole(case.stream, **case.kwargs))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_byte_at_a_time(case: Case) -> None:
    check(case, *feed_bytewise(case.stream, **case.kwargs))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_split_at_every_position(case: Case) -> None:
    for at in range(len(case.stream) + 1):
        check(case, *feed_split(case.stream, at, **case.kwargs))


def test_events_arrive_as_soon_as_their_blank_line_does() -> None:
    d = Decoder()
    assert d.feed(b"data: a\n") == []
    assert d.feed(b"\n") == [ev("a")]
    assert d.feed(b"data: b\r") == []
    assert d.feed(b"\r") == [ev("b")]
    assert d.feed(b"data: c\r\n\r") == [ev("c")]  # the CR ends the blank line already
    assert d.feed(b"\ndata: d\n\n") == [ev("d")]  # and its LF is its pair, not a new line


def test_cr_then_lf_across_chunks_is_one_line_end() -> None:
    d = Decoder()
    assert d.feed(b"data: a\r") == []
    assert d.feed(b"\ndata: b\r\n\r\n") == [ev("a\nb")]


def test_utf8_split_across_chunks() -> None:
    raw = "data: 世界🙂\n\n".encode()
    for at in range(len(raw)):
        d = Decoder()
        assert d.feed(raw[:at]) + d.feed(raw[at:]) == [ev("世界🙂")]


def test_bom_split_across_chunks() -> None:
    d = Decoder()
    assert d.feed(b"\xef") == []
    assert d.feed(b"\xbb") == []
    assert d.feed(b"\xbfdata: a\n\n") == [ev("a")]


def test_partial_bom_then_other_bytes_is_data() -> None:
    d = Decoder()
    assert d.feed(b"\xef\xbb") == []
    assert d.feed(b"Xdata: a\n\ndata: b\n\n") == [ev("b")]  # first line is an unknown field


def test_initial_last_event_id_carries_into_events() -> None:
    d = Decoder(last_event_id="41")
    assert d.feed(b"data: a\n\nid: 42\ndata: b\n\n") == [ev("a", id="41"), ev("b", id="42")]
    assert d.last_event_id == "42"


def test_close_is_idempotent_and_feed_after_close_is_refused() -> None:
    d = Decoder()
    assert d.close() == []
    assert d.close() == []
    with pytest.raises(RuntimeError, match="after close"):
        d.feed(b"data: a\n\n")


def test_feed_accepts_bytearray_and_memoryview() -> None:
    d = Decoder()
    assert d.feed(bytearray(b"data: a\n\n")) == [ev("a")]
    assert d.feed(memoryview(b"data: b\n\n")) == [ev("b")]


def test_feed_refuses_str() -> None:
    with pytest.raises(TypeError, match="bytes"):
        Decoder().feed("data: a\n\n")  # type: ignore[arg-type]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_large_text_path_gives_the_same(case: Case) -> None:
    # Texts over 8 KiB are walked line by line with find() instead of split();
    # a long comment in front sends every case down that path.
    if case.stream.startswith(b"\xef\xbb\xbf"):
        stream = case.stream[:3] + b": " + b"x" * 9000 + b"\n" + case.stream[3:]
    else:
        stream = b": " + b"x" * 9000 + b"\n" + case.stream
    check(case, *feed_whole(stream, **case.kwargs))
    check(case, *feed_split(stream, len(stream) // 2, **case.kwargs))
