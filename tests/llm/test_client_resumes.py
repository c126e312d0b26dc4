"""aiohttp's resumes of reading that was never paused, skipped (``_quiet_resumes``).

On a real aiohttp ``ResponseHandler`` over a transport that counts what it is
asked: a resume goes through to aiohttp's when reading is paused, and only
then; undone, aiohttp's own method serves again; where aiohttp's internals
are not as expected, nothing is changed (the fallback: aiohttp's own path).
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp.client_proto import ResponseHandler

from ssegate.llm import _client
from ssegate.llm._client import _loud_resumes, _quiet_resumes

pytestmark = pytest.mark.anyio


class CountingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.pauses = 0
        self.resumes = 0

    def pause_reading(self) -> None:
        self.pauses += 1

    def resume_reading(self) -> None:
        self.resumes += 1

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def is_closing(self) -> bool:
        return False


def response_on(protocol: Any) -> Any:
    """What ``_quiet_resumes`` reads of an aiohttp response: its connection's protocol."""
    return SimpleNamespace(connection=SimpleNamespace(protocol=protocol))


async def handler() -> tuple[ResponseHandler, CountingTransport]:
    protocol = ResponseHandler(asyncio.get_running_loop())
    transport = CountingTransport()
    protocol.connection_made(transport)
    protocol.set_response_params()
    protocol.data_received(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")  # mid-body
    return protocol, transport


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_resume_goes_through_only_when_reading_is_paused() -> None:
    protocol, transport = await handler()
    assert _quiet_resumes(response_on(protocol)) is protocol
    protocol.resume_reading()  # never paused: skipped
    assert (transport.pauses, transport.resumes) == (0, 0)
    protocol.pause_reading()  # a full buffer pauses it
    assert (transport.pauses, protocol._reading_paused) == (1, True)
    protocol.resume_reading()
    assert (transport.resumes, protocol._reading_paused) == (1, False)
    protocol.resume_reading()
    assert transport.resumes == 1
    _loud_resumes(protocol)
    assert "resume_reading" not in vars(protocol)
    protocol.resume_reading()  # aiohttp's own again: it always resumes the transport
    assert transport.resumes == 2


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_held_tail_is_resumed_too() -> None:
    protocol, transport = await handler()
    _quiet_resumes(response_on(protocol))
    protocol.pause_reading()
    protocol._buffer_paused = True  # and aiohttp holds the transport for its tail
    protocol.resume_reading()  # aiohttp's: unpaused, the transport still held
    assert (protocol._reading_paused, transport.resumes) == (False, 0)
    protocol._resume_reading_for_buffer()  # the tail drained: aiohttp resumes it itself
    assert transport.resumes == 1
    _loud_resumes(protocol)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_unexpected_internals_change_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    protocol, transport = await handler()
    monkeypatch.setattr(_client, "_PAUSE_FLAGS", ("_reading_paused", "_renamed_flag"))
    assert _quiet_resumes(response_on(protocol)) is None
    assert "resume_reading" not in vars(protocol)
    protocol.resume_reading()  # aiohttp's own path
    assert transport.resumes == 1

    class Other(asyncio.Protocol):
        __slots__ = ("_buffer_paused", "_reading_paused")

    assert _quiet_resumes(response_on(Other())) is None  # no instance dict to set it in
    assert _quiet_resumes(response_on(None)) is None
    assert _quiet_resumes(SimpleNamespace(connection=None)) is None
