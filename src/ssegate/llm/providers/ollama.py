"""Ollama's native chat API: ``POST /api/chat``, NDJSON (providers.md § 4.1).

One JSON object per line, no SSE framing and no terminator: the object with
``done: true`` ends the stream and carries the metrics (``prompt_eval_count``,
``eval_count``; left out when zero, so a missing count is 0). Thinking arrives in
``message.thinking`` before the content; tool calls arrive whole, with their
arguments as an *object* (turned into JSON text here) and sometimes without an
``id`` (one is made up). The native API says ``done_reason: "stop"`` even after
a tool call, so ``tool_calls`` is inferred. Errors are ``{"error": "text"}``: as
the whole body of a non-200 answer, or as one more line mid-stream.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx

from .._client import HTTPClient
from .._drive import FrameParser, HTTPRequest, NDJSONFrameParser
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
from . import HTTPProvider, endpoint, json_body

__all__ = ["OllamaParser", "OllamaProvider"]

_DONE_REASONS: Mapping[str, FinishReason] = {"stop": "stop", "length": "length"}


def _count(value: Any) -> int:
    return value if type(value) is int and value >= 0 else 0


class OllamaParser(NDJSONFrameParser):
    """``/api/chat`` lines in, unified events out (sans-IO)."""

    __slots__ = ("_calls", "_reasoning")

    def __init__(self, provider: str = "ollama", model: str = "") -> None:
        super().__init__(provider, model)
        self._reasoning = False
        self._calls = 0

    def value(self, value: Any, out: list[LLMEvent]) -> None:
        if type(value) is not dict:
            self.error(out, "protocol_error", f"{self.provider} sent a line that is not an object")
            return
        if "error" in value:
            err = value["error"]
            self.error(
                out,
                "upstream_error",
                err if isinstance(err, str) else json.dumps(err),
                retryable=True,
            )
            return
        if not self.started:
            model = value.get("model")
            self.start(out, model=model if isinstance(model, str) else None)
        message = value.get("message")
        if type(message) is dict:
            thinking = message.get("thinking")
            if thinking and type(thinking) is str:
                self._reasoning = True
                out.append(ReasoningDelta(thinking))
            content = message.get("content")
            if content and type(content) is str:
                self._end_reasoning(out)
                out.append(TextDelta(content))
            calls = message.get("tool_calls")
            if calls and type(calls) is list:
                self._end_reasoning(out)
                for call in calls:
                    if type(call) is dict:
                        self._tool_call(call, out)
        if value.get("done") is True:
            self._end_reasoning(out)
            out.append(
                Usage(
                    input_tokens=_count(value.get("prompt_eval_count")),
                    output_tokens=_count(value.get("eval_count")),
                )
            )
            raw = value.get("done_reason")
            raw = raw if isinstance(raw, str) else None
            reason: FinishReason = _DONE_REASONS.get(raw or "stop", "other")
            if reason == "stop" and self._calls:
                reason = "tool_calls"
            self.finish(out, reason, raw)

    def _end_reasoning(self, out: list[LLMEvent]) -> None:
        if self._reasoning:
            self._reasoning = False
            out.append(ReasoningEnd())

    def _tool_call(self, call: dict[str, Any], out: list[LLMEvent]) -> None:
        fn = call.get("function")
        fn = fn if type(fn) is dict else {}
        seq = self._calls
        self._calls += 1
        call_id = call.get("id")
        if not (call_id and isinstance(call_id, str)):
            call_id = f"call_{seq}"
        name = fn.get("name")
        name = name if isinstance(name, str) else ""
        args = fn.get("arguments", {})
        text = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
        out.append(ToolCallStart(seq, call_id, name))
        out.append(ToolCallDelta(seq, call_id, text))
        out.append(ToolCallEnd(seq, call_id, name, text or "{}"))


class OllamaProvider(HTTPProvider):
    """An Ollama server's native ``/api/chat`` (no auth locally; ``api_key`` for proxies).

    ``temperature``, ``max_tokens`` and ``stop`` go into ``options`` (as
    ``num_predict`` for the token cap); ``extra`` fields (``think``,
    ``keep_alive``, ``options``…) are merged into the body.
    """

    name = "ollama"

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:11434",
        api_key: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        client: HTTPClient | httpx.AsyncClient | None = None,
        max_event_size: int | None = None,
    ) -> None:
        super().__init__(client=client, max_event_size=max_event_size)
        self.url = endpoint(base_url, "/api/chat")
        self.api_key = api_key
        self.extra_headers = dict(headers or {})

    def build_request(self, request: ChatRequest) -> HTTPRequest:
        messages: list[dict[str, Any]] = []
        for m in request.message_list:
            item: dict[str, Any] = {"role": m.role, "content": m.content}
            if m.tool_calls:
                item["tool_calls"] = [
                    {"function": {"name": c.name, "arguments": _arguments(c.arguments)}}
                    for c in m.tool_calls
                ]
            messages.append(item)
        body: dict[str, Any] = {"model": request.model, "messages": messages, "stream": True}
        if request.tools:
            body["tools"] = [t.to_openai() for t in request.tool_list]
        options: dict[str, Any] = {}
        if request.temperature is not None:
            options["temperature"] = request.temperature
        if request.max_tokens is not None:
            options["num_predict"] = request.max_tokens
        if request.stop:
            options["stop"] = list(request.stop)
        extra = dict(request.extra)
        if isinstance(extra.get("options"), Mapping):
            options.update(extra.pop("options"))
        if options:
            body["options"] = options
        body.update(extra)
        headers = {"content-type": "application/json", "accept": "application/x-ndjson"}
        if self.api_key is not None:
            headers["authorization"] = f"Bearer {self.api_key}"
        headers.update(self.extra_headers)
        return HTTPRequest("POST", self.url, headers, json_body(body))

    def parser(self, request: ChatRequest) -> FrameParser:
        return OllamaParser(self.name, request.model)


def _arguments(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return {}
