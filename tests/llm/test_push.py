"""The body pushed from the connection's callback (``HTTPProvider.stream_into``,
``drive_into``, ``Response.push``): the same events as reading it, the same
errors, the connection closed or reused as when reading, and reading again
where pushing cannot be done (httpx, aiohttp's internals not as expected)."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace
from typing import Any

import aiohttp
import anyio
import httpx
import pytest
from llm_support import REQUEST, Upstream, capture, collect

from http_support import Conn, RawServer
from ssegate.llm import Error, LLMEvent, Start, TextDelta
from ssegate.llm import _client as client_module
from ssegate.llm.providers import HTTPClient, HTTPProvider, default_http_client
from ssegate.llm.providers.anthropic import AnthropicProvider
from ssegate.llm.providers.ollama import OllamaProvider
from ssegate.llm.providers.openai import OpenAIProvider
from ssegate.testing import FakeUpstream, Reply

pytestmark = pytest.mark.anyio

#: Captures of every provider, every ending: finished, cut short, failed inside the stream.
CAPTURES = [
    "openai_text.http",
    "openai_tool_call.http",
    "openai_truncated.http",
    "openai_error_midstream.http",
    "deepseek_reasoning.http",
    "glm_network_error.http",
    "llamacpp_old_error.http",
    "vllm_old_error.http",
    "anthropic_thinking_tool.http",
    "anthropic_truncated.http",
    "anthropic_error_midstream.http",
    "ollama_chat.http",
    "ollama_truncated.http",
    "ollama_error_midstream.http",
]


def provider_for(name: str, upstream: Upstream, reply: Reply, client: Any) -> HTTPProvider:
    """The provider that reads ``name``'s capture, served ``reply`` twice."""
    if name.startswith("anthropic"):
        base = upstream.replay("/v1/messages", reply, reply)
        return AnthropicProvider(base, "sk-ant", client=client)
    if name.startswith("ollama"):
        return OllamaProvider(upstream.replay("/api/chat", reply, reply), client=client)
    vendor = name.split("_")[0]
    vendor = {"llamacpp": "llamacpp", "vllm": "vllm", "glm": "glm"}.get(vendor, "openai")
    base = upstream.replay("/chat/completions", reply, reply)
    return OpenAIProvider(base, "k", vendor=vendor, client=client)  # type: ignore[arg-type]


class Sink:
    """Takes what ``stream_into`` hands over; notes whether from a task or a callback."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.batches: list[list[LLMEvent]] = []
        self.in_task: list[bool] = []
        self.fail_at = fail_at
        self.two = anyio.Event()  # two events taken

    def __call__(self, batch: list[LLMEvent]) -> None:
        if len(self.batches) == self.fail_at:
            raise ValueError("the sink failed")
        self.batches.append(batch)
        self.in_task.append(asyncio.current_task() is not None)
        if len(self.events) >= 2:
            self.two.set()

    @property
    def events(self) -> list[LLMEvent]:
        return [event for batch in self.batches for event in batch]


@pytest.mark.parametrize("name", CAPTURES)
@pytest.mark.parametrize("chunk_size", [None, 7])
async def test_pushed_events_are_the_events_read(
    upstream: Upstream, client: Any, name: str, chunk_size: int | None
) -> None:
    reply = replace(capture(name, chunk_size=chunk_size), interval=0.002)
    provider = provider_for(name, upstream, reply, client)
    read = await collect(provider, REQUEST)
    sink = Sink()
    await provider.stream_into(REQUEST, sink)
    assert sink.events == read
    assert all(sink.batches)
    if isinstance(client, httpx.AsyncClient):
        assert set(sink.in_task) == {True}  # read by this task: httpx cannot push


async def test_aiohttp_pushes_and_httpx_reads(client: Any) -> None:
    fake = FakeUpstream().add("/h", Reply(200, (), (b"data: x\n\n",)))
    with fake.run() as url:
        async with client_module.open_stream(client, "POST", url + "/h", {}, b"") as response:
            chunks: list[bytes] = []
            pushed = response.push(lambda chunk: chunks.append(chunk) is not None)
            if isinstance(client, HTTPClient):
                assert pushed is not None
                assert await pushed is None
                assert chunks == [b"data: x\n\n"]
            else:
                assert pushed is None
                assert [c async for c in response.aiter_bytes()] == [b"data: x\n\n"]


async def test_where_aiohttp_s_reader_differs_the_body_is_read(
    upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_module, "_READER", ("read_nowait", "no_such_method"))
    monkeypatch.setattr(client_module, "_KNOWN_READER", [])  # looked at again
    client = HTTPClient()
    provider = provider_for("openai_text.http", upstream, capture("openai_text.http"), client)
    read = await collect(provider, REQUEST)
    sink = Sink()
    await provider.stream_into(REQUEST, sink)
    await client.aclose()
    assert sink.events == read
    assert set(sink.in_task) == {True}


def _gated(*gates: threading.Event) -> RawServer:
    """A server answering a request per gate: ``x``, then ``y`` once the test opens it."""

    def handle(conn: Conn) -> None:
        for gate in gates:
            conn.read_request()
            conn.send(HEAD + _chunked(b"data: x\n\n"))
            gate.wait(10)
            conn.send(_chunked(b"data: y\n\n") + b"0\r\n\r\n")

    return RawServer(handle)


async def test_a_pushed_reader_is_aiohttp_s_again_once_left() -> None:
    gates = [threading.Event(), threading.Event()]
    server = _gated(*gates)
    client = HTTPClient()
    with server.run() as url:
        for gate in gates:
            async with client.stream("POST", url + "/h") as response:
                reads = response._reads
                assert reads is not None
                content = reads.content
                assert type(content) is aiohttp.StreamReader
                taken: list[bytes] = []
                pushed = response.push(lambda chunk, t=taken: t.append(chunk) is not None)
                assert pushed is not None
                assert type(content) is not aiohttp.StreamReader  # pushed
                gate.set()
                assert await pushed is None
                assert taken == [b"data: x\n\n", b"data: y\n\n"]
            assert type(content) is aiohttp.StreamReader
            assert content.is_eof()
            assert client_module._PUSHED == {}
    await client.aclose()
    assert server.connections == 1  # the connection served both


async def test_a_reader_that_is_not_aiohttp_s_own_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Reader(aiohttp.StreamReader):
        __slots__ = ()

    # aiohttp's reader is no longer the class of that name (as if aiohttp changed).
    monkeypatch.setattr(aiohttp, "StreamReader", Reader)
    monkeypatch.setattr(client_module, "_KNOWN_READER", [])  # looked at again
    gate = threading.Event()
    server = _gated(gate)
    client = HTTPClient()
    with server.run() as url:
        async with client.stream("POST", url + "/h") as response:
            assert response._reads is not None
            assert type(response._reads.content) is not Reader
            assert response.push(lambda chunk: False) is None
            gate.set()
            assert b"".join([c async for c in response.aiter_bytes()]) == b"data: x\n\ndata: y\n\n"
    await client.aclose()


def _chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces)


HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
TEXT = capture("openai_text.http").chunks


async def _both_ways(url: str, client: Any) -> tuple[list[LLMEvent], Sink]:
    provider = OpenAIProvider(url + "/v1", "k", client=client)
    read = await collect(provider, REQUEST)
    sink = Sink()
    await provider.stream_into(REQUEST, sink)
    return read, sink


async def _cut_short(after: Any, client: Any) -> tuple[Error, str, RawServer]:
    """Read and pushed from a server that answers two chunks, then ``after(conn)``:
    the same events, the first token and an ``Error``; that error, the URL, the server."""
    server = RawServer(_answer_then(after))
    with server.run() as url:
        read, sink = await _both_ways(url, client)
    await client.aclose()
    assert sink.events == read
    assert [type(e) for e in read] == [Start, TextDelta, Error]
    last = read[-1]
    assert isinstance(last, Error)
    return last, url, server


def _answer_then(after: Any) -> Any:
    """A server answering each request with the first two chunks, then ``after(conn)``."""

    def handle(conn: Conn) -> None:
        while conn.read_request() is not None:
            conn.send(HEAD + _chunked(*TEXT[:2]))
            if after(conn):
                return

    return handle


@pytest.mark.parametrize("kind", ["aiohttp", "httpx"])
async def test_a_connection_cut_inside_a_chunk_ends_with_the_same_error(kind: str) -> None:
    def cut(conn: Conn) -> bool:
        conn.send(b"40\r\ndata: {")  # a chunk of 64 bytes, cut after 7
        return True

    client = HTTPClient() if kind == "aiohttp" else default_http_client()
    last, _, _ = await _cut_short(cut, client)
    assert (last.code, last.retryable) == ("upstream_disconnected", True)


async def test_a_pushed_body_times_out_as_a_read_one() -> None:
    def silent(conn: Conn) -> bool:
        conn.wait_closed()
        return True

    last, url, server = await _cut_short(silent, HTTPClient(read_timeout=0.2))
    assert (last.code, last.retryable) == ("timeout", True)
    assert last.message == (
        f"openai stopped sending: no data from {url} for 0.2 s (the read timeout)"
    )
    assert server.connections == 2  # a timed-out connection is not used again


async def test_a_pushed_body_read_to_its_end_leaves_the_connection_reusable() -> None:
    def handle(conn: Conn) -> None:
        while conn.read_request() is not None:
            conn.send(HEAD)
            for piece in TEXT[:-1]:
                conn.send(_chunked(piece))
            # [DONE] with the body's end: the stream's end is seen with the body's
            # (else the connection is closed, as when reading: nothing waits for it)
            conn.send(_chunked(TEXT[-1]) + b"0\r\n\r\n")

    server = RawServer(handle)
    client = HTTPClient()
    provider = OpenAIProvider("http://unused/v1", "k", client=client)
    with server.run() as url:
        provider = OpenAIProvider(url + "/v1", "k", client=client)
        sinks = [Sink(), Sink(), Sink()]
        for sink in sinks:
            await provider.stream_into(REQUEST, sink)
        read = await collect(provider, REQUEST)
    await client.aclose()
    assert [sink.events for sink in sinks] == [read, read, read]
    assert server.connections == 1
    assert len(server.requests) == 4


def _held() -> tuple[RawServer, list[bool]]:
    """A server that answers with two chunks, then notes whether the client closed."""
    closed: list[bool] = []

    def held(conn: Conn) -> bool:
        closed.append(conn.wait_closed())
        return True

    return RawServer(_answer_then(held)), closed


@pytest.mark.parametrize("kind", ["aiohttp", "httpx"])
@pytest.mark.parametrize("how", ["cancelled", "the sink raises"])
async def test_stopping_early_closes_the_upstream_connection(kind: str, how: str) -> None:
    server, closed = _held()
    client = HTTPClient() if kind == "aiohttp" else default_http_client()
    with server.run() as url:
        provider = OpenAIProvider(url + "/v1", "k", client=client)
        if how == "cancelled":
            sink = Sink()
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(provider.stream_into, REQUEST, sink)
                await sink.two.wait()
                tasks.cancel_scope.cancel()
            assert [type(e) for e in sink.events] == [Start, TextDelta]
        else:
            with pytest.raises(ValueError, match="the sink failed"):
                await provider.stream_into(REQUEST, Sink(fail_at=0))
        # the server's thread waits for the close; the server's exit joins it
    await client.aclose()
    assert closed == [True]


async def test_what_comes_after_the_head_is_pushed_from_the_connection_s_callback() -> None:
    gate = threading.Event()
    server = _gated(gate)
    client = HTTPClient()
    with server.run() as url:
        async with client.stream("POST", url + "/h") as response:
            taken: list[tuple[bytes, bool]] = []

            def on_data(chunk: bytes) -> bool:
                taken.append((chunk, asyncio.current_task() is None))
                return False

            pushed = response.push(on_data)
            assert pushed is not None
            assert taken == [(b"data: x\n\n", False)]  # came with the head: from push()
            gate.set()
            assert await pushed is None
            assert taken == [(b"data: x\n\n", False), (b"data: y\n\n", True)]
    await client.aclose()
    assert server.connections == 1
