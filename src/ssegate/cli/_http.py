"""uvicorn's httptools protocol with a connection's set-up made for less.

Every stream start in the soak is a new connection, and uvicorn's
``HttpToolsProtocol`` looks its two loggers up for each (``logging.getLogger``:
the logging module's lock, taken and released, twice) and asks the transport
for its socket twice (once for the local address, once for the peer's): with
uvloop a socket object made and detached each time, and a system call. Here
the two loggers are looked up once (``getLogger`` gives the same objects for
ever) and the socket once per connection; everything else is uvicorn's own
code, unchanged: the same attributes, addresses and answers.

That is uvicorn's ``__init__`` and ``connection_made`` written again, so only
for the versions whose code is exactly the one they were written against
(``_FINGERPRINTS``, uvicorn 0.54): with any other, ``http_protocol()`` gives
``None`` and ``serve`` leaves uvicorn's choice as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Any

from ..gateway._guard import fingerprint

__all__ = ["http_protocol"]

#: sha256 of the code of uvicorn's ``HttpToolsProtocol.__init__`` and
#: ``connection_made`` (bytecode, constants, names) that ``_lean`` repeats.
_FINGERPRINTS = {
    "__init__": "85990f31f2c6932b2944bf00f820c937ab35171cef90bb3de4008bb360bbc967",
    "connection_made": "ea972e94b61a9f3bee1c3e897b0140a898800963cb264edcd85239145918d846",
}


_MADE: list[type[asyncio.Protocol] | None] = []


def http_protocol() -> type[asyncio.Protocol] | None:
    """The lean protocol class, where uvicorn would run httptools' and its code is
    the one known here; else ``None`` (uvicorn's own choice then)."""
    if not _MADE:
        _MADE.append(_lean())
    return _MADE[0]


def _lean() -> type[asyncio.Protocol] | None:
    try:
        import httptools
        from uvicorn.protocols.http.auto import AutoHTTPProtocol
        from uvicorn.protocols.http.flow_control import FlowControl
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
        from uvicorn.protocols.utils import get_local_addr, get_remote_addr, is_ssl
    except ImportError:
        return None
    if AutoHTTPProtocol is not HttpToolsProtocol:  # uvicorn would run h11's
        return None
    for name, known in _FINGERPRINTS.items():
        if fingerprint(getattr(HttpToolsProtocol, name)) != known:
            return None
    try:
        from uvicorn.logging import TRACE_LOG_LEVEL
    except ImportError:
        return None

    error_log = logging.getLogger("uvicorn.error")
    access_log = logging.getLogger("uvicorn.access")

    class _Transport:
        """A transport whose socket was asked for once (``get_local_addr`` and
        ``get_remote_addr`` ask for it each)."""

        __slots__ = ("socket", "transport")

        def __init__(self, transport: Any) -> None:
            self.transport = transport
            self.socket = transport.get_extra_info("socket")

        def get_extra_info(self, name: str, default: Any = None) -> Any:
            if name == "socket":
                return self.socket
            return self.transport.get_extra_info(name, default)

    class LeanHttpToolsProtocol(HttpToolsProtocol):
        """uvicorn's ``HttpToolsProtocol``, its loggers and socket looked up less
        (see the module docstring)."""

        def __init__(
            self,
            config: Any,
            server_state: Any,
            app_state: dict[str, Any],
            _loop: asyncio.AbstractEventLoop | None = None,
        ) -> None:
            # uvicorn's __init__ (0.54), the loggers looked up once.
            if not config.loaded:
                config.load()

            self.config = config
            self.app = config.loaded_app
            self.loop = _loop or asyncio.get_event_loop()
            self.logger = error_log
            self.access_logger = access_log
            self.access_log = self.access_logger.hasHandlers()
            self.parser = httptools.HttpRequestParser(self)

            with contextlib.suppress(AttributeError):  # httptools < 0.6.3
                self.parser.set_dangerous_leniencies(lenient_data_after_close=True)

            self.ws_protocol_class = config.ws_protocol_class
            self.root_path = config.root_path
            self.asgi_version = config.asgi_version
            self.limit_concurrency = config.limit_concurrency
            self.app_state = app_state

            self.timeout_keep_alive_task = None
            self.timeout_keep_alive = config.timeout_keep_alive

            self.server_state = server_state
            self.connections = server_state.connections
            self.tasks = server_state.tasks

            self.transport = None  # type: ignore[assignment]
            self.flow = None  # type: ignore[assignment]
            self.server = None
            self.client = None
            self.scheme = None
            self.pipeline = deque()

            self.scope = None  # type: ignore[assignment]
            self.headers = None  # type: ignore[assignment]
            self.expect_100_continue = False
            self.cycle = None  # type: ignore[assignment]

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            # uvicorn's connection_made (0.54), the socket asked for once.
            self.connections.add(self)

            self.transport = transport
            self.flow = FlowControl(transport)
            asked = _Transport(transport)
            self.server = get_local_addr(asked)  # type: ignore[arg-type]
            self.client = get_remote_addr(asked)  # type: ignore[arg-type]
            self.scheme = "https" if is_ssl(transport) else "http"

            if self.logger.level <= TRACE_LOG_LEVEL:
                prefix = f"{self.client[0]}:{self.client[1]:d} - " if self.client else ""
                self.logger.log(TRACE_LOG_LEVEL, "%sHTTP connection made", prefix)

    return LeanHttpToolsProtocol
