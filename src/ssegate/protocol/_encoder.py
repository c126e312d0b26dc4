"""Encoding events and comments to event-stream bytes.

The output uses LF line ends and UTF-8, always. ``Event`` has already refused
anything that would inject a field (CR/LF in ``event`` or ``id``, NUL in
``id``), so encoding only has to lay the fields out.
"""

from __future__ import annotations

import re

from ._event import Event

__all__ = ["encode", "encode_comment", "encode_data", "encode_retry"]

# HTML § 9.2.5: only CRLF, lone CR and lone LF end lines. Never str.splitlines(),
# which also splits on U+2028, U+2029, NEL, VT and FF and would corrupt JSON.
_split_lines = re.compile(r"\r\n|\r|\n").split


def _data_lines(data: str) -> str:
    if "\n" in data or "\r" in data:
        return "data: " + "\ndata: ".join(_split_lines(data)) + "\n"
    return "data: " + data + "\n"


def encode(event: Event) -> bytes:
    """Encode one event, ending with the blank line that dispatches it.

    Multi-line ``data`` becomes several ``data:`` lines (split on CR, LF and
    CRLF only), so the receiver joins them back with LF. The type ``message``
    is the default and is not written. Lone surrogates in a string cannot be
    UTF-8 and raise ``UnicodeEncodeError`` (a ``ValueError``).
    """
    if type(event) is not Event and not isinstance(event, Event):
        raise TypeError(f"encode() takes an Event, not {type(event).__name__}")
    data, type_, id, retry = event
    if type_ == "message" and id is None and retry is None:
        return encode_data(data)
    head = ""
    if type_ != "message":
        head = "event: " + type_ + "\n"
    if id is not None:
        head += "id: " + id + "\n"
    if retry is not None:
        head += "retry: " + str(retry) + "\n"
    return (head + _data_lines(data) + "\n").encode("utf-8")


def encode_data(data: str) -> bytes:
    """Encode a ``message`` event with only ``data``: ``encode(Event(data))``
    without making the ``Event`` (the common case of a streaming server, where
    building and checking the ``Event`` cost ten times the encoding). ``data``
    must be a ``str``."""
    if "\n" in data or "\r" in data:
        return (_data_lines(data) + "\n").encode("utf-8")
    return ("data: " + data + "\n\n").encode("utf-8")


def encode_comment(text: str = "") -> bytes:
    """Encode a comment (e.g. a keep-alive), one ``:`` line per line of text.

    No blank line follows: a comment-only block would make some clients fire an
    empty message (Azure/fetch-event-source#15, openai/openai-python#2722).
    """
    if not isinstance(text, str):
        raise TypeError(f"encode_comment() takes a str, not {type(text).__name__}")
    if not text:
        return b":\n"
    return ("".join(": " + line + "\n" for line in _split_lines(text))).encode("utf-8")


def encode_retry(milliseconds: int) -> bytes:
    """Encode a ``retry:`` field on its own line: it sets the client's reconnection
    time as soon as it is read.

    No blank line follows, for the same reason as comments: a retry-only block
    makes the ``openai`` SDK yield an event with empty data (openai-python#2722).
    """
    if type(milliseconds) is not int or milliseconds < 0:
        raise ValueError(f"retry must be a non-negative int (milliseconds): {milliseconds!r}")
    return b"retry: %d\n" % milliseconds
