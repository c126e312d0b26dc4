"""The gateway's Prometheus metrics, in a registry of its own (no global state).

Two gateways in one process (tests, an app embedding two) keep apart figures;
``GET /metrics`` exports this registry only. ``live`` keeps the last minute's
figures for the dashboard (``_stats``).

No label value is chosen freely by someone outside: models are named as the
settings name them (``Route.label``), and the error codes an upstream sends are
kept to ``MAX_ERROR_CODES`` distinct short names (others count as ``other``),
so neither a client nor an upstream decides how many series there are.
"""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from ._stats import LiveStats

__all__ = ["MAX_ERROR_CODES", "Metrics"]

#: Distinct upstream error codes given a series of their own.
MAX_ERROR_CODES = 64
_CODE = re.compile(r"[A-Za-z0-9_.-]{1,64}\Z")

# Time to first token spans a cached echo (sub-ms) to a reasoning model (a minute).
_TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# Between tokens: 50 tokens/s is 20 ms; a stall of seconds is what to see.
_ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class Metrics:
    """Every figure the gateway exports."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.live = LiveStats()
        self.active_streams = Gauge(
            "ssegate_active_streams", "Generations running in this process", registry=registry
        )
        self.subscribers = Gauge(
            "ssegate_subscribers", "Readers of streams and topics connected now", registry=registry
        )
        self.ttft = Histogram(
            "ssegate_time_to_first_token_seconds",
            "From the request to the first token",
            ["model"],
            buckets=_TTFT_BUCKETS,
            registry=registry,
        )
        self.inter_token = Histogram(
            "ssegate_inter_token_seconds",
            "Between consecutive tokens of a generation",
            ["model"],
            buckets=_ITL_BUCKETS,
            registry=registry,
        )
        self.tokens = Counter(
            "ssegate_tokens_out", "Tokens generated", ["model"], registry=registry
        )
        self.events_sent = Counter(
            "ssegate_events_sent", "Events sent to readers", ["format"], registry=registry
        )
        self.resumes = Counter(
            "ssegate_resumes", "Reads that resumed after a Last-Event-ID", registry=registry
        )
        self.disconnects = Counter(
            "ssegate_disconnects", "Readers that left before their stream ended", registry=registry
        )
        self.cancellations = Counter(
            "ssegate_cancellations",
            "Generations cancelled (stopped by a client, or abandoned by every reader)",
            ["reason"],
            registry=registry,
        )
        self.upstream_errors = Counter(
            "ssegate_upstream_errors",
            "Generations that failed at the provider",
            ["model", "code"],
            registry=registry,
        )
        self._codes: set[str] = set()

    def error_code(self, code: str) -> str:
        """``code`` as a label value: itself if short and plain and among the
        first ``MAX_ERROR_CODES`` seen, else ``"other"``."""
        if code in self._codes:
            return code
        if len(self._codes) < MAX_ERROR_CODES and _CODE.match(code):
            self._codes.add(code)
            return code
        return "other"

    def export(self) -> bytes:
        """The text exposition format of every metric."""
        return generate_latest(self.registry)
