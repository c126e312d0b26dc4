"""The incremental event-stream decoder: bytes in, events out, no I/O.

It follows HTML § 9.2.6 "Interpreting an event stream" exactly:

- UTF-8 always, whatever the Content-Type says; bad bytes become U+FFFD; one
  leading BOM is dropped (§ 9.2.5).
- Lines end with CRLF, lone LF or lone CR and nothing else (U+2028, U+2029,
  NEL are data); a CR ending one chunk and an LF starting the next are one line
  end.
- ``:`` starts a comment; a line without a colon is a field with an empty value;
  one space after the colon is dropped; unknown fields are ignored.
- ``data`` lines join with LF; ``event`` defaults to ``message``; ``id`` is
  ignored if it contains NUL and persists across events; ``retry`` counts only
  when it is all ASCII digits.
- A blank line dispatches, but only if some ``data`` line was seen; a block left
  unfinished when the stream ends is discarded.

How it stays fast: every chunk is first normalised so that LF is the only line
end (CR and LF never occur inside a UTF-8 sequence, so this is safe on bytes).
Bytes are held back only up to the last blank line; everything before it is
decoded in one call and split into blocks on ``"\\n\\n"``. When every block is a
single ``data: ...`` line (the usual LLM token stream) each becomes an event in
one list comprehension; anything else takes the line-by-line path. An event
spread over many chunks is kept as a list of pieces and joined once, so a
single 8 MiB event costs linear time.

What it holds: the current line and the current event's data, nothing more.
Once more than 64 KiB (or many small pieces) pile up without a blank line, the
complete lines are interpreted at once ("folded"): a comment, an unknown field
or a repeated ``id``/``event``/``retry`` leaves only its value behind, so a
server sending keep-alive comments with no blank line, for ever, costs nothing.
A long line still in progress (a big event's one ``data`` line) is not joined
before its end comes, only checked against the line limit, so it costs linear
time; the threshold is back to 64 KiB once its block has ended.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from .._exceptions import ProtocolError
from ._event import Event

__all__ = ["MAX_EVENT_SIZE", "MAX_LINE_SIZE", "Decoder"]

#: Most data one event may carry (bytes of its ``data`` values, joined). Large
#: enough for a multi-megabyte base64 image in one event (Gemini sends those),
#: small enough that a broken or hostile server cannot exhaust memory
#: (eventsource-parser and the eventsource v5 branch added caps for that reason).
MAX_EVENT_SIZE = 32 * 1024 * 1024

#: Room a line may take beyond the event's data: its field name and colon.
_LINE_SLACK = 1024

#: Longest line accepted by default: a whole event's data on one line, plus
#: its field name.
MAX_LINE_SIZE = MAX_EVENT_SIZE + _LINE_SLACK

#: ``retry`` values are integers of any length in the spec; ours stop here
#: (about 31 million years), which also keeps ``int()`` off huge digit strings.
MAX_RETRY = 999_999_999_999_999_999

_BOM = b"\xef\xbb\xbf"
_new = tuple.__new__


#: Bytes held back without a blank line before their complete lines are folded
#: into the decoder's state (comments dropped, fields applied); see _fold.
_FOLD_SIZE = 64 * 1024

#: Pieces (chunks) held back before folding: each is a bytes object of its own,
#: so tiny chunks would otherwise cost ~40 bytes per byte held. The limit grows
#: with what stays held (a long line fed in tiny chunks), keeping folding linear.
_FOLD_PIECES = 256

#: Texts longer than this are walked line by line with ``str.find`` (memchr)
#: rather than ``str.split``, whose search loop is several times slower on
#: long lines (a 64 KiB base64 event).
_SPLIT_MAX = 8192


def _iter_lines(text: str) -> Iterator[str]:
    """The LF-separated lines of ``text`` (the last one may be empty)."""
    find = text.find
    start = 0
    while (end := find("\n", start)) >= 0:
        yield text[start:end]
        start = end + 1
    yield text[start:]


def _as_bytes(data: object) -> bytes:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"feed() takes bytes, not {type(data).__name__}")


class Decoder:
    """Turn the bytes of an event stream into ``Event`` objects, incrementally.

    ``feed(chunk)`` returns the events completed by that chunk; ``close()``
    marks the end of the stream (an unfinished event is discarded, as the spec
    says). ``last_event_id`` is the id the next request should send in
    ``Last-Event-ID``; ``retry`` the latest valid reconnection time (ms).

    A reconnecting client starts each connection with a new decoder and passes
    the id it has, so events before the first ``id`` field carry it.

    Input over ``max_line_size`` or ``max_event_size`` raises ``ProtocolError``;
    nothing else in the input can make it raise.
    """

    __slots__ = (
        "_block_retry",
        "_carry",
        "_closed",
        "_data",
        "_data_len",
        "_fold_at",
        "_fold_base",
        "_fold_pieces",
        "_guard",
        "_head",
        "_held_end",
        "_id_buf",
        "_last_id",
        "_max_event",
        "_max_line",
        "_max_small",
        "_retry",
        "_skip_lf",
        "_started",
        "_tail",
        "_tail_len",
        "_tail_nl",
        "_type",
    )

    def __init__(
        self,
        *,
        max_event_size: int = MAX_EVENT_SIZE,
        max_line_size: int | None = None,
        last_event_id: str = "",
    ) -> None:
        if max_event_size <= 0:
            raise ValueError("max_event_size must be positive")
        if max_line_size is not None and max_line_size <= 0:
            raise ValueError("max_line_size must be positive")
        if "\0" in last_event_id or "\n" in last_event_id or "\r" in last_event_id:
            raise ValueError(f"last_event_id must not contain NUL, CR or LF: {last_event_id!r}")
        self._max_event = max_event_size
        self._max_line = max_event_size + _LINE_SLACK if max_line_size is None else max_line_size
        self._started = False
        self._head = b""  # the first bytes, while we cannot yet tell if they are a BOM
        self._skip_lf = False  # the last chunk ended with CR: an LF next is its pair
        self._tail: list[bytes] = []  # the unfinished block (LF-normalised), in pieces
        self._tail_len = 0
        self._tail_nl = False  # the unfinished block ends with LF
        # Past this many held-back bytes or pieces, the tail's complete lines
        # are folded into the state below so memory stays bounded (see _fold).
        self._fold_base = min(self._max_line, _FOLD_SIZE)
        self._fold_at = self._fold_base
        self._fold_pieces = _FOLD_PIECES
        # If >= 0, the tail's first piece is what _fold kept, and its complete
        # lines end there: only the pieces after it can hold a new line end.
        self._held_end = -1
        # Text this short cannot break a limit, so the fast paths skip the checks.
        self._max_small = min(self._max_line, self._max_event)
        self._carry = False  # the state below holds part of an unfinished block
        self._data: list[str] = []
        self._data_len = 0
        self._type = ""
        self._block_retry: int | None = None
        self._id_buf = last_event_id  # the spec's "last event ID buffer"
        self._last_id = last_event_id  # its "last event ID string" (set at dispatch)
        self._retry: int | None = None
        self._closed = False
        self._guard = True  # one of: not started, a CR pending, closed

    @property
    def last_event_id(self) -> str:
        """The last event id dispatched (``""`` if none): send it as ``Last-Event-ID``."""
        return self._last_id

    @property
    def retry(self) -> int | None:
        """The latest valid ``retry`` the server sent (milliseconds), or None."""
        return self._retry

    def feed(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Feed the next bytes of the stream; return the events they complete."""
        chunk = data if type(data) is bytes else _as_bytes(data)
        if self._guard:
            chunk = self._prepare(chunk)
        if not chunk:
            return []
        if b"\r" in chunk:
            # CRLF and lone CR become LF. A CR at the very end may be the first
            # half of a CRLF whose LF comes with the next chunk.
            if chunk[-1] == 13:
                self._skip_lf = self._guard = True
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")

        tail = self._tail
        if tail:
            # (A one-byte search first: memchr is far faster than a two-byte one.)
            if b"\n" not in chunk or (
                b"\n\n" not in chunk and not (self._tail_nl and chunk[0] == 10)
            ):
                # Still no blank line: hold the piece, join later, once.
                tail.append(chunk)
                self._tail_len += len(chunk)
                self._tail_nl = chunk[-1] == 10
                if self._tail_len > self._fold_at or len(tail) > self._fold_pieces:
                    return self._fold()
                return []
            buf = tail[0] + chunk if len(tail) == 1 else b"".join(tail) + chunk
        else:
            buf = chunk

        # The last blank line: memrchr for the last LF is fast, and that LF is
        # usually the second of the pair; otherwise search back from it.
        nl = buf.rfind(b"\n")
        if nl > 0 and buf[nl - 1] == 10:
            end = nl - 1
        else:
            end = buf.rfind(b"\n\n", 0, nl) if nl > 0 else -1
        if end < 0:
            self._hold(buf)
            return self._fold() if self._tail_len > self._fold_at else []
        if end + 2 < len(buf):
            rest = buf[end + 2 :]
            self._tail = [rest]
            self._tail_len = len(rest)
            self._tail_nl = rest[-1] == 10
        else:
            self._tail = []
            self._tail_len = 0
            self._tail_nl = False
        self._held_end = -1
        if self._fold_at > self._fold_base:  # a big block ended: back to the small threshold
            self._fold_at = self._fold_base
            self._fold_pieces = _FOLD_PIECES
        carry = self._carry
        if (
            not carry
            and buf.startswith(b"data: ")
            and end <= self._max_event
            and buf.find(b"\n", 0, end) < 0
        ):
            # Exactly one event of one "data: ..." line.
            events = [
                _new(Event, (buf[6:end].decode("utf-8", "replace"), "message", self._last_id, None))
            ]
        else:
            text = buf[:end].decode("utf-8", "replace")
            if not carry and text.startswith("data: ") and len(text) <= self._max_small:
                datas = text[6:].split("\n\ndata: ")
                if "\n" not in "".join(datas):
                    # Every block is exactly one "data: ..." line: the token stream.
                    lid = self._last_id
                    events = [_new(Event, (data, "message", lid, None)) for data in datas]
                else:
                    events = self._blocks(text)
            else:
                events = self._blocks(text)
        if self._tail_len > self._fold_at:
            try:
                events += self._fold()
            except ProtocolError as exc:
                exc.events[:0] = events  # completed before the bad line: not lost
                raise
        return events

    def close(self) -> list[Event]:
        """End of stream. The unfinished event, if any, is discarded (HTML § 9.2.6).

        Complete lines of that unfinished block were already "processed" in the
        spec's model, so a ``retry`` among them still takes effect. Returns the
        events dispatched by closing, which by the spec is always none.
        """
        if self._closed:
            return []
        self._closed = self._guard = True
        if self._tail:
            buf = b"".join(self._tail)
            self._tail = []
            complete = buf[: buf.rfind(b"\n") + 1].decode("utf-8", "replace")
            for line in _iter_lines(complete):
                if line[:6] == "retry:":
                    self._field("retry", line[6:][1:] if line[6:7] == " " else line[6:])
        self._data = []
        self._data_len = 0
        self._type = ""
        self._block_retry = None
        self._carry = False
        return []

    # -- internals ---------------------------------------------------------

    def _prepare(self, chunk: bytes) -> bytes:
        """The rare cases, kept off the hot path: closed, stream start, a CR pending."""
        if self._closed:
            raise RuntimeError("feed() after close(): use a new Decoder for a new stream")
        if not self._started:
            chunk = self._drop_bom(chunk)
        if self._skip_lf and chunk:
            self._skip_lf = False
            if chunk[0] == 10:
                chunk = chunk[1:]
        self._guard = not self._started or self._skip_lf
        return chunk

    def _drop_bom(self, chunk: bytes) -> bytes:
        head = self._head + chunk
        if len(head) < 3 and _BOM.startswith(head):
            self._head = head
            return b""
        self._started = True
        self._head = b""
        return head[3:] if head.startswith(_BOM) else head

    def _hold(self, rest: bytes) -> None:
        self._held_end = -1
        self._tail = [rest]
        self._tail_len = len(rest)
        self._tail_nl = rest[-1] == 10

    def _blocks(self, text: str) -> list[Event]:
        """Events from complete blocks: ``text`` is blocks joined by blank lines."""
        out: list[Event] = []
        try:
            if len(text) > _SPLIT_MAX:
                # Large text (big events): walk the lines with memchr instead.
                self._lines(_iter_lines(text), out)
                self._dispatch(out)
                return out
            small = len(text) <= self._max_small  # then no block can break a limit
            for b in text.split("\n\n"):
                if not small or self._carry:
                    self._lines(b.split("\n"), out)
                    self._dispatch(out)
                elif b[:6] == "data: " and "\n" not in b:
                    out.append(_new(Event, (b[6:], "message", self._last_id, None)))
                else:
                    self._block(b, out)
        except ProtocolError as exc:
            exc.events[:0] = out
            raise
        return out

    def _block(self, block: str, out: list[Event]) -> None:
        """One whole block from a clean state, under the limits (the usual
        ``event:``/``id:``/``data:`` shapes), interpreted with locals only.

        The block holds no blank line except perhaps leading ones, which
        dispatch nothing from a clean state, so they are skipped like comments.
        """
        data: list[str] = []
        kind = ""
        retry = None
        last_id = self._id_buf
        for line in block.split("\n"):
            name, _, value = line.partition(":")
            if not name:
                continue  # a comment, or a leading blank line
            if value[:1] == " ":
                value = value[1:]
            if name == "data":
                data.append(value)
            elif name == "id":
                if "\0" not in value:
                    last_id = value
            elif name == "event":
                kind = value
            elif name == "retry" and value.isascii() and value.isdigit():
                digits = value.lstrip("0") or "0"
                retry = int(digits) if len(digits) <= 18 else MAX_RETRY
                self._retry = retry
        self._id_buf = self._last_id = last_id
        if data:
            out.append(_new(Event, ("\n".join(data), kind or "message", last_id, retry)))

    def _lines(self, lines: Iterable[str], out: list[Event]) -> None:
        """Interpret lines; a blank one dispatches into ``out``."""
        max_line = self._max_line
        for line in lines:
            if not line:
                self._dispatch(out)
                continue
            if len(line) > max_line:
                raise ProtocolError(
                    f"event-stream line of {len(line)} characters exceeds the limit of {max_line}",
                    hint="raise max_line_size if such lines are expected",
                )
            if line[0] == ":":
                continue
            name, colon, value = line.partition(":")
            if colon and value[:1] == " ":
                value = value[1:]
            self._field(name, value)

    def _field(self, name: str, value: str) -> None:
        if name == "data":
            self._data_len += len(value) + 1
            if self._data_len > self._max_event + 1:
                raise ProtocolError(
                    f"event data exceeds the limit of {self._max_event} characters",
                    hint="raise max_event_size if such events are expected",
                )
            self._data.append(value)
            self._carry = True
        elif name == "event":
            self._type = value
            self._carry = True
        elif name == "id":
            if "\0" not in value:
                self._id_buf = value
                self._carry = True
        elif name == "retry" and value.isascii() and value.isdigit():
            digits = value.lstrip("0") or "0"
            retry = int(digits) if len(digits) <= 18 else MAX_RETRY
            self._retry = self._block_retry = retry
            self._carry = True

    def _dispatch(self, out: list[Event]) -> None:
        self._last_id = self._id_buf
        if self._data:
            out.append(
                _new(
                    Event,
                    (
                        "\n".join(self._data),
                        self._type or "message",
                        self._last_id,
                        self._block_retry,
                    ),
                )
            )
            self._data = []
            self._data_len = 0
        self._type = ""
        self._block_retry = None
        self._carry = False

    def _fold(self) -> list[Event]:
        """Interpret the complete lines of a very large unfinished block now.

        Keeps memory bounded when a block grows without a blank line (a huge
        event, or endless comments): what stays is the data the event will
        carry and the line in progress. The last complete line and the partial
        one after it stay held back, so the tail never starts with a line end
        whose meaning depends on what came before it.
        """
        tail = self._tail
        if len(tail) <= self._fold_pieces:
            held = self._held_end
            start = 1 if held >= 0 else 0
            if not any(b"\n" in tail[i] for i in range(start, len(tail))):
                # Only a line in progress has grown (a big event's one line):
                # nothing to interpret, so no join; fold again at twice the size.
                if self._tail_len - max(held, 0) > self._max_line:
                    raise self._line_too_long()
                self._fold_at = 2 * self._tail_len
                return []
        buf = b"".join(tail)
        out: list[Event] = []
        last = buf.rfind(b"\n")
        prev = buf.rfind(b"\n", 0, last) if last > 0 else -1
        try:
            if prev >= 0:
                self._lines(_iter_lines(buf[:prev].decode("utf-8", "replace")), out)
                buf = buf[prev + 1 :]
                last -= prev + 1
            partial = len(buf) - last - 1
            if partial > self._max_line or last > self._max_line:
                raise self._line_too_long()
        except ProtocolError as exc:
            exc.events[:0] = out
            raise
        self._tail = [buf]
        self._held_end = last + 1
        self._tail_len = len(buf)
        self._tail_nl = buf[-1] == 10
        # What stays held is the line in progress: fold again only once as much
        # again has come (in bytes or in pieces), so a long line costs linear time.
        self._fold_at = max(self._fold_base, 2 * len(buf))
        self._fold_pieces = max(_FOLD_PIECES, len(buf) >> 5)
        return out

    def _line_too_long(self) -> ProtocolError:
        return ProtocolError(
            f"event-stream line of more than {self._max_line} bytes",
            hint="raise max_line_size if such lines are expected",
        )
