"""The reconnect policy: when to reconnect and what to send, decided without I/O.

A browser's EventSource reconnects after the server's ``retry`` (or a default
of a few seconds) and sends the last event id. This policy does that and more:
exponential back-off with jitter and a cap while attempts keep failing, a
``Retry-After`` hint from a 429/503 honoured once, a limit on consecutive
failures, and a reset as soon as a connection delivers an event. The sync and
async clients both drive one of these; only their sleeping differs.
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable

from ._event import Event

__all__ = ["DEFAULT_RETRY_MS", "MAX_DELAY_S", "ReconnectPolicy"]

#: Reconnection time before the server sends ``retry`` (browsers use about 3 s).
DEFAULT_RETRY_MS = 3000

#: Longest wait between attempts, however many have failed.
MAX_DELAY_S = 30.0


class ReconnectPolicy:
    """Decide, from what happened, how long to wait and what to send next.

    Feed it what the connection saw: ``event(ev)`` for each event received,
    ``server_retry(ms)`` when the decoder saw a ``retry`` field,
    ``retry_after(seconds)`` for a ``Retry-After`` header. When a connection
    ends, ``failed()`` returns the delay (seconds) before the next attempt, or
    ``None`` when ``max_retries`` consecutive attempts have failed.

    The delay for the n-th consecutive failure is
    ``min(max_delay, base * multiplier ** (n - 1))`` with up to ``jitter`` of it
    taken off at random, where ``base`` is the server's ``retry``; a connection
    that delivered at least one event resets n to 1.
    """

    __slots__ = (
        "_failures",
        "_last_id",
        "_progress",
        "_random",
        "_retry_after",
        "_retry_ms",
        "jitter",
        "max_delay",
        "max_retries",
        "multiplier",
    )

    def __init__(
        self,
        *,
        last_event_id: str | None = None,
        retry_ms: int = DEFAULT_RETRY_MS,
        max_retries: int | None = None,
        max_delay: float = MAX_DELAY_S,
        multiplier: float = 2.0,
        jitter: float = 0.2,
        random: Callable[[], float] = _random.random,
    ) -> None:
        if retry_ms < 0:
            raise ValueError("retry_ms must not be negative")
        if max_retries is not None and max_retries < 0:
            raise ValueError("max_retries must be None (no limit) or >= 0")
        if not 0.0 <= jitter <= 1.0:
            raise ValueError("jitter must be between 0 and 1")
        if multiplier < 1.0:
            raise ValueError("multiplier must be at least 1")
        if max_delay < 0:
            raise ValueError("max_delay must not be negative")
        if last_event_id is not None and any(c in last_event_id for c in "\0\r\n"):
            raise ValueError(f"last_event_id must not contain NUL, CR or LF: {last_event_id!r}")
        self._last_id = last_event_id or ""
        self._retry_ms = retry_ms
        self._retry_after: float | None = None
        self._failures = 0
        self._progress = False
        self.max_retries = max_retries
        self.max_delay = max_delay
        self.multiplier = multiplier
        self.jitter = jitter
        self._random = random

    @property
    def last_event_id(self) -> str:
        """The id to resume after (``""``: none yet)."""
        return self._last_id

    @property
    def retry_ms(self) -> int:
        """The reconnection time in force (the server's ``retry`` or the default)."""
        return self._retry_ms

    @property
    def attempt(self) -> int:
        """Consecutive failed connections so far (0 while things go well)."""
        return self._failures

    def headers(self) -> dict[str, str]:
        """Headers for the next request (HTML § 9.2.3, plus ``no-cache``)."""
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if self._last_id:
            headers["Last-Event-ID"] = self._last_id
        return headers

    def event(self, event: Event) -> None:
        """An event arrived: remember its id and that this connection works."""
        self._progress = True
        if event.id is not None:
            self._last_id = event.id
        if event.retry is not None:
            self._retry_ms = event.retry

    def server_retry(self, retry_ms: int | None) -> None:
        """The decoder's latest ``retry`` (it may come in a block with no data)."""
        if retry_ms is not None:
            self._retry_ms = retry_ms

    def set_last_event_id(self, last_event_id: str) -> None:
        """The decoder's ``last_event_id`` (it may come in a block with no data)."""
        self._last_id = last_event_id

    def retry_after(self, seconds: float | None) -> None:
        """The server asked (``Retry-After``) to wait this long before the next attempt."""
        if seconds is not None and seconds >= 0:
            self._retry_after = seconds

    def connected(self) -> None:
        """A connection was accepted (status 200, an event stream)."""
        self._progress = False

    def failed(self) -> float | None:
        """The connection ended or could not be made: seconds to wait, or None to stop."""
        if self._progress:
            self._failures = 0
            self._progress = False
        self._failures += 1
        if self.max_retries is not None and self._failures > self.max_retries:
            return None
        if self._retry_after is not None:
            # The server said when; it knows its own load better than a formula.
            delay, self._retry_after = self._retry_after, None
            return min(delay, max(self.max_delay, self._retry_ms / 1000))
        base = self._retry_ms / 1000
        # The exponent stops growing long after the cap is reached (no overflow).
        delay = min(self.max_delay, base * self.multiplier ** min(self._failures - 1, 64))
        return delay * (1.0 - self.jitter * self._random())
