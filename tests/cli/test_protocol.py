"""``serve``'s uvicorn protocol: the scope's addresses as uvicorn's own protocol
gives them, without asking the socket (``ssegate.cli._protocol``)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ssegate.cli import _protocol
from ssegate.cli._protocol import KnownAddressesProtocol, http_protocol
from ssegate.server._running import loop_known


async def _addresses(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = repr((scope["server"], scope["client"], scope["scheme"])).encode()
    length = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": length})
    await send({"type": "http.response.body", "body": body})


def _ask(port: int, host: str = "127.0.0.1") -> tuple[bytes, tuple[Any, ...], tuple[Any, ...]]:
    """One request on a socket of our own: (the answer's body, the socket's own
    address, the server's address as the client sees it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.connect((host, port))
        sock.sendall(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        return data.partition(b"\r\n\r\n")[2], sock.getsockname(), sock.getpeername()


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_the_scope_has_the_addresses_uvicorns_protocol_gives(loop: str, host: str) -> None:
    if host == "::1" and not _can_listen(host):
        pytest.skip("this machine has no IPv6 loopback (::1) to listen on")
    for http in (HttpToolsProtocol, KnownAddressesProtocol):  # uvicorn's, then ours
        with _serving(http, loop, host) as port:
            body, mine, theirs = _ask(port, host)
        assert body.decode() == repr(((theirs[0], theirs[1]), (mine[0], mine[1]), "http"))


@contextmanager
def _serving(http: type[asyncio.Protocol], loop: str, host: str) -> Iterator[int]:
    """uvicorn on ``host`` (IPv4 or IPv6) in a thread with protocol ``http``; its port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.bind((host, 0))
        config = uvicorn.Config(
            _addresses, http=http, loop=loop, lifespan="off", log_level="warning"
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        try:
            while not server.started:
                assert thread.is_alive()
                time.sleep(0.005)
            yield sock.getsockname()[1]
        finally:
            server.should_exit = True
            thread.join(10)


def _can_listen(host: str) -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind((host, 0))
    except OSError:
        return False
    return True


def test_serve_names_this_protocol_while_uvicorns_is_the_one_mirrored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert http_protocol() == "ssegate.cli._protocol:KnownAddressesProtocol"
    monkeypatch.setattr(_protocol, "_MIRRORED", ("something", "else"))
    assert http_protocol() == "auto"


@pytest.mark.anyio
async def test_a_protocol_made_without_its_loop_gets_the_known_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from uvicorn.server import ServerState

    async def app(scope: Any, receive: Any, send: Any) -> None: ...

    config = uvicorn.Config(app, lifespan="off")
    with loop_known():
        monkeypatch.setattr(asyncio, "get_event_loop", _no_look_up)
        made = KnownAddressesProtocol(config, ServerState(), {})
    assert made.loop is asyncio.get_running_loop()


def _no_look_up() -> asyncio.AbstractEventLoop:
    raise AssertionError("looked the loop up")
