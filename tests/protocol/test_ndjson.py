"""The NDJSON decoder (Ollama's stream format)."""

from __future__ import annotations

import pytest

from ssegate import NDJSONDecoder, ProtocolError

STREAM = (
    b'{"message":{"role":"assistant","content":"Hel"},"done":false}\n'
    b'{"message":{"role":"assistant","content":"lo \xe4\xb8\x96"},"done":false}\r\n'
    b"\n"
    b'{"done":true,"done_reason":"stop","eval_count":2}\n'
)
VALUES = [
    {"message": {"role": "assistant", "content": "Hel"}, "done": False},
    {"message": {"role": "assistant", "content": "lo 世"}, "done": False},
    {"done": True, "done_reason": "stop", "eval_count": 2},
]


def test_whole_bytewise_and_split_everywhere() -> None:
    d = NDJSONDecoder()
    assert d.feed(STREAM) + d.close() == VALUES
    d = NDJSONDecoder()
    out = []
    for i in range(len(STREAM)):
        out += d.feed(STREAM[i : i + 1])
    assert out + d.close() == VALUES
    for at in range(len(STREAM) + 1):
        d = NDJSONDecoder()
        assert d.feed(STREAM[:at]) + d.feed(STREAM[at:]) + d.close() == VALUES


def test_last_line_without_newline_counts_at_close() -> None:
    d = NDJSONDecoder()
    assert d.feed(b'{"a":1}\n{"error":"model not found"}') == [{"a": 1}]
    assert d.close() == [{"error": "model not found"}]
    assert d.close() == []


def test_not_json_is_a_protocol_error_naming_the_line() -> None:
    d = NDJSONDecoder()
    with pytest.raises(ProtocolError, match=r"not valid JSON.*<html>"):
        d.feed(b"<html>502 Bad Gateway</html>\n")


def test_invalid_utf8_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="not valid JSON"):
        NDJSONDecoder().feed(b'{"a":"\xff"}\n')


def test_deep_nesting_is_a_protocol_error_not_a_recursion_crash() -> None:
    with pytest.raises(ProtocolError):
        NDJSONDecoder().feed(b"[" * 100_000 + b"]" * 100_000 + b"\n")


def test_line_limit() -> None:
    d = NDJSONDecoder(max_line_size=10)
    with pytest.raises(ProtocolError, match="longer than 10"):
        d.feed(b'{"a": "' + b"x" * 20)


def test_feed_after_close_is_refused() -> None:
    d = NDJSONDecoder()
    d.close()
    with pytest.raises(RuntimeError, match="after close"):
        d.feed(b"{}\n")
