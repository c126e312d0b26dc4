"""Resumable streams and topics: an append-only, id-ordered event log per stream.

``MemoryStore`` (the embedded default) and ``RedisStore`` (in
``ssegate.streams.redis``, shared by many replicas) keep the same contract,
written down in ``_store.py``; a ``Hub`` fans each stream out to every local
subscriber from one reader per process; ``stream_response()`` serves a read as
an ``EventSourceResponse`` that honours ``Last-Event-ID`` (``last_event_id()``
reads it from a request); ``default_transform`` is what that response sends for
each stored item, for a ``transform`` that changes only some of them.
``hold_lease()`` keeps a producer's lease alive (a ``LeaseKeeper`` renews many
in one store call per tick).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._hub import Hub
from ._lease import Lease, LeaseKeeper, hold_lease
from ._memory import MemoryStore
from ._store import (
    CANCELLED,
    DONE,
    EPOCH_WIDTH,
    ERROR,
    FAILED,
    ID_WIDTH,
    Appender,
    End,
    EventId,
    Gap,
    StreamInfo,
    StreamItem,
    StreamStore,
    format_id,
    parse_id,
)

if TYPE_CHECKING:
    from ._sse import default_transform, last_event_id, stream_response
    from .redis import RedisStore

__all__ = [
    "CANCELLED",
    "DONE",
    "EPOCH_WIDTH",
    "ERROR",
    "FAILED",
    "ID_WIDTH",
    "Appender",
    "End",
    "EventId",
    "Gap",
    "Hub",
    "Lease",
    "LeaseKeeper",
    "MemoryStore",
    "RedisStore",
    "StreamInfo",
    "StreamItem",
    "StreamStore",
    "default_transform",
    "format_id",
    "hold_lease",
    "last_event_id",
    "parse_id",
    "stream_response",
]

# Imported on first use: RedisStore needs redis-py, the ._sse names the server.
_LAZY = {
    "RedisStore": ".redis",
    "default_transform": "._sse",
    "last_event_id": "._sse",
    "stream_response": "._sse",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ssegate.streams' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
