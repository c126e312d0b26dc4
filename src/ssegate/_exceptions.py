"""The one exception tree of ssegate.

Every error ssegate raises on purpose is one of these; errors of the libraries
underneath (httpx, redis) are translated at the edge with ``raise ... from exc``
and never leak as themselves. Mistakes in how ssegate is called raise the
built-in ``TypeError``, ``ValueError`` or ``RuntimeError`` instead, with a
message that says what to do.

    SSEGateError
    ├── ProtocolError            the peer sent bytes that break the event-stream
    │                            or NDJSON rules, or exceed a size limit
    ├── TransportError           the connection could not be made, or broke
    │   └── ReadTimeout          no byte (not even a keep-alive) for too long
    ├── ResponseError            the server answered, but not with an event
    │                            stream: carries status, headers and body
    ├── NotResumableError        a POST stream dropped and could only go on by
    │                            re-sending the request (which may cost money)
    ├── RetriesExhausted         reconnecting gave up after max_retries
    ├── StreamError              resumable streams and topics
    │   ├── StreamNotFound
    │   ├── StreamEnded          appending to a stream that has ended
    │   ├── UnknownEventId       an id that does not belong to the stream
    │   └── StoreUnavailable     the backend (Redis) cannot be reached
    └── ProviderError            an LLM provider refused before the first byte:
        ├── AuthenticationError  401 / 403
        ├── RateLimitError       429
        ├── BadRequestError      other 4xx
        └── UpstreamUnavailable  5xx, or the provider could not be reached
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "AuthenticationError",
    "BadRequestError",
    "NotResumableError",
    "ProtocolError",
    "ProviderError",
    "RateLimitError",
    "ReadTimeout",
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
]


class SSEGateError(Exception):
    """Base class of every error ssegate raises on purpose."""


class ProtocolError(SSEGateError):
    """The bytes received break the event-stream (or NDJSON) rules or a size limit.

    ``hint`` says, where it can, what the sender should do differently.
    ``events``: what the decoder's ``feed``/``close`` completed before the bad
    input in the same call (events, or NDJSON values), so none is lost with it.
    """

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint
        self.events: list[Any] = []


class TransportError(SSEGateError):
    """The connection could not be made, or broke while reading."""


class ReadTimeout(TransportError):
    """No byte arrived, not even a keep-alive comment, within the read timeout."""


class ResponseError(SSEGateError):
    """The server answered, but not with an event stream.

    A JSON 401 reads as a 401: ``status``, ``headers`` and the first bytes of
    ``body`` are kept, so the caller sees what the server said.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.headers: dict[str, str] = dict(headers or {})
        self.body = body

    @property
    def text(self) -> str:
        """The (possibly truncated) body decoded as UTF-8, bad bytes replaced."""
        return self.body.decode("utf-8", "replace")


class NotResumableError(SSEGateError):
    """A non-GET stream dropped and the server named no stream to resume.

    Going on would mean re-sending the request, which for an LLM repeats a paid
    generation; pass ``resend=True`` to the client to allow it.
    """


class RetriesExhausted(SSEGateError):
    """Reconnecting gave up after ``max_retries`` attempts; ``__cause__`` is the last error."""

    def __init__(self, message: str, *, attempts: int) -> None:
        super().__init__(message)
        self.attempts = attempts


class StreamError(SSEGateError):
    """Base class for errors of resumable streams and topics."""


class StreamNotFound(StreamError):
    """No stream of that name exists (or it has expired)."""


class StreamEnded(StreamError):
    """The stream has ended; nothing more can be appended."""


class UnknownEventId(StreamError):
    """The event id given does not belong to the stream."""


class StoreUnavailable(StreamError):
    """The stream store's backend (e.g. Redis) cannot be reached right now."""


class ProviderError(SSEGateError):
    """An LLM provider failed before the first byte of its answer.

    ``retryable`` says whether the same request may succeed later, and
    ``retry_after`` (seconds) what the provider asked for, when it did.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        provider: str | None = None,
        code: str | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
        body: bytes = b"",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.provider = provider
        self.code = code
        self.retryable = retryable
        self.retry_after = retry_after
        self.body = body


class AuthenticationError(ProviderError):
    """The provider rejected the credentials (401 or 403)."""


class RateLimitError(ProviderError):
    """The provider is rate limiting this key (429)."""


class BadRequestError(ProviderError):
    """The provider rejected the request itself (a 4xx other than 401/403/429)."""


class UpstreamUnavailable(ProviderError):
    """The provider failed (5xx) or could not be reached."""
