"""LLM streaming: one event model for every provider, adapters, output formats.

- The unified events (``Start``, ``TextDelta``, ``ReasoningDelta``, ``ReasoningEnd``,
  ``ToolCallStart``/``ToolCallDelta``/``ToolCallEnd``, ``Usage``, ``Finish``,
  ``Error``) and ``ChatRequest`` live here.
- ``ssegate.llm.providers``: ``create_provider(name, ...)`` and the adapters.
- ``ssegate.llm.formats``: native, OpenAI chunk and AI SDK renderings of the events.
"""

from ._events import (
    FINISH_REASONS,
    Error,
    Finish,
    FinishReason,
    LLMEvent,
    ReasoningDelta,
    ReasoningEnd,
    Start,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    Usage,
    event_from_dict,
)
from ._request import ChatRequest, Message, Tool, ToolCall

__all__ = [
    "FINISH_REASONS",
    "ChatRequest",
    "Error",
    "Finish",
    "FinishReason",
    "LLMEvent",
    "Message",
    "ReasoningDelta",
    "ReasoningEnd",
    "Start",
    "TextDelta",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "ToolCallEnd",
    "ToolCallStart",
    "Usage",
    "event_from_dict",
]
