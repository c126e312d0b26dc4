"""Resuming after *any* event on the wire gives exactly the rest, in every
format, also when the stream ends without its own last event (stopped).

One stored event may become several wire events (OpenAI's finish chunk and
``[DONE]``; the AI SDK's block start and first delta), and so may the end of a
stopped stream (error chunk and ``[DONE]``). The chaos test found a reader cut
between a finish chunk and ``[DONE]`` never getting ``[DONE]``: both carried one
id, so resuming after it found nothing left. Now the parts before the last
carry ``<id>.<n>``, and resuming after one of them sends the rest of its stored
event and nothing twice. (A stream that finished: tests/gateway/test_streams.py.)
"""

from __future__ import annotations

import httpx
import pytest
from faults_support import Gateway, events

from ssegate import Event

BODY = {"model": "echo", "messages": [{"role": "user", "content": "one two three four"}]}


@pytest.mark.parametrize("format", ["native", "openai", "aisdk"])
def test_resuming_a_stopped_stream_after_each_event_sends_exactly_the_rest(
    gateway: Gateway, format: str
) -> None:
    with gateway(echo_tokens_per_second=100) as base:
        body = {**BODY, "max_tokens": 1000}
        started = httpx.post(base + "/v1/streams", json=body).json()
        url = f"{base}{started['events_url']}?format={format}"
        with httpx.stream("GET", url) as response:
            next(response.iter_lines())  # generating
            assert httpx.delete(base + started["events_url"]).status_code == 204
        whole = events(httpx.get(url))
        assert any("cancelled" in e.data for e in whole[-4:]), whole[-4:]
        _check_every_resume(url, whole, format)


def _check_every_resume(url: str, whole: list[Event], format: str) -> None:
    ids = [e.id for e in whole]
    assert len(set(ids)) == len(ids), "every wire event has its own id"
    if format != "native":
        assert any("." in i for i in ids), "some stored event is several wire events"
    for n, event in enumerate(whole):
        resumed = httpx.get(url, headers={"Last-Event-ID": event.id})
        rest = whole[n + 1 :]
        if rest:
            assert events(resumed) == rest, f"after {n}: {event}"
        else:
            assert resumed.status_code == 204
