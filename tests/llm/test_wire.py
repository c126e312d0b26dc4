"""The lean HTTP/1.1 client: body framings, compression, reuse, timeouts, errors."""

from __future__ import annotations

import gzip
from typing import Any

import pytest

from ssegate.llm._wire import WireClient, WireError, WireTimeout
from ssegate.testing import FakeUpstream, Reply

pytestmark = pytest.mark.anyio

SSE = b"data: one\n\ndata: two\n\n"


async def fetch(client: WireClient, url: str, **kw: Any) -> tuple[int, dict[str, str], bytes]:
    async with client.stream("POST", url, content=b"{}", **kw) as response:
        body = b"".join([c async for c in response.aiter_bytes()])
        return response.status_code, response.headers, body


async def test_chunked_body_and_request_head() -> None:
    fake = FakeUpstream().add("/s", Reply(200, (("content-type", "text/event-stream"),), (SSE,)))
    with fake.run() as url:
        client = WireClient()
        status, headers, body = await fetch(client, url + "/s?x=1", headers={"x-key": "v"})
        await client.aclose()
    assert (status, headers["content-type"], body) == (200, "text/event-stream", SSE)
    [req] = fake.requests
    assert (req.method, req.path, req.body) == ("POST", "/s", b"{}")
    assert req.headers["x-key"] == "v"
    assert req.headers["host"] == url.removeprefix("http://")
    assert req.headers["content-length"] == "2"


async def test_gzip_body_is_inflated() -> None:
    reply = Reply(200, (("content-encoding", "gzip"),), (gzip.compress(SSE),))
    fake = FakeUpstream().add("/g", reply)
    with fake.run() as url:
        client = WireClient()
        assert (await fetch(client, url + "/g"))[2] == SSE
        await client.aclose()


async def test_idle_connections_are_reused() -> None:
    fake = FakeUpstream().add("/r", Reply(200, (), (b"a", b"b")))
    with fake.run() as url:
        client = WireClient()
        bodies = [(await fetch(client, url + "/r"))[2] for _ in range(3)]
        [idle] = client._idle.values()
        assert len(idle) == 1
        await client.aclose()
    assert bodies == [b"ab"] * 3


async def test_silence_longer_than_the_read_timeout() -> None:
    fake = FakeUpstream().add("/h", Reply(200, (), (b"data: x\n\n",), hold=True))
    with fake.run() as url:
        client = WireClient(read_timeout=0.2)
        async with client.stream("POST", url + "/h") as response:
            chunks = response.aiter_bytes()
            assert await anext(chunks) == b"data: x\n\n"
            with pytest.raises(WireTimeout, match="no data from the server"):
                await anext(chunks)
        await client.aclose()
        assert fake.wait_disconnected(5.0)


async def test_connection_dropped_mid_body() -> None:
    fake = FakeUpstream().add("/d", Reply(200, (), (b"data: x\n\n",), abort=True))
    with fake.run() as url:
        client = WireClient()
        with pytest.raises(WireError, match="closed the connection mid-response"):
            await fetch(client, url + "/d")
        await client.aclose()


async def test_refused_and_bad_urls() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = WireClient()
    with pytest.raises(WireError, match="cannot connect"):
        await fetch(client, f"http://127.0.0.1:{port}/")
    with pytest.raises(ValueError, match="not an http"):
        await fetch(client, "ftp://example.com/")
    await client.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await fetch(client, f"http://127.0.0.1:{port}/")


@pytest.fixture
def certificate(tmp_path: Any) -> tuple[str, str]:
    """A self-signed key and certificate for 127.0.0.1 (made with the openssl command)."""
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return str(key), str(cert)


async def test_https_with_a_trusted_certificate(certificate: tuple[str, str]) -> None:
    import ssl

    key, cert = certificate
    fake = FakeUpstream().add("/tls", Reply(200, (), (SSE,)))
    with fake.run(ssl_keyfile=key, ssl_certfile=cert) as url:
        https = url.replace("http://", "https://")
        trusting = WireClient(ssl_context=ssl.create_default_context(cafile=cert))
        assert (await fetch(trusting, https + "/tls"))[2] == SSE
        await trusting.aclose()
        default = WireClient()  # the system trust store does not know this certificate
        with pytest.raises(WireError, match="CERTIFICATE_VERIFY_FAILED"):
            await fetch(default, https + "/tls")
        await default.aclose()


async def test_a_large_body_arrives_whole_through_back_pressure() -> None:
    import anyio

    big = bytes(range(256)) * 8192  # 2 MiB, past the point where reading pauses
    fake = FakeUpstream().add("/big", Reply(200, (), (big[: len(big) // 2], big[len(big) // 2 :])))
    with fake.run() as url:
        client = WireClient()
        async with client.stream("GET", url + "/big") as response:
            conn = response._conn
            with anyio.fail_after(10):  # nobody reads: the socket must stop being read
                while not conn.paused:
                    await conn.wait(None)  # woken by each arrival of bytes
            assert conn.buffered < len(big)
            received = [chunk async for chunk in response.aiter_bytes()]
        await client.aclose()
    assert b"".join(received) == big
