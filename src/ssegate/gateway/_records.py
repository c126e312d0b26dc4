"""How a generation's unified events are kept in the stream store.

The store holds the provider-neutral events (``ssegate.llm``), one stored event
each: the event type as the SSE event name, ``to_dict()`` as compact JSON data.
Each reader renders them in the format it asks for (native, OpenAI, AI SDK),
so one generation serves every format, and a resume in any format replays the
same events.

Text deltas are nearly every record: they are written by a hand-built path
(the same bytes as the general one, a test holds them equal; 8 -> 1 µs per
record measured here) and read without the general dispatch. Each stream's
start, usage and finish records are written and read by hand too (the same
text and events as the general path, a property test holds them equal):
8.3 -> 1.4 µs to write the three, 7.5 -> 3.7 µs to read them.
"""

from __future__ import annotations

import json
import re
from json.encoder import encode_basestring as _string  # what dumps(ensure_ascii=False) uses

from ..llm import FINISH_REASONS, Error, Finish, LLMEvent, Start, TextDelta, Usage, event_from_dict
from ..protocol import Event

__all__ = ["LAST_RECORDS", "TEXT_HEAD", "TEXT_RECORD", "from_record", "to_record"]

_new = tuple.__new__
_TEXT = TextDelta.type
#: A text delta's record: its event type, and how its data starts (the text,
#: JSON-encoded, follows, then ``}``): readers may take the text's JSON as it is.
TEXT_RECORD = _TEXT
TEXT_HEAD = '{"type":"text","text":'
#: A generation's last records: its stream ends right after one (the runner ends
#: it once the provider's events are appended; ``stream_response``'s ``ends_after``).
LAST_RECORDS = frozenset({Finish.type, Error.type})
_loads = json.loads
_START, _USAGE, _FINISH = Start.type, Usage.type, Finish.type


def to_record(event: LLMEvent) -> Event:
    """The stored form of ``event`` (its id is given by the store)."""
    cls = type(event)
    data: str | None
    if cls is TextDelta:
        # JSON text has no CR or LF and the type is a constant: a valid Event as is.
        data = TEXT_HEAD + _string(event.text) + "}"  # type: ignore[union-attr]
        record: Event = _new(Event, (data, _TEXT, None, None))
        return record
    if cls is Start:
        data = _start_json(event)  # type: ignore[arg-type]
    elif cls is Usage:
        data = _usage_json(event)  # type: ignore[arg-type]
    elif cls is Finish:
        data = _finish_json(event)  # type: ignore[arg-type]
    else:
        data = None
    if data is not None:
        return _new(Event, (data, event.type, None, None))
    data = json.dumps(event.to_dict(), separators=(",", ":"), ensure_ascii=False)
    return Event(data, event=event.type)


def from_record(record: Event) -> LLMEvent:
    """The unified event a stored one holds (``ValueError`` if it holds none)."""
    kind = record.event
    if kind == _TEXT:
        return TextDelta(_loads(record.data)["text"])
    parse = _PARSERS.get(kind)
    if parse is not None:
        event = parse(record.data)
        if event is not None:
            return event
    return event_from_dict(_loads(record.data))


# The start, usage and finish records of every stream, written and read without
# the general JSON machinery: the very text ``json.dumps(event.to_dict(), ...)``
# writes and the very event ``event_from_dict(json.loads(...))`` gives back (a
# property test holds both equal), for the values these events hold (str, int,
# None, bool); anything else (None returned) takes the general path.


def _start_json(event: Start) -> str | None:
    # (object: the events do not check these types, the checks here are real)
    created: object = event.created
    id_json = _optional_string(event.id)
    if id_json is None:
        return None
    if created is None:
        created_json = "null"
    elif type(created) is int:
        created_json = str(created)  # int.__repr__, as dumps writes an int
    else:
        return None
    return (
        '{"type":"start","model":'
        + _string(event.model)  # str, as Start checks
        + ',"provider":'
        + _string(event.provider)
        + ',"id":'
        + id_json
        + ',"created":'
        + created_json
        + "}"
    )


def _usage_json(event: Usage) -> str | None:
    estimated: object = event.estimated
    if type(estimated) is not bool:
        return None
    # The counts are ints or None (Usage checks), which f-strings write as dumps does.
    return (
        f'{{"type":"usage","input_tokens":{_count(event.input_tokens)}'
        f',"output_tokens":{_count(event.output_tokens)}'
        f',"reasoning_tokens":{_count(event.reasoning_tokens)}'
        f',"cached_input_tokens":{_count(event.cached_input_tokens)}'
        f',"estimated":{"true" if estimated else "false"}}}'
    )


def _optional_string(value: object) -> str | None:
    """``value``'s JSON if it is ``None`` or a str; ``None`` (the general path) else."""
    if value is None:
        return "null"
    if type(value) is str:
        return _string(value)
    return None


def _count(value: int | None) -> str:
    return "null" if value is None else str(value)


def _finish_json(event: Finish) -> str | None:
    raw_json = _optional_string(event.raw_reason)
    if raw_json is None:
        return None
    reason: object = event.reason
    if type(reason) is not str:
        return None
    return '{"type":"finish","reason":"' + reason + '","raw_reason":' + raw_json + "}"


# A JSON string without escapes (its text is its value), a JSON number that
# is a non-negative or any int, as the writers above write them.
_STR = r'"([^"\\\x00-\x1f]*)"'
_OPT_STR = r'(?:null|"([^"\\\x00-\x1f]*)")'
_COUNT = r"(?:null|(0|[1-9][0-9]*))"
_START_RE = re.compile(
    r'\{"type":"start","model":'
    + _STR
    + ',"provider":'
    + _STR
    + ',"id":'
    + _OPT_STR
    + r',"created":(?:null|(-?(?:0|[1-9][0-9]*)))\}'
).fullmatch
_USAGE_RE = re.compile(
    r'\{"type":"usage","input_tokens":'
    + _COUNT
    + ',"output_tokens":'
    + _COUNT
    + ',"reasoning_tokens":'
    + _COUNT
    + ',"cached_input_tokens":'
    + _COUNT
    + r',"estimated":(true|false)\}'
).fullmatch
_FINISH_RE = re.compile(
    r'\{"type":"finish","reason":"('
    + "|".join(FINISH_REASONS)
    + ')","raw_reason":'
    + _OPT_STR
    + r"\}"
).fullmatch


def _start(data: str) -> Start | None:
    found = _START_RE(data)
    if found is None:
        return None
    model, provider, id, created = found.groups()
    return Start(model, provider, id, None if created is None else int(created))


def _usage(data: str) -> Usage | None:
    found = _USAGE_RE(data)
    if found is None:
        return None
    a, b, c, d, estimated = found.groups()
    return Usage(
        None if a is None else int(a),
        None if b is None else int(b),
        None if c is None else int(c),
        None if d is None else int(d),
        estimated == "true",
    )


def _finish(data: str) -> Finish | None:
    found = _FINISH_RE(data)
    if found is None:
        return None
    reason, raw = found.groups()
    return Finish(reason, raw)  # type: ignore[arg-type]  # one of FINISH_REASONS


_PARSERS = {_START: _start, _USAGE: _usage, _FINISH: _finish}
