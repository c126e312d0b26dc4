"""Properties: what one side encodes the other decodes exactly, however split;
and no byte sequence makes the decoder raise anything but ProtocolError."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from ssegate import Decoder, Event, ProtocolError, encode, encode_comment

# Text without lone surrogates (they cannot be UTF-8).
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
field = text.filter(lambda s: "\r" not in s and "\n" not in s)
events = st.builds(
    Event,
    data=text,
    event=st.one_of(st.just("message"), field.filter(bool)),
    id=st.one_of(st.none(), field.filter(lambda s: "\0" not in s)),
    retry=st.one_of(st.none(), st.integers(0, 10**9)),
)
items = st.lists(st.one_of(events, text.map(lambda t: ("comment", t))), max_size=12)


def expected(sent: list[Event]) -> list[Event]:
    """What the receiving side must see: line ends normalised, the id in force."""
    out = []
    last_id = ""
    for e in sent:
        if e.id is not None:
            last_id = e.id
        out.append(Event(re.sub(r"\r\n|\r", "\n", e.data), e.event, last_id, e.retry))
    return out


def cut(raw: bytes, points: list[int]) -> list[bytes]:
    points = sorted({p % (len(raw) + 1) for p in points})
    pieces, start = [], 0
    for p in [*points, len(raw)]:
        pieces.append(raw[start:p])
        start = p
    return pieces


@settings(max_examples=300, deadline=None)
@given(items, st.lists(st.integers(0, 10_000), max_size=8), st.booleans())
def test_encode_then_decode_split_anywhere(
    stream: list[Event | tuple[str, str]], points: list[int], bom: bool
) -> None:
    raw = b"\xef\xbb\xbf" if bom else b""
    sent: list[Event] = []
    for item in stream:
        if isinstance(item, Event):
            raw += encode(item)
            sent.append(item)
        else:
            raw += encode_comment(item[1])
    d = Decoder()
    got: list[Event] = []
    for piece in cut(raw, points):
        got += d.feed(piece)
    got += d.close()
    assert got == expected(sent)
    assert d.last_event_id == (expected(sent)[-1].id if sent else "")


@settings(max_examples=300, deadline=None)
@given(
    items, st.sampled_from([b"\n", b"\r", b"\r\n"]), st.lists(st.integers(0, 10_000), max_size=6)
)
def test_any_line_ending_decodes_the_same(
    stream: list[Event | tuple[str, str]], eol: bytes, points: list[int]
) -> None:
    raw = b"".join(
        encode(i) if isinstance(i, Event) else encode_comment(i[1]) for i in stream
    ).replace(b"\n", eol)
    sent = [i for i in stream if isinstance(i, Event)]
    d = Decoder()
    got: list[Event] = []
    for piece in cut(raw, points):
        got += d.feed(piece)
    assert got + d.close() == expected(sent)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=10), st.integers(1, 256))
def test_arbitrary_bytes_never_raise_anything_but_protocol_error(
    chunks: list[bytes], limit: int
) -> None:
    d = Decoder(max_event_size=limit, max_line_size=limit)
    error = None
    try:
        for chunk in chunks:
            for e in d.feed(chunk):
                assert isinstance(e, Event)
        d.close()
    except ProtocolError as exc:
        error = exc
    assert error is None or "limit" in str(error) or "more than" in str(error)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.lists(st.integers(0, 200), max_size=5))
def test_splitting_never_changes_the_result(raw: bytes, points: list[int]) -> None:
    whole = Decoder()
    expected_events = whole.feed(raw) + whole.close()
    d = Decoder()
    got: list[Event] = []
    for piece in cut(raw, points):
        got += d.feed(piece)
    assert got + d.close() == expected_events
    assert (d.last_event_id, d.retry) == (whole.last_event_id, whole.retry)
