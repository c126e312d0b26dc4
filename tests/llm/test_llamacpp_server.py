"""The OpenAI-compatible provider and ``ssegate chat`` against a live llama-cpp-python server.

Opt-in: ``make test-llamacpp`` builds ``llama-cpp-python[server]`` (about ten minutes
of both cores, with the CPU flags of ``ssegate/local/_llamacpp.py``) and runs this file
with ``SSEGATE_LLAMACPP=1``. The server loads the embedded model's GGUF, the one the
captures in tests/data/llamacpp/ were recorded from, so greedy answers must match them.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from llm_support import collect

from ssegate.llm import ChatRequest, Finish, Start, TextDelta
from ssegate.llm.providers import create_provider
from ssegate.local import default_model_path

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("SSEGATE_LLAMACPP") != "1" or importlib.util.find_spec("llama_cpp") is None,
        reason="opt-in: make test-llamacpp (builds llama-cpp-python[server])",
    ),
]

SSEGATE = Path(sys.executable).parent / "ssegate"
CAPITAL = (
    "L'Étoile, la Marseillaise. Paris is the capital of France and a major city in "
    "Europe's capital of France."
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """``python -m llama_cpp.server`` on a free port: its base URL and its model's id."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "llama_cpp.server", "--model", default_model_path()]
    command += ["--n_ctx", "2048", "--host", "127.0.0.1", "--port", str(port)]
    # llama.cpp logs ~200 kB while it loads: to a file, not a pipe nobody reads
    # (the server would block on a full pipe before it listens).
    log = tmp_path_factory.mktemp("llamacpp") / "server.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=sink)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                tail = log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"llama_cpp.server exited: {tail}")
            try:
                models = httpx.get(f"{url}/models", timeout=2).json()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield url, models["data"][0]["id"]
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.anyio
@pytest.mark.parametrize("vendor", ["openai", "llamacpp", "openai-compatible"])
async def test_provider_against_the_server(server: tuple[str, str], vendor: str) -> None:
    url, model = server
    provider = create_provider(vendor, base_url=url)
    question = [{"role": "user", "content": "What is the capital of France?"}]
    answer = await collect(
        provider, ChatRequest(model=model, messages=question, temperature=0, max_tokens=30)
    )
    cut = await collect(
        provider, ChatRequest(model=model, messages=question, temperature=0, max_tokens=5)
    )
    await provider.aclose()

    assert isinstance(answer[0], Start)
    assert "".join(e.text for e in answer if isinstance(e, TextDelta)) == CAPITAL
    assert answer[-1] == Finish("stop", "stop")
    # max_tokens reached the server (it ignores max_completion_tokens)
    assert 1 <= sum(isinstance(e, TextDelta) for e in cut) <= 5
    assert cut[-1] == Finish("length", "length")


def test_chat_command_against_the_server(server: tuple[str, str]) -> None:
    url, model = server
    args = ["What is the capital of France?", "--model", f"openai:{model}", "--base-url", url]
    done = subprocess.run(
        [str(SSEGATE), "chat", *args, "--temperature", "0", "--max-tokens", "30"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": str(SSEGATE.parent), "LC_ALL": "C.UTF-8"},
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, CAPITAL + "\n", "")
