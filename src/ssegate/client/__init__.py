"""The reconnecting event-stream client: ``EventSource`` and ``AsyncEventSource``, on httpx.

Both are thin I/O loops over one base (``_base.py``) that holds every decision,
and over the protocol core's ``Decoder`` and ``ReconnectPolicy``.
"""

from ._async import AsyncEventSource
from ._base import (
    DEFAULT_READ_TIMEOUT,
    DEFAULT_RETRY_STATUSES,
    EVENTS_REL,
    STREAM_ID_HEADER,
    is_terminal,
)
from ._sync import EventSource

__all__ = [
    "DEFAULT_READ_TIMEOUT",
    "DEFAULT_RETRY_STATUSES",
    "EVENTS_REL",
    "STREAM_ID_HEADER",
    "AsyncEventSource",
    "EventSource",
    "is_terminal",
]
