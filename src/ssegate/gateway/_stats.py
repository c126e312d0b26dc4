"""``LiveStats``: the gateway's recent figures, per model, for the operator's dashboard.

Prometheus histograms (``_metrics``) count since the start; an operator looking
at the gateway now wants the last minute: tokens per second, and time to first
token and inter-token latency as percentiles of recent samples. The runner
records each token here as it counts it for Prometheus; ``snapshot()`` gives
what ``GET /v1/dashboard/events`` sends.

Sans-IO: every method takes the time it happens at (``now``, in the clock's
seconds); nothing reads a clock or sleeps, so tests drive it with made-up times.
Recording a token is O(1): bounded deques of recent samples per model and a
count per whole second; percentiles are computed only when a snapshot is asked.
A sample is two floats in two deques (when, value), not a tuple: a tuple per
token is an object the collector tracks until its next collection, floats are
not (the runner records ~20 000 tokens a second at 1 000 streams).
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Mapping
from typing import Any

__all__ = ["LiveStats", "percentiles"]

#: The percentiles a snapshot gives of each latency.
QUANTILES = (50, 90, 99)


def percentiles(values: list[float]) -> dict[str, float | int | None]:
    """Nearest-rank p50/p90/p99 of ``values`` (seconds) in milliseconds, and their count."""
    ordered = sorted(values)
    out: dict[str, float | int | None] = {"n": len(ordered)}
    for q in QUANTILES:
        if ordered:
            rank = max(1, math.ceil(q / 100 * len(ordered)))
            out[f"p{q}"] = round(ordered[rank - 1] * 1000, 1)
        else:
            out[f"p{q}"] = None
    return out


class _Samples:
    """The most recent ``maxlen`` (time, value) samples, as two deques of floats."""

    __slots__ = ("at", "values")

    def __init__(self, maxlen: int) -> None:
        self.at: deque[float] = deque(maxlen=maxlen)
        self.values: deque[float] = deque(maxlen=maxlen)

    def add(self, now: float, value: float, times: int = 1) -> None:
        at, values = self.at, self.values
        for _ in range(times):
            at.append(now)
            values.append(value)

    def any_since(self, since: float) -> bool:
        """Whether a sample was taken after ``since``."""
        return bool(self.at) and self.at[-1] > since

    def since(self, since: float) -> list[float]:
        """The values of the samples taken after ``since``."""
        return [v for t, v in zip(self.at, self.values, strict=True) if t > since]


class _Model:
    __slots__ = ("current", "gaps", "seconds", "ttft")

    def __init__(self, samples: int) -> None:
        self.ttft = _Samples(samples)
        self.gaps = _Samples(samples)
        #: ``[whole second, tokens in it]``, oldest first.
        self.seconds: deque[list[int]] = deque()
        #: The newest of ``seconds`` (before the first, a second none is).
        self.current: list[Any] = [None, 0]

    def count(self, second: int, count: int, window: int) -> None:
        """``count`` tokens more in ``second``, a new one (not ``current``'s):
        the seconds older than ``window`` before it forgotten."""
        seconds = self.seconds
        seconds.append([second, count])
        self.current = seconds[-1]
        while seconds[0][0] <= second - window:
            seconds.popleft()


class LiveStats:
    """Tokens, time to first token and inter-token gaps of the last ``window`` seconds.

    ``rate_window``: the whole seconds averaged into ``tokens_per_s`` (the
    second under way is left out: it is not over). ``samples``: latency samples
    kept per model and kind (the most recent ones).
    """

    def __init__(self, *, window: int = 60, rate_window: int = 5, samples: int = 2048) -> None:
        if not 0 < rate_window <= window:
            raise ValueError("0 < rate_window <= window")
        self.window = window
        self.rate_window = rate_window
        self.samples = samples
        self._models: dict[str, _Model] = {}
        #: Readers connected now, per kind: ``stream`` (of a generation), ``topic``.
        self.readers: Counter[str] = Counter()

    def _model(self, name: str, now: float) -> _Model:
        found = self._models.get(name)
        if found is None:
            self._forget_idle(now)  # names come from requests: no unbounded growth
            found = self._models[name] = _Model(self.samples)
        return found

    def token(
        self, model: str, now: float, *, ttft: float | None = None, gap: float | None = None
    ) -> None:
        """One token of ``model`` at ``now``: the first of its generation (``ttft``,
        seconds since the request) or one ``gap`` seconds after the previous."""
        self.tokens(model, now, 1, ttft=ttft, gap=gap)

    def tokens(
        self,
        model: str,
        now: float,
        count: int,
        *,
        ttft: float | None = None,
        gap: float | None = None,
    ) -> None:
        """``count`` tokens of one generation of ``model``, all at ``now`` (one read
        of the upstream): the first as ``token()`` takes it, each other one a gap
        of 0 after the one before. The same figures as ``count`` calls of ``token()``."""
        stats = self._models.get(model) or self._model(model, now)
        second = math.floor(now)
        current = stats.current
        if current[0] == second:
            current[1] += count
        else:
            stats.count(second, count, self.window)
        if ttft is not None:
            stats.ttft.add(now, ttft)
        if gap is not None:  # (``add`` inlined: once per token)
            gaps = stats.gaps
            gaps.at.append(now)
            gaps.values.append(gap)
        if count > 1:
            stats.gaps.add(now, 0.0, count - 1)

    def gap(self, model: str, now: float, gap: float) -> None:
        """``tokens(model, now, 1, gap=gap)``: one token, ``gap`` seconds after
        its generation's previous one (nearly every token: once per token)."""
        stats = self._models.get(model) or self._model(model, now)
        second = math.floor(now)
        current = stats.current
        if current[0] == second:
            current[1] += 1
        else:
            stats.count(second, 1, self.window)
        gaps = stats.gaps
        gaps.at.append(now)
        gaps.values.append(gap)

    def snapshot(self, now: float, active: Mapping[str, int]) -> dict[str, Any]:
        """The figures at ``now``; ``active``: generations running per model."""
        self._forget_idle(now, keep=active)
        current = math.floor(now)
        first = current - self.window  # series: the whole seconds before the current one
        models = []
        totals = [0] * self.window
        for name in sorted(set(self._models) | {m for m, n in active.items() if n}):
            stats = self._models.get(name)
            series = [0] * self.window
            ttft: list[float] = []
            gaps: list[float] = []
            if stats is not None:
                for second, count in stats.seconds:
                    if first <= second < current:
                        series[second - first] = count
                        totals[second - first] += count
                since = now - self.window
                ttft = stats.ttft.since(since)
                gaps = stats.gaps.since(since)
            models.append(
                {
                    "model": name,
                    "active": active.get(name, 0),
                    "tokens_per_s": _rate(series, self.rate_window),
                    "tokens": sum(series),
                    "ttft_ms": percentiles(ttft),
                    "itl_ms": percentiles(gaps),
                    "series": series,
                }
            )
        return {
            "window_s": self.window,
            "active_streams": sum(active.values()),
            "stream_readers": self.readers["stream"],
            "topic_subscribers": self.readers["topic"],
            "tokens_per_s": _rate(totals, self.rate_window),
            "series": totals,
            "models": models,
        }

    def _forget_idle(self, now: float, keep: Mapping[str, int] | None = None) -> None:
        """Drop the models with nothing in the window (and nothing running)."""
        since = now - self.window
        for name in [
            name
            for name, stats in self._models.items()
            if not (keep and keep.get(name))
            and not (stats.seconds and stats.seconds[-1][0] >= math.floor(now) - self.window)
            and not stats.ttft.any_since(since)
            and not stats.gaps.any_since(since)
        ]:
            del self._models[name]


def _rate(series: list[int], last: int) -> float:
    return round(sum(series[-last:]) / last, 2)
