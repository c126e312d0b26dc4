"""Anthropic Messages streaming: ``POST /v1/messages`` (providers.md § 3).

Named SSE events whose ``type`` repeats the name: ``message_start``, then per
content block (tracked by ``index``) ``content_block_start`` / ``_delta`` /
``_stop``, then ``message_delta`` (stop reason, cumulative usage) and
``message_stop``. ``ping`` and unknown types are ignored, as the docs ask. A
mid-stream ``error`` event ends the generation even though the status was 200.

- thinking blocks become reasoning; their ``signature_delta`` is kept on
  ``ReasoningEnd``, and ``redacted_thinking`` data too;
- tool input arrives as ``partial_json`` fragments (``{}`` in the block start
  is not the input); no fragments means ``{}``;
- usage: input and cache counts from ``message_start`` (input = input + cache
  creation + cache read, as the SDK counts it), output from the last
  ``message_delta``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx

from ...protocol import Event
from .._client import HTTPClient
from .._drive import FrameParser, HTTPRequest, SSEFrameParser, frame_json, is_retryable
from .._events import (
    FinishReason,
    LLMEvent,
    ReasoningDelta,
    ReasoningEnd,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    Usage,
)
from .._request import ChatRequest
from . import HTTPProvider, endpoint, json_body, key_from_env, missing_key

__all__ = ["ANTHROPIC_VERSION", "AnthropicParser", "AnthropicProvider"]

ANTHROPIC_VERSION = "2023-06-01"
ANTHROPIC_URL = "https://api.anthropic.com"

#: max_tokens is required by the Messages API; used when the request sets none.
DEFAULT_MAX_TOKENS = 4096

_STOP_REASONS: Mapping[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "pause_turn": "other",
}

#: Anthropic error type -> the HTTP status it stands for (errors docs).
_ERROR_STATUS: Mapping[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _count(value: Any) -> int | None:
    return value if type(value) is int and value >= 0 else None


class AnthropicParser(SSEFrameParser):
    """Messages stream events in, unified events out (sans-IO)."""

    __slots__ = ("_blocks", "_calls", "_stop", "_usage")

    def __init__(self, provider: str = "anthropic", model: str = "") -> None:
        super().__init__(provider, model)
        self._blocks: dict[int, list[Any]] = {}  # index -> [kind, call seq/signature, ...]
        self._calls = 0
        self._stop: str | None = None
        self._usage: dict[str, int | None] = {}

    def event(self, ev: Event, out: list[LLMEvent]) -> None:
        try:
            obj = frame_json(ev.data)
        except ValueError:
            self.error(out, "protocol_error", f"{self.provider} sent a frame that is not JSON")
            return
        if type(obj) is not dict:
            self.error(out, "protocol_error", f"{self.provider} sent a frame that is not an object")
            return
        kind = obj.get("type", ev.event)
        if kind == "content_block_delta":
            self._delta(obj, out)
        elif kind == "content_block_start":
            self._block_start(obj, out)
        elif kind == "content_block_stop":
            self._block_stop(obj, out)
        elif kind == "message_start":
            message = obj.get("message")
            message = message if type(message) is dict else {}
            msg_id = message.get("id")
            model = message.get("model")
            self.start(
                out,
                id=msg_id if isinstance(msg_id, str) else None,
                model=model if isinstance(model, str) else None,
            )
            self._take_usage(message.get("usage"), out)
        elif kind == "message_delta":
            delta = obj.get("delta")
            if type(delta) is dict and isinstance(delta.get("stop_reason"), str):
                self._stop = delta["stop_reason"]
            self._take_usage(obj.get("usage"), out)
        elif kind == "message_stop":
            raw = self._stop
            self.finish(out, _STOP_REASONS.get(raw, "other") if raw else "other", raw)
        elif kind == "error":
            err = obj.get("error")
            err = err if type(err) is dict else {}
            code = _str(err.get("type")) or "upstream_error"
            message = _str(err.get("message")) or code
            status = _ERROR_STATUS.get(code)
            self.error(out, code, message, retryable=is_retryable(code, status), status=status)
        # ping and unknown event types: ignored, as the API docs ask

    def _take_usage(self, usage: Any, out: list[LLMEvent]) -> None:
        if type(usage) is not dict:
            return
        for key in (
            "input_tokens",
            "output_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
        ):
            if key in usage:
                self._usage[key] = _count(usage[key])
        u = self._usage
        parts = [
            u.get("input_tokens"),
            u.get("cache_creation_input_tokens"),
            u.get("cache_read_input_tokens"),
        ]
        known = [p for p in parts if p is not None]
        out.append(
            Usage(
                input_tokens=sum(known) if known else None,
                output_tokens=u.get("output_tokens"),
                cached_input_tokens=u.get("cache_read_input_tokens"),
            )
        )

    def _block_start(self, obj: dict[str, Any], out: list[LLMEvent]) -> None:
        index = obj.get("index")
        block = obj.get("content_block")
        if type(block) is not dict or type(index) is not int:
            return
        kind = block.get("type")
        if kind == "tool_use":
            seq = self._calls
            self._calls += 1
            call_id = _str(block.get("id")) or f"call_{seq}"
            name = _str(block.get("name"))
            self._blocks[index] = ["tool_use", seq, call_id, name, []]
            out.append(ToolCallStart(seq, call_id, name))
        elif kind == "thinking":
            self._blocks[index] = ["thinking", block.get("signature") or None]
            text = block.get("thinking")
            if text and isinstance(text, str):
                out.append(ReasoningDelta(text))
        elif kind == "redacted_thinking":
            data = block.get("data")
            self._blocks[index] = ["redacted"]
            out.append(ReasoningEnd(redacted=data if isinstance(data, str) else None))
        else:
            self._blocks[index] = [kind]
            text = block.get("text") if kind == "text" else None
            if text and isinstance(text, str):
                out.append(TextDelta(text))

    def _delta(self, obj: dict[str, Any], out: list[LLMEvent]) -> None:
        delta = obj.get("delta")
        if type(delta) is not dict:
            return
        kind = delta.get("type")
        if kind == "text_delta":
            text = delta.get("text")
            if text and type(text) is str:
                out.append(TextDelta(text))
        elif kind == "thinking_delta":
            text = delta.get("thinking")
            if text and type(text) is str:
                out.append(ReasoningDelta(text))
        elif kind == "input_json_delta":
            block = self._blocks.get(obj.get("index"))  # type: ignore[arg-type]
            part = delta.get("partial_json")
            if block and block[0] == "tool_use" and part and isinstance(part, str):
                block[4].append(part)
                out.append(ToolCallDelta(block[1], block[2], part))
        elif kind == "signature_delta":
            block = self._blocks.get(obj.get("index"))  # type: ignore[arg-type]
            sig = delta.get("signature")
            if block and block[0] == "thinking" and isinstance(sig, str):
                block[1] = (block[1] or "") + sig

    def _block_stop(self, obj: dict[str, Any], out: list[LLMEvent]) -> None:
        block = self._blocks.pop(obj.get("index"), None)  # type: ignore[arg-type]
        if not block:
            return
        if block[0] == "thinking":
            out.append(ReasoningEnd(signature=block[1]))
        elif block[0] == "tool_use":
            _, seq, call_id, name, parts = block
            out.append(ToolCallEnd(seq, call_id, name, "".join(parts) or "{}"))


class AnthropicProvider(HTTPProvider):
    """Anthropic's Messages API (``x-api-key`` + ``anthropic-version``).

    ``auth_token`` sends ``Authorization: Bearer`` instead (OAuth clients);
    ``beta`` flags go in ``anthropic-beta``. System messages become the
    ``system`` field, tool results ``tool_result`` blocks; ``max_tokens``, which
    the API requires, defaults to 4096.
    """

    name = "anthropic"

    def __init__(
        self,
        base_url: str = ANTHROPIC_URL,
        api_key: str | None = None,
        *,
        auth_token: str | None = None,
        version: str = ANTHROPIC_VERSION,
        beta: tuple[str, ...] = (),
        headers: Mapping[str, str] | None = None,
        client: HTTPClient | httpx.AsyncClient | None = None,
        max_event_size: int | None = None,
    ) -> None:
        super().__init__(client=client, max_event_size=max_event_size)
        self.url = endpoint(base_url, "/v1/messages")
        # ANTHROPIC_API_KEY, as the SDK reads it (for Anthropic's own server only)
        self.key_variable: str | None = None
        if auth_token is None:
            api_key, self.key_variable = key_from_env(
                api_key, "ANTHROPIC_API_KEY", base_url, ANTHROPIC_URL
            )
        self.api_key = api_key
        self.auth_token = auth_token
        self.version = version
        self.beta = tuple(beta)
        self.extra_headers = dict(headers or {})

    def build_request(self, request: ChatRequest) -> HTTPRequest:
        if self.api_key is None and self.key_variable is not None:
            raise missing_key(self.name, self.key_variable)
        system = [m.content for m in request.message_list if m.role == "system"]
        messages: list[dict[str, Any]] = []
        for m in request.message_list:
            if m.role == "system":
                continue
            if m.role == "tool":
                block: dict[str, Any] = {
                    "type": "tool_result",
                    "tool_use_id": m.tool_call_id or "",
                    "content": m.content,
                }
                messages.append({"role": "user", "content": [block]})
            elif m.tool_calls:
                content: list[dict[str, Any]] = []
                if m.content:
                    content.append({"type": "text", "text": m.content})
                for c in m.tool_calls:
                    content.append(
                        {
                            "type": "tool_use",
                            "id": c.id,
                            "name": c.name,
                            "input": _input(c.arguments),
                        }
                    )
                messages.append({"role": "assistant", "content": content})
            else:
                messages.append({"role": m.role, "content": m.content})
        body: dict[str, Any] = {
            "model": request.model,
            "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
            "messages": messages,
            "stream": True,
        }
        if system:
            body["system"] = "\n\n".join(system)
        if request.tools:
            body["tools"] = [
                {"name": t.name, "description": t.description, "input_schema": dict(t.parameters)}
                for t in request.tool_list
            ]
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.stop:
            body["stop_sequences"] = list(request.stop)
        body.update(request.extra)
        headers = {
            "content-type": "application/json",
            "accept": "text/event-stream",
            "accept-encoding": "identity",
            "anthropic-version": self.version,
        }
        if self.api_key is not None:
            headers["x-api-key"] = self.api_key
        if self.auth_token is not None:
            headers["authorization"] = f"Bearer {self.auth_token}"
        if self.beta:
            headers["anthropic-beta"] = ",".join(self.beta)
        headers.update(self.extra_headers)
        return HTTPRequest("POST", self.url, headers, json_body(body))

    not_a_stream = ("text/html", "application/json")

    def parser(self, request: ChatRequest) -> FrameParser:
        return AnthropicParser(self.name, request.model)


def _input(arguments: str) -> Any:
    try:
        value = json.loads(arguments)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
