"""A real ``ssegate serve`` process for tests (gateway and fault tests share it)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import httpx

__all__ = ["free_port", "ssegate_serve"]


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
