"""Run an ASGI app under a real uvicorn on 127.0.0.1, in a background thread.

Tests use it to talk to real servers over real sockets (``TestClient`` buffers
whole bodies, which hides exactly the streaming bugs we care about).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["UvicornThread", "serve"]


class UvicornThread:
    """A uvicorn server in a daemon thread; ``url`` is its base URL once started."""

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 0, **config: Any) -> None:
        import uvicorn

        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.host, self.port = self._sock.getsockname()[:2]
        config.setdefault("log_level", "warning")
        config.setdefault("lifespan", "auto")
        self.config = uvicorn.Config(app, **config)
        self.server = uvicorn.Server(self.config)
        self._thread = threading.Thread(target=self._run, name="uvicorn-test", daemon=True)
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _run(self) -> None:
        try:
            self.server.run(sockets=[self._sock])
        except BaseException as exc:  # reported to the starting thread
            self._error = exc

    def start(self, timeout: float = 10.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if self._error is not None or not self._thread.is_alive():
                raise RuntimeError("uvicorn failed to start") from self._error
            if time.monotonic() > deadline:
                raise TimeoutError(f"uvicorn did not start within {timeout:.1f} s")
            time.sleep(0.005)

    def stop(self, timeout: float = 10.0) -> None:
        """Ask uvicorn to shut down (as on SIGTERM) and wait for the thread."""
        self.server.should_exit = True
        self._thread.join(timeout)
        self._sock.close()
        if self._thread.is_alive():
            raise TimeoutError(f"uvicorn did not stop within {timeout:.1f} s")

    @property
    def running(self) -> bool:
        return self._thread.is_alive()


@contextmanager
def serve(app: Any, **config: Any) -> Iterator[UvicornThread]:
    """``with serve(app) as server: httpx.get(server.url + "/path")``."""
    server = UvicornThread(app, **config)
    server.start()
    try:
        yield server
    finally:
        if server.running:
            server.stop()
