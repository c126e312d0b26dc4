"""Event values and the encoder: exact bytes, and refusals of field injection."""

from __future__ import annotations

import pickle

import pytest

from ssegate import Decoder, Event, encode, encode_comment, encode_retry


def test_defaults() -> None:
    e = Event()
    assert (e.data, e.event, e.id, e.retry) == ("", "message", None, None)


def test_value_semantics() -> None:
    assert Event("a", "t", "1", 5) == Event("a", "t", "1", 5)
    assert Event("a") != Event("b")
    assert Event("a") != ("a", "message", None, None)  # not equal to a bare tuple
    assert hash(Event("a", id="1")) == hash(Event("a", id="1"))
    assert len({Event("a"), Event("a"), Event("b")}) == 2
    assert repr(Event("a", "t", "1", 5)) == "Event(data='a', event='t', id='1', retry=5)"


def test_immutable() -> None:
    e = Event("a")
    with pytest.raises(AttributeError):
        e.data = "b"  # type: ignore[misc]


def test_replace_validates() -> None:
    assert Event("a").replace(id="7") == Event("a", id="7")
    with pytest.raises(ValueError, match="CR or LF"):
        Event("a").replace(event="x\ny")
    with pytest.raises(TypeError, match="no field"):
        Event("a").replace(colour="red")


def test_pickle_round_trip() -> None:
    e = Event("a\nb", "t", "1", 5)
    assert pickle.loads(pickle.dumps(e)) == e


def test_json() -> None:
    assert Event('{"a": [1]}').json() == {"a": [1]}


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"event": "a\nb"}, ValueError, "CR or LF"),
        ({"event": "a\rb"}, ValueError, "CR or LF"),
        ({"event": ""}, ValueError, "must not be empty"),
        ({"id": "1\n2"}, ValueError, "CR, LF or NUL"),
        ({"id": "1\r"}, ValueError, "CR, LF or NUL"),
        ({"id": "1\x002"}, ValueError, "CR, LF or NUL"),
        ({"retry": -1}, ValueError, "non-negative"),
        ({"retry": 1.5}, ValueError, "non-negative"),
        ({"retry": True}, ValueError, "non-negative"),
        ({"data": b"bytes"}, TypeError, "must be str"),
        ({"data": 1}, TypeError, "must be str"),
        ({"event": 1}, TypeError, "must be str"),
        ({"id": 1}, TypeError, "must be str or None"),
    ],
)
def test_injection_and_bad_types_refused(
    kwargs: dict[str, object], error: type, match: str
) -> None:
    with pytest.raises(error, match=match):
        Event(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("event", "wire"),
    [
        (Event("hello"), b"data: hello\n\n"),
        (Event(""), b"data: \n\n"),
        (Event("a\nb"), b"data: a\ndata: b\n\n"),
        (Event("a\r\nb\rc"), b"data: a\ndata: b\ndata: c\n\n"),
        (Event("a\n"), b"data: a\ndata: \n\n"),
        (Event("\n"), b"data: \ndata: \n\n"),
        (Event(" lead"), b"data:  lead\n\n"),
        (Event("x", "token"), b"event: token\ndata: x\n\n"),
        (Event("x", id="7"), b"id: 7\ndata: x\n\n"),
        (Event("x", id=""), b"id: \ndata: x\n\n"),
        (Event("x", retry=1500), b"retry: 1500\ndata: x\n\n"),
        (Event("x", "t", "1", 2), b"event: t\nid: 1\nretry: 2\ndata: x\n\n"),
        (Event("é🙂"), "data: é🙂\n\n".encode()),
        (Event("a\u2028b"), "data: a\u2028b\n\n".encode()),
    ],
)
def test_encode_exact_bytes(event: Event, wire: bytes) -> None:
    assert encode(event) == wire
    assert event.encode() == wire


def test_encode_lone_surrogate_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="surrogate"):
        encode(Event("\ud800"))


def test_encode_refuses_non_events() -> None:
    with pytest.raises(TypeError, match="takes an Event"):
        encode("data")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "wire"),
    [
        ("", b":\n"),
        ("ping", b": ping\n"),
        ("a\nb\r\nc", b": a\n: b\n: c\n"),
    ],
)
def test_encode_comment(text: str, wire: bytes) -> None:
    assert encode_comment(text) == wire


def test_comment_cannot_inject_fields() -> None:
    d = Decoder()
    assert d.feed(encode_comment("x\ndata: injected\n") + b"\n") == []


def test_encode_retry() -> None:
    assert encode_retry(0) == b"retry: 0\n"
    with pytest.raises(ValueError, match="non-negative"):
        encode_retry(-5)
    d = Decoder()
    assert d.feed(encode_retry(250) + encode(Event("x"))) == [Event("x", id="", retry=250)]
    assert d.retry == 250
