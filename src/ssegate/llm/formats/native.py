"""ssegate's native events (DESIGN.md): named events with JSON data.

    token     {"text"}                      reasoning {"text"}
    tool_call {"index","id","name","arguments"}   (once, complete)
    usage     {"input_tokens","output_tokens","total_tokens", ...}
    done      {"finish_reason"}             error     {"code","message","retryable"}

Exactly one ``done`` or ``error``, always last. ``Start``, ``ReasoningEnd`` and the
tool-call fragments have no native event: a browser acts on complete calls.
Ids are not set here; the stream store gives each event its id.
"""

from __future__ import annotations

from collections.abc import Mapping
from json import dumps
from json.encoder import encode_basestring as _string  # what dumps(ensure_ascii=False) uses
from types import MappingProxyType
from typing import Any

from ...protocol import Event
from .._events import (
    FINISH_REASONS,
    Error,
    Finish,
    LLMEvent,
    ReasoningDelta,
    TextDelta,
    ToolCallEnd,
    Usage,
)

__all__ = ["NATIVE_EVENTS", "NativeFormatter"]

NATIVE_EVENTS = ("token", "reasoning", "tool_call", "usage", "done", "error")

_new = tuple.__new__

#: A token's data, around its text JSON-encoded (what ``dumps`` writes).
_TEXT_BEFORE = '{"text": '
_TEXT_FRAME = ("token", _TEXT_BEFORE, "}")
#: The ``done`` event of each finish reason: ``dumps({"finish_reason": reason})``
#: (with ``_usage_json``, a stream's end without ``dumps``: 4.4 -> 1.0 µs).
_DONE = {
    reason: _new(Event, ('{"finish_reason": "' + reason + '"}', "done", None, None))
    for reason in FINISH_REASONS
}


def _event(data: dict[str, Any], kind: str) -> Event:
    # JSON text never contains CR or LF and the types are constants: already valid.
    return _new(Event, (dumps(data, ensure_ascii=False), kind, None, None))


def usage_dict(usage: Usage) -> dict[str, Any]:
    """The known counts of ``usage`` (unknown ones are left out, never zero)."""
    out: dict[str, Any] = {}
    if usage.input_tokens is not None:
        out["input_tokens"] = usage.input_tokens
    if usage.output_tokens is not None:
        out["output_tokens"] = usage.output_tokens
    total = usage.total_tokens
    if total is not None:
        out["total_tokens"] = total
    if usage.reasoning_tokens is not None:
        out["reasoning_tokens"] = usage.reasoning_tokens
    if usage.cached_input_tokens is not None:
        out["cached_input_tokens"] = usage.cached_input_tokens
    if usage.estimated:
        out["estimated"] = True
    return out


class NativeFormatter:
    """Unified events -> native ssegate events."""

    headers: Mapping[str, str] = MappingProxyType({})

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = False

    def text_frame(self) -> tuple[str, str, str] | None:
        """How ``format(TextDelta(text))`` renders now (see ``formats.Formatter``)."""
        return None if self.done else _TEXT_FRAME

    def format(self, event: LLMEvent) -> list[Event]:
        if self.done:
            return []
        if type(event) is TextDelta:  # the hot path: built by hand, same bytes as dumps()
            return [_new(Event, (_TEXT_BEFORE + _string(event.text) + "}", "token", None, None))]
        if isinstance(event, ReasoningDelta):
            return [_event({"text": event.text}, "reasoning")]
        if isinstance(event, ToolCallEnd):
            return [
                _event(
                    {
                        "index": event.index,
                        "id": event.id,
                        "name": event.name,
                        "arguments": event.arguments,
                    },
                    "tool_call",
                )
            ]
        if isinstance(event, Usage):
            return [_new(Event, (_usage_json(event), "usage", None, None))]
        if isinstance(event, Finish):
            self.done = True
            done = _DONE.get(event.reason)
            return [done if done is not None else _event({"finish_reason": event.reason}, "done")]
        if isinstance(event, Error):
            self.done = True
            return [
                _event(
                    {"code": event.code, "message": event.message, "retryable": event.retryable},
                    "error",
                )
            ]
        return []


def _usage_json(usage: Usage) -> str:
    """``dumps(usage_dict(usage))``, the same text (a property test holds them
    equal): a ``Usage`` holds ints or None, which f-strings write as dumps does."""
    parts = []
    if usage.input_tokens is not None:
        parts.append(f'"input_tokens": {usage.input_tokens}')
    if usage.output_tokens is not None:
        parts.append(f'"output_tokens": {usage.output_tokens}')
        if usage.input_tokens is not None:
            parts.append(f'"total_tokens": {usage.input_tokens + usage.output_tokens}')
    if usage.reasoning_tokens is not None:
        parts.append(f'"reasoning_tokens": {usage.reasoning_tokens}')
    if usage.cached_input_tokens is not None:
        parts.append(f'"cached_input_tokens": {usage.cached_input_tokens}')
    if usage.estimated:
        parts.append('"estimated": true')
    return "{" + ", ".join(parts) + "}"
