"""A provider behind the gateway (a FakeUpstream replaying recorded OpenAI bytes):
the openai SDK through ssegate, refusals with the right status, mid-stream errors,
and stop or disconnect closing the upstream connection (seen on its socket)."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import openai
import pytest
from gateway_support import events, provider
from gateway_support import settings as make

from ssegate.gateway._models import Models, UnknownModel
from ssegate.llm import ChatRequest, LLMEvent, Start
from ssegate.testing import FakeUpstream, Reply

CAPTURES = Path(__file__).parent.parent / "llm" / "captures"
MESSAGES = [{"role": "user", "content": "Say bonjour"}]


@pytest.fixture
def upstream() -> Iterator[tuple[FakeUpstream, str]]:
    fake = FakeUpstream()
    with fake.run() as url:
        yield fake, url


def sdk(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)


def sdk_stream(url: str) -> openai.Stream[Any]:
    """``fake/m1`` streamed through the gateway at ``url`` by the SDK."""
    return sdk(url).chat.completions.create(
        model="fake/m1",
        messages=MESSAGES,  # type: ignore[arg-type]
        stream=True,
    )


def read_deltas(stream: openai.Stream[Any], got: list[str | None]) -> None:
    """Each chunk's delta into ``got`` (until the stream ends or raises)."""
    for chunk in stream:
        got.append(chunk.choices[0].delta.content)


def test_sdk_streams_a_provider_through_the_gateway(gateway, upstream) -> None:  # type: ignore[no-untyped-def]
    fake, url = upstream
    fake.add("/v1/chat/completions", Reply.load(CAPTURES / "openai_text.http"))
    with gateway(**provider(url), aliases={"fast": "fake/m1"}) as server:
        stream = sdk(server.url).chat.completions.create(
            model="fast",
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        completion = sdk(server.url).chat.completions.create(model="fake/m1", messages=MESSAGES)  # type: ignore[arg-type]
        listed = [m.id for m in sdk(server.url).models.list()]
    assert [c.choices[0].delta.content for c in chunks if c.choices] == [
        "",
        "Bon",
        "jour été ✓",
        None,
    ]
    assert chunks[0].id == "chatcmpl-a1"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 14
    assert completion.choices[0].message.content == "Bonjour été ✓"
    assert completion.id == "chatcmpl-a1"
    assert listed == ["local", "echo", "fast", "fake/m1"]
    sent = fake.requests[0]
    assert sent.headers["authorization"] == "Bearer sk-up"
    assert sent.json()["model"] == "m1"  # the alias resolved, the provider prefix gone
    assert sent.json()["stream"] is True


@pytest.mark.parametrize(
    ("capture", "status", "code", "retry_after"),
    [
        ("openai_error_429.http", 429, "rate_limit_exceeded", "7"),
        ("openai_error_401.http", 502, "invalid_api_key", None),
        ("openai_error_503.http", 502, None, "1"),
    ],
)
def test_refusals_answer_with_a_status_before_the_first_byte(  # type: ignore[no-untyped-def]
    gateway, upstream, capture: str, status: int, code: str | None, retry_after: str | None
) -> None:
    fake, url = upstream
    fake.add("/v1/chat/completions", Reply.load(CAPTURES / capture))
    with gateway(**provider(url)) as server:
        for stream in (True, False):
            body = {"model": "fake/m1", "messages": MESSAGES, "stream": stream}
            response = httpx.post(server.url + "/v1/chat/completions", json=body)
            assert response.status_code == status
            error = response.json()["error"]
            assert error["message"].startswith("The provider refused: ")
            if code is not None:
                assert error["code"] == code
            assert response.headers.get("retry-after") == retry_after
        metrics = httpx.get(server.url + "/metrics").text
    assert "ssegate_upstream_errors_total{" in metrics


def test_a_mid_stream_error_reaches_the_sdk_as_an_api_error(gateway, upstream) -> None:  # type: ignore[no-untyped-def]
    fake, url = upstream
    fake.add("/v1/chat/completions", Reply.load(CAPTURES / "openai_error_midstream.http"))
    with gateway(**provider(url)) as server:
        stream = sdk_stream(server.url)
        got: list[str | None] = []
        with pytest.raises(openai.APIError) as info:
            read_deltas(stream, got)
    assert got == ["", "Hel"]
    assert info.value.message == "upstream overloaded"


def _held(fake: FakeUpstream) -> None:
    text = Reply.load(CAPTURES / "openai_text.http")
    fake.add("/v1/chat/completions", Reply(text.status, text.headers, text.chunks[:2], hold=True))


def test_delete_closes_the_upstream_connection_at_once(gateway, upstream) -> None:  # type: ignore[no-untyped-def]
    fake, url = upstream
    _held(fake)
    with gateway(**provider(url)) as server:
        body = {"model": "fake/m1", "messages": MESSAGES}
        stream_id = httpx.post(server.url + "/v1/streams", json=body).json()["id"]
        with httpx.stream("GET", f"{server.url}/v1/streams/{stream_id}") as response:
            lines = response.iter_lines()
            assert next(lines) == "event: token"  # generating, upstream held open
            stopped_at = time.monotonic()
            assert httpx.delete(f"{server.url}/v1/streams/{stream_id}").status_code == 204
            assert fake.wait_disconnected(5)
            assert fake.disconnected_at is not None
            assert fake.disconnected_at - stopped_at < 1.0
            rest = list(lines)
        after = httpx.get(f"{server.url}/v1/streams/{stream_id}?format=openai")
        metrics = httpx.get(server.url + "/metrics").text
    # the reader hears why its stream ended, in its format
    assert "event: error" in rest
    assert any('"code": "cancelled"' in line for line in rest)
    # a later reader too: OpenAI's shape, then [DONE]
    got = events(after)
    assert got[-2].data.startswith('{"error": {"message": "The stream was cancelled')
    assert got[-1].data == "[DONE]"
    assert 'ssegate_cancellations_total{reason="stopped"} 1.0' in metrics


def test_the_last_reader_leaving_cancels_after_the_grace_period(gateway, upstream) -> None:  # type: ignore[no-untyped-def]
    fake, url = upstream
    _held(fake)
    with gateway(**provider(url), detach_grace=0.0) as server:
        body = {"model": "fake/m1", "messages": MESSAGES, "stream": True}
        with httpx.stream("POST", server.url + "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            next(response.iter_lines())
            left_at = time.monotonic()
        assert fake.wait_disconnected(5)
        assert fake.disconnected_at is not None
        assert fake.disconnected_at - left_at < 1.0
        metrics = httpx.get(server.url + "/metrics").text
    assert 'ssegate_cancellations_total{reason="abandoned"} 1.0' in metrics
    assert "ssegate_disconnects_total 1.0" in metrics


class Thinking:
    """A provider that accepts nothing for ever (a model thinking before its first
    byte); records when its stream is cancelled."""

    name = "thinking"

    def __init__(self) -> None:
        self.cancelled = threading.Event()

    async def stream(self, request: ChatRequest) -> AsyncIterator[LLMEvent]:
        try:
            await anyio.sleep_forever()
        finally:
            self.cancelled.set()
        yield Start()  # never reached

    async def aclose(self) -> None:
        pass


@pytest.mark.parametrize("stream", [True, False])
def test_a_client_gone_before_the_first_byte_lets_go_of_the_generation(
    gateway, stream: bool
) -> None:  # type: ignore[no-untyped-def]
    thinking = Thinking()
    with gateway({"local": thinking}, default_model="local", detach_grace=0.0) as server:
        body = {"model": "local", "messages": MESSAGES, "stream": stream}
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(server.url + "/v1/chat/completions", json=body, timeout=0.5)
        assert thinking.cancelled.wait(5)  # the provider's stream was closed
        metrics = httpx.get(server.url + "/metrics").text
    assert 'ssegate_cancellations_total{reason="abandoned"} 1.0' in metrics
    assert "ssegate_active_streams 0.0" in metrics


def test_the_providers_read_timeout_ends_a_stalled_stream(gateway, upstream) -> None:  # type: ignore[no-untyped-def]
    # The upstream sends its head and two events, then nothing: the configured
    # read timeout (0.5 s, against a default of 600 s) ends the stream with an
    # error naming it, in every format, instead of holding the readers for ever.
    fake, url = upstream
    _held(fake)
    settings = provider(url)
    settings["providers"]["fake"]["timeout"] = 0.5  # type: ignore[index]
    with gateway(**settings, detach_grace=30.0) as server:
        started = time.monotonic()
        stream = sdk_stream(server.url)
        got: list[str | None] = []
        with pytest.raises(openai.APIError) as info:
            read_deltas(stream, got)
        elapsed = time.monotonic() - started
        stream_id = stream.response.headers["x-stream-id"]
        native = httpx.get(f"{server.url}/v1/streams/{stream_id}")
    assert got == ["", "Bon"]
    assert 0.5 <= elapsed < 5.0  # the timeout, not the 600 s default nor a hang
    assert info.value.message == (
        f"openai stopped sending: no data from {url} for 0.5 s (the read timeout)"
    )
    assert info.value.code == "timeout"  # type: ignore[attr-defined]
    last = events(native)[-1]
    assert last.event == "error"
    assert '"code": "timeout"' in last.data
    assert "for 0.5 s (the read timeout)" in last.data


def test_the_providers_timeouts_reach_its_http_client() -> None:
    settings = make(
        providers={
            "a": {"kind": "openai", "api_key": "k", "timeout": 7.5, "connect_timeout": 2.0},
            "b": {"kind": "anthropic", "api_key": "k"},
        }
    )
    models = Models(settings, local=Thinking())
    clients = {name: p.client for name, p in models.upstreams.items()}  # type: ignore[attr-defined]
    assert [(c.connect_timeout, c.read_timeout) for c in clients.values()] == [
        (2.0, 7.5),
        (10.0, 600.0),
    ]
    anyio.run(models.aclose)
    assert all(c._closed for c in clients.values())  # type: ignore[union-attr]


def test_after_a_mid_stream_error_every_wire_event_has_its_own_id(gateway, upstream) -> None:  # type: ignore[no-untyped-def]
    # One stored error event renders as several wire events (OpenAI: the error
    # chunk and [DONE]; AI SDK: text-end, error, finish, [DONE]): the last has
    # its id, each before it that id and ".n" (docs/RELIABILITY.md), so no id is
    # sent twice and a cut inside the group resumes with exactly the rest.
    # Exact bytes, the stream's random epoch put back.
    fake, url = upstream
    fake.add("/v1/chat/completions", Reply.load(CAPTURES / "openai_error_midstream.http"))
    with gateway(**provider(url)) as server:
        body = {"model": "fake/m1", "messages": MESSAGES, "stream": True}
        chat = httpx.post(server.url + "/v1/chat/completions", json=body)
        stream = chat.headers["x-stream-id"]
        follow = f"{server.url}/v1/streams/{stream}?format=aisdk"
        aisdk = httpx.get(follow)
        epoch = chat.text.split("\n", 1)[0].removeprefix("id: ")[:8]
        after_part = httpx.get(follow, headers={"Last-Event-ID": f"{epoch}-000000000003.2"})

    def chunk(delta: str) -> str:
        return (
            'data: {"id":"chatcmpl-c3","object":"chat.completion.chunk","created":1760000002,'
            f'"model":"m1","choices":[{{"index":0,"delta":{delta},"logprobs":null,'
            '"finish_reason":null}]}\n'
        )

    assert chat.text == (
        f"id: {epoch}-000000000001\n"
        + chunk('{"role": "assistant", "content": ""}')
        + f"\nid: {epoch}-000000000002\n"
        + chunk('{"content":"Hel"}')
        + f"\nid: {epoch}-000000000003.1\n"
        'data: {"error": {"message": "upstream overloaded", "type": "server_error", '
        '"param": null, "code": "overloaded"}}\n\n'
        f"id: {epoch}-000000000003\ndata: [DONE]\n\n"
    )
    assert aisdk.text == (
        f'id: {epoch}-000000000001.1\ndata: {{"type": "start", "messageId": "chatcmpl-c3"}}\n\n'
        f'id: {epoch}-000000000001\ndata: {{"type": "start-step"}}\n\n'
        f'id: {epoch}-000000000002.1\ndata: {{"type": "text-start", "id": "t0"}}\n\n'
        f'id: {epoch}-000000000002\ndata: {{"type": "text-delta", "id": "t0", "delta": "Hel"}}\n\n'
        f'id: {epoch}-000000000003.1\ndata: {{"type": "text-end", "id": "t0"}}\n\n'
        f"id: {epoch}-000000000003.2\n"
        'data: {"type": "error", "errorText": "upstream overloaded"}\n\n'
        f'id: {epoch}-000000000003.3\ndata: {{"type": "finish"}}\n\n'
        f"id: {epoch}-000000000003\ndata: [DONE]\n\n"
    )
    assert after_part.text == aisdk.text[aisdk.text.index(f"id: {epoch}-000000000003.3") :]


def test_routes_of_the_names_the_settings_fix_are_made_once() -> None:
    settings = make(
        aliases={"fast": "fake/small", "mirror": "echo"},
        providers={"fake": {"kind": "openai", "api_key": "k", "models": ["small"]}},
    )
    models = Models(settings, local=Thinking())
    for name in ("echo", "local", "fast", "mirror", "fake/small"):
        assert models.route(name) is models.route(name)
    # Any <provider>/<model> routes, but a name the client chose is not kept.
    chosen = models.route("fake/anything")
    assert (chosen.upstream_model, chosen.label) == ("anything", "fake/*")
    assert models.route("fake/anything") is not chosen
    assert set(models._routes) == {"echo", "local", "fast", "mirror", "fake/small"}
    fast = models.route("fast")
    assert (fast.model, fast.upstream_model, fast.label) == ("fast", "small", "fast")
    assert models.route("mirror").provider is models.echo
    with pytest.raises(UnknownModel):
        models.route("nobody/x")
    assert "nobody/x" not in models._routes
    anyio.run(models.aclose)
