"""A hostile or broken upstream behind the gateway (a FakeUpstream on 127.0.0.1):
one giant event, or a line that never ends. The stream ends at once with a
``protocol_error`` event naming the limit (``providers.<name>.max_event_bytes``),
the upstream connection is closed, and nothing of the giant is kept. And neither
the model names clients choose nor the error codes an upstream sends add metric
series without end."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from gateway_support import events

from ssegate.gateway._metrics import MAX_ERROR_CODES
from ssegate.testing import FakeUpstream, Reply

LIMIT = 64 * 1024
MESSAGES = [{"role": "user", "content": "hi"}]
# Per kind: its path, base URL suffix, content type, and how a body line starts.
KINDS = {
    "openai": ("/v1/chat/completions", "/v1", "text/event-stream", b"data: "),
    "ollama": (
        "/api/chat",
        "",
        "application/x-ndjson",
        b'{"model":"m1","message":{"role":"assistant","content":"',
    ),
}


@pytest.fixture
def upstream() -> Iterator[tuple[FakeUpstream, str]]:
    fake = FakeUpstream()
    with fake.run() as url:
        yield fake, url


def reply(kind: str, body: list[bytes], *, hold: bool) -> Reply:
    ctype = KINDS[kind][2]
    return Reply(200, (("content-type", ctype),), tuple(body), hold=hold)


@pytest.mark.parametrize("kind", ["openai", "ollama"])
@pytest.mark.parametrize("shape", ["giant_event", "endless_line"])
def test_a_giant_or_endless_upstream_event_ends_the_stream(  # type: ignore[no-untyped-def]
    gateway, upstream, kind: str, shape: str
) -> None:
    fake, url = upstream
    path, base, _, line = KINDS[kind]
    if shape == "giant_event":  # one whole event, 4x the limit, then an ordinary end
        body = [line + b"x" * (4 * LIMIT) + b"\n\n", b"data: [DONE]\n\n"]
        fake.add(path, reply(kind, body, hold=False))
    else:  # 40x the limit with no newline, and the connection held open
        fake.add(path, reply(kind, [line] + [b"y" * LIMIT] * 40, hold=True))
    providers = {"up": {"kind": kind, "base_url": url + base, "max_event_bytes": LIMIT}}
    with gateway(providers=providers) as server:
        started = httpx.post(
            server.url + "/v1/streams", json={"model": "up/m1", "messages": MESSAGES}
        )
        got = events(httpx.get(server.url + started.json()["events_url"], timeout=20))
        assert fake.wait_disconnected(10)  # the upstream request was closed
    assert [e.event for e in got] == ["error"]
    error = json.loads(got[0].data)
    assert (error["code"], error["retryable"]) == ("protocol_error", False)
    # It names the limit crossed (a line's limit is the event's plus 1 KiB for its name).
    assert str(LIMIT) in error["message"] or str(LIMIT + 1024) in error["message"], error
    assert len(error["message"]) < 300


def error_reply(code: str) -> Reply:
    error = {"error": {"message": "boom", "type": "server_error", "code": code}}
    return Reply(
        200,
        (("content-type", "text/event-stream"),),
        (b"data: " + json.dumps(error).encode() + b"\n\n",),
    )


def test_neither_clients_nor_upstreams_choose_the_metric_series(gateway, upstream) -> None:  # type: ignore[no-untyped-def]
    # Any <provider>/<name> routes, and an upstream words its errors as it likes:
    # neither may add series without end to /metrics (memory, and a scraper's).
    fake, url = upstream
    codes = [f"code_{i}" for i in range(MAX_ERROR_CODES + 6)] + ['bad"code\nx', "y" * 100]
    fake.add("/v1/chat/completions", *(error_reply(code) for code in codes))
    providers = {"up": {"kind": "openai", "base_url": url + "/v1", "models": ["m1"]}}
    with gateway(providers=providers) as server, httpx.Client(timeout=10) as web:
        for i, _ in enumerate(codes):
            model = "up/m1" if i % 2 else f"up/chosen-{i}"
            body = {"model": model, "messages": MESSAGES}
            answer = web.post(server.url + "/v1/chat/completions", json=body)
            assert answer.status_code == 502
        metrics = web.get(server.url + "/metrics").text
    series = [line for line in metrics.splitlines() if line.startswith("ssegate_upstream_errors_")]
    models = {line.split('model="')[1].split('"')[0] for line in series}
    assert models == {"up/m1", "up/*"}
    counts = {line.split('code="')[1].split('"')[0] for line in series if "_total" in line}
    assert counts == {f"code_{i}" for i in range(MAX_ERROR_CODES)} | {"other"}
