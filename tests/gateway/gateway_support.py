"""Helpers of the gateway tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import httpx

from ssegate import Decoder, Event
from ssegate.gateway import LocalSettings, Settings


def settings(**values: Any) -> Settings:
    """Settings as tests want them: echo unpaced, the local model not preloaded,
    nothing read from the environment."""
    values.setdefault("echo_tokens_per_second", 0.0)
    values.setdefault("local", LocalSettings(preload=False))
    return Settings.model_validate(values)


def events(response: httpx.Response) -> list[Event]:
    """Every event of a whole event-stream body."""
    decoder = Decoder()
    return decoder.feed(response.content) + decoder.close()


def seq(event_id: str) -> int:
    """The number of an event id (``"<epoch>-000000000042"`` -> 42)."""
    return int(event_id.rpartition("-")[2])


@contextmanager
def cutting_proxy(upstream_port: int, cut_after: int) -> Iterator[str]:
    """A TCP proxy to 127.0.0.1:``upstream_port`` whose *first* connection is cut
    after ``cut_after`` bytes of response (a network blink mid-stream); later
    connections pass whole. Yields its base URL."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    first = [True]
    stop = threading.Event()
    opened: list[socket.socket] = []
    pumps: list[threading.Thread] = []

    def pump(src: socket.socket, dst: socket.socket, limit: int | None) -> None:
        sent = 0
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if limit is not None and sent + len(data) >= limit:
                    dst.sendall(data[: limit - sent])
                    break
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if stop.is_set():  # accepted while the fixture was closing
                client.close()
                return
            opened.append(client)
            server = socket.create_connection(("127.0.0.1", upstream_port))
            opened.append(server)
            limit = cut_after if first[0] else None
            first[0] = False
            for args in ((client, server, None), (server, client, limit)):
                pumps.append(threading.Thread(target=pump, args=args, daemon=True))
                pumps[-1].start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop.set()
        thread.join(10)
        listener.close()
        for sock in opened:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for pumping in pumps:
            pumping.join(2)
        for sock in opened:
            sock.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def ssegate_serve(
    config: str, *args: str, output: int | None = subprocess.DEVNULL
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A real ``ssegate serve --config CONFIG ARGS`` process on a free port, ready
    (``/readyz`` 200); yields its base URL and the process, stopped (SIGINT) after."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "ssegate", "serve", "--config", config, *args],
        stdout=output,
        stderr=subprocess.STDOUT,
        env={**os.environ, "SSEGATE_PORT": str(port)},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            with suppress(httpx.TransportError):
                if httpx.get(url + "/readyz").status_code == 200:
                    break
            assert process.poll() is None, "ssegate serve exited"
            assert time.monotonic() < deadline, "ssegate serve did not become ready"
            time.sleep(0.1)
        yield url, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            process.wait(30)
