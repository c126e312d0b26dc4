"""The event-stream protocol, sans-IO: events, encoding, decoding, reconnecting.

Standard library only (a test enforces it): no sockets, clocks or threads.
"""

from ._decoder import MAX_EVENT_SIZE, MAX_LINE_SIZE, Decoder
from ._encoder import encode, encode_comment, encode_data, encode_retry
from ._event import Event
from ._ndjson import MAX_NDJSON_LINE, NDJSONDecoder
from ._reconnect import DEFAULT_RETRY_MS, MAX_DELAY_S, ReconnectPolicy

__all__ = [
    "DEFAULT_RETRY_MS",
    "MAX_DELAY_S",
    "MAX_EVENT_SIZE",
    "MAX_LINE_SIZE",
    "MAX_NDJSON_LINE",
    "Decoder",
    "Event",
    "NDJSONDecoder",
    "ReconnectPolicy",
    "encode",
    "encode_comment",
    "encode_data",
    "encode_retry",
]
