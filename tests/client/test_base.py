"""The client's sans-IO decisions, without sockets."""

from __future__ import annotations

import httpx
import pytest

from ssegate import Event
from ssegate.client import EventSource, is_terminal
from ssegate.client._base import is_event_stream, parse_retry_after

NOW = 1_000_000_000.0  # 2001-09-09 01:46:40 UTC


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        ("0", 0.0),
        ("120", 120.0),
        (" 5 ", 5.0),
        ("Sun, 09 Sep 2001 01:47:00 GMT", 20.0),
        ("Sun, 09 Sep 2001 01:46:00 GMT", 0.0),  # in the past: now
        ("Sunday, 09-Sep-01 01:47:10 GMT", 30.0),  # RFC 850, still allowed
        ("-5", None),
        ("1.5", None),
        ("soon", None),
        ("\u0661\u0662", None),  # Arabic-Indic digits are not digits here
        ("", None),
    ],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, NOW) == seconds


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("text/event-stream", True),
        ("text/event-stream; charset=utf-8", True),
        ("Text/Event-Stream", True),
        (" text/event-stream ;x=y", True),
        ("text/event-streamx", False),
        ("application/json", False),
        ("", False),
        (None, False),
    ],
)
def test_is_event_stream(content_type: str | None, expected: bool) -> None:
    assert is_event_stream(content_type) is expected


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (Event("[DONE]"), True),
        (Event("{}", event="done"), True),
        (Event("{}", event="error"), True),
        (Event("", event="close"), True),
        (Event(" [DONE]"), False),
        (Event("{}", event="token"), False),
        (Event("done"), False),
    ],
)
def test_is_terminal(event: Event, expected: bool) -> None:
    assert is_terminal(event) is expected


@pytest.mark.parametrize(
    ("timeout", "read_timeout", "expected"),
    [
        (None, 60.0, httpx.Timeout(10.0, read=60.0)),
        (3.0, None, httpx.Timeout(3.0, read=None)),
        (httpx.Timeout(1.0, connect=2.0), 5.0, httpx.Timeout(1.0, connect=2.0, read=5.0)),
    ],
)
def test_timeouts(
    timeout: float | httpx.Timeout | None, read_timeout: float | None, expected: httpx.Timeout
) -> None:
    es = EventSource("http://127.0.0.1:1/", timeout=timeout, read_timeout=read_timeout)
    assert es._timeout == expected
    es.close()


def test_resume_request_is_a_get_without_the_body() -> None:
    es = EventSource(
        "http://127.0.0.1:1/v1/chat?x=1",
        method="POST",
        json={"a": 1},
        headers={"Authorization": "Bearer k", "Accept": "application/json"},
        last_event_id="7",
    )
    first = es._next_request()
    assert (first.method, str(first.url), first.content) == (
        "POST",
        "http://127.0.0.1:1/v1/chat?x=1",
        b'{"a":1}',
    )
    assert first.headers == {
        "Authorization": "Bearer k",
        "Content-Type": "application/json",
        "Accept": "text/event-stream",
        "Cache-Control": "no-cache",
        "Last-Event-ID": "7",
    }
    es._events_url = httpx.URL("http://127.0.0.1:1/v1/streams/s1")
    resume = es._next_request()
    assert (resume.method, str(resume.url), resume.content) == (
        "GET",
        "http://127.0.0.1:1/v1/streams/s1",
        None,
    )
    assert resume.headers == {
        "Authorization": "Bearer k",
        "Accept": "text/event-stream",
        "Cache-Control": "no-cache",
        "Last-Event-ID": "7",
    }
    es.close()
