"""The event: an immutable value, validated when it is made.

An ``Event`` is stored as a tuple ``(data, event, id, retry)`` because the
decoder makes one per message at hundreds of thousands per second and a frozen
dataclass's ``__init__`` alone costs as much as the parsing. The decoder builds
them with ``tuple.__new__`` (already valid by construction); everyone else goes
through ``Event(...)``, which validates.
"""

from __future__ import annotations

import json
from operator import itemgetter
from typing import Any

__all__ = ["Event"]

_new = tuple.__new__


class Event(tuple[str, str, str | None, int | None]):
    """One server-sent event.

    ``data`` is the payload (multi-line text is fine), ``event`` the type
    (``"message"`` by default), ``id`` the event id and ``retry`` the
    reconnection time in milliseconds the server asks for.

    On decode, ``id`` is the last event id in force when the event was
    dispatched (the spec's ``lastEventId``: it persists across events, and is
    ``""`` before any ``id`` field), and ``retry`` is set only when the event's
    own block carried a valid ``retry`` field.

    Values that would inject fields into the stream are refused with
    ``ValueError``: CR or LF in ``event`` or ``id``, NUL in ``id``, a negative
    or non-integer ``retry``.
    """

    __slots__ = ()

    def __new__(
        cls,
        data: str = "",
        event: str = "message",
        id: str | None = None,
        retry: int | None = None,
    ) -> Event:
        if type(data) is not str:
            if not isinstance(data, str):
                raise TypeError(
                    f"Event data must be str, not {type(data).__name__}; "
                    "serialise it first (e.g. json.dumps)"
                )
            data = str(data)
        if type(event) is not str:
            raise TypeError(f"Event type must be str, not {type(event).__name__}")
        if not event:
            raise ValueError("Event type must not be empty; 'message' is the default type")
        if "\n" in event or "\r" in event:
            raise ValueError(f"Event type must not contain CR or LF: {event!r}")
        if id is not None:
            if type(id) is not str:
                raise TypeError(f"Event id must be str or None, not {type(id).__name__}")
            if "\n" in id or "\r" in id or "\0" in id:
                raise ValueError(f"Event id must not contain CR, LF or NUL: {id!r}")
        if retry is not None and (type(retry) is not int or retry < 0):
            raise ValueError(f"Event retry must be a non-negative int (milliseconds): {retry!r}")
        return _new(cls, (data, event, id, retry))

    data: str = property(itemgetter(0), doc="The payload.")  # type: ignore[assignment]
    event: str = property(itemgetter(1), doc="The event type.")  # type: ignore[assignment]
    id: str | None = property(itemgetter(2), doc="The event id.")  # type: ignore[assignment]
    retry: int | None = property(  # type: ignore[assignment]
        itemgetter(3), doc="The reconnection time (ms) the server asked for."
    )

    def __repr__(self) -> str:
        data, event, id, retry = self
        return f"Event(data={data!r}, event={event!r}, id={id!r}, retry={retry!r})"

    # An Event equals only another Event, never the bare tuple it is stored as
    # (returning NotImplemented would let tuple's own comparison answer).
    def __eq__(self, other: object) -> bool:
        if isinstance(other, Event):
            return tuple.__eq__(self, other)
        return False if isinstance(other, tuple) else NotImplemented

    def __ne__(self, other: object) -> bool:
        if isinstance(other, Event):
            return tuple.__ne__(self, other)
        return True if isinstance(other, tuple) else NotImplemented

    __hash__ = tuple.__hash__

    def __getnewargs__(self) -> tuple[str, str, str | None, int | None]:
        return tuple(self)  # type: ignore[return-value]

    def replace(self, **changes: Any) -> Event:
        """A copy with some fields changed (validated like a new event)."""
        data, event, id, retry = self
        fields: dict[str, Any] = {"data": data, "event": event, "id": id, "retry": retry}
        unknown = changes.keys() - fields.keys()
        if unknown:
            raise TypeError(f"Event has no field(s) {sorted(unknown)}")
        fields.update(changes)
        return Event(**fields)

    def json(self, **kwargs: Any) -> Any:
        """``data`` parsed as JSON (``json.JSONDecodeError`` if it is not JSON)."""
        return json.loads(self[0], **kwargs)

    def encode(self) -> bytes:
        """This event as event-stream bytes (see ``ssegate.encode``)."""
        from ._encoder import encode

        return encode(self)
