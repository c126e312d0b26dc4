"""aiohttp's read timer, not moved on every read of a pushed body while it is off
(``_skip_timer``), and moved again once the body ends: before the connection
serves another request, whose head it times. Where aiohttp's internals are not
as expected, nothing is changed (the fallback: aiohttp's own path), with the
same outcome."""

from __future__ import annotations

import asyncio
import threading

import pytest
from aiohttp.client_proto import ResponseHandler

from http_support import Conn, RawServer
from ssegate import ReadTimeout
from ssegate.llm import _client as client_module
from ssegate.llm.providers import HTTPClient

pytestmark = pytest.mark.anyio

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def _chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces)


@pytest.mark.parametrize("internals", ["as known", "renamed"])
async def test_the_next_head_on_the_connection_of_a_pushed_body_is_timed(
    monkeypatch: pytest.MonkeyPatch, internals: str
) -> None:
    if internals == "renamed":
        monkeypatch.setattr(
            client_module, "_TIMER", ("_reschedule_timeout", "_read_timeout", "_renamed_handle")
        )
    gate = threading.Event()
    requests: list[bytes] = []

    def handle(conn: Conn) -> None:
        conn.read_request()
        conn.send(HEAD + _chunked(b"data: x\n\n"))
        gate.wait(10)
        conn.send(_chunked(b"data: y\n\n") + b"0\r\n\r\n")
        requests.append(conn.read_request() or b"")  # then never answers
        conn.wait_closed()

    server = RawServer(handle)
    client = HTTPClient(read_timeout=0.3)
    with server.run() as url:
        async with client.stream("POST", url + "/h") as response:
            reads = response._reads
            assert reads is not None
            protocol = reads.timerless
            taken: list[bytes] = []
            pushed = response.push(lambda chunk: taken.append(chunk) is not None)
            assert pushed is not None
            if internals == "as known":
                assert protocol is not None
                assert vars(protocol)["_reschedule_timeout"] is tuple  # skipped
            else:
                assert protocol is None
            gate.set()
            assert await pushed is None
            assert taken == [b"data: x\n\n", b"data: y\n\n"]
            if protocol is not None:
                assert "_reschedule_timeout" not in vars(protocol)  # aiohttp's again
            # The body's end released the connection: it serves the next request
            # at once, before this one is left, and its head is timed.
            with pytest.raises(ReadTimeout, match="no answer"):
                async with client.stream("POST", url + "/h"):
                    pass
    await client.aclose()
    assert server.connections == 1
    assert len(requests) == 1


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_timer_is_off_only_without_a_read_timeout() -> None:
    protocol = ResponseHandler(asyncio.get_running_loop())
    protocol.set_response_params(read_timeout=5.0)
    assert not client_module._timer_off(protocol)
    assert not client_module._timer_off(None)
    protocol.set_response_params()  # no read timeout: the timer is off
    assert client_module._timer_off(protocol)
    client_module._skip_timer(protocol)
    assert vars(protocol)["_reschedule_timeout"] is tuple
    assert not client_module._timer_off(protocol)  # skipped already
    client_module._keep_timer(protocol)
    assert "_reschedule_timeout" not in vars(protocol)
    protocol.read_timeout = 5.0
    protocol.start_timeout()  # aiohttp's own: the timer runs again
    assert protocol._read_timeout_handle is not None
    protocol._drop_timeout()
