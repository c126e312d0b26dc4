"""Real bytes from llama-cpp-python's server (tests/data/llamacpp/), replayed to the providers.

Every way a user reaches that server: the ``openai`` vendor with its ``base_url``
(``max_tokens`` must reach it: it ignores ``max_completion_tokens``), ``llamacpp``
and ``openai-compatible``. Over both HTTP clients the driver supports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from llm_support import Upstream, collect

from ssegate.llm import ChatRequest, Finish, Start, TextDelta
from ssegate.llm.providers import create_provider
from ssegate.testing import Reply

pytestmark = pytest.mark.anyio

DATA = Path(__file__).parent.parent / "data" / "llamacpp"
MODEL = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: The response head recorded with the bodies (.meta.txt), less date and framing.
HEADERS = (
    ("server", "uvicorn"),
    ("cache-control", "no-store"),
    ("x-accel-buffering", "no"),
    ("content-type", "text/event-stream; charset=utf-8"),
    ("x-request-id", "1d5a9efae9374eeab305d953178c3220"),
)


def replay(name: str) -> Reply:
    raw = (DATA / name).read_bytes()
    head = b"HTTP/1.1 200 OK\r\n" + b"".join(f"{k}: {v}\r\n".encode() for k, v in HEADERS)
    return Reply.from_http(head + b"\r\n" + raw)


# (capture, prompt, max_tokens) -> the events expected, from the bytes in the files
CASES = {
    "stop": (
        "llamacpp-server-stream.txt",
        "What is the capital of France?",
        30,
        Start(
            model=MODEL,
            provider="",
            id="chatcmpl-caadc7eb-e168-4823-8e28-f37d56d047cf",
            created=1795977805,
        ),
        "L'Étoile, la Marseillaise. Paris is the capital of France and a major city in "
        "Europe's capital of France.",
        29,
        Finish("stop", "stop"),
    ),
    "length": (
        "llamacpp-server-stream-length.txt",
        "Write a long story about a dragon.",
        8,
        Start(
            model=MODEL,
            provider="",
            id="chatcmpl-13461b51-4b16-44d8-9de3-6a62f14a3e32",
            created=1795977811,
        ),
        "Once upon a time, there was a",
        8,
        Finish("length", "length"),
    ),
}


@pytest.mark.parametrize("vendor", ["openai", "llamacpp", "openai-compatible"])
@pytest.mark.parametrize("case", sorted(CASES))
async def test_llamacpp_server_bytes(
    upstream: Upstream, client: Any, vendor: str, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-never-sent-here")
    capture, prompt, cap, start, text, pieces, finish = CASES[case]
    base = upstream.replay("/v1/chat/completions", replay(capture)) + "/v1"
    request = ChatRequest(
        model=MODEL,
        messages=[{"role": "user", "content": prompt}],
        temperature=0,
        max_tokens=cap,
        include_usage=True,
    )
    provider = create_provider(vendor, base_url=base, client=client)
    events = await collect(provider, request)
    await provider.aclose()

    assert events[0] == Start(
        model=start.model, provider=vendor, id=start.id, created=start.created
    )
    deltas = events[1:-1]
    assert all(isinstance(d, TextDelta) for d in deltas)  # no usage: the server sends none
    assert ("".join(d.text for d in deltas), len(deltas)) == (text, pieces)  # type: ignore[union-attr]
    assert events[-1] == finish

    [sent] = upstream.requests_to(base[: -len("/v1")])
    assert sent.json() == {
        "model": MODEL,
        "messages": [{"role": "user", "content": prompt}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0,
        "max_tokens": cap,  # the field this server reads, whatever the vendor's name
    }
    assert "authorization" not in sent.headers  # no key from the environment to this host
