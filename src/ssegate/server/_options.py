"""The settings of an event stream, why it closed, and the defaults behind both."""

from __future__ import annotations

import enum
import math
from collections.abc import Callable

from ssegate.protocol import Event, encode_comment, encode_retry

from ._items import encode_item
from ._shutdown import Shutdown

__all__ = [
    "CLOSE_TIMEOUT_S",
    "DEFAULT_OPTIONS",
    "DEFAULT_PING_S",
    "MAX_BATCH_SIZE",
    "PING",
    "SHUTDOWN_SEND_S",
    "CloseReason",
    "ErrorEvent",
    "OnClose",
    "StreamOptions",
    "check_content",
    "default_error_event",
]

# The keep-alive default of sse-starlette, FastAPI and aiohttp-sse: well inside
# the 60 s idle timeout of nginx and AWS ALB (BerriAI/litellm#34819).
DEFAULT_PING_S = 15.0

# uvicorn stops the writer above 64 KiB buffered (its flow-control high-water
# mark); a larger batch would only wait in the transport buffer.
MAX_BATCH_SIZE = 64 * 1024

# How long a closing producer may take in its finally/aclose before we move on.
CLOSE_TIMEOUT_S = 5.0

# After the shutdown grace period, how long the farewell may take to leave before
# the stream is cut off anyway: a client that stopped reading must not keep the
# server from exiting (uvicorn waits for every open connection).
SHUTDOWN_SEND_S = 2.0

# A comment, never an event (so clients see no empty messages), and without a
# timestamp, so it stays byte-identical and cheap.
PING = encode_comment("ping")


class CloseReason(enum.StrEnum):
    """Why an event stream ended, as told to ``on_close``."""

    COMPLETED = "completed"  # the producer finished
    CLIENT_GONE = "client_gone"  # http.disconnect, or a send failed
    SEND_TIMEOUT = "send_timeout"  # the client accepted nothing for send_timeout seconds
    SHUTDOWN = "shutdown"  # the server is going down (Shutdown was set)
    ERROR = "error"  # the producer raised; an error event was sent
    CANCELLED = "cancelled"  # the request task was cancelled from outside


def default_error_event(exc: Exception) -> Event:
    """The ``error`` event sent when the producer fails: no details reach the client."""
    return _ERROR_EVENT


_ERROR_EVENT = Event(
    '{"code":"internal_error","message":"The event stream failed.","retryable":false}',
    event="error",
)

ErrorEvent = Callable[[Exception], object]
OnClose = Callable[[CloseReason], object]


class StreamOptions:
    """Validated settings of an event stream (shared by every request it serves)."""

    __slots__ = (
        "error_event",
        "farewell",
        "on_close",
        "ping",
        "retry",
        "send_timeout",
        "shutdown",
        "shutdown_grace",
    )

    def __init__(
        self,
        *,
        ping: float | None = DEFAULT_PING_S,
        send_timeout: float | None = None,
        retry: int | None = None,
        on_close: OnClose | None = None,
        error_event: ErrorEvent | None = default_error_event,
        farewell: object = None,
        shutdown: Shutdown | None = None,
        shutdown_grace: float = 0.0,
    ) -> None:
        if ping is not None and not (isinstance(ping, int | float) and 0 < ping < math.inf):
            raise ValueError(f"ping must be a positive number of seconds or None: {ping!r}")
        if send_timeout is not None and not (
            isinstance(send_timeout, int | float) and send_timeout > 0
        ):
            raise ValueError(
                f"send_timeout must be a positive number of seconds or None: {send_timeout!r}"
            )
        if not (isinstance(shutdown_grace, int | float) and 0 <= shutdown_grace < math.inf):
            raise ValueError(f"shutdown_grace must be >= 0 seconds: {shutdown_grace!r}")
        if retry is not None:
            encode_retry(retry)  # validates
        if farewell is not None:
            encode_item(farewell)  # validates now, not at shutdown time
        if shutdown is not None and not isinstance(shutdown, Shutdown):
            raise TypeError(f"shutdown must be a Shutdown, not {type(shutdown).__name__}")
        self.ping = None if ping is None else float(ping)
        self.send_timeout = None if send_timeout is None else float(send_timeout)
        self.retry = retry
        self.on_close = on_close
        self.error_event = error_event
        self.farewell = farewell
        self.shutdown = shutdown
        self.shutdown_grace = float(shutdown_grace)


def check_content(content: object) -> None:
    """Refuse, early, content that is not an iterable of items."""
    if isinstance(content, str | bytes | bytearray | dict | Event):
        raise TypeError(
            f"content must be an iterable or async iterable of items, not a single "
            f"{type(content).__name__}; wrap it in a list or a generator"
        )
    if not (hasattr(content, "__aiter__") or hasattr(content, "__iter__")):
        hint = "; call the generator function to get its generator" if callable(content) else ""
        raise TypeError(
            f"content must be an iterable or async iterable of items, "
            f"not {type(content).__name__}{hint}"
        )


# What EventSourceResponse uses when no option is given (the common case), so
# each response does not validate and allocate its own.
DEFAULT_OPTIONS = StreamOptions()
