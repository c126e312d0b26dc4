"""Helpers of the browser tests: the API keys, screenshots, a TCP proxy cut at will."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from playwright.sync_api import Page

#: The keys of the gateway with auth on: chat (and topics) / the dashboard's ops.
CHAT_KEY = "browser-chat-key-0123456789"
OPS_KEY = "browser-ops-key-0123456789"

SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
#: The screenshots saved in this run.
SHOTS: list[Path] = []


def screenshot(page: Page, name: str) -> Path:
    """Save the page as ``artifacts/screenshots/<name>.png``; its path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path))
    SHOTS.append(path)
    return path


@dataclass(frozen=True)
class Request:
    """One HTTP request head that went through the proxy."""

    method: str
    path: str
    headers: dict[str, str]


class SeveringProxy:
    """Forwards 127.0.0.1:<its port> to the gateway; ``sever()`` closes every open
    connection at once (both sides), as a network blink does mid-stream. It notes
    the head of each request the browser sends (``requests``).

    Unlike ``gateway_support.cutting_proxy`` (the first connection cut after N
    bytes), the test decides when: a browser opens several connections (page,
    scripts, API) and the one to cut is whichever carries the stream then.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.requests: list[Request] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._stopping = False

    def sever(self) -> int:
        """Close every connection open now; how many there were."""
        with self._lock:
            sockets = list(self._open)
        for sock in sockets:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        return len(sockets) // 2

    def seen(self, method: str, path_start: str) -> list[Request]:
        """The requests noted with ``method`` and a path starting with ``path_start``."""
        return [r for r in self.requests if r.method == method and r.path.startswith(path_start)]

    @contextmanager
    def running(self) -> Iterator[SeveringProxy]:
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stopping = True
            thread.join(5)
            self._listener.close()
            self.sever()
            for pump in self._threads:
                pump.join(2)

    def _accept(self) -> None:
        self._listener.settimeout(0.2)
        while not self._stopping:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open.update((client, server))
            for src, dst, heads in (
                (client, server, _Heads(self.requests)),
                (server, client, None),
            ):
                thread = threading.Thread(target=self._pump, args=(src, dst, heads), daemon=True)
                self._threads.append(thread)
                thread.start()

    def _pump(self, src: socket.socket, dst: socket.socket, heads: _Heads | None) -> None:
        try:
            while data := src.recv(65536):
                if heads is not None:
                    heads.feed(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            with self._lock:
                self._open.discard(src)
            src.close()


class _Heads:
    """The request heads in one connection's bytes (bodies skipped by Content-Length)."""

    def __init__(self, log: list[Request]) -> None:
        self.log = log
        self.buffer = b""
        self.skip = 0

    def feed(self, data: bytes) -> None:
        self.buffer += data
        while True:
            if self.skip:
                taken = min(self.skip, len(self.buffer))
                self.buffer = self.buffer[taken:]
                self.skip -= taken
                if self.skip:
                    return
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head, self.buffer = self.buffer[:end].decode("latin-1"), self.buffer[end + 4 :]
            request_line, *lines = head.split("\r\n")
            method, path, _ = request_line.split(" ", 2)
            headers = {}
            for line in lines:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            self.log.append(Request(method, path, headers))
            self.skip = int(headers.get("content-length") or 0)
