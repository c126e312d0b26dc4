"""The gateway's Prometheus metrics, in a registry of its own (no global state).

Two gateways in one process (tests, an app embedding two) keep apart figures;
``GET /metrics`` exports this registry only. ``live`` keeps the last minute's
figures for the dashboard (``_stats``).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from ._stats import LiveStats

__all__ = ["Metrics"]

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

    def export(self) -> bytes:
        """The text exposition format of every metric."""
        return generate_latest(self.registry)
