"""The unified event model: what every provider's stream turns into.

A generation is a sequence of these events::

    Start  (TextDelta | ReasoningDelta | ReasoningEnd
            | ToolCallStart ToolCallDelta* ToolCallEnd | Usage)*  (Finish | Error)

- ``Start`` comes first, exactly once, as soon as the provider accepted the request.
- Exactly one ``Finish`` or ``Error`` ends every generation, and nothing follows it.
- ``Usage`` is a snapshot of running totals, not an increment: the last one wins.
- A tool call is ``ToolCallStart``, its argument fragments as ``ToolCallDelta``
  (providers that send a call whole give exactly one), then ``ToolCallEnd`` with
  the complete argument JSON text. Calls are numbered by ``index`` in the order
  they began; each has an ``id`` (generated when the provider gives none).
- ``ReasoningEnd`` closes a run of reasoning and keeps the provider's signature
  (Anthropic ``signature_delta``, redacted thinking) so it can be sent back.

Events are frozen value objects compared by value. Each has a ``type`` string and
``to_dict()``; ``event_from_dict()`` is its inverse, so events survive a trip
through JSON (a stream store, a queue).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeAlias

__all__ = [
    "FINISH_REASONS",
    "Error",
    "Finish",
    "FinishReason",
    "LLMEvent",
    "ReasoningDelta",
    "ReasoningEnd",
    "Start",
    "TextDelta",
    "ToolCallDelta",
    "ToolCallEnd",
    "ToolCallStart",
    "Usage",
    "event_from_dict",
]

#: Normalised finish reasons (providers.md § 8.2). An upstream failure is not a
#: finish reason here: it ends the generation with an ``Error`` event instead.
FinishReason: TypeAlias = Literal["stop", "length", "tool_calls", "content_filter", "other"]
FINISH_REASONS: tuple[FinishReason, ...] = (
    "stop",
    "length",
    "tool_calls",
    "content_filter",
    "other",
)


def _check_str(cls: str, name: str, value: object) -> None:
    if type(value) is not str:
        raise TypeError(f"{cls}.{name} must be str, not {type(value).__name__}")


def _check_opt_int(cls: str, name: str, value: object) -> None:
    if value is not None and (type(value) is not int or value < 0):
        raise ValueError(f"{cls}.{name} must be a non-negative int or None: {value!r}")


class _Base:
    """Shared serialisation; each subclass is a frozen slotted dataclass."""

    __slots__ = ()
    type: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        """``{"type": ..., **fields}``: plain JSON-ready values."""
        out: dict[str, Any] = {"type": self.type}
        for name in self.__dataclass_fields__:  # type: ignore[attr-defined]
            out[name] = getattr(self, name)
        return out


@dataclass(frozen=True, slots=True)
class Start(_Base):
    """The provider accepted the request and began answering."""

    type: ClassVar[str] = "start"
    model: str = ""
    provider: str = ""
    id: str | None = None  # the provider's response id (``chatcmpl-…``, ``msg_…``)
    created: int | None = None  # unix seconds, when the provider says

    def __post_init__(self) -> None:
        _check_str("Start", "model", self.model)
        _check_str("Start", "provider", self.provider)


@dataclass(frozen=True, slots=True)
class TextDelta(_Base):
    """The next piece of the answer's text."""

    type: ClassVar[str] = "text"
    text: str

    def __init__(self, text: str) -> None:
        # Not the dataclass's: every token of every stream makes one, and its
        # object.__setattr__ past the frozen guard, then __post_init__, cost
        # 1.3 µs a token on the benchmark machine; the slot set directly, 0.15.
        if type(text) is not str:
            _check_str("TextDelta", "text", text)
        _SET_TEXTDELTA(self, text)


@dataclass(frozen=True, slots=True)
class ReasoningDelta(_Base):
    """The next piece of the model's reasoning ("thinking") text."""

    type: ClassVar[str] = "reasoning"
    text: str

    def __init__(self, text: str) -> None:
        # Not the dataclass's: every token of every stream makes one, and its
        # object.__setattr__ past the frozen guard, then __post_init__, cost
        # 1.3 µs a token on the benchmark machine; the slot set directly, 0.15.
        if type(text) is not str:
            _check_str("ReasoningDelta", "text", text)
        _SET_REASONINGDELTA(self, text)


@dataclass(frozen=True, slots=True)
class ReasoningEnd(_Base):
    """A run of reasoning ended; ``signature`` is the provider's proof to send back.

    ``redacted`` holds Anthropic's encrypted ``redacted_thinking`` data, when that
    is what the block was.
    """

    type: ClassVar[str] = "reasoning_end"
    signature: str | None = None
    redacted: str | None = None


@dataclass(frozen=True, slots=True)
class ToolCallStart(_Base):
    """The model began calling tool ``name``; ``index`` numbers the calls from 0."""

    type: ClassVar[str] = "tool_call_start"
    index: int
    id: str
    name: str

    def __post_init__(self) -> None:
        _check_str("ToolCallStart", "id", self.id)
        _check_str("ToolCallStart", "name", self.name)


@dataclass(frozen=True, slots=True)
class ToolCallDelta(_Base):
    """A fragment of a tool call's argument JSON text (not valid JSON on its own)."""

    type: ClassVar[str] = "tool_call_delta"
    index: int
    id: str
    arguments: str

    def __post_init__(self) -> None:
        _check_str("ToolCallDelta", "arguments", self.arguments)


@dataclass(frozen=True, slots=True)
class ToolCallEnd(_Base):
    """A tool call is complete: ``arguments`` is the whole argument JSON text.

    Use ``json.loads(arguments)``; it is ``"{}"`` when the model sent nothing.
    """

    type: ClassVar[str] = "tool_call_end"
    index: int
    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Usage(_Base):
    """Token counts so far (a snapshot: the last ``Usage`` of a stream wins).

    ``None`` means unknown, never zero; ``estimated`` marks counts that ssegate
    estimated because the provider sent none.
    """

    type: ClassVar[str] = "usage"
    input_tokens: int | None = None
    output_tokens: int | None = None
    reasoning_tokens: int | None = None
    cached_input_tokens: int | None = None
    estimated: bool = False

    def __post_init__(self) -> None:
        for name in ("input_tokens", "output_tokens", "reasoning_tokens", "cached_input_tokens"):
            _check_opt_int("Usage", name, getattr(self, name))

    @property
    def total_tokens(self) -> int | None:
        """Input plus output, when both are known."""
        if self.input_tokens is None or self.output_tokens is None:
            return None
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True, slots=True)
class Finish(_Base):
    """The generation ended normally. ``raw_reason`` is the provider's own word."""

    type: ClassVar[str] = "finish"
    reason: FinishReason = "stop"
    raw_reason: str | None = None

    def __post_init__(self) -> None:
        if self.reason not in FINISH_REASONS:
            raise ValueError(
                f"Finish.reason must be one of {', '.join(FINISH_REASONS)}: {self.reason!r}"
            )


@dataclass(frozen=True, slots=True)
class Error(_Base):
    """The generation failed after it started (an event, not an exception).

    ``code`` is a short machine-readable word (``overloaded``, ``truncated``,
    ``upstream_disconnected``…), ``retryable`` says whether asking again may work,
    ``status`` is the HTTP status the provider's error stood for, when known.
    """

    type: ClassVar[str] = "error"
    code: str
    message: str
    retryable: bool = False
    status: int | None = None

    def __post_init__(self) -> None:
        _check_str("Error", "code", self.code)
        _check_str("Error", "message", self.message)


#: The slots' own setters, which a frozen dataclass's ``__setattr__`` does not guard.
_SET_TEXTDELTA = TextDelta.__dict__["text"].__set__
_SET_REASONINGDELTA = ReasoningDelta.__dict__["text"].__set__


LLMEvent: TypeAlias = (
    Start
    | TextDelta
    | ReasoningDelta
    | ReasoningEnd
    | ToolCallStart
    | ToolCallDelta
    | ToolCallEnd
    | Usage
    | Finish
    | Error
)

_BY_TYPE: dict[str, type[Any]] = {
    cls.type: cls
    for cls in (
        Start,
        TextDelta,
        ReasoningDelta,
        ReasoningEnd,
        ToolCallStart,
        ToolCallDelta,
        ToolCallEnd,
        Usage,
        Finish,
        Error,
    )
}


def event_from_dict(value: dict[str, Any]) -> LLMEvent:
    """The inverse of ``to_dict()``; ``ValueError`` on an unknown type or fields."""
    if not isinstance(value, dict):
        raise TypeError(f"event_from_dict() takes a dict, not {type(value).__name__}")
    fields = dict(value)
    kind = fields.pop("type", None)
    cls = _BY_TYPE.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(f"unknown LLM event type {kind!r}; expected one of {sorted(_BY_TYPE)}")
    try:
        event: LLMEvent = cls(**fields)
    except TypeError as exc:
        raise ValueError(f"bad fields for a {kind!r} event: {exc}") from exc
    return event
