"""The server examples in examples/, each served by a real server on 127.0.0.1."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from socketserver import ThreadingMixIn
from types import ModuleType
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import httpx
import pytest

from ssegate import Decoder, Event
from ssegate.server import CloseReason
from ssegate.testing import serve

ROOT = Path(__file__).resolve().parents[2]
WAIT = 10.0


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        f"ssegate_example_{name}", ROOT / "examples" / f"{name}.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # Django imports its ROOT_URLCONF by name
    spec.loader.exec_module(module)
    return module


def events_of(response: httpx.Response) -> list[Event]:
    decoder = Decoder()
    events = []
    for chunk in response.iter_raw():
        events += decoder.feed(chunk)
    return events + decoder.close()


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


@contextmanager
def serve_wsgi(app: Any) -> Iterator[str]:
    server = make_server(
        "127.0.0.1", 0, app, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(WAIT)


TICKS = [Event(str(n), event="tick", id=str(n), retry=2000 if n == 0 else None) for n in range(3)]
TICK_BYTES = b"retry: 2000\n" + b"".join(
    b"event: tick\nid: %d\ndata: %d\n\n" % (n, n) for n in range(3)
)


def test_starlette_example() -> None:
    example = load("starlette_app")
    with serve(example.app) as server:
        with httpx.stream("GET", server.url + "/answer", timeout=WAIT) as response:
            events = events_of(response)
        compact = {"separators": (",", ":"), "ensure_ascii": False}
        assert events == [
            Event(json.dumps({"text": word + " "}, **compact), id="")  # type: ignore[arg-type]
            for word in example.ANSWER.split(" ")
        ] + [Event('{"finish_reason":"stop"}', event="done", id="")]
        headers = {"Last-Event-ID": "5"}
        url = server.url + "/ticks?count=3&interval=0"
        with httpx.stream("GET", url, headers=headers, timeout=WAIT) as response:
            assert response.read() == b"retry: 2000\n" + b"".join(
                b"event: tick\nid: %d\ndata: %d\n\n" % (n, n) for n in (5 + 1, 5 + 2, 5 + 3)
            )


def test_starlette_example_exits_promptly_on_sigterm() -> None:
    """uvicorn in its own process, SIGTERM with a stream open: farewell, then exit."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    port = sock.getsockname()[1]
    with sock:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--fd",
                str(sock.fileno()),
                "--app-dir",
                str(ROOT),
                "--log-level",
                "warning",
                "examples.starlette_app:app",
            ],
            pass_fds=(sock.fileno(),),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    try:
        lines: list[str] = []
        with httpx.Client(timeout=WAIT) as client:
            # The socket already listens, so this waits in the backlog until
            # uvicorn has started (bounded, generously: a loaded machine).
            assert client.get(f"http://127.0.0.1:{port}/answer", timeout=60).status_code == 200
            with client.stream("GET", f"http://127.0.0.1:{port}/ticks?interval=0.05") as response:
                stream = response.iter_lines()
                for line in stream:
                    lines.append(line)
                    if line == "data: 1":
                        process.send_signal(signal.SIGTERM)
                        break
                lines.extend(stream)  # ends when the server closes the stream
        # uvicorn re-raises the signal it caught once it has shut down cleanly
        assert process.wait(WAIT) == -signal.SIGTERM
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()  # type: ignore[union-attr]
        process.stderr.close()  # type: ignore[union-attr]
    assert lines[:6] == ["retry: 2000", "event: tick", "id: 0", "data: 0", "", "event: tick"]
    assert lines[-3:] == ["event: shutdown", "data: server restarting", ""]


def test_fastapi_example() -> None:
    example = load("fastapi_app")
    with serve(example.app) as server:
        with httpx.stream(
            "POST", server.url + "/chat", json={"prompt": "hi there"}, timeout=WAIT
        ) as response:
            assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
            events = events_of(response)
        assert events == [
            Event('{"text":"You"}', id=""),
            Event('{"text":"said:"}', id=""),
            Event('{"text":"hi"}', id=""),
            Event('{"text":"there"}', id=""),
            Event('{"finish_reason":"stop"}', event="done", id=""),
        ]
        schema = httpx.get(server.url + "/openapi.json", timeout=WAIT).json()
        content = schema["paths"]["/chat"]["post"]["responses"]["200"]["content"]
        assert list(content) == ["text/event-stream"]
        bad = httpx.post(server.url + "/chat", json={"nope": 1}, timeout=WAIT)
        assert bad.status_code == 422
    assert example.closed == [CloseReason.COMPLETED]


def test_flask_example() -> None:
    from werkzeug.serving import make_server as make_werkzeug_server

    example = load("flask_app")
    server = make_werkzeug_server("127.0.0.1", 0, example.app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/ticks?count=3"
        with httpx.stream("GET", url, timeout=WAIT) as response:
            assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
            assert response.headers["cache-control"] == "no-cache"
            assert response.headers["x-accel-buffering"] == "no"
            assert response.read() == TICK_BYTES
    finally:
        server.shutdown()
        server.server_close()
        thread.join(WAIT)


def test_django_example() -> None:
    os.environ.pop("DJANGO_SETTINGS_MODULE", None)
    example = load("django_view")
    with (
        serve_wsgi(example.application) as base,
        httpx.stream("GET", base + "/ticks?count=3", timeout=WAIT) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        assert response.read() == TICK_BYTES
        assert events_of_bytes(TICK_BYTES) == TICKS


def events_of_bytes(data: bytes) -> list[Event]:
    decoder = Decoder()
    return decoder.feed(data) + decoder.close()


@pytest.mark.parametrize("name", ["starlette_app", "fastapi_app", "flask_app", "django_view"])
def test_examples_have_run_instructions(name: str) -> None:
    assert "Run it:" in (ROOT / "examples" / f"{name}.py").read_text()
