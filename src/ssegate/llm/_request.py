"""``ChatRequest``: one provider-neutral description of a chat completion request.

Adapters turn it into their provider's request body; ``ChatRequest.from_openai``
reads the body of an OpenAI ``POST /v1/chat/completions`` (what the gateway
receives), refusing malformed input with ``ValueError`` and a message that says
which field is wrong, so the gateway can answer 400 instead of crashing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal, TypeAlias

__all__ = ["ROLES", "ChatRequest", "Message", "Role", "Tool", "ToolCall"]

Role: TypeAlias = Literal["system", "user", "assistant", "tool"]
ROLES: tuple[Role, ...] = ("system", "user", "assistant", "tool")

#: OpenAI body fields that ChatRequest models itself; the rest go to ``extra``.
_OWN_FIELDS = frozenset(
    {
        "model",
        "messages",
        "tools",
        "temperature",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "stream",
        "stream_options",
    }
)


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool call the assistant made earlier in the conversation."""

    id: str
    name: str
    arguments: str = "{}"  # JSON text, as OpenAI carries it


@dataclass(frozen=True, slots=True)
class Tool:
    """A function the model may call; ``parameters`` is its JSON Schema."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(
        default_factory=lambda: {"type": "object", "properties": {}}
    )

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError("Tool.name must be a non-empty string")

    def to_openai(self) -> dict[str, Any]:
        """The OpenAI ``tools`` entry (Ollama's ``/api/chat`` takes the same shape)."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": dict(self.parameters),
            },
        }


@dataclass(frozen=True, slots=True)
class Message:
    """One message of the conversation.

    ``tool_calls`` are an assistant's calls; ``tool_call_id`` says which call a
    ``tool`` message answers.
    """

    role: Role
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"message role must be one of {', '.join(ROLES)}: {self.role!r}")
        if not isinstance(self.content, str):
            raise TypeError(f"message content must be str, not {type(self.content).__name__}")


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """What to ask the model.

    ``messages`` and ``tools`` accept ``Message``/``Tool`` objects or OpenAI-shaped
    dicts. ``extra`` holds provider-specific body fields (``top_p``, ``seed``,
    ``thinking``, ``think``…); adapters merge it into the request body as is, so
    it is the caller's job to use fields the chosen provider understands.
    ``include_usage`` asks for token counts where the provider needs asking.
    """

    model: str
    messages: Sequence[Message | Mapping[str, Any]]
    tools: Sequence[Tool | Mapping[str, Any]] = ()
    temperature: float | None = None
    max_tokens: int | None = None
    stop: Sequence[str] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)
    include_usage: bool = True

    def __post_init__(self) -> None:
        # Each check takes the plain types first (a list, a dict, a str): what the
        # gateway passes for every request; an ABC's isinstance costs more.
        if (type(self.model) is not str and not isinstance(self.model, str)) or not self.model:
            raise ValueError("'model' must be a non-empty string")
        messages: Any = self.messages
        if (
            type(messages) is not list
            and type(messages) is not tuple
            and (isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence))
        ):
            raise ValueError("'messages' must be a list of messages")
        object.__setattr__(self, "messages", _messages(messages))
        tools: Any = self.tools
        if type(tools) is not tuple or tools:
            if type(tools) is not list and (
                isinstance(tools, (str, bytes)) or not isinstance(tools, Sequence)
            ):
                raise ValueError("'tools' must be a list of tools")
            object.__setattr__(self, "tools", _tools(tools))
        object.__setattr__(self, "stop", _stop(self.stop))
        _check_temperature(self.temperature)
        m = self.max_tokens
        if m is not None and (
            (type(m) is not int and (isinstance(m, bool) or not isinstance(m, int))) or m <= 0
        ):
            raise ValueError(f"'max_tokens' must be a positive integer: {_short(m)}")
        extra = self.extra
        if type(extra) is not dict and not isinstance(extra, Mapping):
            raise ValueError("'extra' must be a mapping of body fields")
        object.__setattr__(self, "extra", dict(extra))
        if self.include_usage is not True and self.include_usage is not False:
            raise ValueError("'include_usage' must be true or false")

    def with_model(self, model: str) -> ChatRequest:
        """This request for another model: ``dataclasses.replace`` without checking
        the rest again (it was checked when made; the gateway's route renames the
        model of every request it relays)."""
        if model == self.model:
            return self
        if not isinstance(model, str) or not model:
            raise ValueError("'model' must be a non-empty string")
        other: ChatRequest = _new(ChatRequest)
        for slot in _SLOTS:
            slot.__set__(other, slot.__get__(self))
        _SLOT["model"].__set__(other, model)
        _SLOT["extra"].__set__(other, dict(self.extra))  # as __post_init__ copies it
        return other

    @property
    def message_list(self) -> tuple[Message, ...]:
        """``messages``, typed as the ``Message`` objects they have become."""
        return self.messages  # type: ignore[return-value]

    @property
    def tool_list(self) -> tuple[Tool, ...]:
        """``tools``, typed as the ``Tool`` objects they have become."""
        return self.tools  # type: ignore[return-value]

    @classmethod
    def from_openai(cls, body: Any) -> ChatRequest:
        """Read an OpenAI chat-completions request body (already JSON-decoded).

        Unknown fields go to ``extra``; ``stream_options.include_usage`` sets
        ``include_usage``. Raises ``ValueError`` naming the bad field.
        """
        if type(body) is not dict and not isinstance(body, Mapping):
            raise ValueError("the request body must be a JSON object")
        max_tokens = None
        for name in ("max_tokens", "max_completion_tokens"):  # the newer name wins
            value = body.get(name)
            if value is not None:
                if (
                    type(value) is not int
                    and (isinstance(value, bool) or not isinstance(value, int))
                ) or value <= 0:
                    raise ValueError(f"{name!r} must be a positive integer: {_short(value)}")
                max_tokens = value
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise ValueError(f"'model' must be a non-empty string: {_short(model)}")
        stream = body.get("stream")
        if stream is not None and not isinstance(stream, bool):
            raise ValueError(f"'stream' must be true or false: {_short(stream)}")
        opts = body.get("stream_options")
        if opts is not None and type(opts) is not dict and not isinstance(opts, Mapping):
            raise ValueError("'stream_options' must be an object")
        usage = opts.get("include_usage") if opts is not None else None
        if usage is not None and not isinstance(usage, bool):
            raise ValueError(
                f"'stream_options.include_usage' must be true or false: {_short(usage)}"
            )
        extra = {k: v for k, v in body.items() if k not in _OWN_FIELDS}
        stop = body.get("stop")
        if stop is not None and not isinstance(stop, (str, list)):
            raise ValueError("'stop' must be a string or a list of strings")
        messages = _list(body.get("messages"), "messages")
        tools = _list(body.get("tools"), "tools")
        if cls is not ChatRequest:  # a subclass: made its own way
            return cls(
                model=model,
                messages=messages,
                tools=tools,
                temperature=body.get("temperature"),
                max_tokens=max_tokens,
                stop=() if stop is None else stop,
                extra=extra,
                include_usage=bool(usage),
            )
        # What the dataclass's __init__ and __post_init__ would do, in their
        # order, but the checks made above (model, max_tokens, the lists' and
        # extra's types) and extra's copy (made here): a third of the time, for
        # every request the gateway relays.
        request: ChatRequest = _new(ChatRequest)
        slot = _SLOT
        slot["model"].__set__(request, model)
        slot["messages"].__set__(request, _messages(messages))
        slot["tools"].__set__(request, _tools(tools) if tools else ())
        slot["stop"].__set__(request, () if stop is None else _stop(stop))
        temperature = body.get("temperature")
        _check_temperature(temperature)
        slot["temperature"].__set__(request, temperature)
        slot["max_tokens"].__set__(request, max_tokens)
        slot["extra"].__set__(request, extra)
        slot["include_usage"].__set__(request, bool(usage))
        return request


#: ChatRequest's fields, in order (what ``with_model`` copies).
_FIELDS = tuple(f.name for f in fields(ChatRequest))
#: Their slots (member descriptors): set without the frozen dataclass's ``__setattr__``.
_SLOT: dict[str, Any] = {name: getattr(ChatRequest, name) for name in _FIELDS}
_SLOTS = tuple(_SLOT.values())
_new = object.__new__


def _messages(messages: Any) -> tuple[Message, ...]:
    """``ChatRequest.messages`` checked and made ``Message`` objects (a sequence given)."""
    if not messages:
        raise ValueError("'messages' must not be empty")
    return tuple([_message(m, i) for i, m in enumerate(messages)])


def _tools(tools: Any) -> tuple[Tool, ...]:
    """``ChatRequest.tools`` checked and made ``Tool`` objects (a sequence given)."""
    return tuple([_tool(t, i) for i, t in enumerate(tools)])


def _stop(stop: Any) -> Any:
    """``ChatRequest.stop`` checked, as a tuple (what it is given if an empty tuple)."""
    if type(stop) is tuple and not stop:
        return stop  # none: as it is
    if isinstance(stop, str):
        return (stop,)
    if (
        isinstance(stop, (bytes, Mapping))
        or not isinstance(stop, Sequence)
        or not all(isinstance(s, str) for s in stop)
    ):
        raise ValueError("'stop' must be a string or a list of strings")
    return tuple(stop)


def _check_temperature(t: Any) -> None:
    if t is not None and (
        isinstance(t, bool)
        or not isinstance(t, (int, float))
        or t < 0
        or (isinstance(t, float) and not math.isfinite(t))
    ):
        raise ValueError(f"'temperature' must be a non-negative number: {_short(t)}")


def _short(value: Any) -> str:
    """``repr(value)``, cut short: a client's value, quoted in an error message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _list(value: Any, name: str) -> Sequence[Any]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ValueError(f"{name!r} must be a list")
    return value


def _text(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, Mapping) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
                raise ValueError(f"{where}: only text content parts are supported, not {kind!r}")
            text = part.get("text")
            if not isinstance(text, str):
                raise ValueError(f"{where}: a text part needs a string 'text'")
            parts.append(text)
        return "".join(parts)
    raise ValueError(f"{where}: 'content' must be a string or a list of text parts")


def _message(value: Any, i: int) -> Message:
    if type(value) is not dict:  # a dict is the usual (and the quickest checked) kind
        if isinstance(value, Message):
            return value
        if not isinstance(value, Mapping):
            raise ValueError(f"messages[{i}] must be an object")
    role = value.get("role")
    if role == "developer":  # OpenAI's newer name for system
        role = "system"
    if role not in ROLES:
        raise ValueError(f"messages[{i}].role must be one of {', '.join(ROLES)}: {role!r}")
    calls: tuple[ToolCall, ...] = ()
    listed = value.get("tool_calls")
    if listed is not None:
        calls = _tool_calls(listed, f"messages[{i}]")
    call_id = value.get("tool_call_id")
    if call_id is not None and not isinstance(call_id, str):
        raise ValueError(f"messages[{i}].tool_call_id must be a string")
    content = value.get("content")
    if type(content) is not str:
        content = _text(content, f"messages[{i}]")
    return Message(role, content, calls, call_id)


def _tool_calls(value: Any, where: str) -> tuple[ToolCall, ...]:
    calls = []
    for j, call in enumerate(_list(value, f"{where}.tool_calls")):
        fn = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
            raise ValueError(f"{where}.tool_calls[{j}] needs function.name")
        args = fn.get("arguments", "{}")
        if not isinstance(args, str):
            args = json.dumps(args)
        call_id = call.get("id")
        calls.append(
            ToolCall(
                id=call_id if isinstance(call_id, str) else f"call_{j}",
                name=fn["name"],
                arguments=args,
            )
        )
    return tuple(calls)


def _tool(value: Any, i: int) -> Tool:
    if isinstance(value, Tool):
        return value
    where = f"tools[{i}]"
    if not isinstance(value, Mapping):
        raise ValueError(f"{where} must be an object")
    fn = value.get("function", value)  # OpenAI nests under "function"
    if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str) or not fn["name"]:
        raise ValueError(f"{where} needs function.name")
    params = fn.get("parameters", {"type": "object", "properties": {}})
    if not isinstance(params, Mapping):
        raise ValueError(f"{where}.function.parameters must be an object (a JSON Schema)")
    desc = fn.get("description")
    if desc is None:
        desc = ""
    elif not isinstance(desc, str):
        raise ValueError(f"{where}.function.description must be a string")
    return Tool(name=fn["name"], description=desc, parameters=dict(params))
