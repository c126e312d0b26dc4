"""``Metrics``' series by label value (``Children``): each the series
prometheus-client's ``labels()`` gives, looked up once, exported the same."""

from __future__ import annotations

from ssegate.gateway._metrics import Children, Metrics


def test_a_series_is_the_one_labels_gives_and_counts_the_same() -> None:
    metrics = Metrics()
    assert metrics.tokens_of["m"] is metrics.tokens.labels("m")
    assert metrics.ttft_of["m"] is metrics.ttft.labels("m")
    assert metrics.events_sent_of["openai"] is metrics.events_sent.labels("openai")
    by_children, by_labels = Metrics(), Metrics()
    by_children.tokens_of["m"].inc(3)
    by_children.ttft_of["m"].observe(0.2)
    by_children.events_sent_of["native"].inc(2)
    by_labels.tokens.labels("m").inc(3)
    by_labels.ttft.labels("m").observe(0.2)
    by_labels.events_sent.labels("native").inc(2)
    exported = [
        [line for line in m.export().splitlines() if b"_created" not in line]
        for m in (by_children, by_labels)
    ]
    assert exported[0] == exported[1]
    assert b'ssegate_tokens_out_total{model="m"} 3.0' in exported[0]


def test_children_look_a_series_up_once() -> None:
    calls = []

    class Labelled:
        def labels(self, value: str) -> tuple[str, int]:
            calls.append(value)
            return (value, len(calls))

    children = Children(Labelled())
    assert children["a"] == ("a", 1)
    assert children["a"] == ("a", 1)
    assert children["b"] == ("b", 2)
    assert calls == ["a", "b"]


def test_subscribers_are_the_readers_connected_at_the_scrape() -> None:
    metrics = Metrics()
    assert b"\nssegate_subscribers 0.0\n" in metrics.export()
    metrics.live.readers["stream"] += 2
    metrics.live.readers["topic"] += 1
    assert b"\nssegate_subscribers 3.0\n" in metrics.export()
    metrics.live.readers["stream"] -= 2
    assert b"\nssegate_subscribers 1.0\n" in metrics.export()


def test_the_gateway_counts_time_to_first_token_per_model() -> None:
    metrics = Metrics()
    metrics.ttft_of["m"].observe(0.2)
    metrics.ttft_of["m"].observe(0.02)
    exported = metrics.export().decode()
    assert 'ssegate_time_to_first_token_seconds_bucket{le="0.025",model="m"} 1.0' in exported
    assert 'ssegate_time_to_first_token_seconds_bucket{le="0.25",model="m"} 2.0' in exported
    assert 'ssegate_time_to_first_token_seconds_count{model="m"} 2.0' in exported
