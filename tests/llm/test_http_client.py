"""The providers' outbound HTTP, each defect of issue 11 against a real local socket.

Every test runs on both clients the driver accepts (the ``client`` fixture:
ssegate's aiohttp ``HTTPClient`` and an httpx client), through the public API
(``OpenAIProvider`` / ``create_provider``) where the defect showed there.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
import socket
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable
from contextlib import aclosing
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from llm_support import REQUEST, collect

from http_support import Conn, ConnectProxy, RawServer, make_certificate
from ssegate import ProtocolError, ReadTimeout, TransportError, UpstreamUnavailable
from ssegate.llm import Error, Finish, Start, TextDelta
from ssegate.llm._client import open_stream
from ssegate.llm.providers import HTTPClient, create_provider, default_http_client
from ssegate.llm.providers.openai import OpenAIProvider
from ssegate.testing import FakeUpstream, Reply

pytestmark = pytest.mark.anyio


def sse_answer(ident: str, text: str) -> bytes:
    """A whole OpenAI streaming answer saying ``text``."""

    def chunk(delta: dict[str, Any], finish: str | None) -> bytes:
        body = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": 1760000000,
            "model": "m1",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return b"data: " + json.dumps(body).encode() + b"\n\n"

    return chunk({"content": text}, None) + chunk({}, "stop") + b"data: [DONE]\n\n"


def answer_events(ident: str, text: str) -> list[Any]:
    return [
        Start(model="m1", provider="openai", id=ident, created=1760000000),
        TextDelta(text),
        Finish("stop", "stop"),
    ]


def response(body: bytes, *headers: str) -> bytes:
    """A 200 answer with ``body`` (Content-Length framing) and extra ``headers``."""
    head = ["HTTP/1.1 200 OK", "content-type: text/event-stream", *headers]
    head.append(f"content-length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def make_client(kind: str, **options: Any) -> HTTPClient | httpx.AsyncClient:
    """An ``HTTPClient`` or an httpx client with ``read_timeout``/``trust_env``/``verify``."""
    if kind == "aiohttp":
        return HTTPClient(**options)
    return default_http_client(timeout=options.pop("read_timeout", 600.0), **options)


@pytest.fixture(params=["aiohttp", "httpx"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# -- 1. an informational answer never desyncs a pooled connection --------------------


async def test_103_before_200_on_a_reused_connection(kind: str) -> None:
    def handler(conn: Conn) -> None:
        for body in (b"first answer", b"second answer"):
            if conn.read_request() is None:
                return
            conn.send(b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n")
            conn.send(response(body))

    server = RawServer(handler)
    with server.run() as url:
        client = make_client(kind)
        bodies = []
        for _ in range(2):
            async with open_stream(client, "POST", url + "/", {}, b"{}") as r:
                bodies.append((r.status_code, b"".join([c async for c in r.aiter_bytes()])))
        await client.aclose()
    assert bodies == [(200, b"first answer"), (200, b"second answer")]
    assert (server.connections, len(server.requests)) == (1, 2)  # one reused connection


async def test_103_before_200_through_a_provider(kind: str) -> None:
    answers = iter([sse_answer("first", "one"), sse_answer("second", "two")])

    def handler(conn: Conn) -> None:  # answers in order, whatever the connection
        while conn.read_request() is not None:
            conn.send(b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n")
            conn.send(response(next(answers)))

    server = RawServer(handler)
    with server.run() as url:
        client = make_client(kind)
        async with OpenAIProvider(url + "/v1", "k", client=client) as provider:
            first = await collect(provider, REQUEST)
            second = await collect(provider, REQUEST)
        await client.aclose()
    assert first == answer_events("first", "one")
    assert second == answer_events("second", "two")
    assert len(server.requests) == 2


# -- 2. header injection, framing headers, userinfo ----------------------------------


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"api_key": "sk-abc\r\nX-Injected: yes"}, "authorization"),
        ({"api_key": "sk-abc\nX-Injected: yes"}, "authorization"),
        ({"api_key": "sk-abc\x00"}, "authorization"),
        ({"api_key": "k", "headers": {"X-Org": "a\r\nX-Injected: yes"}}, "X-Org"),
        ({"api_key": "k", "headers": {"X-Org\r\nX-Injected": "yes"}}, "X-Org\r\nX-Injected"),
    ],
)
async def test_header_injection_is_refused_before_anything_is_sent(
    kind: str, options: dict[str, Any], named: str
) -> None:
    def handler(conn: Conn) -> None:
        conn.read_request()

    server = RawServer(handler)
    with server.run() as url:
        client = make_client(kind)
        provider = create_provider("openai", base_url=url + "/v1", client=client, **options)
        with pytest.raises(ValueError, match=re.escape(f"header {named!r}")) as caught:
            await collect(provider, REQUEST)
        await provider.aclose()
        await client.aclose()
    assert "sk-abc" not in str(caught.value)  # the secret is not echoed
    assert (server.connections, server.requests) == (0, [])


async def test_framing_headers_are_not_duplicated_and_userinfo_never_reaches_host(
    kind: str,
) -> None:
    def handler(conn: Conn) -> None:
        while conn.read_request() is not None:
            conn.send(response(b"ok"))

    server = RawServer(handler)
    with server.run() as url:
        port = url.rsplit(":", 1)[1]
        client = make_client(kind)
        sent = {"Host": "api.example.test", "Content-Length": "999", "Transfer-Encoding": "x"}
        async with open_stream(client, "POST", url + "/a", sent, b"{}") as r:
            assert [c async for c in r.aiter_bytes()] == [b"ok"]
        secret_url = f"http://user:s%40cret@127.0.0.1:{port}/b"
        async with open_stream(client, "POST", secret_url, {}, b"{}") as r:
            assert [c async for c in r.aiter_bytes()] == [b"ok"]
        await client.aclose()
    first, second = server.requests
    assert first.header_values("host") == ["api.example.test"]
    assert first.header_values("content-length") == ["2"]
    assert first.header_values("transfer-encoding") == []
    assert second.request_line == "POST /b HTTP/1.1"
    assert second.header_values("host") == [f"127.0.0.1:{port}"]
    assert second.header_values("authorization") == [
        "Basic " + base64.b64encode(b"user:s@cret").decode()
    ]
    assert b"cret" not in second.head.replace(
        second.header_values("authorization")[0].encode(), b""
    )


async def test_a_provider_s_changed_headers_are_checked_and_sent() -> None:
    """The aiohttp client builds a provider's URL and headers once and reuses
    them; a changed key or header is still checked and sent as it is now."""

    def handler(conn: Conn) -> None:
        while conn.read_request() is not None:
            conn.send(response(sse_answer("a", "ok")))

    server = RawServer(handler)
    with server.run() as url:
        client = HTTPClient()
        provider = OpenAIProvider(url + "/v1", "k1", vendor="generic", client=client, name="openai")
        for key in ("k1", "k1", "k2"):
            provider.api_key = key
            assert await collect(provider, REQUEST) == answer_events("a", "ok")
        provider.api_key = "k3\r\nX-Injected: yes"
        with pytest.raises(ValueError, match="header 'authorization'"):
            await collect(provider, REQUEST)
        await client.aclose()
    assert [r.header_values("authorization") for r in server.requests] == [
        ["Bearer k1"],
        ["Bearer k1"],
        ["Bearer k2"],
    ]
    assert [r.request_line for r in server.requests] == ["POST /v1/chat/completions HTTP/1.1"] * 3
    assert server.connections == 1


# -- 3. a POST is never sent twice --------------------------------------------------


async def test_no_second_post_after_a_read_timeout_on_a_reused_connection(kind: str) -> None:
    def handler(conn: Conn) -> None:
        conn.read_request()
        conn.send(response(b"first answer"))
        conn.read_request()  # then never answer: the client must give up, not re-send
        conn.wait_closed()

    server = RawServer(handler)
    with server.run() as url:
        client = make_client(kind, read_timeout=0.3)
        async with open_stream(client, "POST", url + "/", {}, b"{}") as r:
            assert b"".join([c async for c in r.aiter_bytes()]) == b"first answer"
        with pytest.raises(ReadTimeout, match="no answer"):
            async with open_stream(client, "POST", url + "/", {}, b"{}"):
                pass
        # The error is out: any re-send would have happened before it.
        assert (server.connections, len(server.requests)) == (1, 2)
        await client.aclose()


@pytest.mark.parametrize("failure", ["garbage", "closed without answering"])
async def test_no_second_post_after_a_broken_answer_on_a_reused_connection(
    kind: str, failure: str
) -> None:
    def handler(conn: Conn) -> None:
        conn.read_request()
        conn.send(response(b"first answer"))
        conn.read_request()  # the request may have been processed: never send it again
        if failure == "garbage":
            conn.send(b"HTTP/1.1 2OO NOT A STATUS\r\n\r\n")
        conn.sock.shutdown(socket.SHUT_RDWR)

    server = RawServer(handler)
    with server.run() as url:
        client = make_client(kind)
        async with open_stream(client, "POST", url + "/", {}, b"{}") as r:
            assert b"".join([c async for c in r.aiter_bytes()]) == b"first answer"
        with pytest.raises(TransportError, match=re.escape(f"request to {url} failed")):
            async with open_stream(client, "POST", url + "/", {}, b"{}"):
                pass
        assert (server.connections, len(server.requests)) == (1, 2)
        await client.aclose()


async def test_a_provider_does_not_repeat_a_generation_after_a_timeout(kind: str) -> None:
    def handler(conn: Conn) -> None:
        while conn.read_request() is not None:
            pass  # never answers

    server = RawServer(handler)
    with server.run() as url:
        client = make_client(kind, read_timeout=0.3)
        async with OpenAIProvider(url + "/v1", "k", client=client) as provider:
            with pytest.raises(UpstreamUnavailable, match="did not answer in time"):
                await collect(provider, REQUEST)
            assert (server.connections, len(server.requests)) == (1, 1)
        await client.aclose()


async def test_an_idle_connection_the_server_closed_is_not_used_again(kind: str) -> None:
    closed = threading.Event()

    def handler(conn: Conn) -> None:
        if conn.read_request() is None:
            return
        conn.send(response(b"answer"))  # keep-alive by default, and yet:
        conn.sock.shutdown(socket.SHUT_RDWR)  # the server's idle timeout
        closed.set()

    server = RawServer(handler)
    with server.run() as url:
        client = make_client(kind)
        bodies = []
        for _ in range(2):
            async with open_stream(client, "POST", url + "/", {}, b"{}") as r:
                bodies.append(b"".join([c async for c in r.aiter_bytes()]))
            # The loop runs while we wait in a thread, so the FIN is seen.
            assert await anyio.to_thread.run_sync(closed.wait, 10.0)
            closed.clear()
        await client.aclose()
    assert bodies == [b"answer", b"answer"]
    assert (server.connections, len(server.requests)) == (2, 2)  # each POST sent once


# -- 4. size limits ------------------------------------------------------------------


def send_after_request(conn: Conn, view: memoryview) -> None:
    """Read one request, then send ``view`` in slices (no copies: no allocations)."""
    conn.read_request()
    for i in range(0, len(view), 65536):
        conn.send(view[i : i + 65536])


async def collect_traced(provider: OpenAIProvider) -> tuple[list[Any] | Exception, int]:
    """The events (or the exception) of ``REQUEST`` and the peak of traced memory."""
    tracemalloc.start()
    try:
        try:
            outcome: list[Any] | Exception = await collect(provider, REQUEST)
        except Exception as exc:
            outcome = exc
        return outcome, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        await provider.aclose()


@pytest.mark.parametrize("shape", ["one long header", "many headers"])
async def test_an_oversized_head_is_refused_with_bounded_memory(kind: str, shape: str) -> None:
    if shape == "one long header":
        head = b"HTTP/1.1 200 OK\r\nx-big: " + b"a" * (20 << 20) + b"\r\n\r\n"
    else:
        head = b"HTTP/1.1 200 OK\r\n" + b"x-h: 0123456789abcdef\r\n" * 1_000_000 + b"\r\n"
    view = memoryview(head)

    server = RawServer(lambda conn: send_after_request(conn, view))
    with server.run() as url:
        client = make_client(kind)
        outcome, peak = await collect_traced(OpenAIProvider(url + "/v1", "k", client=client))
        await client.aclose()
    assert isinstance(outcome, UpstreamUnavailable)
    assert "could not reach" in str(outcome)
    assert isinstance(outcome.__cause__, TransportError)
    assert peak < 4 << 20, peak  # the 20 MB head was refused as it came, never held


def gzip_bomb(size: int) -> bytes:
    """``size`` bytes of keep-alive comments, gzipped (about 1000x smaller)."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = b": ping\n\n" * (1 << 17)
    parts = [comp.compress(block) for _ in range(size // len(block))]
    return b"".join([*parts, comp.flush()])


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return gzip_bomb(256 << 20)  # 256 MiB of comments in ~260 KB


async def test_a_gzip_bomb_is_refused_with_bounded_memory(kind: str, bomb: bytes) -> None:
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-encoding: gzip\r\n"
        b"content-length: %d\r\n\r\n" % len(bomb)
    )
    server = RawServer(lambda conn: send_after_request(conn, memoryview(head + bomb)))
    with server.run() as url:
        client = make_client(kind)
        events, peak = await collect_traced(OpenAIProvider(url + "/v1", "k", client=client))
        await client.aclose()
    assert isinstance(events, list)
    assert len(events) == 2
    assert events[0] == Start(model="m1", provider="openai")
    error = events[1]
    assert isinstance(error, Error)
    assert (error.code, error.retryable) == ("protocol_error", False)
    assert "decompression bomb" in error.message
    assert peak < 8 << 20, peak


async def test_a_truncated_gzip_body_is_an_error(kind: str) -> None:
    body = b"data: one\n\ndata: two\n\n"
    cut = gzip.compress(body)[:-8]  # the trailer (CRC, size) never comes
    fake = FakeUpstream().add("/t", Reply(200, (("content-encoding", "gzip"),), (cut,)))
    with fake.run() as url:
        client = make_client(kind)
        received: list[bytes] = []

        async def read_all() -> None:
            async with open_stream(client, "POST", url + "/t", {}, b"") as r:
                async for chunk in r.aiter_bytes():
                    received.append(chunk)

        with pytest.raises(ProtocolError, match="cut short"):
            await read_all()
        await client.aclose()
    assert b"".join(received) == body  # what came is delivered; the end is refused


async def test_a_truncated_gzip_stream_ends_with_an_error_event(kind: str) -> None:
    whole = sse_answer("x", "hi")
    cut = gzip.compress(whole[: whole.index(b"data: [DONE]") - 40])
    fake = FakeUpstream().add(
        "/v1/chat/completions",
        Reply(
            200, (("content-encoding", "gzip"), ("content-type", "text/event-stream")), (cut[:-8],)
        ),
    )
    with fake.run() as url:
        client = make_client(kind)
        async with OpenAIProvider(url + "/v1", "k", client=client) as provider:
            events = await collect(provider, REQUEST)
        await client.aclose()
    assert events[:2] == [
        Start(model="m1", provider="openai", id="x", created=1760000000),
        TextDelta("hi"),
    ]
    assert isinstance(events[2], Error)
    assert (events[2].code, len(events)) == ("protocol_error", 3)
    assert "cut short" in events[2].message


# -- 6. proxies and CAs from the environment ------------------------------------------


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[str, str]:
    return make_certificate(tmp_path)


async def test_https_proxy_from_the_environment_is_used(
    kind: str, certificate: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    key, cert = certificate
    fake = FakeUpstream().add(
        "/v1/chat/completions",
        Reply(200, (("content-type", "text/event-stream"),), (sse_answer("p", "via proxy"),)),
    )
    proxy = ConnectProxy()
    proxy_server = RawServer(proxy.handle)
    with fake.run(ssl_keyfile=key, ssl_certfile=cert) as url, proxy_server.run() as proxy_url:
        https = url.replace("http://", "https://")
        for name in ("NO_PROXY", "no_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTPS_PROXY", proxy_url)
        monkeypatch.setenv("SSL_CERT_FILE", cert)  # the CA, from the environment too
        client = make_client(kind)
        async with OpenAIProvider(https + "/v1", "k", client=client) as provider:
            events = await collect(provider, REQUEST)
        await client.aclose()
        assert proxy.targets == [f"CONNECT {https.removeprefix('https://')}"]

        ignoring = make_client(kind, trust_env=False, ssl_context=_trusting(cert))
        async with OpenAIProvider(https + "/v1", "k", client=ignoring) as provider:
            direct = await collect(provider, REQUEST)
        await ignoring.aclose()
        monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
        bypassing = make_client(kind)
        async with OpenAIProvider(https + "/v1", "k", client=bypassing) as provider:
            bypassed = await collect(provider, REQUEST)
        await bypassing.aclose()
    assert events == direct == bypassed == answer_events("p", "via proxy")
    assert len(proxy.targets) == 1  # trust_env=False and NO_PROXY went around the proxy


async def test_a_netrc_entry_neither_replaces_nor_clashes_with_the_api_key(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password elsewhere\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.setenv("HOME", str(tmp_path))

    def handler(conn: Conn) -> None:
        if conn.read_request() is not None:
            conn.send(response(sse_answer("n", "ok")))

    server = RawServer(handler)
    with server.run() as url:
        client = make_client(kind)
        async with OpenAIProvider(url + "/v1", "sk-key", client=client) as provider:
            events = await collect(provider, REQUEST)
        await client.aclose()
    assert events == answer_events("n", "ok")
    assert server.requests[0].header_values("authorization") == ["Bearer sk-key"]


def _trusting(cert: str) -> Any:
    import ssl

    return ssl.create_default_context(cafile=cert)


async def test_tls_with_a_wrong_hostname_is_refused(kind: str, tmp_path: Path) -> None:
    key, cert = make_certificate(tmp_path, san="DNS:api.example.test")
    fake = FakeUpstream().add("/v1/chat/completions", Reply(200, (), (sse_answer("t", "no"),)))
    with fake.run(ssl_keyfile=key, ssl_certfile=cert) as url:
        https = url.replace("http://", "https://")
        client = make_client(kind, ssl_context=_trusting(cert))  # the CA is trusted...
        async with OpenAIProvider(https + "/v1", "k", client=client) as provider:
            with pytest.raises(
                UpstreamUnavailable, match=r"(?i)mismatch|doesn't match|not valid for"
            ) as caught:
                await collect(provider, REQUEST)
        await client.aclose()
    assert isinstance(caught.value.__cause__, TransportError)  # ...the name is not
    assert fake.requests == []


async def test_tls_with_the_ca_from_ssl_cert_file(
    kind: str, certificate: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    key, cert = certificate
    fake = FakeUpstream().add("/v1/chat/completions", Reply(200, (), (sse_answer("c", "trusted"),)))
    with fake.run(ssl_keyfile=key, ssl_certfile=cert) as url:
        https = url.replace("http://", "https://") + "/v1"
        client = make_client(kind)  # the system store does not know this CA
        with pytest.raises(UpstreamUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
            await collect(OpenAIProvider(https, "k", client=client), REQUEST)
        await client.aclose()
        monkeypatch.setenv("SSL_CERT_FILE", cert)
        client = make_client(kind)
        events = await collect(OpenAIProvider(https, "k", client=client), REQUEST)
        await client.aclose()
    assert events == answer_events("c", "trusted")


# -- the client's own contract ---------------------------------------------------------


async def test_silence_before_the_head_is_a_read_timeout(kind: str) -> None:
    def handler(conn: Conn) -> None:
        conn.read_request()
        conn.wait_closed()

    server = RawServer(handler)
    with server.run() as url:
        client = make_client(kind, read_timeout=0.2)
        with pytest.raises(ReadTimeout, match="no answer"):
            async with open_stream(client, "POST", url + "/", {}, b"{}"):
                pass
        await client.aclose()


async def test_leaving_early_closes_the_connection(kind: str) -> None:
    fake = FakeUpstream().add("/h", Reply(200, (), (b"data: x\n\n",), hold=True))
    with fake.run() as url:
        client = make_client(kind)
        async with (
            open_stream(client, "POST", url + "/h", {}, b"") as r,
            aclosing(r.aiter_bytes()) as chunks,
        ):
            assert await anext(chunks) == b"data: x\n\n"
        # The server saw us go (it stops generating); waited for in a thread, so the
        # event loop goes on and the close actually happens.
        assert await anyio.to_thread.run_sync(fake.wait_disconnected, 5.0)
        await client.aclose()


async def test_a_closed_client_refuses_new_requests() -> None:
    client = HTTPClient()
    await client.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        async with client.stream("POST", "http://127.0.0.1:9/"):
            pass


async def test_a_refused_connection_is_a_transport_error(kind: str) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = make_client(kind)
    with pytest.raises(TransportError, match=f"127.0.0.1:{port}"):
        async with open_stream(client, "POST", f"http://127.0.0.1:{port}/", {}, b""):
            pass
    with pytest.raises(ValueError, match="not an http"):
        async with open_stream(client, "POST", "ftp://example.com/", {}, b""):
            pass
    await client.aclose()


# -- TLS session resumption (ssegate._http.ResumingSSLContext) ---------------------------


class TLSAnswers:
    """A TLS server on 127.0.0.1 answering every request with ``sse_answer`` and
    closing, noting per connection whether the client resumed a TLS session.
    ``tickets=False``: TLS 1.2 without session tickets (a session, never a ticket)."""

    def __init__(self, key: str, cert: str, *, tickets: bool = True) -> None:
        self.key, self.cert, self.tickets = key, cert, tickets
        self.context = self.new_context()
        self.resumed: list[bool] = []
        self.raw = RawServer(self.handle)

    def new_context(self) -> Any:
        """A server context: its own ticket keys (so a new one declines old tickets)."""
        import ssl

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        if not self.tickets:
            context.maximum_version = ssl.TLSVersion.TLSv1_2
            context.options |= ssl.OP_NO_TICKET
        return context

    def rotate(self) -> None:
        """New ticket keys, as servers rotate them: tickets issued before are declined."""
        self.context = self.new_context()

    def handle(self, conn: Conn) -> None:
        import ssl

        try:
            tls = self.context.wrap_socket(conn.sock, server_side=True)
        except (ssl.SSLError, OSError):
            self.resumed.append(False)  # the client refused the handshake
            return
        self.resumed.append(tls.session_reused)
        secure = Conn(tls, self.raw)
        if secure.read_request() is not None:
            secure.send(response(sse_answer("r", "again"), "connection: close"))
        tls.close()


async def test_a_new_connection_resumes_the_tls_session_of_the_last_one(
    kind: str, certificate: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    key, cert = certificate
    monkeypatch.setenv("SSL_CERT_FILE", cert)
    server = TLSAnswers(key, cert)
    with server.raw.run() as url:
        https = url.replace("http://", "https://") + "/v1"
        client = make_client(kind)  # default_ssl_context(): CAs from SSL_CERT_FILE
        answers = [await collect(OpenAIProvider(https, "k", client=client), REQUEST)]
        answers.append(await collect(OpenAIProvider(https, "k", client=client), REQUEST))
        answers.append(await collect(OpenAIProvider(https, "k", client=client), REQUEST))
        await client.aclose()
    assert answers == [answer_events("r", "again")] * 3
    # each answer closed its connection: a full handshake, then two resumed
    assert server.resumed == [False, True, True]


async def test_a_session_is_offered_only_to_the_name_it_was_verified_for(
    kind: str, certificate: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    key, cert = certificate  # issued for IP:127.0.0.1, not for "localhost"
    monkeypatch.setenv("SSL_CERT_FILE", cert)
    server = TLSAnswers(key, cert)
    with server.raw.run() as url:
        port = url.rsplit(":", 1)[1]
        client = make_client(kind)
        first = await collect(
            OpenAIProvider(f"https://127.0.0.1:{port}/v1", "k", client=client), REQUEST
        )
        with pytest.raises(UpstreamUnavailable, match=r"(?i)mismatch|doesn't match|not valid for"):
            await collect(
                OpenAIProvider(f"https://localhost:{port}/v1", "k", client=client), REQUEST
            )
        again = await collect(
            OpenAIProvider(f"https://127.0.0.1:{port}/v1", "k", client=client), REQUEST
        )
        await client.aclose()
    assert first == again == answer_events("r", "again")
    # "localhost" got a full handshake (and refused the certificate), no session of
    # 127.0.0.1's (resumed, it would not have been refused). In any order: the server
    # notes the refused handshake when its thread sees the failure, which on a busy
    # machine can be after the third connection's handshake.
    assert sorted(server.resumed) == [False, False, True]


def counting_context(reads: list[str], cafile: str, clock: Callable[[], float]) -> Any:
    """A ``ResumingSSLContext`` trusting ``cafile`` whose connections note each read of
    their session (``SSLContext.sslobject_class``): the server name, per read."""
    import ssl

    from ssegate._http import ResumingSSLContext

    class Counting(ssl.SSLObject):
        @property  # type: ignore[override]
        def session(self) -> ssl.SSLSession | None:
            reads.append(str(self.server_hostname))
            return super().session

    context = ResumingSSLContext(ssl.PROTOCOL_TLS_CLIENT, clock=clock)
    context.load_verify_locations(cafile=cafile)
    context.sslobject_class = Counting
    return context


async def resumptions(
    kind: str,
    server: TLSAnswers,
    *,
    count: int,
    rotate_after: int | None = None,
    later: dict[int, float] | None = None,
) -> tuple[list[bool], list[str]]:
    """``count`` answers from ``server``, each on a new connection (the server's keys
    rotated after ``rotate_after`` of them; the client's clock moved on by ``later[n]``
    seconds before answer ``n``): which connections resumed, and the sessions read
    (``counting_context``)."""
    reads: list[str] = []
    ahead = [0.0]
    context = counting_context(reads, server.cert, lambda: time.time() + ahead[0])
    with server.raw.run() as url:
        https = url.replace("http://", "https://") + "/v1"
        client = make_client(kind, ssl_context=context)
        for n in range(count):
            if n == rotate_after:
                server.rotate()
            ahead[0] += (later or {}).get(n, 0.0)
            got = await collect(OpenAIProvider(https, "k", client=client), REQUEST)
            assert got == answer_events("r", "again")
        await client.aclose()
    return server.resumed, reads


async def test_a_fresh_session_is_offered_again_without_reading_another(
    kind: str, certificate: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading a connection's session costs as much as the handshake it saves (CPython
    copies it): once a session is kept, it is offered without reading the next ones."""
    key, cert = certificate
    monkeypatch.setenv("SSL_CERT_FILE", cert)
    resumed, reads = await resumptions(kind, TLSAnswers(key, cert), count=5)
    assert resumed == [False, True, True, True, True]
    assert reads == ["127.0.0.1"]  # the first connection's, when the second started


async def test_a_declined_session_makes_the_next_start_look_for_a_newer_one(
    kind: str, certificate: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    key, cert = certificate
    monkeypatch.setenv("SSL_CERT_FILE", cert)
    resumed, reads = await resumptions(kind, TLSAnswers(key, cert), count=5, rotate_after=2)
    # the third did a full handshake (a new ticket); the fourth saw that and took it
    assert resumed == [False, True, False, True, True]
    assert reads == ["127.0.0.1"] * 2


async def test_a_stale_session_is_looked_for_again_and_an_expired_one_never_offered(
    kind: str, certificate: tuple[str, str]
) -> None:
    from ssegate._http import FRESH_TLS_SESSION

    key, cert = certificate
    later = {2: FRESH_TLS_SESSION + 1, 3: 10**6}  # then stale, then long expired
    resumed, reads = await resumptions(kind, TLSAnswers(key, cert), count=4, later=later)
    # the third looked again (the second's session, newer); the fourth found only an
    # expired session and offered none
    assert resumed == [False, True, True, False]
    assert reads == ["127.0.0.1"] * 3


async def test_a_connection_without_a_ticket_is_read_once(
    kind: str, certificate: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    key, cert = certificate
    monkeypatch.setenv("SSL_CERT_FILE", cert)
    resumed, reads = await resumptions(kind, TLSAnswers(key, cert, tickets=False), count=5)
    assert resumed == [False] * 5  # no ticket: nothing offered
    assert reads == ["127.0.0.1"] * 4  # each earlier connection once, not each start all


async def test_the_request_head_on_the_wire() -> None:
    """What ``HTTPClient`` sends, header by header: ours (``Accept-Encoding``, ``User-Agent``)
    once each unless the caller gave its own, aiohttp's ``Accept`` and framing."""

    def handler(conn: Conn) -> None:
        if conn.read_request() is not None:
            conn.send(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok")

    server = RawServer(handler)
    given = [
        {"Authorization": "Bearer k", "Content-Type": "application/json"},
        {"User-Agent": "mine", "accept-encoding": "identity", "Accept": "text/event-stream"},
    ]
    with server.run() as url:
        client = HTTPClient()
        for headers in given:
            async with open_stream(client, "POST", url + "/v1/x", headers, b"{}") as resp:
                assert [chunk async for chunk in resp.aiter_bytes()] == [b"ok"]
        await client.aclose()
        host = url.removeprefix("http://")
    assert [r.head.decode().split("\r\n") for r in server.requests] == [
        [
            "POST /v1/x HTTP/1.1",
            f"Host: {host}",
            "Authorization: Bearer k",
            "Content-Type: application/json",
            "Accept-Encoding: gzip, deflate",
            "User-Agent: ssegate",
            "Accept: */*",
            "Content-Length: 2",
        ],
        [
            "POST /v1/x HTTP/1.1",
            f"Host: {host}",
            "User-Agent: mine",
            "accept-encoding: identity",
            "Accept: text/event-stream",
            "Content-Length: 2",
            "Content-Type: application/octet-stream",
        ],
    ]
