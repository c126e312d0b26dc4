"""Serving event streams: ``EventSourceResponse`` for Starlette/FastAPI (plain
ASGI underneath) and a WSGI helper for Django and Flask.

Depends on ``protocol`` and Starlette only; importing it has no side effects.
"""

from ._gc import freeze_startup_objects, pace_collections
from ._items import Item, encode_item
from ._options import DEFAULT_PING_S, CloseReason, default_error_event
from ._response import SSE_HEADERS, EventSourceResponse
from ._shutdown import GracefulShutdown, Shutdown
from ._wsgi import WSGIEventStream, wsgi_stream

__all__ = [
    "DEFAULT_PING_S",
    "SSE_HEADERS",
    "CloseReason",
    "EventSourceResponse",
    "GracefulShutdown",
    "Item",
    "Shutdown",
    "WSGIEventStream",
    "default_error_event",
    "encode_item",
    "freeze_startup_objects",
    "pace_collections",
    "wsgi_stream",
]
