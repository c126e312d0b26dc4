"""The README's Python snippets run, so they never drift from the code."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from ssegate import Decoder

README = Path(__file__).parent.parent / "README.md"
SNIPPETS = re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)


def test_readme_has_snippets() -> None:
    assert len(SNIPPETS) >= 3


@pytest.mark.parametrize("code", SNIPPETS, ids=[f"snippet{i}" for i in range(len(SNIPPETS))])
def test_snippet_runs(code: str, capsys: pytest.CaptureFixture[str]) -> None:
    exec(compile(code, str(README), "exec"), {"__name__": "__readme__"})
    capsys.readouterr()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _make_run_command() -> list[str]:
    """``make run``'s command line, read from the Makefile (so the two cannot drift)."""
    makefile = (README.parent / "Makefile").read_text()
    recipe = re.search(r"^run:.*\n\t(.+)$", makefile, re.MULTILINE)
    assert recipe is not None
    return recipe.group(1).split()


@pytest.fixture(scope="module")
def make_run() -> Iterator[tuple[str, str]]:
    """What ``make run`` runs (``ssegate serve`` with the local model), on a free port:
    yields the base URL and the two lines it printed."""
    command = _make_run_command()
    assert command == ["$(BIN)/ssegate", "serve", "--host", "127.0.0.1", "--port", "8000"]
    port = _free_port()  # not 8000: that is the user's
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSEGATE_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "ssegate", *command[1:-1], str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120  # the model loads in the background
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(url + "/readyz").status_code == 200:
                    break
            assert process.poll() is None, "ssegate serve exited"
            assert time.monotonic() < deadline, "the local model did not load"
            time.sleep(0.2)
        assert process.stdout is not None
        lines = [process.stdout.readline().decode() for _ in range(2)]
        yield url, "".join(lines)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(30)
        if process.stdout is not None:
            process.stdout.close()


QUESTION = {"role": "user", "content": "What is the capital of France?"}


def test_make_run_prints_its_urls(make_run: tuple[str, str]) -> None:
    url, printed = make_run
    assert printed == (
        f"ssegate gateway  API {url}/v1  docs {url}/docs  (model: local)\n"
        f"pages  chat {url}/  topics {url}/topics  dashboard {url}/dashboard\n"
    )
    for path in ("/docs", "/", "/topics", "/dashboard"):
        assert httpx.get(url + path).status_code == 200


def test_make_run_answers_raw_http_like_curl(make_run: tuple[str, str]) -> None:
    # The README's curl -N command, as bytes on a socket: HTTP/1.0, so the body is
    # the event stream itself (no chunked framing), read to the end.
    url, _ = make_run
    port = int(url.rpartition(":")[2])
    body = json.dumps(
        {"model": "local", "stream": True, "temperature": 0, "messages": [QUESTION]}
    ).encode()
    request = (
        b"POST /v1/chat/completions HTTP/1.0\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    raw = b""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as conn:
        conn.sendall(request)
        while chunk := conn.recv(65536):
            raw += chunk
    head, _, stream = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 200 OK"
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    assert headers["content-type"] == "text/event-stream; charset=utf-8"
    assert headers["x-stream-id"].startswith("gen_")
    decoder = Decoder()
    got = decoder.feed(stream) + decoder.close()
    assert got[-1].data == "[DONE]"
    chunks = [json.loads(e.data) for e in got[:-1]]
    assert all(e.id for e in got[:-1])  # resumable: an id on every event
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    # Greedy decoding (temperature 0), so the answer is exact.
    assert text == "The capital of France is Paris."
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_make_run_answers_the_openai_sdk(make_run: tuple[str, str]) -> None:
    url, _ = make_run
    client = openai.OpenAI(base_url=url + "/v1", api_key="-", max_retries=0)
    stream = client.chat.completions.create(
        model="local",
        messages=[QUESTION],  # type: ignore[list-item]
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "The capital of France is Paris."
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (37, 7)
    whole = client.chat.completions.create(model="local", messages=[QUESTION], temperature=0)  # type: ignore[list-item]
    assert whole.choices[0].message.content == "The capital of France is Paris."
    assert whole.choices[0].finish_reason == "stop"
