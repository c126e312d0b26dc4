"""OpenAI-compatible chat completions: one adapter, per-vendor quirks.

Covers OpenAI, DeepSeek, Zhipu GLM, vLLM, llama.cpp server, LM Studio and any
other server speaking ``POST {base_url}/chat/completions`` with ``stream: true``
(providers.md §§ 1, 5, 6). The parser accepts, whatever the vendor:

- ``data:`` with or without the space, CRLF, ``:`` comments (the protocol decoder);
- reasoning as ``delta.reasoning_content`` (DeepSeek, GLM, llama.cpp, old vLLM) or
  ``delta.reasoning`` (vLLM ≥ 0.11, Ollama ``/v1``, OpenRouter);
- ``role`` repeated on every chunk and ``object``/``id`` missing (GLM);
- tool calls in fragments (OpenAI, vLLM, llama.cpp) or whole (GLM, Ollama ``/v1``);
- usage on any chunk, with or without choices, the last one winning;
- errors inside the 200 stream: ``{"error": {...}}``, ``{"object": "error"}`` (old
  vLLM) and the raw ``error: {...}`` line of old llama.cpp, which a conformant SSE
  parser would silently drop;
- finish reasons GLM and DeepSeek add (``sensitive``, ``network_error``,
  ``insufficient_system_resource``, ``model_context_window_exceeded``).

``finish_reason`` arrives before the usage chunk, so ``Finish`` is held back until
``[DONE]`` (or the end of the body) to stay last. A stream that ends without any
``finish_reason`` was cut short and ends with ``Error("truncated")``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeAlias

import httpx

from ...protocol import MAX_EVENT_SIZE, Event
from .._client import HTTPClient
from .._drive import (
    FrameParser,
    HTTPRequest,
    SSEFrameParser,
    error_details,
    frame_json,
    is_retryable,
)
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
from .._request import ChatRequest, Message
from . import HTTPProvider, endpoint, json_body, key_from_env, missing_key

__all__ = [
    "VENDORS",
    "OpenAIChunkParser",
    "OpenAIProvider",
    "Vendor",
    "glm_jwt",
    "openai_messages",
    "openai_usage",
]

Vendor: TypeAlias = Literal["openai", "deepseek", "glm", "vllm", "llamacpp", "lmstudio", "generic"]

#: vendor -> default base URL (``None``: the caller must give one).
VENDORS: Mapping[str, str | None] = {
    "openai": "https://api.openai.com/v1",
    "deepseek": "https://api.deepseek.com",
    "glm": "https://open.bigmodel.cn/api/paas/v4",
    "vllm": "http://127.0.0.1:8000/v1",
    "llamacpp": "http://127.0.0.1:8080/v1",
    "lmstudio": "http://127.0.0.1:1234/v1",
    "generic": None,
}

#: vendor -> the environment variable its official SDK reads the key from (read
#: here too, when the base URL is the vendor's own; see ``key_from_env``).
KEY_VARIABLES: Mapping[str, str] = {
    "openai": "OPENAI_API_KEY",
    "deepseek": "DEEPSEEK_API_KEY",
    "glm": "ZHIPUAI_API_KEY",
}

#: OpenAI (and compatible) finish_reason -> unified reason.
_FINISH: Mapping[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "model_context_window_exceeded": "length",  # GLM / z.ai
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
    "sensitive": "content_filter",  # GLM moderation
}

#: finish_reason values that mean the generation failed (providers.md § 8.2).
_FINISH_ERRORS = frozenset({"error", "network_error", "insufficient_system_resource"})

#: The standard library's C string scanner, the one under ``json.loads``: the
#: string that starts after an opening quote at the index given, and where it ends.
_scanstring: Callable[[str, int], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]

#: A ``TextDelta`` of a str made without its ``__init__`` (the two C calls it
#: makes past its checks, which a str passes): 0.26 against 0.09 us a token.
_made = object.__new__
_set_text = TextDelta.__dict__["text"].__set__


def _string_at(data: str, key: str, value: str) -> tuple[int, int] | None:
    """Where the JSON string after the last ``key`` in ``data`` is (its opening
    quote, and past its closing one), if there is one there and it is ``value``."""
    at = data.rfind(key)
    if at < 0:
        return None
    rest = data[at + len(key) :].lstrip(" \t")
    at = len(data) - len(rest)
    if rest[:1] != '"':
        return None
    try:
        text, end = _scanstring(data, at + 1)
    except ValueError:
        return None
    return (at, end) if text == value else None


GLM_TOKEN_TTL_MS = 210_000  # what the official SDK uses (its cache keeps tokens 180 s)


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def glm_jwt(api_key: str, *, now_ms: int, ttl_ms: int = GLM_TOKEN_TTL_MS) -> str:
    """Zhipu's HS256 token for ``<id>.<secret>`` (providers.md § 5.1).

    ``exp`` and ``timestamp`` are in *milliseconds*, as Zhipu's SDK sends them;
    the header carries ``sign_type: SIGN``.
    """
    parts = api_key.split(".")
    if len(parts) != 2 or not all(parts):
        raise ValueError("a Zhipu API key looks like '<id>.<secret>' (exactly one dot)")
    key_id, secret = parts
    header = {"alg": "HS256", "sign_type": "SIGN", "typ": "JWT"}
    payload = {"api_key": key_id, "exp": now_ms + ttl_ms, "timestamp": now_ms}
    signing_input = (
        _b64url(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + _b64url(json.dumps(payload, separators=(",", ":")).encode())
    )
    signature = hmac.new(secret.encode(), signing_input.encode("ascii"), hashlib.sha256).digest()
    return signing_input + "." + _b64url(signature)


def openai_messages(messages: tuple[Message, ...]) -> list[dict[str, Any]]:
    """Messages in the OpenAI chat shape."""
    out: list[dict[str, Any]] = []
    for m in messages:
        item: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.tool_calls:
            item["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                }
                for c in m.tool_calls
            ]
            if not m.content:
                item["content"] = None
        if m.tool_call_id is not None:
            item["tool_call_id"] = m.tool_call_id
        out.append(item)
    return out


def _count(value: Any) -> int | None:
    return value if type(value) is int and value >= 0 else None


def openai_usage(usage: Mapping[str, Any]) -> Usage:
    """A unified ``Usage`` from an OpenAI-shaped usage object (providers.md § 8.3)."""
    details = usage.get("completion_tokens_details")
    prompt_details = usage.get("prompt_tokens_details")
    cached = (
        _count(prompt_details.get("cached_tokens")) if isinstance(prompt_details, dict) else None
    )
    if cached is None:
        cached = _count(usage.get("prompt_cache_hit_tokens"))  # DeepSeek
    return Usage(
        input_tokens=_count(usage.get("prompt_tokens")),
        output_tokens=_count(usage.get("completion_tokens")),
        reasoning_tokens=(
            _count(details.get("reasoning_tokens")) if isinstance(details, dict) else None
        ),
        cached_input_tokens=cached,
    )


#: How many text chunks a stream's parser learns its text frame from (``_learn``)
#: before it gives up: one is enough for every server that repeats its
#: chunk's other fields (what ``_learn`` checks), more cost a parse each.
LEARN_TRIES = 2


class OpenAIChunkParser(SSEFrameParser):
    """``chat.completion.chunk`` events in, unified events out (sans-IO).

    Nearly every read of a stream is one text chunk, ``data: {...}`` whose
    ``id``, ``object``, ``created``, ``model`` (and whatever else the server
    adds) are the same in every chunk, and only the content's JSON string
    differs. Once a chunk has shown the stream's frame around that string
    (``_learn``), a read that is exactly such chunks (one, or several that
    came together) is their ``TextDelta``s at once: each string is decoded by
    the C scanner under ``json.loads``, and neither the SSE decoder nor the
    rest of the JSON is looked at again (per token: six Python calls less,
    and no parse of a ~170-byte object). Every other read goes the general
    way, which decides.

    OpenAI adds to every chunk an ``obfuscation`` string of random length and
    content (padding against size side-channels) that nothing here reads: a
    frame may hold it too, as a second string (see ``_rest``) skipped.
    """

    __slots__ = (
        "_before",
        "_calls",
        "_clean",
        "_finish",
        "_line_start",
        "_max_chunk",
        "_reasoning",
        "_rest",
        "_tries",
    )

    def __init__(
        self, provider: str, model: str = "", *, max_event_size: int = MAX_EVENT_SIZE
    ) -> None:
        super().__init__(provider, model, max_event_size=max_event_size)
        self._reasoning = False  # inside a run of reasoning deltas
        self._finish: tuple[FinishReason, str] | None = None  # held until [DONE]
        self._calls: dict[int, list[Any]] = {}  # upstream index -> [seq, id, name, parts]
        self._line_start = True  # the last chunk ended a line
        # A text chunk's event before its strings (from ``data: `` up to the
        # first one's opening quote), once learned (``_learn``); empty before.
        # Then (its length, after, its length, between, obfuscation first): the
        # event after them (from past the last one's closing quote to the blank
        # line), and, in a frame with the top-level ``obfuscation`` string too,
        # what is between it and the content's (past one's closing quote, to the
        # other's opening one; empty otherwise) and whether it comes first. (The
        # lengths once, not measured again for every read.)
        self._before = ""
        self._rest: tuple[int, str, int, str, bool] = (0, "", 0, "", False)
        self._tries = LEARN_TRIES
        # The bytes fed so far end with a blank line: the SSE decoder holds
        # nothing (no part of a line or event), so the next bytes start an event.
        self._clean = False
        # Reads at most this long may be one chunk the decoder would take (its limit).
        self._max_chunk = max_event_size

    def limit(self, max_event_size: int) -> None:
        super().limit(max_event_size)
        self._max_chunk = max_event_size

    def feed(self, chunk: bytes) -> list[LLMEvent]:
        before = self._before
        if before and self._clean and len(chunk) <= self._max_chunk and not self.done:
            # Perhaps text chunks only, whole (see the class docstring): each
            # the frame's two parts around the rest of one JSON string, up to
            # its closing quote. Nothing else is in the read, so no "error:"
            # line either, and it ends with a blank line as before.
            try:
                text = chunk.decode()
            except UnicodeDecodeError:  # the decoder replaces what is not UTF-8
                text = ""
            before_len, after, after_len, between, obfuscation_first = self._rest
            if text.startswith(before):  # (and ends with ``after``: ``at == end`` below)
                out: list[LLMEvent] = []
                at, end = before_len, len(text)
                try:
                    while True:
                        content, at = _scanstring(text, at)
                        if between:  # the obfuscation's string too
                            if not text.startswith(between, at):
                                break
                            if obfuscation_first:  # that was it
                                content, at = _scanstring(text, at + len(between))
                            else:
                                at = _scanstring(text, at + len(between))[1]
                        if not text.startswith(after, at):
                            break
                        if content:  # ``TextDelta(content)``: a str, as its checks want
                            delta = _made(TextDelta)
                            _set_text(delta, content)
                            out.append(delta)
                        at += after_len
                        if at == end:
                            if out and self._reasoning:
                                self._reasoning = False
                                out.insert(0, ReasoningEnd())
                            return out
                        if not text.startswith(before, at):
                            break
                        at += before_len
                except ValueError:  # not a JSON string
                    pass
        # Old llama.cpp writes "error: {...}" lines: not an SSE field, so the
        # decoder would drop them and the stream would "succeed". Look for one
        # at a line start in this chunk (it is written in one piece).
        line_start = self._line_start
        last = chunk[-2:]
        self._line_start = last[-1:] in (b"\n", b"\r")
        self._clean = last == b"\n\n"
        at = chunk.find(b"error:")
        while at >= 0 and not (chunk[at - 1] in b"\r\n" if at else line_start):
            at = chunk.find(b"error:", at + 1)
        if at < 0 or self.done:
            return super().feed(chunk)
        out = super().feed(chunk[:at])
        end = len(chunk)
        for stop in (b"\n", b"\r"):
            i = chunk.find(stop, at)
            if 0 <= i < end:
                end = i
        try:
            value: Any = json.loads(chunk[at + 6 : end])
        except ValueError:
            value = chunk[at + 6 : end].strip().decode("utf-8", "replace")
        self._error_value({"error": value}, out)
        return out

    def event(self, ev: Event, out: list[LLMEvent]) -> None:
        data = ev.data
        if data[:6] == "[DONE]":
            self._end(out, "[DONE]")
            return
        try:
            obj = frame_json(data)
        except ValueError:
            self.error(out, "protocol_error", f"{self.provider} sent a frame that is not JSON")
            return
        if type(obj) is not dict:
            self.error(out, "protocol_error", f"{self.provider} sent a frame that is not an object")
            return
        if obj.get("error") or obj.get("object") == "error":
            self._error_value(obj, out)
            return
        if not self.started:
            created = obj.get("created")
            self.start(
                out,
                id=obj.get("id") if isinstance(obj.get("id"), str) else None,
                created=created if type(created) is int else None,
                model=obj.get("model") if isinstance(obj.get("model"), str) else None,
            )
        choices = obj.get("choices")
        if choices:
            for choice in choices:
                if type(choice) is dict and choice.get("index", 0) == 0:
                    self._choice(choice, out)
        usage = obj.get("usage")
        if usage and type(usage) is dict:
            out.append(openai_usage(usage))
        elif self._tries and choices and not self._before:
            self._learn(data, obj)

    def _learn(self, data: str, obj: dict[str, Any]) -> None:
        """Learn the stream's text frame (``feed``) from ``data``, a chunk just
        handled, if it is a text chunk: one choice (index 0) whose delta holds
        non-empty ``content`` and nothing else ``_choice`` reads (no reasoning,
        tool calls, finish reason; no usage, no error). Then any chunk that
        differs from it only in the content's string (and the top-level
        ``obfuscation`` string, if it has one) is that string's ``TextDelta``
        alone (or ``ReasoningEnd`` and it), as ``event`` makes.

        Each string is found where its key is, and held for it by parsing the
        chunk with other strings there: they must change the content and the
        obfuscation and nothing else (not a key that ends in ``content``, not
        the first of two ``content`` keys, not an ``obfuscation`` in the delta).
        Without the obfuscation's string found so, the frame has the content's
        string only."""
        choices = obj["choices"]
        if type(choices) is not list or len(choices) != 1:
            return
        choice = choices[0]
        delta = choice.get("delta") if type(choice) is dict else None
        if (
            type(delta) is not dict
            or choice.get("index", 0) != 0
            or choice.get("finish_reason")
            or delta.get("reasoning_content")
            or delta.get("reasoning")
            or delta.get("tool_calls")
            or not delta.get("content")
            or type(delta["content"]) is not str
        ):
            return
        self._tries -= 1
        if "\n" in data:  # several data lines: not the one line a read holds
            return
        content = _string_at(data, '"content":', delta["content"])
        if content is None:
            return
        # Each string's place (its opening quote, past its closing one) and
        # another string for it; obj (this parser's own, and handled) gets them.
        delta["content"] = "\0" if delta["content"] != "\0" else "\1"
        places = [(*content, delta["content"])]
        obfuscation = obj.get("obfuscation")
        found = (
            _string_at(data, '"obfuscation":', obfuscation) if type(obfuscation) is str else None
        )
        if found is not None:
            obj["obfuscation"] = "\2" if obfuscation != "\2" else "\3"
            places.append((*found, obj["obfuscation"]))
            places.sort()
        probe, at = "", 0
        for start, end, other in places:
            probe += data[at:start] + f'"\\u000{ord(other)}"'  # \0 to \3, in JSON
            at = end
        try:
            if json.loads(probe + data[at:]) != obj:
                return
        except ValueError:
            return
        first, last = places[0], places[-1]
        self._before = "data: " + data[: first[0] + 1]
        after = data[last[1] :] + "\n\n"
        between = data[first[1] : last[0] + 1]  # empty with one string
        self._rest = (len(self._before), after, len(after), between, first[0] != content[0])

    def _choice(self, choice: dict[str, Any], out: list[LLMEvent]) -> None:
        delta = choice.get("delta")
        if delta and type(delta) is dict:
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if reasoning and type(reasoning) is str:
                self._reasoning = True
                out.append(ReasoningDelta(reasoning))
            content = delta.get("content")
            if content and type(content) is str:
                if self._reasoning:
                    self._reasoning = False
                    out.append(ReasoningEnd())
                out.append(TextDelta(content))
            calls = delta.get("tool_calls")
            if calls and type(calls) is list:
                if self._reasoning:
                    self._reasoning = False
                    out.append(ReasoningEnd())
                for call in calls:
                    if type(call) is dict:
                        self._tool_fragment(call, out)
        raw = choice.get("finish_reason")
        if raw and type(raw) is str and self._finish is None:
            if raw in _FINISH_ERRORS:
                self.error(
                    out,
                    raw,
                    f"{self.provider} stopped the generation: finish_reason {raw!r}",
                    retryable=raw != "error",
                )
                return
            self._close_blocks(out)
            self._finish = (_FINISH.get(raw, "other"), raw)

    def _tool_fragment(self, call: dict[str, Any], out: list[LLMEvent]) -> None:
        index = call.get("index", 0)
        fn = call.get("function")
        fn = fn if type(fn) is dict else {}
        state = self._calls.get(index)
        if state is None:
            seq = len(self._calls)
            call_id = call.get("id")
            if not (call_id and type(call_id) is str):
                call_id = f"call_{seq}"
            name = fn.get("name")
            name = name if type(name) is str else ""
            state = self._calls[index] = [seq, call_id, name, []]
            out.append(ToolCallStart(seq, call_id, name))
        args = fn.get("arguments")
        if args:
            if type(args) is not str:  # some servers send the object itself
                args = json.dumps(args)
            state[3].append(args)
            out.append(ToolCallDelta(state[0], state[1], args))

    def _close_blocks(self, out: list[LLMEvent]) -> None:
        if self._reasoning:
            self._reasoning = False
            out.append(ReasoningEnd())
        for seq, call_id, name, parts in self._calls.values():
            out.append(ToolCallEnd(seq, call_id, name, "".join(parts) or "{}"))
        self._calls = {}

    def _end(self, out: list[LLMEvent], how: str) -> None:
        if self._finish is not None:
            self.finish(out, *self._finish)
        else:
            self.error(
                out,
                "truncated",
                f"{self.provider} stream ended ({how}) without a finish_reason",
                retryable=True,
            )

    def end_of_body(self, out: list[LLMEvent]) -> None:
        if self._finish is not None:  # LM Studio and others may omit [DONE]
            self.finish(out, *self._finish)

    def _error_value(self, value: Any, out: list[LLMEvent]) -> None:
        message, code, status = error_details(value)
        if message is None and code is None:
            message = "the provider reported an error"
        self.error(
            out,
            code or "upstream_error",
            message or code or "",
            retryable=is_retryable(code, status),
            status=status,
        )


class OpenAIProvider(HTTPProvider):
    """An OpenAI-compatible server (``vendor`` picks defaults and quirks).

    ``base_url`` defaults per vendor (``VENDORS``); ``api_key`` is sent as
    ``Authorization: Bearer``. Without one, the vendor's own server gets the key
    of its SDK's variable (``KEY_VARIABLES``: ``OPENAI_API_KEY``...), and a
    request fails before sending when that is unset; another server gets none.
    ``max_tokens`` is sent as ``max_completion_tokens`` to OpenAI's own server
    only (its reasoning models refuse ``max_tokens``; every compatible server,
    llama.cpp's included, knows only ``max_tokens``). ``name`` is the provider's
    name in events and errors (the vendor's by default). For GLM,
    ``glm_auth="jwt"`` sends the HS256 token the SDK can make instead of the raw
    key (``clock`` gives the time, in seconds).
    ``include_usage`` in the request adds ``stream_options.include_usage`` unless
    ``stream_options=False`` (for servers that reject it).
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        vendor: Vendor = "openai",
        headers: Mapping[str, str] | None = None,
        glm_auth: Literal["key", "jwt"] = "key",
        stream_options: bool = True,
        client: HTTPClient | httpx.AsyncClient | None = None,
        max_event_size: int | None = None,
        clock: Callable[[], float] = time.time,
        name: str | None = None,
    ) -> None:
        super().__init__(client=client, max_event_size=max_event_size)
        if vendor not in VENDORS:
            raise ValueError(f"unknown vendor {vendor!r}; choose one of {', '.join(VENDORS)}")
        base = base_url or VENDORS[vendor]
        if not base:
            raise ValueError(f"vendor {vendor!r} needs a base_url")
        if glm_auth not in ("key", "jwt"):
            raise ValueError("glm_auth must be 'key' or 'jwt'")
        home = VENDORS[vendor]
        variable = KEY_VARIABLES.get(vendor)
        self.key_variable: str | None = None
        if home is not None and variable is not None:
            api_key, self.key_variable = key_from_env(api_key, variable, base, home)
        if glm_auth == "jwt" and api_key is not None:
            glm_jwt(api_key, now_ms=0)  # refuse a malformed key now, not per request
        self.name = name or vendor
        self.vendor = vendor
        self.url = endpoint(base, "/chat/completions")
        self.api_key = api_key
        # OpenAI itself, not a compatible server that the "openai" vendor points at
        self.openai_proper = vendor == "openai" and base.rstrip("/") == home
        self.glm_auth = glm_auth
        self.stream_options = stream_options
        self.extra_headers = dict(headers or {})
        self._clock = clock
        # ((api_key, extra_headers) they were built from, headers): see _headers
        self._built_headers: tuple[tuple[str | None, dict[str, str]], dict[str, str]] | None = None

    def build_request(self, request: ChatRequest) -> HTTPRequest:
        if self.api_key is None and self.key_variable is not None:
            raise missing_key(self.name, self.key_variable)
        body: dict[str, Any] = {
            "model": request.model,
            "messages": openai_messages(request.message_list),
            "stream": True,
        }
        if request.include_usage and self.stream_options:
            body["stream_options"] = {"include_usage": True}
        if request.tools:
            body["tools"] = [t.to_openai() for t in request.tool_list]
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.max_tokens is not None:
            # OpenAI's reasoning models refuse max_tokens; the others know only it.
            key = "max_completion_tokens" if self.openai_proper else "max_tokens"
            body[key] = request.max_tokens
        if request.stop:
            body["stop"] = list(request.stop)
        body.update(request.extra)
        headers = self._headers
        if self.api_key is not None and self.glm_auth == "jwt" and self.vendor == "glm":
            # a fresh token per request; the other headers stay
            token = glm_jwt(self.api_key, now_ms=int(self._clock() * 1000))
            headers["authorization"] = f"Bearer {token}"
            headers.update(self.extra_headers)
        return HTTPRequest("POST", self.url, headers, json_body(body))

    @property
    def _headers(self) -> dict[str, str]:
        """The request headers, built once (a copy each time: callers may change it)."""
        built = self._built_headers
        if built is None or built[0] != (self.api_key, self.extra_headers):
            headers = {
                "content-type": "application/json",
                "accept": "text/event-stream",
                "accept-encoding": "identity",
            }
            if self.api_key is not None:
                headers["authorization"] = f"Bearer {self.api_key}"
            headers.update(self.extra_headers)
            built = self._built_headers = ((self.api_key, dict(self.extra_headers)), headers)
        return dict(built[1])

    not_a_stream = ("text/html", "application/json")

    def parser(self, request: ChatRequest) -> FrameParser:
        # Made with the provider's limit, which ``limit()`` then finds it has.
        limit = MAX_EVENT_SIZE if self.max_event_size is None else self.max_event_size
        return OpenAIChunkParser(self.name, request.model, max_event_size=limit)
