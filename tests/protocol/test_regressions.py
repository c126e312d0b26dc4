"""Regression cases: the parser and encoder bugs other libraries' users hit.

Each test names the public report it guards against (reference/anchors.md § 3.3
and § 3.11).
"""

from __future__ import annotations

import json
import tracemalloc

import pytest

from ssegate import Decoder, Event, ProtocolError, encode, encode_comment, encode_retry


def decode_all(*chunks: bytes, **kwargs: int) -> list[Event]:
    d = Decoder(**kwargs)
    out: list[Event] = []
    for chunk in chunks:
        out += d.feed(chunk)
    return out + d.close()


def test_unicode_line_separators_do_not_split_json() -> None:
    # florimondmanca/httpx-sse#34, mpetazzoni/sseclient#9: splitlines() split on
    # U+2028 and truncated the JSON of an LLM token.
    payload = json.dumps({"text": "a\u2028b\u2029c\x85d"}, ensure_ascii=False)
    raw = encode(Event(payload))
    for at in range(len(raw)):
        [event] = decode_all(raw[:at], raw[at:])
        assert event.json() == {"text": "a\u2028b\u2029c\x85d"}


def test_encoder_does_not_split_on_unicode_separators_or_drop_trailing_newline() -> None:
    # fastapi/fastapi#15500: the encoder used str.splitlines().
    assert encode(Event("a\u2028b")) == "data: a\u2028b\n\n".encode()
    assert encode(Event("a\n")) == b"data: a\ndata: \n\n"
    assert decode_all(encode(Event("a\n"))) == [Event("a\n", id="")]


def test_crlf_split_across_chunks_is_one_line_end() -> None:
    # rexxars/eventsource-parser#17: it produced two events.
    assert decode_all(b"data: a\r", b"\n\r", b"\n") == [Event("a", id="")]


def test_mixed_line_endings_keep_events_apart() -> None:
    # EventSource/eventsource#326 (dropped events) and sseclient-py (events
    # merged when LF and CRLF blocks mix).
    raw = b"data: 1\n\ndata: 2\r\n\r\ndata: 3\r\rdata: 4\n\r\n"
    assert [e.data for e in decode_all(raw)] == ["1", "2", "3", "4"]


def test_id_with_nul_keeps_the_buffered_id() -> None:
    # rexxars/eventsource-parser PR #34: an id with NUL wiped the buffered id.
    events = decode_all(b"id: 1\ndata: a\n\nid: x\x00\ndata: b\n\n")
    assert [e.id for e in events] == ["1", "1"]


def test_keep_alive_comment_after_id_makes_no_event() -> None:
    # Azure/fetch-event-source#15: onmessage fired with empty data for pings.
    assert decode_all(b"id: 1\ndata: a\n\n: ping\n\n:\n\n") == [Event("a", id="1")]


def test_data_that_is_an_empty_line_is_kept() -> None:
    # Azure/fetch-event-source#50: "data:" alone was lost.
    assert decode_all(b"data:\n\n") == [Event("", id="")]
    assert decode_all(b"data: x\ndata:\ndata: y\n\n") == [Event("x\n\ny", id="")]


def test_retry_or_id_only_blocks_are_not_events() -> None:
    # openai/openai-python#2722, #3833: empty-data events crashed .json().
    assert decode_all(b"retry: 3000\n\nid: 4\n\ndata: {}\n\n") == [Event("{}", id="4")]


def test_our_keep_alives_and_retry_never_form_an_empty_block() -> None:
    # The same bug from the sending side: no blank line follows a comment or a
    # bare retry, so even a parser that dispatches empty blocks sees nothing.
    assert encode_comment("ping") == b": ping\n"
    assert encode_retry(5000) == b"retry: 5000\n"
    assert b"\n\n" not in encode_comment("a\nb") + encode_retry(1)


def test_sse_starlette_style_crlf_pings_parse() -> None:
    # langgenius/dify#4120: CRLF framing with timestamped pings broke a client.
    raw = b': ping - 2024-01-01 00:00:00.000000\r\n\r\ndata: {"x": 1}\r\n\r\n'
    assert decode_all(raw) == [Event('{"x": 1}', id="")]


def test_events_are_not_one_late() -> None:
    # mpetazzoni/sseclient#6: each event arrived when the next one started.
    d = Decoder()
    assert d.feed(b"data: 1\n\n") == [Event("1", id="")]
    assert d.feed(b"data: 2\n\n") == [Event("2", id="")]


def test_bom_is_dropped_and_charset_ignored() -> None:
    # httpx-sse keeps the BOM and honours charset=; sseclient-py keeps the BOM,
    # so the first field name is unknown and the first event is lost.
    assert decode_all(b"\xef\xbb\xbfdata: \xc3\xa9\n\n") == [Event("é", id="")]


def test_last_event_id_persists_across_events() -> None:
    # sseclient-py keeps the id per event only.
    events = decode_all(b"id: 9\ndata: a\n\ndata: b\n\n")
    assert [e.id for e in events] == ["9", "9"]


def test_lenient_retry_values_are_ignored() -> None:
    # httpx-sse and fetch-event-source use int()/parseInt: " 1", "+1", "1e3", "١٢".
    d = Decoder()
    d.feed("retry: 100\n\nretry:  1\n\nretry: +1\n\nretry: 1e3\n\nretry: ١٢\n\n".encode())
    assert d.retry == 100


def test_single_8_mib_event_in_small_chunks_is_linear() -> None:
    # rexxars/eventsource-parser#19 and PR #28, denoland/deno PR #35881: one
    # multi-megabyte event spread over many chunks was quadratic. Fed here in
    # 1460-byte chunks (a TCP segment); quadratic joining would take minutes and
    # trip the test timeout.
    data = "x" * (8 * 1024 * 1024)
    raw = encode(Event(data, "image"))
    d = Decoder()
    out: list[Event] = []
    for i in range(0, len(raw), 1460):
        out += d.feed(raw[i : i + 1460])
    assert len(out) == 1
    assert out[0].event == "image"
    assert out[0].data == data


def test_multi_line_8_mib_event_in_small_chunks() -> None:
    lines = ["y" * 1000] * 8192
    raw = encode(Event("\n".join(lines)))
    d = Decoder()
    out: list[Event] = []
    for i in range(0, len(raw), 4096):
        out += d.feed(raw[i : i + 4096])
    assert [e.data for e in out] == ["\n".join(lines)]


def test_unbounded_event_is_refused() -> None:
    # rexxars/eventsource-parser PR #32, EventSource/eventsource PR #349: a
    # broken server must not exhaust client memory.
    d = Decoder(max_event_size=1000)
    line = b"data: " + b"z" * 100 + b"\n"
    for _ in range(18):  # up to the fold threshold (2024 bytes): held back, no verdict yet
        assert d.feed(line) == []
    with pytest.raises(ProtocolError, match="exceeds the limit of 1000"):
        d.feed(line)


def test_event_over_the_limit_in_one_chunk_is_refused() -> None:
    d = Decoder(max_event_size=1000)
    with pytest.raises(ProtocolError, match="limit"):
        d.feed(b"data: " + b"z" * 2000 + b"\n\n")


def test_event_at_the_limit_is_accepted() -> None:
    d = Decoder(max_event_size=1000)
    assert d.feed(b"data: " + b"z" * 1000 + b"\n\n") == [Event("z" * 1000, id="")]
    chunks = [b"data: " + b"z" * 500 + b"\n", b"data: " + b"z" * 499 + b"\n", b"\n"]
    assert [e.data for e in decode_all(*chunks, max_event_size=1000)] == [
        "z" * 500 + "\n" + "z" * 499
    ]


def test_overlong_line_is_refused() -> None:
    d = Decoder(max_line_size=100, max_event_size=10_000)
    assert d.feed(b"a" * 100) == []
    with pytest.raises(ProtocolError, match="line of more than 100 bytes"):
        d.feed(b"a")


def test_endless_comments_do_not_grow_memory_or_fail() -> None:
    # A server may send keep-alive comments with no blank line, forever: legal,
    # so it must neither raise nor hold everything.
    d = Decoder(max_event_size=1000, max_line_size=100)
    for _ in range(2000):
        assert d.feed(b": keep-alive\n") == []
    assert d._tail_len <= 2 * 100  # what is held back stays bounded
    assert d.feed(b"data: after\n\n") == [Event("after", id="")]


def test_folded_block_keeps_its_state() -> None:
    # A block bigger than the fold threshold is interpreted in parts; its
    # fields must still land in the one event it makes.
    d = Decoder(max_event_size=64, max_line_size=64)
    out = d.feed(b"event: big\nid: 5\n")
    for _ in range(20):
        out += d.feed(b": padding padding padding\n")
    out += d.feed(b"data: x\n")
    out += d.feed(b"\n")
    out += d.feed(b"data: next\n\n")
    assert out == [Event("x", "big", "5"), Event("next", id="5")]


# Lines that make no event and leave nothing to keep but the field's latest value:
# comments, unknown fields, and ``retry``/``id``/``event`` repeated without data.
_IGNORED_LINES = [
    b": x\n",
    b": keep-alive, a longer comment line than the others\n",
    b"x-unknown: value\n",
    b"nocolon\n",
    b"retry: 3000\n",
    b"id: 42\n",
    b"event: ping\n",
]


def _peak_while_feeding(pattern: bytes, total: int, chunk_size: int) -> tuple[int, Decoder]:
    """Peak traced memory (bytes) while ``total`` bytes of ``pattern`` repeated,
    with no blank line anywhere, are fed in ``chunk_size`` pieces."""
    block = pattern * (max(chunk_size, 1 << 16) // len(pattern) + 2)
    d = Decoder()
    tracemalloc.start()
    try:
        fed = 0
        start = 0
        while fed < total:
            # Every chunk a fresh object, cut at a different place in the pattern.
            chunk = block[start : start + chunk_size]
            assert d.feed(chunk) == []
            fed += chunk_size
            start = (start + chunk_size) % len(pattern)
        peak = tracemalloc.get_traced_memory()[1]
        assert d.feed(pattern[start:]) == []  # end on a whole pattern
    finally:
        tracemalloc.stop()
    return peak, d


@pytest.mark.parametrize(
    ("pattern", "total", "chunk_size"),
    [
        # Each total is at least 4x the bound: held lines would break it.
        (b": x\n", 4 << 20, 1 << 16),  # the report (190 MB held to 100 MB), 64 KiB reads
        (b": x\n", 4 << 20, 1460),  # TCP-segment-sized reads
        (b"".join(_IGNORED_LINES), 4 << 20, 4096),
        (b"".join(_IGNORED_LINES), 4 << 20, 100),
        (b": x\n", 512 << 10, 3),  # tiny reads: one object per piece held must not add up
        (b"".join(_IGNORED_LINES), 256 << 10, 1),
    ],
    ids=["comments-64k", "comments-1460", "mixed-4096", "mixed-100", "comments-3", "mixed-1"],
)
def test_lines_without_data_are_not_held(pattern: bytes, total: int, chunk_size: int) -> None:
    # Comments (and fields that only overwrite a value) are discarded as their
    # lines complete: memory is bounded by the current line and the current
    # event's data, not by how many such lines came since the last blank line.
    peak, d = _peak_while_feeding(pattern, total, chunk_size)
    assert peak < 1 << 20, f"peak {peak} bytes"
    # And the block they were in still makes its event, with the fields seen.
    out = d.feed(b"data: after\n\n")
    if b"id:" in pattern:
        assert out == [Event("after", "ping", "42", 3000)]
    else:
        assert out == [Event("after", id="")]


def test_comments_after_a_big_event_are_not_held() -> None:
    # The fold threshold grows with a long line in progress; once that event
    # is out, a flood of comments is folded at the small threshold again.
    d = Decoder()
    raw = b"data: " + b"b" * (4 << 20) + b"\n\n"
    tracemalloc.start()
    try:
        for i in range(0, len(raw), 4096):
            for event in d.feed(raw[i : i + 4096]):
                assert event.data == "b" * (4 << 20)
        del event
        tracemalloc.reset_peak()
        comments = b": x\n" * 1024
        for _ in range(1024):  # 4 MiB of comments
            assert d.feed(comments) == []
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"peak {peak} bytes"
    assert d.feed(b"data: after\n\n") == [Event("after", id="")]
