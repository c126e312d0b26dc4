"""Time to first token through nginx beside direct, in one run.

    .venv/bin/python benchmarks/nginx.py [--quick] [--requests N]

One gateway (``python -m ssegate serve``, the memory store, the ``echo`` model
at 20 tokens/s) and a real nginx in front of it, configured with the README's snippet
(``ssegate.testing._nginx.readme_site``: both upstream lines name the gateway).
The same client (raw sockets, one connection per request, as a browser's
``EventSource`` opens) posts a streaming chat completion ``--requests`` times to
each, interleaved, and notes the time from sending the request to the first
content chunk and to ``[DONE]``. Reported: p50/p99 of both, and what nginx adds
(its p50 minus direct's). ``scripts/ensure-infra`` installs nginx when missing.

The machine is shared and noisy: read the difference of one run, not runs.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gateway import free_port, pct, wait_ready
from ssegate.testing._nginx import Nginx, readme_site

README = Path(__file__).parent.parent / "README.md"
BODY = json.dumps(
    {"model": "echo", "stream": True, "messages": [{"role": "user", "content": "one two three"}]}
).encode()
REQUEST = (
    b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n"
    b"content-type: application/json\r\nconnection: close\r\n"
    b"content-length: %d\r\n\r\n" % len(BODY) + BODY
)


def timed(port: int) -> tuple[float, float]:
    """Seconds to the first content chunk and to ``[DONE]``."""
    began = time.monotonic()
    first = 0.0
    seen = b""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(REQUEST)
        while True:
            data = sock.recv(65536)
            if not data:
                raise RuntimeError(f"closed before [DONE]: {seen[-300:]!r}")
            seen += data
            if not first and b'"content":"one"' in seen:
                first = time.monotonic() - began
            if b"data: [DONE]" in seen:
                return first, time.monotonic() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="50 requests each")
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    if args.quick:
        args.requests = 50
    config = Path(tempfile.mkdtemp(prefix="ssegate-bench-nginx-")) / "gateway.toml"
    config.write_text(
        'default_model = "echo"\necho_tokens_per_second = 20\n[local]\npreload = false\n'
    )
    port = free_port()
    gateway = subprocess.Popen(
        [sys.executable, "-m", "ssegate", "serve", "--config", str(config)],
        env={**os.environ, "SSEGATE_PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}/readyz", gateway, 60)
        url = f"http://127.0.0.1:{port}"
        front = free_port()
        with Nginx(readme_site(README.read_text(), [url, url], front), port=front) as nginx:
            for target in (port, front) * 20:  # warm-up
                timed(target)
            figures: dict[str, list[tuple[float, float]]] = {"direct": [], "nginx": []}
            for _ in range(args.requests):
                figures["direct"].append(timed(port))
                figures["nginx"].append(timed(nginx.port))
    finally:
        gateway.send_signal(signal.SIGINT)
        gateway.wait(30)
    print(
        f"time to first token, {args.requests} requests each, interleaved (echo, 20 tokens/s: the first after 50 ms, the last after 150 ms)"
    )
    print(f"{'':8} {'TTFT p50':>9} {'TTFT p99':>9} {'whole p50':>10} {'whole p99':>10}")
    for name, rows in figures.items():
        ttft, whole = [r[0] for r in rows], [r[1] for r in rows]
        print(
            f"{name:8} {pct(ttft, 0.5) * 1000:7.2f}ms {pct(ttft, 0.99) * 1000:7.2f}ms "
            f"{pct(whole, 0.5) * 1000:8.2f}ms {pct(whole, 0.99) * 1000:8.2f}ms"
        )
    added = pct([r[0] for r in figures["nginx"]], 0.5) - pct([r[0] for r in figures["direct"]], 0.5)
    print(f"nginx adds {added * 1000:.2f} ms to TTFT p50")
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
