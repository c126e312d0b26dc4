"""uvicorn's httptools protocol, told its connection's addresses without asking again.

Every connection uvicorn accepts starts with its addresses (the scope's
``server`` and ``client``): uvicorn asks the transport for its socket and
asks that socket for both. Under uvloop that socket is made on demand and
each of its answers makes a Python socket object of its own: five system
calls (``getsockname`` four times, ``getpeername`` once) and two socket objects
per connection, for what the transport learned when it was made (uvloop's
``TCPTransport``, like asyncio's, reads both at ``connection_made`` and keeps
them: ``get_extra_info("sockname")``/``("peername")``). ``serve`` gives uvicorn
this subclass (its ``http`` setting), which reads the transport's: the same
addresses, in the same form as uvicorn makes them from the socket's answers.
Where the transport has none (not a socket's), it asks as uvicorn does.

And uvicorn makes each connection's protocol without its loop, which the
protocol then looks up (``asyncio.get_event_loop()``, a ``getpid`` system call on
Python 3.11): here it is the loop ``serve`` knows (``server._running``).

Everything else is uvicorn's ``HttpToolsProtocol``; ``connection_made`` does
what uvicorn's does (written against 0.54; a test compares the two
connection by connection). ``http_protocol()`` names it only while uvicorn's
``connection_made`` refers to what this one mirrors, and nothing else:
another uvicorn gets its own protocol (``"auto"``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.config import Config
from uvicorn.logging import TRACE_LOG_LEVEL
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.utils import get_local_addr, get_remote_addr, is_ssl
from uvicorn.server import ServerState

from ..server._running import known_loop

__all__ = ["KnownAddressesProtocol", "http_protocol"]

#: The names uvicorn's ``HttpToolsProtocol.connection_made`` uses (0.54):
#: what ``KnownAddressesProtocol.connection_made`` does, addresses aside.
_MIRRORED = (
    "connections",
    "add",
    "transport",
    "FlowControl",
    "flow",
    "get_local_addr",
    "server",
    "get_remote_addr",
    "client",
    "is_ssl",
    "scheme",
    "logger",
    "level",
    "TRACE_LOG_LEVEL",
    "log",
)


def http_protocol() -> str:
    """uvicorn's ``http`` setting for ``serve``: this module's protocol where
    uvicorn's ``connection_made`` is the one it mirrors, else ``"auto"``."""
    if HttpToolsProtocol.connection_made.__code__.co_names != _MIRRORED:
        return "auto"
    return f"{__name__}:{KnownAddressesProtocol.__name__}"


def _local(transport: asyncio.Transport) -> tuple[str, int | None] | None:
    info: Any = transport.get_extra_info("sockname")
    if isinstance(info, tuple):  # as uvicorn turns the socket's getsockname()
        return (str(info[0]), int(info[1]))
    if isinstance(info, str) and info:
        return (info, None)
    return get_local_addr(transport)


def _remote(transport: asyncio.Transport) -> tuple[str, int] | None:
    info: Any = transport.get_extra_info("peername")
    if isinstance(info, tuple):  # as uvicorn turns the socket's getpeername()
        return (str(info[0]), int(info[1]))
    return get_remote_addr(transport)


class KnownAddressesProtocol(HttpToolsProtocol):
    """uvicorn's ``HttpToolsProtocol``, its addresses from the transport (see the module)."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        # uvicorn's server makes each protocol without its loop, which it then
        # looks up (asyncio.get_event_loop(): a getpid system call on 3.11):
        # the loop ``serve`` knows (``loop_known``), where it knows one.
        super().__init__(config, server_state, app_state, _loop or known_loop())

    def connection_made(  # type: ignore[override]
        self, transport: asyncio.Transport
    ) -> None:
        self.connections.add(self)

        self.transport = transport
        self.flow = FlowControl(transport)
        self.server = _local(transport)
        self.client = _remote(transport)
        self.scheme = "https" if is_ssl(transport) else "http"

        if self.logger.level <= TRACE_LOG_LEVEL:
            prefix = f"{self.client[0]}:{self.client[1]:d} - " if self.client else ""
            self.logger.log(TRACE_LOG_LEVEL, "%sHTTP connection made", prefix)
