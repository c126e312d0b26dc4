"""Operations: metrics per app (exact figures after known streams), the structured
log line per stream, /readyz when the store is down, the echo model's pace."""

from __future__ import annotations

import json
import logging

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from serve_support import free_port
from ssegate.gateway import EchoProvider
from ssegate.gateway._metrics import _ITL_BUCKETS, _TTFT_BUCKETS, Metrics, TokenHistogram
from ssegate.llm import ChatRequest, Finish, TextDelta, Usage
from ssegate.streams.redis import RedisStore

BODY = {"model": "echo", "messages": [{"role": "user", "content": "a b c"}], "stream": True}


def samples(url: str) -> dict[str, float]:
    text = httpx.get(url + "/metrics").text
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


def test_metrics_count_what_happened_and_apps_share_nothing(gateway) -> None:  # type: ignore[no-untyped-def]
    with gateway() as one, gateway() as two:
        for _ in range(2):
            assert httpx.post(one.url + "/v1/chat/completions", json=BODY).status_code == 200
        got, other = samples(one.url), samples(two.url)
    assert got["ssegate_tokens_out_total{model=echo}"] == 6
    assert got["ssegate_time_to_first_token_seconds_count{model=echo}"] == 2
    assert got["ssegate_inter_token_seconds_count{model=echo}"] == 4
    # role, 3 words, finish and [DONE] per stream (usage is not asked for)
    assert got["ssegate_events_sent_total{format=openai}"] == 12
    assert got["ssegate_active_streams"] == 0
    assert got["ssegate_subscribers"] == 0
    assert got["ssegate_disconnects_total"] == 0
    assert "ssegate_tokens_out_total{model=echo}" not in other


def test_one_structured_log_line_per_stream(gateway, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO, logger="ssegate.gateway.streams")
    with gateway() as server:
        response = httpx.post(server.url + "/v1/chat/completions", json=BODY)
        stream_id = response.headers["x-stream-id"]
    lines = [
        json.loads(r.getMessage()) for r in caplog.records if r.name == "ssegate.gateway.streams"
    ]
    assert len(lines) == 1
    line = lines[0]
    assert set(line) == {"stream", "model", "key", "ttft_ms", "tokens", "duration_ms", "end"}
    assert (line["stream"], line["model"], line["key"], line["tokens"], line["end"]) == (
        stream_id,
        "echo",
        "anonymous",
        3,
        "stop",
    )
    assert 0 <= line["ttft_ms"] <= line["duration_ms"]


def test_readyz_says_when_the_store_is_unreachable(gateway) -> None:  # type: ignore[no-untyped-def]
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", prefix="ssegate-test-down:")
    with gateway({"store": store}, default_model="echo") as server:
        assert httpx.get(server.url + "/healthz").status_code == 200
        response = httpx.get(server.url + "/readyz")
        published = httpx.post(server.url + "/v1/topics/t", json={"data": "x"})
    assert response.status_code == 503
    assert response.json() == {
        "status": "not_ready",
        "checks": {"store": "unreachable", "default_model": "ok"},
    }
    assert published.status_code == 503
    assert published.headers["retry-after"] == "1"
    assert published.json()["error"]["code"] == "store_unavailable"


@pytest.mark.anyio
async def test_echo_paces_word_tokens_with_the_injected_sleep() -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    echo = EchoProvider(tokens_per_second=4.0, sleep=sleep, clock=lambda: 1700000000.0)
    request = ChatRequest(
        model="echo",
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "Hi  there"},
        ],
        max_tokens=4,
    )
    out = [event async for event in echo.stream(request)]
    assert out[0].to_dict()["created"] == 1700000000
    assert out[1:] == [
        TextDelta("Hi"),
        TextDelta("  there"),
        TextDelta(" Lorem"),
        TextDelta(" ipsum"),
        Usage(input_tokens=4, output_tokens=4),
        Finish("length"),
    ]
    assert slept == [0.25, 0.25, 0.25, 0.25]


@pytest.mark.anyio
async def test_echo_gives_the_runner_its_tokens_in_batches_one_per_tick() -> None:
    """What the runner reads (``stream_batches``): the start, each token alone (one
    per tick), usage and finish together; ``stream`` is the same events one by one."""
    from ssegate.llm.providers import stream_batches

    async def sleep(seconds: float) -> None:
        pass

    echo = EchoProvider(tokens_per_second=4.0, sleep=sleep, clock=lambda: 1700000000.0)
    request = ChatRequest(
        model="echo", messages=[{"role": "user", "content": "a b c"}], max_tokens=None
    )
    batches = [batch async for batch in stream_batches(echo, request)]
    assert [[type(e).__name__ for e in batch] for batch in batches] == [
        ["Start"],
        ["TextDelta"],
        ["TextDelta"],
        ["TextDelta"],
        ["Usage", "Finish"],
    ]
    assert batches[1:] == [
        [TextDelta("a")],
        [TextDelta(" b")],
        [TextDelta(" c")],
        [Usage(input_tokens=3, output_tokens=3), Finish("stop")],
    ]
    flat = [event async for event in echo.stream(request)]
    assert flat[1:] == [event for batch in batches[1:] for event in batch]
    assert flat[0].to_dict() | {"id": None} == batches[0][0].to_dict() | {"id": None}


@pytest.mark.parametrize("buckets", [_ITL_BUCKETS, _TTFT_BUCKETS], ids=["gaps", "ttft"])
def test_the_token_histograms_export_what_prometheus_histogram_does(
    buckets: tuple[float, ...],
) -> None:
    # Observed once per token (the gaps) or per stream (time to first token),
    # they are the gateway's own (a bisect, no lock); their exposition must not
    # tell: same families, samples and values, before any series too.
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    theirs = CollectorRegistry(auto_describe=True)
    reference = Histogram("gaps", "doc", ["model"], buckets=buckets, registry=theirs)
    ours = CollectorRegistry(auto_describe=True)
    histogram = TokenHistogram("gaps", "doc", buckets)
    ours.register(histogram)
    assert generate_latest(ours) == generate_latest(theirs)
    # On a bound, between, beyond the last, zero; two models.
    for model, value in [
        ("a", 0.001),
        ("a", 0.0015),
        ("a", 0.0),
        ("b", 7.5),
        ("a", 5),
        ("b", 0.05),
    ]:
        reference.labels(model).observe(value)
        histogram.labels(model).observe(value)

    def exposition(registry: CollectorRegistry) -> list[str]:
        return [
            line
            for line in generate_latest(registry).decode().splitlines()
            if "_created{" not in line
        ]

    assert exposition(ours) == exposition(theirs)
    assert sum("_created{" in line for line in generate_latest(ours).decode().splitlines()) == 2


def test_gaps_of_zero_are_counted_as_observations_of_zero() -> None:
    # The runner counts the tokens of one upstream read at once: their gaps
    # after the first are 0, counted in one step; the exposition is the same.
    one, batched = Metrics(), Metrics()
    for value in (0.02, 0.0, 0.0, 0.0, 1.5):
        one.inter_token.labels("m").observe(value)
    series = batched.inter_token.labels("m")
    series.observe(0.02)
    series.observe_zeros(3)
    series.observe(1.5)
    exported = batched.export().decode()
    assert _without_created(exported) == _without_created(one.export().decode())
    assert 'ssegate_inter_token_seconds_bucket{le="0.001",model="m"} 3.0' in exported
    assert 'ssegate_inter_token_seconds_count{model="m"} 5.0' in exported
    assert 'ssegate_inter_token_seconds_sum{model="m"} 1.52' in exported


def _without_created(text: str) -> list[str]:
    return [line for line in text.splitlines() if "_created" not in line]
