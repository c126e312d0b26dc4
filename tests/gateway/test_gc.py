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

from conftest import Serve
from gc_support import cyclic_garbage


#: Modules whose objects must die by reference count once their request is over.
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
            assert cyclic_garbage(server) == []
        finally:
            gc.enable()
