"""The Vercel AI SDK UI message stream, v1 (what ``useChat`` reads; providers.md § 7).

Data-only events, one JSON part each, then ``data: [DONE]``; the response carries
``x-vercel-ai-ui-message-stream: v1``. Only the conservative subset of parts is
written, with no extra fields, because AI SDK clients before 5.0.217 / 6.0.231 /
7.0.32 validate parts strictly and abort on anything unknown:

    start, start-step, text-start/-delta/-end, reasoning-start/-delta/-end,
    tool-input-start/-delta/-available, finish-step, error, finish

Every block opens with ``*-start`` and closes with ``*-end`` before another
begins; text and reasoning blocks get distinct ids. Usage goes in the finish
part's ``messageMetadata``; ``finishReason`` (hyphenated) only with
``finish_reason=True``, for clients ≥ 5.0.92 that accept it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from json.encoder import encode_basestring as _string  # what dumps(ensure_ascii=False) uses
from types import MappingProxyType
from typing import Any

from ...protocol import Event
from .._events import (
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

__all__ = ["AISDK_HEADERS", "AISDKFormatter"]

AISDK_HEADERS: Mapping[str, str] = MappingProxyType(
    {"x-vercel-ai-ui-message-stream": "v1", "x-accel-buffering": "no"}
)

_FINISH = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool-calls",
    "content_filter": "content-filter",
    "other": "other",
}

_new = tuple.__new__


def _part(part: dict[str, Any]) -> Event:
    return _data(json.dumps(part, ensure_ascii=False))


def _data(text: str) -> Event:
    # One-line JSON in the default "message" type: valid by construction.
    return _new(Event, (text, "message", None, None))


_DONE = _data("[DONE]")

#: The parts every stream has, as ``_part`` writes them (json.dumps' text; the
#: parts a stream starts and ends with are built by hand, a test holds them equal).
_START_STEP = _part({"type": "start-step"})
_FINISH_STEP = _part({"type": "finish-step"})


class AISDKFormatter:
    """Unified events -> AI SDK UI message stream parts."""

    headers: Mapping[str, str] = AISDK_HEADERS

    def __init__(self, *, message_id: str | None = None, finish_reason: bool = False) -> None:
        self.message_id = message_id
        self.finish_reason = finish_reason
        self._block: tuple[str, str] | None = None  # ("text"|"reasoning", id) open now
        self._frame: tuple[str, str, str] | None = None  # a text delta's, while text is open
        self._blocks = 0
        self._usage: Usage | None = None
        self.started = False
        self.done = False

    def _begin(self, start: Start | None, out: list[Event]) -> None:
        self.started = True
        message_id = self.message_id or (start.id if start is not None else None)
        if message_id:
            text = _string(message_id) if type(message_id) is str else json.dumps(message_id)
            out.append(_data('{"type": "start", "messageId": ' + text + "}"))
        else:
            out.append(_data('{"type": "start"}'))
        out.append(_START_STEP)

    def _open(self, kind: str, out: list[Event]) -> str:
        block = self._block
        if block is not None:
            if block[0] == kind:
                return block[1]
            self._close(out)
        block_id = f"{kind[0]}{self._blocks}"
        self._blocks += 1
        self._block = (kind, block_id)
        if kind == "text":  # json.dumps of a text-delta part, around its delta
            before = '{"type": "text-delta", "id": ' + json.dumps(block_id) + ', "delta": '
            self._frame = ("message", before, "}")
        # (The kind and the id are ASCII letters and digits: nothing to escape.)
        out.append(_data(f'{{"type": "{kind}-start", "id": "{block_id}"}}'))
        return block_id

    def _close(self, out: list[Event]) -> None:
        if self._block is not None:
            kind, block_id = self._block
            self._block = None
            self._frame = None
            out.append(_data(f'{{"type": "{kind}-end", "id": "{block_id}"}}'))

    def text_frame(self) -> tuple[str, str, str] | None:
        """How ``format(TextDelta(text))`` renders now (see ``formats.Formatter``):
        one ``text-delta`` part while a text block is open."""
        return None if self.done else self._frame

    def format(self, event: LLMEvent) -> list[Event]:
        if self.done:
            return []
        out: list[Event] = []
        if not self.started:
            self._begin(event if isinstance(event, Start) else None, out)
        if isinstance(event, TextDelta):
            block_id = self._open("text", out)
            out.append(_part({"type": "text-delta", "id": block_id, "delta": event.text}))
        elif isinstance(event, ReasoningDelta):
            block_id = self._open("reasoning", out)
            out.append(_part({"type": "reasoning-delta", "id": block_id, "delta": event.text}))
        elif isinstance(event, ReasoningEnd):
            if self._block is not None and self._block[0] == "reasoning":
                self._close(out)
        elif isinstance(event, ToolCallStart):
            self._close(out)
            out.append(
                _part({"type": "tool-input-start", "toolCallId": event.id, "toolName": event.name})
            )
        elif isinstance(event, ToolCallDelta):
            out.append(
                _part(
                    {
                        "type": "tool-input-delta",
                        "toolCallId": event.id,
                        "inputTextDelta": event.arguments,
                    }
                )
            )
        elif isinstance(event, ToolCallEnd):
            try:
                value: Any = json.loads(event.arguments)
            except ValueError:
                value = event.arguments
            out.append(
                _part(
                    {
                        "type": "tool-input-available",
                        "toolCallId": event.id,
                        "toolName": event.name,
                        "input": value,
                    }
                )
            )
        elif isinstance(event, Usage):
            self._usage = event
        elif isinstance(event, Finish):
            self.done = True
            self._close(out)
            out.append(_FINISH_STEP)
            # json.dumps' text of {"type": "finish", "finishReason": ...,
            # "messageMetadata": {"usage": {...}}}: a Usage holds ints or None.
            text = '{"type": "finish"'
            if self.finish_reason:
                text += ', "finishReason": "' + _FINISH[event.reason] + '"'
            usage = self._usage
            if usage is not None:
                counts = ", ".join(
                    f'"{k}": {v}'
                    for k, v in (
                        ("inputTokens", usage.input_tokens),
                        ("outputTokens", usage.output_tokens),
                        ("totalTokens", usage.total_tokens),
                    )
                    if v is not None
                )
                text += ', "messageMetadata": {"usage": {' + counts + "}}"
            out.append(_data(text + "}"))
            out.append(_DONE)
        elif isinstance(event, Error):
            self.done = True
            self._close(out)
            out.append(_part({"type": "error", "errorText": event.message}))
            out.append(_part({"type": "finish"}))
            out.append(_DONE)
        return out
