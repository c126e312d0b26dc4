"""A TCP proxy on 127.0.0.1 that cuts connections: network blinks, on demand.

``CuttingProxy(upstream_port, plan)`` forwards every connection it accepts to
``127.0.0.1:upstream_port`` (given several ports, to the first that accepts
it: a balancer failing over when a replica stops listening). ``plan(n)``
decides, for the ``n``-th connection (0-based, in the order accepted), after
how many bytes of the *response* it is cut (``None``: never; the default).
With ``from_body=True`` the bytes are counted from the end of the first
response head, so a cut never hides the head (a POST's ``Link`` to resume by
must arrive). A cut closes both sides: the client with
a FIN or, every other cut, an RST (``abort``), the server with a FIN, as a
dropped mobile connection or a restarted balancer would. ``max_cuts`` caps the
cuts per request target (method and path of a connection's first request):
a stream's reader is cut that many times at most, then passes whole.

It runs its own asyncio loop in a thread, so one proxy serves sync clients,
async clients on another loop and other processes (Node) alike, and holds
thousands of connections (one task per direction, no thread per socket).
``connections`` and ``cuts`` (connections cut before the server had finished
answering) are what the chaos test reports.

    with CuttingProxy(port, lambda n: 900 if n == 0 else None) as proxy:
        httpx.get(proxy.url + "/...")
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import suppress

from ssegate.testing._process import Started

__all__ = ["CuttingProxy", "Plan"]

#: For the n-th connection: bytes of response after which it is cut, or None.
Plan = Callable[[int], "int | None"]

_CHUNK = 65536


class CuttingProxy(Started):
    """A loopback TCP proxy cutting connections as ``plan`` says (a context manager)."""

    def __init__(
        self,
        upstream_port: int | Sequence[int],
        plan: Plan = lambda n: None,
        *,
        from_body: bool = False,
        max_cuts: int | None = None,
    ) -> None:
        self.upstreams = [upstream_port] if isinstance(upstream_port, int) else list(upstream_port)
        self.plan = plan
        self.from_body = from_body
        self.max_cuts = max_cuts
        self._cut_targets: Counter[bytes] = Counter()
        self.connections = 0
        self.cuts = 0
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._transports: set[asyncio.BaseTransport] = set()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="cutting-proxy", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        assert self._loop is not None
        assert self._thread is not None
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to __enter__ if it failed to start
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=4096)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()
            server.close()
            for transport in list(self._transports):
                transport.abort()
            await asyncio.sleep(0)  # let the aborted connections' tasks end

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        writers = [client_w]
        try:
            await self._relay(client_r, client_w, writers)
        finally:  # whatever ended it (the proxy stopping cancels it mid-way): no socket left open
            for writer in writers:
                if not writer.transport.is_closing():
                    writer.transport.abort()

    async def _relay(
        self,
        client_r: asyncio.StreamReader,
        client_w: asyncio.StreamWriter,
        writers: list[asyncio.StreamWriter],
    ) -> None:
        n = self.connections
        self.connections += 1
        limit = self.plan(n)
        try:
            first = await client_r.readline()  # the request line: b"GET /path HTTP/1.1\r\n"
            server_r, server_w = await self._connect()
            writers.append(server_w)
        except OSError:
            client_w.transport.abort()
            return
        target = b" ".join(first.split(b" ")[:2])
        if self.max_cuts is not None and self._cut_targets[target] >= self.max_cuts:
            limit = None
        server_w.write(first)
        transports = (client_w.transport, server_w.transport)
        self._transports.update(transports)
        up = asyncio.ensure_future(self._pump(client_r, server_w))
        try:
            cut = await self._down(server_r, client_w, limit)
        finally:
            up.cancel()
            with suppress(asyncio.CancelledError):
                await up
            self._transports.difference_update(transports)
        if cut:
            self.cuts += 1
            self._cut_targets[target] += 1
            if self.cuts % 2:
                client_w.close()
            else:
                client_w.transport.abort()
        else:
            client_w.close()
        server_w.close()

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        for port in self.upstreams[:-1]:
            try:
                return await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                continue
        return await asyncio.open_connection("127.0.0.1", self.upstreams[-1])

    @staticmethod
    async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        """Client -> server, whole (requests are never cut)."""
        with suppress(OSError):
            while data := await src.read(_CHUNK):
                dst.write(data)
                await dst.drain()
            if dst.can_write_eof():
                dst.write_eof()

    async def _down(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, limit: int | None
    ) -> bool:
        """Server -> client until the server is done (False) or ``limit`` is reached (True)."""
        head = b"" if self.from_body else None  # the head so far, until it is whole
        sent = 0
        try:
            while data := await src.read(_CHUNK):
                if head is not None:
                    head += data
                    end = head.find(b"\r\n\r\n")
                    if end < 0:
                        dst.write(data)
                        await dst.drain()
                        continue
                    body = head[end + 4 :]
                    dst.write(data[: len(data) - len(body)])
                    head, data = None, body
                if limit is not None and sent + len(data) >= limit:
                    dst.write(data[: limit - sent])
                    await dst.drain()
                    return True
                dst.write(data)
                await dst.drain()
                sent += len(data)
        except OSError:
            pass
        return False
