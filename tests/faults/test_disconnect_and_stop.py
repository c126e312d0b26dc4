"""Disconnect and stop: the upstream request is closed within 1 s of the detach
grace period ending with no reader, and at once on ``DELETE``.

The upstream is a fake OpenAI-compatible server replaying recorded wire bytes
slowly (a chunk every 0.1 s, a 20 s answer): it records when the gateway
closed the connection, which is what stops a real provider's generation.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from faults_support import Gateway

from ssegate.testing import FakeUpstream, Reply

CAPTURE = Path(__file__).parent.parent / "llm" / "captures" / "openai_text.http"
GRACE = 1.0
BODY = {"model": "fake/m1", "messages": [{"role": "user", "content": "Say bonjour"}]}


@pytest.fixture
def upstream() -> Iterator[tuple[FakeUpstream, dict[str, object]]]:
    """A slow upstream (200 content chunks, 0.1 s apart) and the settings naming it."""
    capture = Reply.load(CAPTURE)
    first, content = capture.chunks[0], capture.chunks[1]
    reply = Reply(capture.status, capture.headers, (first,) + (content,) * 200, interval=0.1)
    fake = FakeUpstream().add("/v1/chat/completions", reply)
    with fake.run() as url:
        provider = {"kind": "openai", "base_url": url + "/v1", "api_key": "sk-up"}
        yield fake, {"providers": {"fake": provider}, "detach_grace": GRACE}


def _closed_after(fake: FakeUpstream, since: float) -> float:
    assert fake.wait_disconnected(GRACE + 10), "the upstream request was never closed"
    assert fake.disconnected_at is not None
    return fake.disconnected_at - since


def test_nobody_reads_the_upstream_is_closed_when_the_grace_period_ends(
    gateway: Gateway, upstream: tuple[FakeUpstream, dict[str, object]]
) -> None:
    fake, settings = upstream
    with gateway(**settings) as url:
        started_at = time.monotonic()
        assert httpx.post(url + "/v1/streams", json=BODY).status_code == 201
        late = _closed_after(fake, started_at) - GRACE
    print(f"\nno reader: upstream closed {late * 1000:.0f} ms after the grace period")
    assert 0.0 <= late < 1.0


def test_the_last_reader_leaving_closes_the_upstream_after_the_grace_period(
    gateway: Gateway, upstream: tuple[FakeUpstream, dict[str, object]]
) -> None:
    fake, settings = upstream
    with gateway(**settings) as url:
        path = httpx.post(url + "/v1/streams", json=BODY).json()["events_url"]
        with httpx.stream("GET", url + path) as response:
            lines = response.iter_lines()
            for _ in range(12):  # three tokens: the upstream is generating
                next(lines)
            assert not fake.disconnected.is_set()
        left_at = time.monotonic()
        late = _closed_after(fake, left_at) - GRACE
    print(f"\nreader left: upstream closed {late * 1000:.0f} ms after the grace period")
    assert 0.0 <= late < 1.0


def test_delete_closes_the_upstream_at_once(
    gateway: Gateway, upstream: tuple[FakeUpstream, dict[str, object]]
) -> None:
    fake, settings = upstream
    with gateway(**{**settings, "detach_grace": 60.0}) as url:
        path = httpx.post(url + "/v1/streams", json=BODY).json()["events_url"]
        with httpx.stream("GET", url + path) as response:
            lines = response.iter_lines()
            next(lines)
            stopped_at = time.monotonic()
            assert httpx.delete(url + path).status_code == 204
            after = _closed_after(fake, stopped_at)
            rest = list(lines)  # the reader is told, and its stream ends
    print(f"\nDELETE: upstream closed {after * 1000:.0f} ms after it")
    assert after < 1.0
    assert rest[-4] == "event: error"
    assert json.loads(rest[-2].removeprefix("data: ")) == {
        "code": "cancelled",
        "message": "The stream was cancelled before it finished.",
        "retryable": False,
    }
