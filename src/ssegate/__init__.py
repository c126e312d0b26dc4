"""ssegate: Server-Sent Events done right, for streaming LLM answers and more.

The protocol names and the exceptions are imported eagerly; the client and the
server response are imported on first use, so ``import ssegate`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._exceptions import (
    AuthenticationError,
    BadRequestError,
    NotResumableError,
    ProtocolError,
    ProviderError,
    RateLimitError,
    ReadTimeout,
    ResponseError,
    RetriesExhausted,
    SSEGateError,
    StoreUnavailable,
    StreamEnded,
    StreamError,
    StreamNotFound,
    TransportError,
    UnknownEventId,
    UpstreamUnavailable,
)
from .protocol import (
    Decoder,
    Event,
    NDJSONDecoder,
    ReconnectPolicy,
    encode,
    encode_comment,
    encode_retry,
)

if TYPE_CHECKING:  # the lazy names, for type checkers and IDEs
    from .client import AsyncEventSource, EventSource
    from .server import EventSourceResponse

__version__ = "0.1.0"

# name -> module that defines it, imported when first asked for
_LAZY: dict[str, str] = {
    "AsyncEventSource": ".client",
    "EventSource": ".client",
    "EventSourceResponse": ".server",
}

__all__ = [
    "AsyncEventSource",
    "AuthenticationError",
    "BadRequestError",
    "Decoder",
    "Event",
    "EventSource",
    "EventSourceResponse",
    "NDJSONDecoder",
    "NotResumableError",
    "ProtocolError",
    "ProviderError",
    "RateLimitError",
    "ReadTimeout",
    "ReconnectPolicy",
    "ResponseError",
    "RetriesExhausted",
    "SSEGateError",
    "StoreUnavailable",
    "StreamEnded",
    "StreamError",
    "StreamNotFound",
    "TransportError",
    "UnknownEventId",
    "UpstreamUnavailable",
    "__version__",
    "encode",
    "encode_comment",
    "encode_retry",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ssegate' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
