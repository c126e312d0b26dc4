"""An incremental decoder for newline-delimited JSON (Ollama streams NDJSON).

One JSON value per line; lines end with LF (a CR before it is dropped); blank
lines are skipped. A line that is not valid UTF-8 JSON raises ``ProtocolError``
naming the line, so a proxy's HTML error page does not turn into a crash deep
inside a provider adapter.
"""

from __future__ import annotations

import json
from typing import Any

from .._exceptions import ProtocolError

__all__ = ["MAX_NDJSON_LINE", "NDJSONDecoder"]

#: Longest line accepted; Ollama's lines are a few hundred bytes, but a final
#: line with a large tool-call argument or context array can be long.
MAX_NDJSON_LINE = 16 * 1024 * 1024


class NDJSONDecoder:
    """Feed bytes, get the JSON values of the lines they complete."""

    __slots__ = ("_closed", "_max_line", "_tail", "_tail_len")

    def __init__(self, *, max_line_size: int = MAX_NDJSON_LINE) -> None:
        if max_line_size <= 0:
            raise ValueError("max_line_size must be positive")
        self._max_line = max_line_size
        self._tail: list[bytes] = []
        self._tail_len = 0
        self._closed = False

    def feed(self, chunk: bytes) -> list[Any]:
        """Feed the next bytes; return the values of the lines they complete."""
        if self._closed:
            raise RuntimeError("feed() after close(): use a new NDJSONDecoder for a new stream")
        if not isinstance(chunk, (bytes, bytearray, memoryview)):
            raise TypeError(f"feed() takes bytes, not {type(chunk).__name__}")
        if b"\n" not in chunk:
            if chunk:
                self._tail.append(bytes(chunk))
                self._tail_len += len(chunk)
                self._check_tail()
            return []
        if self._tail:
            self._tail.append(bytes(chunk))
            buf = b"".join(self._tail)
        else:
            buf = bytes(chunk)
        end = buf.rfind(b"\n")
        rest = buf[end + 1 :]
        self._tail = [rest] if rest else []
        self._tail_len = len(rest)
        values: list[Any] = []
        try:
            for line in buf[:end].split(b"\n"):
                if line.strip():
                    values.append(self._parse(line))
            self._check_tail()
        except ProtocolError as exc:
            exc.events = values  # the lines before the bad one: not lost with it
            raise
        return values

    def close(self) -> list[Any]:
        """End of stream: a last line without its LF still counts."""
        if self._closed:
            return []
        self._closed = True
        buf = b"".join(self._tail)
        self._tail = []
        return [self._parse(buf)] if buf.strip() else []

    def _check_tail(self) -> None:
        if self._tail_len > self._max_line:
            raise ProtocolError(
                f"NDJSON line longer than {self._max_line} bytes",
                hint="raise max_line_size if such lines are expected",
            )

    def _parse(self, line: bytes) -> Any:
        if len(line) > self._max_line:
            raise ProtocolError(f"NDJSON line of {len(line)} bytes exceeds {self._max_line}")
        try:
            return json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            excerpt = line[:200].decode("utf-8", "replace")
            raise ProtocolError(
                f"NDJSON line is not valid JSON ({exc}): {excerpt!r}",
                hint="is the server answering with NDJSON at all?",
            ) from exc
