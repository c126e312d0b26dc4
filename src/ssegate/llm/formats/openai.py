"""OpenAI ``chat.completion.chunk`` events that every ``openai`` SDK version accepts.

The rules (providers.md § 1.9), each of which breaks some client when ignored:

- data-only events: no ``event:`` line (1.x SDKs before 1.97.2 drop the chunk),
  never an event without data (the SDK's ``json.loads("")`` kills the stream);
- every chunk carries ``id``, ``object``, ``created``, ``model`` and ``choices``
  (the ``.stream()`` helper drops chunks without ``object``);
- ``role`` once, in the first delta; a tool call's ``id``/``type``/``name`` on its
  first fragment only (the helper concatenates repeated strings);
- ``finish_reason`` on its own chunk with ``delta: {}``, from OpenAI's values;
- with ``include_usage``: ``usage: null`` on every chunk, then one chunk with
  ``choices: []`` and the usage; without it, no ``usage`` key at all;
- a mid-stream failure is ``data: {"error": {...}}`` (the SDK raises ``APIError``
  with its message and code), then ``data: [DONE]``.

Reasoning goes out as ``delta.reasoning_content`` (DeepSeek's extension; the SDK
keeps unknown fields).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping
from json import dumps
from json.encoder import encode_basestring as _string  # what dumps(ensure_ascii=False) uses
from json.encoder import encode_basestring_ascii as _ascii  # what dumps() uses
from types import MappingProxyType
from typing import Any

from ...protocol import Event
from .._events import (
    Error,
    Finish,
    LLMEvent,
    ReasoningDelta,
    Start,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
    Usage,
)

__all__ = ["DONE", "OpenAIFormatter", "openai_usage"]

_new = tuple.__new__


def _data(text: str) -> Event:
    # One-line JSON in the default "message" type: valid by construction.
    return _new(Event, (text, "message", None, None))


DONE = _data("[DONE]")

#: The first chunk's delta: ``dumps({"role": "assistant", "content": ""})``.
_ROLE = '{"role": "assistant", "content": ""}'

_FINISH = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "content_filter": "content_filter",
    "other": "stop",  # OpenAI has no "other"; clients validate against its five values
}


class OpenAIFormatter:
    """Unified events -> ``chat.completion.chunk`` events and ``[DONE]``.

    ``id``, ``model`` and ``created`` default to what the provider's ``Start``
    said (or ``chatcmpl-<random>`` and the current time). ``include_usage`` is
    the request's ``stream_options.include_usage``.
    """

    headers: Mapping[str, str] = MappingProxyType({})

    def __init__(
        self,
        *,
        id: str | None = None,
        model: str | None = None,
        created: int | None = None,
        include_usage: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.id = id
        self.model = model
        self.created = created
        self.include_usage = include_usage
        self._clock = clock
        self._head = ""
        self._tail = ""
        self._frame: tuple[str, str, str] | None = None
        self._usage: Usage | None = None
        self.started = False
        self.done = False

    def _begin(self, start: Start | None) -> list[Event]:
        self.started = True
        if self.id is None:
            if start is not None and start.id:
                self.id = start.id
            else:
                self.id = "chatcmpl-" + secrets.token_hex(12)
        if self.model is None:
            self.model = start.model if start is not None else ""
        if self.created is None:
            created = start.created if start is not None else None
            self.created = created if created is not None else int(self._clock())
        # dumps' own text for a str and an int (a test holds them equal), less its layers.
        id, created, model = self.id, self.created, self.model
        self._base = (
            '{"id":'
            + (_ascii(id) if type(id) is str else dumps(id))
            + ',"object":"chat.completion.chunk","created":'
            + (str(created) if type(created) is int else dumps(created))
            + ',"model":'
            + (_string(model) if type(model) is str else dumps(model, ensure_ascii=False))
        )
        self._head = self._base + ',"choices":[{"index":0,"delta":'
        self._tail = ',"logprobs":null,"finish_reason":null}]' + (
            ',"usage":null}' if self.include_usage else "}"
        )
        self._frame = ("message", self._head + '{"content":', "}" + self._tail)
        return [_data(self._head + _ROLE + self._tail)]

    def _delta(self, delta: dict[str, Any]) -> Event:
        return _data(self._head + dumps(delta, ensure_ascii=False) + self._tail)

    def text_frame(self) -> tuple[str, str, str] | None:
        """How ``format(TextDelta(text))`` renders now (see ``formats.Formatter``):
        after ``Start``, until the end, one chunk that differs only in the content."""
        return None if self.done else self._frame

    def format(self, event: LLMEvent) -> list[Event]:
        if self.done:
            return []
        cls = type(event)
        out: list[Event] = [] if self.started else self._begin(event if cls is Start else None)  # type: ignore[arg-type]
        if cls is TextDelta:
            frame: tuple[str, str, str] = self._frame  # type: ignore[assignment]  # _begin's
            out.append(_data(frame[1] + _string(event.text) + frame[2]))  # type: ignore[union-attr]
        elif isinstance(event, ReasoningDelta):
            out.append(self._delta({"reasoning_content": event.text}))
        elif isinstance(event, ToolCallStart):
            call = {
                "index": event.index,
                "id": event.id,
                "type": "function",
                "function": {"name": event.name, "arguments": ""},
            }
            out.append(self._delta({"tool_calls": [call]}))
        elif isinstance(event, ToolCallDelta):
            frag = {"index": event.index, "function": {"arguments": event.arguments}}
            out.append(self._delta({"tool_calls": [frag]}))
        elif isinstance(event, Usage):
            self._usage = event
        elif isinstance(event, Finish):
            self.done = True
            out.append(
                _data(
                    self._head
                    + '{},"logprobs":null,"finish_reason":"'
                    + _FINISH[event.reason]
                    + '"}]'
                    + (',"usage":null}' if self.include_usage else "}")
                )
            )
            usage = self._usage
            if self.include_usage and usage is not None:
                out.append(_data(self._base + ',"choices":[],"usage":' + _usage_json(usage) + "}"))
            out.append(DONE)
        elif isinstance(event, Error):
            self.done = True
            err = {
                "message": event.message,
                "type": "server_error",
                "param": None,
                "code": event.code,
            }
            out.append(_data(dumps({"error": err}, ensure_ascii=False)))
            out.append(DONE)
        return out


def openai_usage(usage: Usage) -> dict[str, Any]:
    """OpenAI's ``usage`` object for ``usage`` (streamed chunks and whole completions)."""
    prompt = usage.input_tokens or 0
    completion = usage.output_tokens or 0
    out: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if usage.reasoning_tokens is not None:
        out["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning_tokens}
    if usage.cached_input_tokens is not None:
        out["prompt_tokens_details"] = {"cached_tokens": usage.cached_input_tokens}
    return out


def _usage_json(usage: Usage) -> str:
    """``dumps(openai_usage(usage))``, the same text (a test holds them equal):
    a ``Usage`` holds ints or None only."""
    prompt = usage.input_tokens or 0
    completion = usage.output_tokens or 0
    text = (
        f'{{"prompt_tokens": {prompt}, "completion_tokens": {completion}, '
        f'"total_tokens": {prompt + completion}'
    )
    if usage.reasoning_tokens is not None:
        text += f', "completion_tokens_details": {{"reasoning_tokens": {usage.reasoning_tokens}}}'
    if usage.cached_input_tokens is not None:
        text += f', "prompt_tokens_details": {{"cached_tokens": {usage.cached_input_tokens}}}'
    return text + "}"
