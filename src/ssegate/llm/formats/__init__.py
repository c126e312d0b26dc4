"""Output formats: unified LLM events in, server-sent ``Event``s out (sans-IO).

Each formatter is a small stateful object for one generation::

    fmt = create_formatter("openai", include_usage=True)
    for llm_event in generation:
        for event in fmt.format(llm_event):   # ssegate.Event values
            ...                               # put into an EventSourceResponse

``format`` returns the events one unified event becomes (often one, sometimes
none or several); the terminal ``Finish``/``Error`` also yields the format's
closing frames (``data: [DONE]``). ``headers`` are the extra response headers the
format asks for (the AI SDK's ``x-vercel-ai-ui-message-stream: v1``).

- ``native``: ssegate's own named events (``token``, ``reasoning``, ``tool_call``,
  ``usage``, ``done``, ``error``), for ``EventSource`` and the chat page.
- ``openai``: ``chat.completion.chunk`` data-only events the ``openai`` SDK reads.
- ``aisdk``: the Vercel AI SDK UI message stream, v1.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from typing import Any, Protocol

from ...protocol import Event, encode
from .._events import LLMEvent
from .aisdk import AISDKFormatter
from .native import NativeFormatter
from .openai import OpenAIFormatter, openai_usage

__all__ = [
    "FORMATS",
    "AISDKFormatter",
    "Formatter",
    "NativeFormatter",
    "OpenAIFormatter",
    "create_formatter",
    "encode_all",
    "format_stream",
    "openai_usage",
]


class Formatter(Protocol):
    """What every output format offers.

    ``text_frame()``: how ``format(TextDelta(text))`` would render now, when it
    is one event that differs from the next text delta's in the text alone:
    its event type, and the data before and after the text JSON-encoded (as
    ``json.dumps(text, ensure_ascii=False)``); else ``None``, then call
    ``format``. Valid until the next ``format``. A relay holding the encoded
    text (the gateway's readers) renders a token without decoding it,
    dispatching or encoding it again.
    """

    headers: Mapping[str, str]

    def format(self, event: LLMEvent) -> list[Event]: ...

    def text_frame(self) -> tuple[str, str, str] | None: ...


_FORMATTERS: Mapping[str, type[Any]] = {
    "native": NativeFormatter,
    "openai": OpenAIFormatter,
    "aisdk": AISDKFormatter,
}

#: The format names ``create_formatter`` knows.
FORMATS: tuple[str, ...] = tuple(_FORMATTERS)


def create_formatter(name: str, /, **options: Any) -> Formatter:
    """The formatter called ``name`` (``native``, ``openai`` or ``aisdk``)."""
    cls = _FORMATTERS.get(name)
    if cls is None:
        raise ValueError(f"unknown format {name!r}; choose one of {', '.join(FORMATS)}")
    formatter: Formatter = cls(**options)
    return formatter


async def format_stream(
    formatter: Formatter, events: AsyncIterable[LLMEvent]
) -> AsyncIterator[Event]:
    """The formatted events of a whole generation."""
    fmt = formatter.format
    async for event in events:
        for out in fmt(event):
            yield out


def encode_all(events: Iterable[Event]) -> bytes:
    """Event-stream bytes of ``events`` (for tests and for writing without a server)."""
    return b"".join(encode(e) for e in events)
