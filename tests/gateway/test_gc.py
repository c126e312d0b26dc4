"""What a finished request leaves to the cyclic collector: nothing of the server's.

``ssegate serve`` collects the older generations rarely (docs/gateway.md, "The
collector"), so garbage that only a collection frees stays in memory for a long
time: a reference cycle per connection grew the soak's gateway by ~1 MB a second
(and made its collections long).
"""

from __future__ import annotations

import gc
import json
import socket
import time

from conftest import Serve

#: Modules whose objects must die by reference count once their request is over.
SERVER_MODULES = ("uvicorn", "starlette", "fastapi", "ssegate", "httptools", "h11")


def _completion(port: int, body: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        )
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_a_finished_stream_leaves_no_reference_cycles(gateway: Serve) -> None:
    body = json.dumps(
        {"model": "echo", "stream": True, "messages": [{"role": "user", "content": "a b c"}]}
    ).encode()
    with gateway() as server:
        assert b"data: [DONE]" in _completion(server.port, body)  # warm-up: caches, imports
        gc.collect()
        gc.disable()
        try:
            for _ in range(5):
                answer = _completion(server.port, body)
                assert answer.startswith(b"HTTP/1.1 200 ")
                assert b"data: [DONE]" in answer
            # Until the server has let go of the connections (it closes each
            # after its last byte, and forgets it on the next loop turn).
            connections = server.server.server_state.connections
            deadline = time.monotonic() + 10
            while connections:
                assert time.monotonic() < deadline, "the server kept its connections"
                time.sleep(0.01)
            gc.set_debug(gc.DEBUG_SAVEALL)
            gc.collect()
            garbage = [type(o) for o in gc.garbage]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
    ours = sorted(
        {
            f"{t.__module__}.{t.__qualname__}"
            for t in garbage
            if t.__module__.startswith(SERVER_MODULES)
        }
    )
    assert ours == []
