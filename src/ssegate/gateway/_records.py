"""How a generation's unified events are kept in the stream store.

The store holds the provider-neutral events (``ssegate.llm``), one stored event
each: the event type as the SSE event name, ``to_dict()`` as compact JSON data.
Each reader renders them in the format it asks for (native, OpenAI, AI SDK),
so one generation serves every format, and a resume in any format replays the
same events.
"""

from __future__ import annotations

import json

from ..llm import LLMEvent, event_from_dict
from ..protocol import Event

__all__ = ["from_record", "to_record"]


def to_record(event: LLMEvent) -> Event:
    """The stored form of ``event`` (its id is given by the store)."""
    return Event(json.dumps(event.to_dict(), separators=(",", ":")), event=event.type)


def from_record(record: Event) -> LLMEvent:
    """The unified event a stored one holds (``ValueError`` if it holds none)."""
    return event_from_dict(json.loads(record.data))
