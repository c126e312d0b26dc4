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
import time
from bisect import bisect_left
from collections.abc import Iterator
from itertools import accumulate
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from ._stats import LiveStats

__all__ = ["MAX_ERROR_CODES", "Children", "Metrics", "TokenHistogram"]

#: Distinct upstream error codes given a series of their own.
MAX_ERROR_CODES = 64
_CODE = re.compile(r"[A-Za-z0-9_.-]{1,64}\Z")

# Time to first token spans a cached echo (sub-ms) to a reasoning model (a minute).
_TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# Between tokens: 50 tokens/s is 20 ms; a stall of seconds is what to see.
_ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class Children(dict[str, Any]):
    """A metric with one label: its series by label value, each looked up with
    ``labels()`` once (``children[value]``). prometheus-client's ``labels()``
    checks its arguments, converts them and takes a lock on every call (~1.5 µs,
    several times per stream start); the series it returns is the same object
    every time, as long as nobody removes it (the gateway never does)."""

    __slots__ = ("metric",)

    def __init__(self, metric: Any) -> None:
        super().__init__()
        self.metric = metric

    def __missing__(self, value: str) -> Any:
        child = self[value] = self.metric.labels(value)
        return child


class Metrics:
    """Every figure the gateway exports; ``ttft_of``, ``tokens_of`` and
    ``events_sent_of``: their series by label value (``Children``)."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.live = LiveStats()
        self.active_streams = Gauge(
            "ssegate_active_streams", "Generations running in this process", registry=registry
        )
        self.subscribers = Gauge(
            "ssegate_subscribers", "Readers of streams and topics connected now", registry=registry
        )
        # Read at each scrape from the readers the dashboard counts (``live.readers``,
        # which every reader keeps anyway): no inc and dec, a lock each, per stream.
        live = self.live
        self.subscribers.set_function(lambda: float(sum(live.readers.values())))
        # Observed once per stream: the gateway's own histogram too (see TokenHistogram).
        self.ttft = TokenHistogram(
            "ssegate_time_to_first_token_seconds",
            "From the request to the first token",
            _TTFT_BUCKETS,
        )
        registry.register(self.ttft)
        self.inter_token = TokenHistogram(
            "ssegate_inter_token_seconds",
            "Between consecutive tokens of a generation",
            _ITL_BUCKETS,
        )
        registry.register(self.inter_token)
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
        self.ttft_of = Children(self.ttft)
        self.tokens_of = Children(self.tokens)
        self.events_sent_of = Children(self.events_sent)

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


class _Series:
    """One model's counts: per bucket (not cumulative; the last is +Inf) and the sum."""

    __slots__ = ("bounds", "counts", "created", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, value: float) -> None:
        # A value on a bound belongs to it (le): bisect_left.
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def observe_zeros(self, times: int) -> None:
        """``observe(0.0)`` ``times`` times: the gaps between tokens of one read."""
        self.counts[bisect_left(self.bounds, 0.0)] += times


class TokenHistogram(Collector):
    """A histogram labelled by model, exported as prometheus-client's ``Histogram``
    is (same samples, ``_created`` included), for what is observed once per token
    (the gaps between tokens) or per stream (the time to the first token).

    ``Histogram.observe`` takes a lock and walks the buckets in Python, two
    locked increments per value: ~2.4 µs a token on the benchmark machine, where
    this is a ``bisect`` and two additions. The gateway observes from its event
    loop only; a scrape from another thread reads counts that may be one value
    apart from the sum, as a scrape racing any observation may.
    """

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...]) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = tuple(float(b) for b in buckets)
        self._les = [floatToGoString(b) for b in self.bounds] + ["+Inf"]  # type: ignore[no-untyped-call]
        self._series: dict[str, _Series] = {}

    def labels(self, model: str) -> _Series:
        series = self._series.get(model)
        if series is None:
            series = self._series[model] = _Series(self.bounds)
        return series

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=["model"])
        created = GaugeMetricFamily(self.name + "_created", self.documentation, labels=["model"])
        for model, series in list(self._series.items()):
            family.add_metric(
                [model], list(zip(self._les, accumulate(series.counts), strict=True)), series.sum
            )
            created.add_metric([model], series.created)
        yield family
        if created.samples:  # as prometheus-client's: no _created family before a series
            yield created

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self.name, self.documentation, labels=["model"])
