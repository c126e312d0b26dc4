"""The decoder against the rules of HTML § 9.2.5-9.2.6, written from the spec.

Every case is fed three ways: whole, one byte at a time, and split in two at
every position. Each must give exactly the same events, last event id and
retry.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from ssegate import Decoder, Event


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


CASES = [
    # -- dispatch ------------------------------------------------------------
    Case("one event", b"data: hello\n\n", [ev("hello")]),
    Case("two events", b"data: a\n\ndata: b\n\n", [ev("a"), ev("b")]),
    Case("unfinished event at EOF is dropped", b"data: a\n\ndata: b\n", [ev("a")]),
    Case("unfinished event without line end dropped", b"data: a\n\ndata: b", [ev("a")]),
    Case("no blank line, nothing dispatched", b"data: a\n", []),
    Case("blank lines alone dispatch nothing", b"\n\n\n\n", []),
    Case("extra blank lines between events", b"data: a\n\n\n\ndata: b\n\n\n", [ev("a"), ev("b")]),
    Case("blank line first", b"\ndata: a\n\n", [ev("a")]),
    # -- data ----------------------------------------------------------------
    Case("data lines join with LF", b"data: a\ndata: b\ndata: c\n\n", [ev("a\nb\nc")]),
    Case("empty data value dispatches empty string", b"data:\n\n", [ev("")]),
    Case("data with only space", b"data: \n\n", [ev("")]),
    Case("two empty data lines give one LF", b"data:\ndata:\n\n", [ev("\n")]),
    Case("trailing empty data line kept", b"data: a\ndata:\n\n", [ev("a\n")]),
    Case("only one leading space removed", b"data:  two\n\n", [ev(" two")]),
    Case("no space after colon", b"data:x\n\n", [ev("x")]),
    Case("tab is not stripped", b"data:\tx\n\n", [ev("\tx")]),
    Case("trailing spaces kept", b"data: x  \n\n", [ev("x  ")]),
    Case("colon inside value kept", b"data: a: b: c\n\n", [ev("a: b: c")]),
    Case("field without colon is field with empty value", b"data\n\n", [ev("")]),
    Case("field without colon then more data", b"data\ndata: x\n\n", [ev("\nx")]),
    Case("JSON data", b'data: {"a": [1, 2]}\n\n', [ev('{"a": [1, 2]}')]),
    # -- line ends -------------------------------------------------------------
    Case("CRLF line ends", b"data: a\r\ndata: b\r\n\r\n", [ev("a\nb")]),
    Case("lone CR line ends", b"data: a\rdata: b\r\r", [ev("a\nb")]),
    Case("mixed line ends", b"data: a\r\n\ndata: b\r\rdata: c\n\r\n", [ev("a"), ev("b"), ev("c")]),
    Case("CR CR LF is two line ends", b"data: a\r\r\ndata: b\n\n", [ev("a"), ev("b")]),
    Case("LF CR is two line ends", b"data: a\n\rdata: b\n\n", [ev("a"), ev("b")]),
    Case(
        "U+2028, U+2029 and NEL are data",
        "data: a\u2028b\u2029c\x85d\x0be\x0cf\n\n".encode(),
        [ev("a\u2028b\u2029c\x85d\x0be\x0cf")],
    ),
    # -- comments ---------------------------------------------------------------
    Case("comment ignored", b": hello\ndata: a\n\n", [ev("a")]),
    Case("comment-only block dispatches nothing", b": ping\n\n: ping\n\n", []),
    Case("empty comment", b":\ndata: a\n\n", [ev("a")]),
    Case("comment between data lines", b"data: a\n: c\ndata: b\n\n", [ev("a\nb")]),
    # -- event type ------------------------------------------------------------
    Case("event type", b"event: add\ndata: 1\n\n", [ev("1", "add")]),
    Case(
        "event type resets after dispatch",
        b"event: add\ndata: 1\n\ndata: 2\n\n",
        [
            ev("1", "add"),
            ev("2"),
        ],
    ),
    Case("empty event type is message", b"event:\ndata: 1\n\n", [ev("1")]),
    Case("event type of a data-less block resets", b"event: x\n\ndata: 1\n\n", [ev("1")]),
    Case("last event field wins", b"event: a\nevent: b\ndata: 1\n\n", [ev("1", "b")]),
    # -- id --------------------------------------------------------------------
    Case("id", b"id: 1\ndata: a\n\n", [ev("a", id="1")], "1"),
    Case("id persists", b"id: 1\ndata: a\n\ndata: b\n\n", [ev("a", id="1"), ev("b", id="1")], "1"),
    Case("empty id resets", b"id: 1\ndata: a\n\nid\ndata: b\n\n", [ev("a", id="1"), ev("b")], ""),
    Case(
        "id with NUL ignored",
        b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n",
        [
            ev("a", id="1"),
            ev("b", id="1"),
        ],
        "1",
    ),
    Case(
        "id-only block sets last id without event", b"id: 7\n\ndata: a\n\n", [ev("a", id="7")], "7"
    ),
    Case("id in unfinished block is not applied", b"data: a\n\nid: 9\n", [ev("a")], ""),
    Case("id after data in same block", b"data: a\nid: 3\n\n", [ev("a", id="3")], "3"),
    Case("id with spaces kept", b"id:  x y \ndata: a\n\n", [ev("a", id=" x y ")], " x y "),
    Case(
        "heartbeat after id makes no event",
        b"id: 5\ndata: a\n\n: keep-alive\n\n",
        [ev("a", id="5")],
        "5",
    ),
    # -- retry -----------------------------------------------------------------
    Case("retry", b"retry: 1500\ndata: a\n\n", [ev("a", retry=1500)], retry=1500),
    Case("retry-only block", b"retry: 10\n\n", [], retry=10),
    Case(
        "retry on next event only",
        b"retry: 10\ndata: a\n\ndata: b\n\n",
        [
            ev("a", retry=10),
            ev("b"),
        ],
        retry=10,
    ),
    Case("retry with leading space in value ignored", b"retry:  10\n\n", [], retry=None),
    Case("retry with sign ignored", b"retry: +10\n\nretry: -1\n\n", [], retry=None),
    Case("retry with Arabic-Indic digits ignored", "retry: ١٢\n\n".encode(), [], retry=None),
    Case("retry with superscript ignored", "retry: ²\n\n".encode(), [], retry=None),
    Case("retry float ignored", b"retry: 1.5\n\n", [], retry=None),
    Case("retry empty ignored", b"retry:\n\nretry\n\n", [], retry=None),
    Case("retry zero", b"retry: 0\n\n", [], retry=0),
    Case("retry leading zeros", b"retry: 007\n\n", [], retry=7),
    Case("invalid retry keeps the last valid one", b"retry: 5\n\nretry: x\n\n", [], retry=5),
    Case("huge retry does not crash", b"retry: " + b"9" * 5000 + b"\n\n", [], retry=10**18 - 1),
    Case(
        "retry in unfinished block applies", b"data: a\n\nretry: 42\ndata: b\n", [ev("a")], retry=42
    ),
    # -- unknown fields, field names ---------------------------------------------
    Case("unknown field ignored", b"foo: bar\ndata: a\n\n", [ev("a")]),
    Case("field names are case-sensitive", b"Data: a\nDATA: b\ndata: c\n\n", [ev("c")]),
    Case("field name with space is unknown", b"data : a\n\n", []),
    Case("unknown-only block", b"foo: bar\n\n", []),
    # -- encoding and BOM ----------------------------------------------------------
    Case("BOM stripped", b"\xef\xbb\xbfdata: a\n\n", [ev("a")]),
    Case("only one BOM stripped", b"\xef\xbb\xbf\xef\xbb\xbfdata: a\n\ndata: b\n\n", [ev("b")]),
    Case("BOM later is data", b"data: \xef\xbb\xbfa\n\n", [ev("\ufeffa")]),
    Case("UTF-8 multi-byte", "data: héllo 世界 🙂\n\n".encode(), [ev("héllo 世界 🙂")]),
    Case("invalid UTF-8 replaced", b"data: a\xffb\n\n", [ev("a\ufffdb")]),
    Case("truncated sequence at line end replaced", b"data: a\xe4\xb8\n\n", [ev("a\ufffd")]),
    Case("charset is always UTF-8", b"data: \xe9\n\n", [ev("\ufffd")]),
    Case("NUL in data kept", b"data: a\x00b\n\n", [ev("a\x00b")]),
    Case(
        "event and id together",
        b'event: token\nid: 42\nretry: 100\ndata: {"t": 1}\n\n',
        [ev('{"t": 1}', "token", "42", 100)],
        "42",
        100,
    ),
]


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
