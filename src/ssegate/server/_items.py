"""What a producer may yield, and how each kind becomes event-stream bytes.

One rule for every server shell (ASGI and WSGI): an ``Event`` is encoded, a
``str`` is the data of a ``message`` event, a ``dict`` is JSON data (compact
separators, non-ASCII kept as is) and ``bytes`` are already encoded and pass
through untouched. Anything else is a mistake in the producer and raises
``TypeError`` naming the type.
"""

from __future__ import annotations

import json
from typing import Any, TypeAlias

from ssegate.protocol import Event, encode, encode_data

__all__ = ["Item", "encode_item"]

Item: TypeAlias = Event | str | dict[str, Any] | bytes

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def encode_item(item: object) -> bytes:
    """Encode one producer item (see the module docstring for the rules).

    JSON never contains a raw CR or LF (``json`` escapes them), so a ``dict``
    always becomes a single ``data:`` line.
    """
    kind = type(item)
    if kind is Event:
        return encode(item)  # type: ignore[arg-type]
    if kind is str:
        return encode_data(item)  # type: ignore[arg-type]
    if kind is bytes:
        return item  # type: ignore[return-value]
    if kind is dict:
        return encode_data(_dumps(item))
    # Subclasses take the slower road through isinstance.
    if isinstance(item, Event):
        return encode(item)
    if isinstance(item, str):
        return encode_data(str(item))
    if isinstance(item, bytes | bytearray | memoryview):
        return bytes(item)
    if isinstance(item, dict):
        return encode_data(_dumps(item))
    raise TypeError(
        f"an event stream item must be an Event, str, dict (JSON data) or bytes "
        f"(pre-encoded), not {kind.__name__}"
    )
