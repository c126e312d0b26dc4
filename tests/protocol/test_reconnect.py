"""The sans-IO reconnect policy: delays, give-up, headers."""

from __future__ import annotations

import pytest

from ssegate import Event, ReconnectPolicy


def no_jitter(**kwargs: object) -> ReconnectPolicy:
    return ReconnectPolicy(jitter=0.0, **kwargs)  # type: ignore[arg-type]


def test_first_headers_have_no_last_event_id() -> None:
    assert ReconnectPolicy().headers() == {
        "Accept": "text/event-stream",
        "Cache-Control": "no-cache",
    }


def test_last_event_id_from_events_goes_into_headers() -> None:
    p = ReconnectPolicy(last_event_id="3")
    assert p.headers()["Last-Event-ID"] == "3"
    p.event(Event("x", id="4"))
    assert p.headers()["Last-Event-ID"] == "4"
    p.event(Event("y", id=""))  # an empty id resets: the header is not sent
    assert "Last-Event-ID" not in p.headers()


def test_exponential_backoff_capped() -> None:
    p = no_jitter(retry_ms=1000, max_delay=10.0)
    assert [p.failed() for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert p.attempt == 6


def test_server_retry_sets_the_base() -> None:
    p = no_jitter()
    assert p.failed() == 3.0  # the default, as browsers
    p.event(Event("x", retry=500))
    assert p.failed() == 0.5  # progress reset the count; the server's retry is the base
    p.server_retry(200)
    assert p.failed() == 0.4
    assert p.retry_ms == 200


def test_progress_resets_backoff() -> None:
    p = no_jitter(retry_ms=1000)
    assert [p.failed(), p.failed(), p.failed()] == [1.0, 2.0, 4.0]
    p.connected()
    assert p.failed() == 8.0  # connected but no event: still failing
    p.connected()
    p.event(Event("x"))
    assert p.failed() == 1.0


def test_max_retries_gives_up() -> None:
    p = no_jitter(retry_ms=10, max_retries=2)
    assert p.failed() == 0.01
    assert p.failed() == 0.02
    assert p.failed() is None


def test_zero_retries_gives_up_at_once() -> None:
    assert no_jitter(max_retries=0).failed() is None


def test_retry_after_is_honoured_once() -> None:
    p = no_jitter(retry_ms=1000)
    p.retry_after(7.0)
    assert p.failed() == 7.0
    assert p.failed() == 2.0


def test_retry_after_is_capped() -> None:
    p = no_jitter(retry_ms=1000, max_delay=30.0)
    p.retry_after(86400.0)
    assert p.failed() == 30.0


def test_jitter_takes_off_up_to_its_fraction() -> None:
    values = iter([0.0, 1.0, 0.5])
    p = ReconnectPolicy(retry_ms=1000, jitter=0.5, random=lambda: next(values))
    assert [p.failed(), p.failed(), p.failed()] == [1.0, 1.0, 3.0]


def test_many_failures_do_not_overflow() -> None:
    p = no_jitter(retry_ms=1000, max_delay=5.0)
    for _ in range(5000):
        delay = p.failed()
    assert delay == 5.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"retry_ms": -1},
        {"max_retries": -1},
        {"jitter": 1.5},
        {"multiplier": 0.5},
        {"max_delay": -1.0},
        {"last_event_id": "a\nb"},
    ],
)
def test_bad_settings_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each message is specific
        ReconnectPolicy(**kwargs)  # type: ignore[arg-type]
